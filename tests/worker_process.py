"""The worker as a real subprocess for end-to-end tests, and an AMQP client to drive it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aio_pika
import msgspec

from tests.services import free_port
from wecom_card_contracts import Result, decode_result
from worker.amqp import Topology

SECRET = "e2e-secret-do-not-log-0123456789"
CORP = "ww-e2e-corp"
AGENT = 1000002


@dataclass
class WorkerProcess:
    """``python -m worker run`` with a test environment; logs go to a file."""

    amqp_url: str
    api_base: str
    state_dir: Path
    queue_prefix: str
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: Path | None = None

    @property
    def queues(self) -> dict[str, str]:
        """The queue names this worker uses."""
        p = self.queue_prefix
        return {
            "WECOM_COMMAND_QUEUE": f"{p}commands",
            "WECOM_RESULT_QUEUE": f"{p}results",
            "WECOM_DEAD_LETTER_QUEUE": f"{p}dead",
            "WECOM_DELAY_QUEUE": f"{p}commands.delay",
        }

    def env(self) -> dict[str, str]:
        """The worker's environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WECOM_")}
        env.update(
            {
                "WECOM_AMQP_URL": self.amqp_url,
                "WECOM_API_BASE": self.api_base,
                "WECOM_CORP_ID": CORP,
                "WECOM_AGENT_ID": str(AGENT),
                "WECOM_SECRET": SECRET,
                "WECOM_STATE_URL": f"sqlite:///{self.state_dir / 'state.sqlite3'}",
                "WECOM_HTTP_HOST": "127.0.0.1",
                "WECOM_HTTP_PORT": str(self.port),
                "WECOM_LOG_LEVEL": "debug",
                "WECOM_RETRY_BUDGET": "3",
                "WECOM_CALL_TIMEOUT": "2",
                "WECOM_SHUTDOWN_GRACE": "10",
                **self.queues,
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until /readyz answers 200."""
        if not self.port:
            self.port = free_port()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # The port in the name: workers started at the same millisecond get files of their own.
        self.log_path = self.state_dir / f"worker-{self.port}-{int(time.time() * 1000)}.log"
        log_file = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=self.env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}:\n{self.logs()}")
            if self.ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.logs()[-4000:]}")

    def ready(self) -> bool:
        """Whether /readyz answers 200."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/readyz", timeout=1
            ) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def get(self, path: str) -> tuple[int, str]:
        """GET a path of the worker's HTTP port."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def logs(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text("utf-8", "replace") if self.log_path else ""

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown at all."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def close(self) -> None:
        """Make sure the process is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def command(
    command_id: str,
    response_code: str,
    *,
    userids: list[str] | None = None,
    replace_name: str = "已处理",
    **extra: Any,
) -> dict[str, Any]:
    """A valid button-mode command for the e2e app."""
    request: dict[str, Any] = {
        "agentid": AGENT,
        "response_code": response_code,
        "button": {"replace_name": replace_name},
    }
    if userids is not None:
        request["userids"] = userids
    return {"command_id": command_id, "request": request, **extra}


def queue_topology(queues: dict[str, str]) -> Topology:
    """The worker's topology for a test's queue names (``WorkerProcess.queues``)."""
    return Topology(
        command_queue=queues["WECOM_COMMAND_QUEUE"],
        result_queue=queues["WECOM_RESULT_QUEUE"],
        dead_letter_queue=queues["WECOM_DEAD_LETTER_QUEUE"],
        delay_queue=queues.get("WECOM_DELAY_QUEUE", f"{queues['WECOM_COMMAND_QUEUE']}.delay"),
    )


class Upstream:
    """What an upstream service does: publish commands, read results."""

    def __init__(self, url: str, queues: dict[str, str]) -> None:
        self.url = url
        self.queues = queues
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None

    async def __aenter__(self) -> Self:
        self.connection = await aio_pika.connect_robust(self.url)
        self.channel = await self.connection.channel(publisher_confirms=True)
        topology = queue_topology(self.queues)
        # As the worker declares them (a queue's arguments must match wherever it is declared).
        declared = [
            (topology.command_queue, topology.command_arguments()),
            (topology.result_queue, topology.durable_arguments()),
            (topology.dead_letter_queue, topology.durable_arguments()),
        ]
        for name, arguments in declared:
            await self.channel.declare_queue(name, durable=True, arguments=arguments)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def publish(
        self,
        body: dict[str, Any] | bytes,
        *,
        content_type: str | None = "application/json",
        reply_to: str | None = None,
        correlation_id: str | None = None,
        content_encoding: str | None = None,
    ) -> None:
        """Publish one command, confirmed."""
        assert self.channel is not None
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        await self.channel.default_exchange.publish(
            aio_pika.Message(
                data,
                content_type=content_type,
                reply_to=reply_to,
                correlation_id=correlation_id,
                content_encoding=content_encoding,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.queues["WECOM_COMMAND_QUEUE"],
        )

    async def take(
        self, queue_key: str, count: int, timeout: float = 30.0
    ) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """``count`` messages from a queue (acked), waiting up to ``timeout``."""
        assert self.channel is not None
        name = self.queues.get(queue_key, queue_key)
        queue = await self.channel.declare_queue(name, passive=True)
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        deadline = time.monotonic() + timeout
        while len(taken) < count:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None:
                taken.append(message)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(taken)} of {count} messages on {name} after {timeout} s")
            await asyncio.sleep(0.05)
        return taken

    async def results(self, count: int, timeout: float = 30.0) -> dict[str, Result]:
        """``count`` results from the result queue, by command_id (``None`` for unnamed)."""
        messages = await self.take("WECOM_RESULT_QUEUE", count, timeout)
        results: dict[str, Result] = {}
        for message in messages:
            packed = message.content_type == "application/msgpack"
            result = decode_result(message.body, "msgpack" if packed else "json")
            results[result.command_id or f"<none:{len(results)}>"] = result
        return results
