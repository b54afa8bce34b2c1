"""deploy/ against live data: two workers, RabbitMQ with rabbitmq_prometheus and a real Prometheus
with the alert rules. Every dashboard query and every alert is evaluated through Prometheus's HTTP
API after the situations they exist for were produced."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from simulator import App as SimApp
from simulator import Fault, RunningSimulator, SimulatorConfig, run_simulator
from tests.deploy_queries import RULES, alerts, panel_queries, substitute
from tests.services import PrometheusServer, RabbitMQNode, free_port
from tests.worker_process import AGENT, CORP, SECRET, Upstream, WorkerProcess, command

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

JOB = "wecom-card-worker"
WINDOW = "5m"  # for $__rate_interval and $__range: the whole run
SETTLE_TIMEOUT = 90.0
CONCURRENCY = 16
STATUSES = {"ok", "partial", "rejected", "expired", "duplicate", "failed", "indeterminate"}
PROVOKED_ALERTS = {"WeComIndeterminateResults", "WeComFrequencyLimitHit"}
HOSTILE_CORP = "ww-not-configured-7f3a"

Series = list[dict[str, Any]]


def values(series: Series) -> list[float]:
    """The sample values of an instant query's result."""
    return [float(s["value"][1]) for s in series]


def by_label(series: Series, label: str) -> dict[str, float]:
    """Sample values by one label."""
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in series}


def some_number(series: Series) -> bool:
    """At least one value is a number (a quantile of an empty window is NaN)."""
    return any(not math.isnan(v) for v in values(series))


def returns_data(series: Series) -> bool:
    """Any result will do: the panel's situation is covered by its returning data at all."""
    return bool(series)


# What each panel must show after the run, beyond returning data: the situation it is for.
SITUATIONS: dict[str, Callable[[Series], bool]] = {
    "Commands per second by status": lambda s: (
        {k for k, v in by_label(s, "status").items() if v > 0} >= STATUSES
    ),
    "Indeterminate in range": lambda s: values(s)[0] >= 1,
    "Failed in range": lambda s: values(s)[0] >= 1,
    "End-to-end latency": some_number,
    "WeCom API latency": some_number,
    "Rate-limiter wait by corp": some_number,
    "Rejected, dead-lettered and unroutable": lambda s: max(values(s)) > 0,
    "API calls per second by errcode": lambda s: (
        {k for k, v in by_label(s, "errcode").items() if v > 0}
        >= {"0", "45009", "45033", "40058", "60140", "network"}
    ),
    "45009 and 45033 in range": lambda s: (
        set(by_label(s, "errcode")) == {"45009", "45033"} and min(values(s)) >= 1
    ),
    "Retries by reason": lambda s: max(values(s)) > 0,
    "Token refreshes": lambda s: by_label(s, "result").get("ok", 0) > 0,
    "Invalid users per second": lambda s: values(s)[0] > 0,
    "Deferred to the delay queue": lambda s: values(s)[0] > 0,
    "Concurrency limit per corp": lambda s: min(values(s)) < CONCURRENCY,
    "Messages ready": lambda s: max(values(s)) >= 1,
    "Consumers": lambda s: max(values(s)) == 2,
    "Ready": lambda s: values(s) == [1.0, 1.0],
    "Scraped": lambda s: values(s) == [1.0, 1.0],
    "Version": lambda s: values(s) == [2.0],
}


@dataclass
class Prometheus:
    """Queries a running Prometheus."""

    url: str
    session: aiohttp.ClientSession

    async def query(self, expr: str) -> Series:
        """An instant query's result; raises when Prometheus refuses the expression."""
        async with self.session.get(f"{self.url}/api/v1/query", params={"query": expr}) as answer:
            body = await answer.json()
        if body["status"] != "success":
            raise AssertionError(f"{expr}: {body.get('error')}")
        result: Series = body["data"]["result"]
        return result

    async def alert_states(self) -> dict[str, str]:
        """Alerts pending or firing, by name."""
        async with self.session.get(f"{self.url}/api/v1/alerts") as answer:
            body = await answer.json()
        return {a["labels"]["alertname"]: a["state"] for a in body["data"]["alerts"]}


