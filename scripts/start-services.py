"""Start the test RabbitMQ and Redis on 127.0.0.1 and keep them up until Ctrl-C (or SIGTERM).

Prints the variables that point the tests (or a benchmark, or the worker) at them, so a series of
test runs can share one broker instead of booting their own:

    .venv/bin/python scripts/start-services.py    # in one terminal; then paste its exports

Stopping it stops both services and deletes their data.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for `tests`
from tests.services import RabbitMQNode, RedisServer


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    """Start both services, print where they are, wait for a signal, stop them."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with RabbitMQNode() as rabbitmq, RedisServer() as redis:
        print(f"export WECOM_TEST_AMQP_URL={rabbitmq.url}")
        print(f"export WECOM_TEST_REDIS_URL={redis.url}")
        print(
            f"# RabbitMQ {rabbitmq.nodename} up in {rabbitmq.startup_seconds:.2f} s "
            f"(data {rabbitmq.base_dir}), Redis in {redis.startup_seconds:.2f} s; "
            "Ctrl-C stops both",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
