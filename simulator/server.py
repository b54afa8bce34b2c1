"""Serve a simulator on a TCP port for as long as a context is open.

    async with run_simulator(SimulatorConfig(), port=0) as sim:
        ...  # point a client at sim.url; inspect or fault it through sim.state

aiohttp's access log is off: it would write request lines, and the
access_token travels in the query string.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from simulator.app import create_app, state_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from simulator.config import SimulatorConfig
    from simulator.state import SimulatorState


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator listening at `url` (e.g. `http://127.0.0.1:54321`), with its live state."""

    url: str
    host: str
    port: int
    state: SimulatorState
    app: web.Application


@asynccontextmanager
async def run_simulator(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Callable[[], float] = time.time,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[RunningSimulator]:
    """Listen on `host`:`port` (0: a free port) until the context exits.

    `clock` is passed to `create_app`. On exit, calls still in flight get
    `shutdown_timeout` seconds to finish before their connections are closed.
    """
    app = create_app(config, clock=clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield RunningSimulator(
            url=f"http://{url_host}:{bound_port}",
            host=bound_host,
            port=bound_port,
            state=state_of(app),
            app=app,
        )
    finally:
        await runner.cleanup()