def prometheus_config(worker_ports: list[int], rabbitmq_port: int) -> str:
    """Scrape both workers and the broker every second; evaluate the rules every second."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{p}" for p in worker_ports]}],
            },
            {
                "job_name": "rabbitmq",
                "metrics_path": "/metrics/detailed",
                "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
                "static_configs": [{"targets": [f"127.0.0.1:{rabbitmq_port}"]}],
            },
        ],
    }
    return yaml.safe_dump(config)


def rules_for(prefix: str) -> str:
    """The alert rules with the contract's queue names replaced by this test's."""
    return RULES.read_text("utf-8").replace("wecom.card_update.", prefix)


@dataclass
class Rig:
    """The simulator, the broker, two workers (not yet started) and Prometheus."""

    sim: RunningSimulator
    node: RabbitMQNode
    prefix: str
    workers: list[WorkerProcess]
    prometheus: Prometheus


@pytest.fixture
async def rig(
    rabbitmq_with_prometheus: RabbitMQNode, tmp_path: Path, queue_prefix: str
) -> AsyncIterator[Rig]:
    """Everything started but the workers; all stopped afterwards."""
    node = rabbitmq_with_prometheus
    assert node.prometheus_port is not None
    settings = {
        "WECOM_RETRY_BUDGET": "1.5",
        "WECOM_MAX_LIMITER_WAIT": "1",
        "WECOM_CONCURRENCY": str(CONCURRENCY),
        "WECOM_LOG_LEVEL": "info",
    }
    config = SimulatorConfig(apps=(SimApp(CORP, AGENT, SECRET),))
    async with run_simulator(config) as sim:
        workers = [
            WorkerProcess(
                amqp_url=node.url,
                api_base=sim.url,
                state_dir=tmp_path / name,
                queue_prefix=queue_prefix,
                extra_env=settings,
                port=free_port(),
            )
            for name in ("a", "b")
        ]
        server = PrometheusServer(
            prometheus_config([w.port for w in workers], node.prometheus_port),
            {"rules.yaml": rules_for(queue_prefix)},
        )
        try:
            await asyncio.to_thread(server.start)
            async with aiohttp.ClientSession() as session:
                yield Rig(sim, node, queue_prefix, workers, Prometheus(server.url, session))
        finally:
            for worker in workers:
                worker.close()
            server.close()


async def until(check: Callable[[], Any], timeout: float, what: str) -> None:
    """Poll an async check until it returns true."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what}")
        await asyncio.sleep(0.5)


async def scraped(prometheus: Prometheus, worker: WorkerProcess) -> None:
    """Wait until Prometheus holds a sample of the worker: its counters start at zero there."""

    async def up() -> bool:
        series = await prometheus.query(f'up{{instance="127.0.0.1:{worker.port}"}}')
        return values(series) == [1.0]

    await until(up, 30, f"a scrape of worker :{worker.port}")


