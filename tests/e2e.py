"""End-to-end rig: the WeCom simulator in this process, the worker as subprocesses, helpers.

The ``stack`` fixture (registered in ``tests/conftest.py``) hands a test a :class:`Stack`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pytest

from simulator import App as SimApp
from simulator import RunningSimulator, SimulatorConfig, run_simulator
from tests.worker_process import AGENT, CORP, SECRET, Upstream, WorkerProcess


@dataclass
class Stack:
    """A simulator, the broker, and a way to start workers on this test's queues."""

    sim: RunningSimulator
    amqp_url: str
    tmp: Path
    prefix: str
    workers: list[WorkerProcess] = field(default_factory=list)

    async def worker(self, **env: str) -> WorkerProcess:
        """Start a worker (in a thread, so the in-process simulator keeps serving)."""
        worker = WorkerProcess(
            amqp_url=self.amqp_url,
            api_base=self.sim.url,
            state_dir=self.tmp / "state",
            queue_prefix=self.prefix,
            extra_env=env,
        )
        self.workers.append(worker)
        await asyncio.to_thread(worker.start)
        return worker

    def upstream(self) -> Upstream:
        """An upstream service's connection."""
        return Upstream(
            self.amqp_url, WorkerProcess(self.amqp_url, "", self.tmp, self.prefix).queues
        )


@pytest.fixture
async def stack(amqp_url: str, tmp_path: Path, queue_prefix: str) -> AsyncIterator[Stack]:
    """The simulator in this process, on port 0, with the e2e app; workers stopped afterwards."""
    config = SimulatorConfig(apps=(SimApp(CORP, AGENT, SECRET),))
    async with run_simulator(config) as sim:
        stack = Stack(sim=sim, amqp_url=amqp_url, tmp=tmp_path, prefix=queue_prefix)
        try:
            yield stack
        finally:
            for worker in stack.workers:
                worker.close()


def accepted(sim: RunningSimulator, code: str) -> int:
    """How often the simulator accepted (spent) a code."""
    return sim.state.code_stats(code).accepted


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.02)


async def wait_for_log(worker: WorkerProcess, text: str, timeout: float = 15.0) -> str:
    """The worker's log once it contains ``text``."""
    await wait_for(lambda: text in worker.logs(), timeout)
    return worker.logs()


async def wait_for_queue(url: str, name: str, timeout: float = 20.0) -> None:
    """Wait until a queue exists again (passive declare succeeds)."""
    deadline = time.monotonic() + timeout
    connection = await aio_pika.connect(url)
    async with connection:
        while True:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
            else:
                return
