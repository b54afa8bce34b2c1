"""What a publishing team's tests run against: the broker, the simulator and the worker process.

The simulator runs in the test's process on port 0; the worker is a subprocess
(``python -m worker run``) on queues only this test uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from simulator import App as SimApp
from simulator import RunningSimulator, SimulatorConfig, run_simulator
from tests.worker_process import AGENT, CORP, SECRET, Upstream, WorkerProcess

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@dataclass
class PublisherStack:
    """A simulator, the broker, and a way to start workers on this test's queues."""

    sim: RunningSimulator
    amqp_url: str
    tmp: Path
    prefix: str
    corp_id: str = CORP
    agentid: int = AGENT
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def queues(self) -> dict[str, str]:
        """The queue names of this stack, by their setting."""
        return WorkerProcess(self.amqp_url, "", self.tmp, self.prefix).queues

    @property
    def command_queue(self) -> str:
        """Where this stack's worker takes commands from."""
        return self.queues["WECOM_COMMAND_QUEUE"]

    async def worker(self, **env: str) -> WorkerProcess:
        """Start a worker (in a thread, so the in-process simulator keeps serving)."""
        worker = WorkerProcess(
            amqp_url=self.amqp_url,
            api_base=self.sim.url,
            state_dir=self.tmp / "state",
            queue_prefix=self.prefix,
            extra_env={
                "WECOM_CORP_ID": self.corp_id,
                "WECOM_AGENT_ID": str(self.agentid),
                **env,
            },
        )
        self.workers.append(worker)
        await asyncio.to_thread(worker.start)
        return worker

    def upstream(self) -> Upstream:
        """A plain aio-pika connection that declares this stack's queues."""
        return Upstream(self.amqp_url, self.queues)


@contextlib.asynccontextmanager
async def publisher_stack(
    amqp_url: str,
    tmp: Path,
    prefix: str,
    *,
    corp_id: str = CORP,
    agentid: int = AGENT,
    invalid_users: frozenset[str] = frozenset(),
) -> AsyncIterator[PublisherStack]:
    """The simulator with one app; every worker started is stopped afterwards."""
    config = SimulatorConfig(apps=(SimApp(corp_id, agentid, SECRET),), invalid_users=invalid_users)
    async with run_simulator(config) as sim:
        stack = PublisherStack(
            sim=sim, amqp_url=amqp_url, tmp=tmp, prefix=prefix, corp_id=corp_id, agentid=agentid
        )
        try:
            yield stack
        finally:
            for worker in stack.workers:
                worker.close()
