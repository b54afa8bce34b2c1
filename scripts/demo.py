"""The worker end to end: RabbitMQ, the WeCom simulator and the worker, on 127.0.0.1.

Publishes the seed's six examples (one with an unknown recipient), then a
command reusing a spent response_code, an expired one and an invalid one, and
prints every result. Uses the broker at WECOM_AMQP_URL when one answers there,
otherwise starts its own RabbitMQ node; stops everything it started.

    make demo
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aio_pika
import msgspec

from tests.services import RabbitMQNode, free_port
from wecom_card_contracts import Result, decode_result
from wecom_card_contracts.examples import seed_examples

CORP, AGENT, SECRET = "ww-demo-corp", 1000002, "demo-secret"
QUEUES = {
    "WECOM_COMMAND_QUEUE": "wecom.card_update.commands",
    "WECOM_RESULT_QUEUE": "wecom.card_update.results",
    "WECOM_DEAD_LETTER_QUEUE": "wecom.card_update.dead",
}


def say(text: str) -> None:
    """One line of the demo's narration."""
    print(f"[demo] {text}", flush=True)


async def broker_answers(url: str) -> bool:
    """Whether an AMQP broker accepts a connection at ``url``."""
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)  # a refused probe is expected
    try:
        connection = await asyncio.wait_for(aio_pika.connect(url), 5)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError):
        return False
    await connection.close()
    return True


def start_simulator(work: Path) -> tuple[subprocess.Popen[str], str]:
    """``python -m simulator`` on a free port; its base URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--quiet",
            "--app",
            f"{CORP}:{AGENT}:{SECRET}",
            "--latency-ms",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=(work / "simulator.log").open("w"),
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("simulator listening on "):
        process.kill()
        raise RuntimeError(f"the simulator did not start: {line!r}")
    return process, line.removeprefix("simulator listening on ")


def start_worker(work: Path, amqp_url: str, api_base: str) -> tuple[subprocess.Popen[bytes], int]:
    """``wecom-card-worker run``; waits until /readyz answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WECOM_")}
    env.update(
        {
            "WECOM_AMQP_URL": amqp_url,
            "WECOM_API_BASE": api_base,
            "WECOM_CORP_ID": CORP,
            "WECOM_AGENT_ID": str(AGENT),
            "WECOM_SECRET": SECRET,
            "WECOM_STATE_URL": f"sqlite:///{work / 'state.sqlite3'}",
            "WECOM_HTTP_HOST": "127.0.0.1",
            "WECOM_HTTP_PORT": str(port),
            **QUEUES,
        }
    )
    log = (work / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    import urllib.request  # noqa: PLC0415

    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited: see {work / 'worker.log'}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer,
        ):
            if answer.status == 200:
                return process, port
        time.sleep(0.2)
    raise RuntimeError(f"the worker was not ready in 60 s: see {work / 'worker.log'}")


def demo_commands(run: str) -> list[tuple[str, dict[str, Any]]]:
    """The seed's examples as commands, then the expired and the invalid one."""
    commands: list[tuple[str, dict[str, Any]]] = []
    for name, example in seed_examples().items():
        request = dict(example, agentid=AGENT, response_code=f"rc-{run}-{name}")
        if name == "text_notice":
            request["userids"] = ["zhangsan", "Invalid-Lisi"]
        commands.append((f"seed {name}", {"command_id": f"{run}-{name}", "request": request}))
    expired = dict(seed_examples()["button"], agentid=AGENT, response_code=f"rc-{run}-old")
    commands.append(
        (
            "issued 73 h ago",
            {
                "command_id": f"{run}-expired",
                "code_issued_at": time.time() - 73 * 3600,
                "request": expired,
            },
        )
    )
    invalid = dict(seed_examples()["button"], agentid=str(AGENT), response_code=f"rc-{run}-bad")
    commands.append(("agentid as a string", {"command_id": f"{run}-invalid", "request": invalid}))
    return commands


async def exchange(amqp_url: str, run: str) -> list[tuple[str, Result]]:
    """Publish the demo's commands and collect one result for each."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True)
        plan = demo_commands(run)
        for _, body in plan:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    msgspec.json.encode(body),
                    content_type="application/json",
                    reply_to=replies.name,
                ),
                routing_key=QUEUES["WECOM_COMMAND_QUEUE"],
            )
        results = await collect(replies, len(plan))
        # The same response_code again, from another command, once the first has used it.
        first = plan[0][1]
        again = {"command_id": f"{run}-again", "request": dict(first["request"])}
        await channel.default_exchange.publish(
            aio_pika.Message(msgspec.json.encode(again), reply_to=replies.name),
            routing_key=QUEUES["WECOM_COMMAND_QUEUE"],
        )
        results.update(await collect(replies, 1))
    labels = {body["command_id"]: label for label, body in plan}
    labels[f"{run}-again"] = "same code as seed button"
    return [(label, results[cid]) for cid, label in labels.items() if cid in results]


async def collect(queue: aio_pika.abc.AbstractQueue, count: int) -> dict[str, Result]:
    """``count`` results from the reply queue."""
    found: dict[str, Result] = {}
    deadline = time.monotonic() + 60
    while len(found) < count and time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        result = decode_result(message.body)
        found[result.command_id or "?"] = result
    if len(found) < count:
        raise RuntimeError(f"only {len(found)} of {count} results arrived in 60 s")
    return found


def table(rows: list[tuple[str, Result]]) -> str:
    """The results as a fixed-width table."""
    header = ("command", "status", "errcode", "attempts", "invalid users / error")
    lines = [header]
    for label, result in rows:
        detail = ", ".join(result.invalid_users)
        if result.error is not None:
            where = f" at {result.error.path}" if result.error.path else ""
            detail = f"{result.error.code}{where}: {result.error.message}"
        lines.append(
            (
                label,
                result.status,
                "" if result.errcode is None else str(result.errcode),
                str(result.attempts),
                detail if len(detail) <= 110 else detail[:107] + "...",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header) - 1)]
    out = []
    for n, row in enumerate(lines):
        out.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
        if n == 0:
            out.append("-" * (sum(widths) + 2 * len(widths) + 30))
    return "\n".join(out)


async def main() -> int:
    """Run the demo; the exit code."""
    work = Path(tempfile.mkdtemp(prefix="wecom-demo-"))
    amqp_url = os.environ.get("WECOM_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    node: RabbitMQNode | None = None
    simulator = worker = None
    try:
        if await broker_answers(amqp_url):
            say(f"using the RabbitMQ at {amqp_url.split('@')[-1]}")
        else:
            say("starting RabbitMQ on 127.0.0.1 (a few seconds)")
            node = RabbitMQNode()
            node.start()
            amqp_url = node.url
        simulator, api_base = start_simulator(work)
        say(f"WeCom simulator at {api_base}")
        worker, port = start_worker(work, amqp_url, api_base)
        say(f"worker ready (metrics and probes on http://127.0.0.1:{port}); publishing commands")
        rows = await exchange(amqp_url, secrets.token_hex(3))
        print()
        print(table(rows))
        print()
        say(f"logs in {work}")
        return 0
    finally:
        for process in (worker, simulator):
            if process is not None and process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
        if node is not None:
            node.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
