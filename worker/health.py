"""The worker's HTTP port: ``/metrics``, ``/healthz`` (alive) and ``/readyz`` (can work).

Readiness is computed from state the service keeps current (broker connected,
consumer attached, last state-store ping), so a probe never waits on I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from worker.metrics import Metrics


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the worker can take commands, and what is missing if not."""

    ready: bool
    checks: dict[str, bool]
    detail: dict[str, str]


class HealthServer:
    """An aiohttp server on WECOM_HTTP_HOST:WECOM_HTTP_PORT."""

    def __init__(
        self, metrics: Metrics, readiness: Callable[[], Readiness], host: str, port: int
    ) -> None:
        self.metrics = metrics
        self.readiness = readiness
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/healthz", self.handle_healthz)
        app.router.add_get("/readyz", self.handle_readyz)
        self.app = app

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0)."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # noqa: SLF001 - aiohttp exposes the bound socket only here
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle_metrics(self, _: web.Request) -> web.Response:
        """Prometheus text exposition."""
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_healthz(self, _: web.Request) -> web.Response:
        """Alive: the event loop answers."""
        return web.json_response({"status": "alive"})

    async def handle_readyz(self, _: web.Request) -> web.Response:
        """Ready: broker connected, consumer attached, state store reachable."""
        state = self.readiness()
        return web.json_response(
            {
                "status": "ready" if state.ready else "not ready",
                "checks": state.checks,
                "detail": state.detail,
            },
            status=200 if state.ready else 503,
        )
