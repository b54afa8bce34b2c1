"""``wecom-card-worker run``: wires the parts together and runs until SIGTERM.

Start-up: settings (a bad one: one line, exit 2) -> logging -> state store
(durability reported; optionally required) -> WeCom client -> HTTP port ->
broker (retried until reachable) -> consume. SIGTERM / SIGINT: stop
consuming, finish in-flight commands within WECOM_SHUTDOWN_GRACE, close, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Coroutine
from typing import Any

import structlog

from worker import __version__
from worker.amqp import Broker, Topology
from worker.apps import AppRegistry
from worker.consumer import CommandConsumer
from worker.errors import BrokerError, SettingsError, StoreLocked, StoreUnavailable
from worker.health import HealthServer, Readiness
from worker.logs import configure_logging
from worker.metrics import Metrics
from worker.pipeline import HeldClaims, Pipeline
from worker.ports import StateStore
from worker.settings import Settings, load_settings
from worker.state import open_store
from worker.wecom.client import WeComClient
from worker.wiring import build_caller

log = structlog.get_logger("worker.service")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
STORE_CHECK_INTERVAL = 5.0


def run_from_environment() -> int:
    """Entry point of ``run``: the exit code."""
    try:
        settings = load_settings(os.environ)
    except SettingsError as error:
        print(f"wecom-card-worker: bad setting {error}", file=sys.stderr)  # noqa: T201 - before logging exists
        return EXIT_CONFIG
    configure_logging(settings.log_format, settings.log_level)
    try:
        return run_loop(Service(settings).run())
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled inside the loop
        return EXIT_OK


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (the ``fast`` extra), else asyncio's loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up
    except ImportError:  # pragma: no cover - uvloop is an optional extra
        return asyncio.run(main)
    return uvloop.run(main)


GC_GEN0_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Move start-up objects out of the collector's sight and collect young objects less often.

    Every command allocates a few hundred short-lived containers; with the default
    threshold (700) the collector runs every few commands and each older-generation
    pass walks every module and class loaded at start-up. Frozen start-up objects
    and a larger first threshold cut the worker's CPU per command by about 15 %
    in ``bench/throughput.py`` (A/B, three runs each), with no change in peak RSS.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


class Service:
    """The running worker: owns every long-lived part and the shutdown order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.claims = HeldClaims()
        self.store: StateStore | None = None
        self.store_ok = False
        self.store_detail = "not opened yet"
        self.broker: Broker | None = None
        self.consumer: CommandConsumer | None = None
        self.stopping = asyncio.Event()
        self.background: list[asyncio.Task[None]] = []
        self.caller: WeComClient | None = None

    async def run(self) -> int:
        """Run until a stop signal; the process exit code."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        log.info(
            "starting",
            version=__version__,
            instance=settings.instance_id,
            broker=settings.amqp_url_safe,
            state=settings.state_url_safe,
            api_base=settings.api_base,
            apps=[app.label for app in settings.apps],
            rate_limit=settings.rate_limit,
        )
        try:
            self.store = await open_store(settings)
        except (StoreLocked, StoreUnavailable, SettingsError) as error:
            log.error("cannot open the state store", error=str(error))
            print(f"wecom-card-worker: cannot open the state store: {error}", file=sys.stderr)  # noqa: T201
            return EXIT_CONFIG
        if not await self.check_durability():
            await self.store.close()
            return EXIT_CONFIG
        self.store_ok, self.store_detail = True, "ok"
        caller, close_caller = await build_caller(settings, self.metrics)
        self.caller = caller
        health = HealthServer(self.metrics, self.readiness, settings.http_host, settings.http_port)
        port = await health.start()
        log.info("http server listening", host=settings.http_host, port=port)
        topology = Topology(
            command_queue=settings.command_queue,
            result_queue=settings.result_queue,
            dead_letter_queue=settings.dead_letter_queue,
            delay_queue=settings.delay_queue,
            queue_type=settings.queue_type,
        )
        self.broker = Broker(
            settings.amqp_url,
            topology,
            prefetch=settings.prefetch,
            publish_timeout=settings.publish_timeout,
            connection_name=f"wecom-card-worker {settings.instance_id}",
        )
        pipeline = Pipeline(
            apps=AppRegistry(list(settings.apps)),
            store=self.store,
            caller=caller,
            claims=self.claims,
            max_message_bytes=settings.max_message_bytes,
            max_limiter_wait=settings.max_limiter_wait,
        )
        self.consumer = CommandConsumer(self.broker, pipeline, self.metrics)
        broker = self.broker
        # Read at scrape time, not only when a probe asks /readyz.
        self.metrics.broker_connected.set_function(
            lambda: float(broker.connected and broker.consumer_attached)
        )
        self.metrics.ready.set_function(lambda: float(self.readiness().ready))
        code = EXIT_OK
        try:
            connect = asyncio.create_task(self.broker.connect())
            stop = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait({connect, stop}, return_when=asyncio.FIRST_COMPLETED)
            if connect in done:
                stop.cancel()
                connect.result()
                tune_garbage_collector()
                await self.broker.consume(self.consumer.on_message)
                self.background = [
                    asyncio.create_task(self.renew_leases(), name="lease-renewal"),
                    asyncio.create_task(self.watch_store(), name="store-check"),
                ]
                await self.stopping.wait()
            else:
                connect.cancel()
        except BrokerError as error:
            log.error("broker refused the topology", error=str(error))
            code = EXIT_CONFIG
        finally:
            await self.shutdown(health, close_caller)
        return code

    async def shutdown(self, health: HealthServer, close_caller: object) -> None:
        """Stop consuming, finish in-flight commands (bounded), close everything."""
        started = time.monotonic()
        log.info("stopping: no new commands; finishing those in flight")
        if self.broker is not None:
            await self.broker.stop_consuming()
        cut = 0
        if self.consumer is not None:
            cut = await self.consumer.drain(self.settings.shutdown_grace)
        for task in self.background:
            task.cancel()
        for task in self.background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.broker is not None:
            await self.broker.close()
        if callable(close_caller):
            await close_caller()
        if self.store is not None:
            await self.store.close()
        await health.stop()
        log.info("stopped", unfinished=cut, seconds=round(time.monotonic() - started, 3))

    async def check_durability(self) -> bool:
        """Report the store's durability; refuse to start when required and missing."""
        assert self.store is not None
        report = await self.store.report()
        self.metrics.store_durable.set(1 if report.durable else 0)
        if report.durable:
            log.info(
                "state store durability", backend=report.backend, durable=True, **report.details
            )
            return True
        log.warning(
            "state store may forget used codes",
            backend=report.backend,
            durable=False,
            problems=list(report.problems),
            **report.details,
        )
        if self.settings.require_durable_store:
            print(  # noqa: T201 - the operator's one line
                "wecom-card-worker: WECOM_REQUIRE_DURABLE_STORE is set and the state store is not "
                f"durable: {'; '.join(report.problems)}",
                file=sys.stderr,
            )
            return False
        return True

    async def renew_leases(self) -> None:
        """Extend the leases of claims held, every third of a lease."""
        assert self.store is not None
        interval = self.settings.claim_lease / 3
        while True:
            await asyncio.sleep(interval)
            held = self.claims.snapshot()
            if not held:
                continue
            try:
                recreated = await self.store.renew(held)
            except StoreUnavailable as error:
                log.error("lease renewal failed", error=str(error))
                continue
            if recreated:
                self.metrics.claims_recreated.inc(recreated)
                log.warning("claims were gone at renewal and were written again", count=recreated)

    async def watch_store(self) -> None:
        """Ping the state store so /readyz knows whether it answers."""
        assert self.store is not None
        while True:
            await asyncio.sleep(STORE_CHECK_INTERVAL)
            try:
                await asyncio.wait_for(self.store.ping(), STORE_CHECK_INTERVAL)
                self.store_ok, self.store_detail = True, "ok"
            except (StoreUnavailable, TimeoutError) as error:
                if self.store_ok:
                    log.error("state store unreachable", error=str(error) or "timeout")
                self.store_ok, self.store_detail = False, str(error) or "ping timed out"

    def readiness(self) -> Readiness:
        """Broker connected, consumer attached, state store answering."""
        broker = self.broker
        connected = broker is not None and broker.connected
        consuming = broker is not None and broker.consumer_attached
        store_ok = self.store_ok and not (self.consumer is not None and self.consumer.store_failing)
        checks = {"broker": connected, "consumer": consuming, "state_store": store_ok}
        detail = {"state_store": self.store_detail}
        untrusted = self.caller.untrusted_corps if self.caller is not None else frozenset()
        if untrusted:
            # 60020: WeCom refuses this replica's IP for these corps; calls for them fail.
            detail["wecom_ip_not_trusted"] = ",".join(sorted(untrusted))
        return Readiness(
            ready=all(checks.values()) and not self.stopping.is_set(), checks=checks, detail=detail
        )