async def drive(rig: Rig) -> None:
    """Every status, a 45033 and a 45009: one worker first (its own SQLite store sees the
    duplicate), then both."""
    first, second = rig.workers
    rig.sim.state.add_faults(
        Fault(kind="errcode", errcode=40058, errmsg="invalid parameter", response_code="rc-bad"),
        Fault(kind="lost_answer", response_code="rc-lost"),
        Fault(kind="concurrent_limit", response_code="rc-busy"),
        Fault(kind="freq_limit", response_code="rc-freq"),
    )
    await asyncio.to_thread(first.start)
    await scraped(rig.prometheus, first)
    queues = first.queues
    async with Upstream(rig.node.url, queues) as up:
        await up.publish(command("ok", "rc-ok"))
        await up.publish(command("partial", "rc-partial", userids=["zhangsan", "Invalid-Li"]))
        await up.publish(command("invalid", "rc-x", replace_name=""))
        await up.publish(command("expired", "rc-old", code_issued_at=time.time() - 73 * 3600))
        await up.publish(command("failed", "rc-bad"))
        first_results = await up.results(5)
        await up.publish(command("again", "rc-ok"))
        first_results.update(await up.results(1))
        await asyncio.to_thread(second.start)
        await scraped(rig.prometheus, second)
        await up.publish(command("lost", "rc-lost"))
        await up.publish(command("busy", "rc-busy"))
        second_results = await up.results(2)
        if time.time() % 60 > 57:  # a 45009 blocks to the minute's end: make it more than 1 s
            await asyncio.sleep(3)
        await up.publish(command("freq", "rc-freq"))  # 45009, then deferred: no result awaited
    statuses = {cid: r.status for cid, r in (first_results | second_results).items()}
    assert statuses == {
        "ok": "ok",
        "partial": "partial",
        "invalid": "rejected",
        "expired": "expired",
        "failed": "failed",
        "again": "duplicate",
        "lost": "indeterminate",
        "busy": "ok",
    }


async def missing(rig: Rig, variables: dict[str, str]) -> dict[str, str]:
    """What is not yet shown: panels and alerts without data or situation, alerts not raised."""
    problems: dict[str, str] = {}
    for query in panel_queries():
        series = await rig.prometheus.query(substitute(query.expr, variables))
        situation = SITUATIONS.get(query.panel, returns_data)
        if not series:
            problems[f"{query.panel} / {query.legend}"] = "no data"
        elif query.expr == first_expr(query.panel) and not situation(series):
            problems[query.panel] = f"does not show its situation: {series}"
    for alert in alerts():
        if not await rig.prometheus.query(alert.value.replace("wecom.card_update.", rig.prefix)):
            problems[alert.name] = f"no data for {alert.value}"
    states = await rig.prometheus.alert_states()
    for name in PROVOKED_ALERTS:
        if states.get(name) not in {"pending", "firing"}:
            problems[name] = f"state {states.get(name, 'inactive')}"
    return problems


async def test_every_panel_and_alert_returns_data_on_a_live_run(rig: Rig) -> None:
    """Given the situations driven through two workers, when Prometheus has scraped them, then
    every panel and alert query parses and returns data, each panel shows its situation, and the
    indeterminate and 45009 alerts are pending or firing."""
    await drive(rig)
    variables = {
        "__rate_interval": WINDOW,
        "__range": WINDOW,
        "job": JOB,
        "command_queue": f"{rig.prefix}commands",
        "dead_letter_queue": f"{rig.prefix}dead",
    }
    problems: dict[str, str] = {}

    async def everything_shows() -> bool:
        problems.clear()
        problems.update(await missing(rig, variables))
        return not problems

    try:
        await until(everything_shows, SETTLE_TIMEOUT, "every panel and alert")
    except AssertionError:
        pytest.fail(f"panels and alerts without their data: {problems}")
    assert {q.panel for q in panel_queries()} >= set(SITUATIONS)


async def test_metrics_name_no_unconfigured_corp_and_no_created_series(rig: Rig) -> None:
    """Given a command naming a corp the worker does not serve, when it is rejected, then no
    series carries that corp (label values are bounded), and no *_created series exists."""
    worker = rig.workers[0]
    await asyncio.to_thread(worker.start)
    async with Upstream(rig.node.url, worker.queues) as up:
        await up.publish({**command("hostile", "rc-h"), "corp_id": HOSTILE_CORP})
        results = await up.results(1)
    assert results["hostile"].status == "rejected"
    status, exposition = await asyncio.to_thread(worker.get, "/metrics")
    assert status == 200
    assert 'wecom_commands_total{status="rejected"} 1.0' in exposition
    assert HOSTILE_CORP not in exposition
    assert "_created" not in exposition
    assert 'wecom_worker_build_info{version="' in exposition


def first_expr(panel: str) -> str:
    """A panel's first query: the one its situation is checked on."""
    return next(q.expr for q in panel_queries() if q.panel == panel)
