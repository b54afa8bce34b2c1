"""Throughput of 1, 2 and 3 worker replicas on one Redis, and the Redis store against SQLite.

    .venv/bin/python bench/replicas.py [--count 5000] [--repeat 3]
        [--scenarios sqlite-1,redis-1,redis-2,redis-3]

Starts its own RabbitMQ and Redis (``tests/services.py``; Redis with AOF fsynced on
every write, as the single-use promise needs) and, per scenario, the WeCom simulator
as a subprocess answering at once. Every scenario gets its own queues and the same
``--count`` commands (distinct response_codes), with the rate limit far above reach
(``WECOM_RATE_LIMIT=1000000/s``): what is measured is the worker's own cost.

* ``sqlite-N`` / ``redis-N``: N worker processes on that state store (SQLite takes one
  process per file, so only ``sqlite-1``). With Redis the rate limiter, the token cache
  and the 45033 cap are Redis's too, as in production.

The replicas are started on an empty queue; once every one answers ``/readyz`` (and
half a second more for its start-up work) each replica's CPU (user + sys, every
thread, from ``/proc/PID/stat``, as ``bench/throughput.py`` reads it) is read, the
backlog is published with confirms (``bench/throughput.py``'s ``prefill``) and the
window runs to the last result. Publishing here instead of before the start lets
every replica take its share from the first command (the first one ready would
otherwise take a prefetch's worth before the others start). Redis's and the broker's
CPU over the window are shown too. On a 2-core machine the replicas, Redis, the
broker, the simulator and this process share the cores: the scaling curve says what
one such machine gives, not what a cluster would.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import aiormq
import redis
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/ and bench/ are not installed packages

from bench.throughput import (  # noqa: E402 - needs ROOT on sys.path
    BenchError,
    Children,
    ResultCounter,
    command_bodies,
    cpu_seconds,
    declare,
    group_cpu,
    machine_busy,
    pids_with,
    prefill,
    simulator_calls,
    wait_for_line,
)
from tests.services import RabbitMQNode, RedisServer, free_port  # noqa: E402
from tests.worker_process import AGENT, CORP, SECRET  # noqa: E402

SCENARIOS = ("sqlite-1", "redis-1", "redis-2", "redis-3")
TARGET_REDIS_TO_SQLITE = 1.25
TARGET_SCALING = {2: 1.8, 3: 2.5}  # N Redis replicas against one, while the machine has room
READY_POLL = 0.01
SETTLE = 0.5  # after the last replica is ready: its start-up work (store report, token) ends
LISTENING = re.compile(r"simulator listening on (http://\S+)")


@dataclass
class Outcome:
    """The figures of one scenario."""

    scenario: str
    replicas: int
    commands: int
    seconds: float
    rate: float
    cpu_us_per_command: float  # every replica together
    replica_cpu_s: list[float]
    redis_cpu_us_per_command: float | None
    broker_cpu_us_per_command: float | None
    simulator_cpu_us_per_command: float
    machine_busy: float  # share of all CPUs not idle during the window
    statuses: dict[str, int]
    simulator_calls: int | None


@dataclass
class Rig:
    """What every scenario shares."""

    amqp_url: str
    broker_pids: list[int]
    redis: RedisServer
    children: Children
    work: Path
    args: argparse.Namespace


def parse_scenario(name: str) -> tuple[str, int]:
    """``redis-3`` -> ("redis", 3)."""
    store, _, count = name.partition("-")
    return store, int(count)


def worker_env(
    rig: Rig, store: str, queues: dict[str, str], api_base: str, port: int
) -> dict[str, str]:
    """One replica's environment: as bench/throughput.py's, on the scenario's store."""
    if store == "redis":
        state_url = rig.redis.url
    else:
        state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=rig.work))
        state_url = f"sqlite:///{state_dir / 'state.sqlite3'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WECOM_")}
    env.update(
        {
            "WECOM_AMQP_URL": rig.amqp_url,
            "WECOM_API_BASE": api_base,
            "WECOM_CORP_ID": CORP,
            "WECOM_AGENT_ID": str(AGENT),
            "WECOM_SECRET": SECRET,
            "WECOM_STATE_URL": state_url,
            "WECOM_HTTP_HOST": "127.0.0.1",
            "WECOM_HTTP_PORT": str(port),
            "WECOM_LOG_LEVEL": "warning",
            "WECOM_RATE_LIMIT": "1000000/s",
            "WECOM_PREFETCH": str(rig.args.prefetch),
            "WECOM_CONCURRENCY": str(rig.args.concurrency),
            "WECOM_SHUTDOWN_GRACE": "10",
            "WECOM_COMMAND_QUEUE": queues["commands"],
            "WECOM_RESULT_QUEUE": queues["results"],
            "WECOM_DEAD_LETTER_QUEUE": queues["dead"],
            "WECOM_DELAY_QUEUE": queues["delay"],
        }
    )
    return env


async def wait_ready(rig: Rig, name: str, port: int) -> None:
    """Until a replica's /readyz answers 200."""
    url = f"http://127.0.0.1:{port}/readyz"
    deadline = time.monotonic() + 60.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as answer:
                    if answer.status == 200:
                        return
            rig.children.check_alive(name)
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not ready:\n{rig.children.tail(name)}")
            await asyncio.sleep(READY_POLL)


async def run_scenario(rig: Rig, scenario: str, bodies: list[tuple[str, bytes]]) -> Outcome:
    """Start the replicas, publish the backlog, measure until every result is in, stop them."""
    store, replicas = parse_scenario(scenario)
    prefix = f"bench.replicas.{secrets.token_hex(3)}.{scenario}."
    queues = {name: f"{prefix}{name}" for name in ("commands", "results", "dead")}
    queues["delay"] = f"{prefix}commands.delay"
    with redis.Redis(port=rig.redis.port) as client:
        client.flushall()
    count = len(bodies)
    async with aiormq.connect(rig.amqp_url) as connection:
        channel = await connection.channel()
        try:
            await declare(channel, queues)
            counter = ResultCounter(count)

            async def publish() -> None:
                await prefill(channel, queues["commands"], bodies)

            consume = await channel.basic_consume(
                queues["results"], counter.on_message, no_ack=True
            )
            try:
                return await measure(
                    rig,
                    scenario,
                    store=store,
                    replicas=replicas,
                    queues=queues,
                    counter=counter,
                    publish=publish,
                )
            finally:
                if consume.consumer_tag is not None:
                    await channel.basic_cancel(consume.consumer_tag)
        finally:
            for name in queues.values():
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)


async def measure(
    rig: Rig,
    scenario: str,
    *,
    store: str,
    replicas: int,
    queues: dict[str, str],
    counter: ResultCounter,
    publish: Callable[[], Awaitable[None]],
) -> Outcome:
    """The simulator and the replicas over the backlog; the figures."""
    # Names (and so log files) of their own per run: a log searched for the simulator's port
    # must not hold an earlier run's.
    run = secrets.token_hex(2)
    sim_name = f"simulator-{scenario}-{run}"
    sim_argv = [
        sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", "0", "--quiet",
        "--app", f"{CORP}:{AGENT}:{SECRET}",
    ]  # fmt: skip
    sim_pid = rig.children.spawn(sim_name, sim_argv)
    names = [f"{scenario}-{run}-r{index}" for index in range(replicas)]
    try:
        listening = await wait_for_line(rig.children, sim_name, LISTENING, 30.0)
        api_base = listening.group(1)
        # Redis rewrites its command line to its process title: "redis-server 127.0.0.1:PORT".
        redis_pids = pids_with(f"127.0.0.1:{rig.redis.port}")
        ports = [free_port() for _ in names]
        pids = [
            rig.children.spawn(
                name,
                [sys.executable, "-m", "worker", "run"],
                worker_env(rig, store, queues, api_base, port),
            )
            for name, port in zip(names, ports, strict=True)
        ]
        await asyncio.gather(
            *(wait_ready(rig, name, port) for name, port in zip(names, ports, strict=True))
        )
        await asyncio.sleep(SETTLE)
        replicas_before = [cpu_seconds(pid) for pid in pids]
        redis_before = group_cpu(redis_pids)
        broker_before = group_cpu(rig.broker_pids) if rig.broker_pids else None
        sim_before = cpu_seconds(sim_pid)
        machine_before = machine_busy()
        started_at = time.monotonic()
        await publish()
        deadline = time.monotonic() + rig.args.timeout
        while not counter.done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(counter.done.wait(), 0.5)
            for name in names:
                rig.children.check_alive(name)
            if time.monotonic() > deadline:
                raise BenchError(f"{scenario}: {counter.count} of {counter.expected} results")
        replica_cpu = [
            cpu_seconds(pid) - before for pid, before in zip(pids, replicas_before, strict=True)
        ]
        machine_cpu = machine_busy() - machine_before
        sim_cpu = cpu_seconds(sim_pid) - sim_before
        redis_cpu = group_cpu(redis_pids) - redis_before
        broker_cpu = (
            group_cpu(rig.broker_pids) - broker_before if broker_before is not None else None
        )
        calls = await simulator_calls(api_base)
    finally:
        for name in names:
            rig.children.stop(name)
        rig.children.stop(sim_name)
    assert counter.last_at is not None
    n = counter.expected
    seconds = counter.last_at - started_at
    return Outcome(
        scenario=scenario,
        replicas=replicas,
        commands=n,
        seconds=seconds,
        rate=n / seconds,
        cpu_us_per_command=sum(replica_cpu) / n * 1e6,
        replica_cpu_s=[round(cpu, 3) for cpu in replica_cpu],
        redis_cpu_us_per_command=redis_cpu / n * 1e6 if store == "redis" else None,
        broker_cpu_us_per_command=broker_cpu / n * 1e6 if broker_cpu is not None else None,
        simulator_cpu_us_per_command=sim_cpu / n * 1e6,
        machine_busy=machine_cpu / (len(os.sched_getaffinity(0)) * seconds),
        statuses=dict(counter.statuses),
        simulator_calls=calls,
    )


def median_run(outcomes: list[Outcome]) -> Outcome:
    """The run with the median worker CPU per command (the table shows whole runs)."""
    ordered = sorted(outcomes, key=lambda o: o.cpu_us_per_command)
    return ordered[(len(ordered) - 1) // 2]


def fmt(value: float | None, spec: str) -> str:
    """A figure, or a dash."""
    return "-" if value is None else format(value, spec)


def print_table(outcomes: list[Outcome]) -> None:
    """The scaling table and the Redis/SQLite ratio."""
    print(
        f"{'scenario':<10} {'replicas':>8} {'commands':>8} {'seconds':>8} {'cmd/s':>8} "
        f"{'µs CPU/cmd':>10} {'CPU s per replica':<22} {'Redis µs/cmd':>12} {'broker µs/cmd':>13} "
        f"{'sim µs/cmd':>10} {'busy':>5}"
    )
    for o in outcomes:
        per_replica = " ".join(f"{cpu:.2f}" for cpu in o.replica_cpu_s)
        print(
            f"{o.scenario:<10} {o.replicas:>8} {o.commands:>8} {o.seconds:>8.2f} {o.rate:>8,.0f} "
            f"{o.cpu_us_per_command:>10.0f} {per_replica:<22} "
            f"{fmt(o.redis_cpu_us_per_command, '.0f'):>12} "
            f"{fmt(o.broker_cpu_us_per_command, '.0f'):>13} "
            f"{o.simulator_cpu_us_per_command:>10.0f} {o.machine_busy:>5.0%}"
        )
    print(
        "busy: share of all CPUs in use during the window (every process); a machine near 100 % "
        "has no room for another replica"
    )


def scaling(outcomes: list[Outcome]) -> dict[int, float]:
    """redis-N's throughput over redis-1's, for N > 1."""
    by_replicas = {o.replicas: o for o in outcomes if o.scenario.startswith("redis-")}
    one = by_replicas.get(1)
    if one is None:
        return {}
    return {n: o.rate / one.rate for n, o in sorted(by_replicas.items()) if n > 1}


def print_scaling(outcomes: list[Outcome]) -> None:
    """Each scaling target with its ratio, and whether the machine had room for it."""
    by_replicas = {o.replicas: o for o in outcomes if o.scenario.startswith("redis-")}
    for n, value in scaling(outcomes).items():
        target = TARGET_SCALING.get(n)
        if target is None:
            continue
        one = by_replicas[1]
        # Every process's CPU per command: what one more replica would need room for.
        cpu_per_command = one.machine_busy * len(os.sched_getaffinity(0)) / one.rate * 1e6
        room = 1 / one.machine_busy  # all the CPUs busy at that cost per command
        verdict = "MET" if value >= target else "NOT MET"
        print(
            f"  {verdict:<8} redis-{n} >= {target}x redis-1: {value:.2f}x "
            f"(redis-1 keeps {one.machine_busy:.0%} of the CPUs busy at "
            f"{cpu_per_command:,.0f} µs of machine CPU per command: the cores allow "
            f"{room:.2f}x at most)"
        )


def ratio(outcomes: list[Outcome]) -> float | None:
    """redis-1's worker CPU per command over sqlite-1's."""
    by_name = {o.scenario: o for o in outcomes}
    if "redis-1" in by_name and "sqlite-1" in by_name:
        return by_name["redis-1"].cpu_us_per_command / by_name["sqlite-1"].cpu_us_per_command
    return None


def problems(outcomes: list[Outcome]) -> list[str]:
    """Results that are not one ok per command, or calls that are not one per command."""
    wrong = []
    for o in outcomes:
        if o.statuses != {"ok": o.commands}:
            wrong.append(f"{o.scenario}: statuses {o.statuses}")
        # One update per command and one gettoken for all replicas (the shared token cache).
        if o.simulator_calls is not None and o.simulator_calls != o.commands + 1:
            wrong.append(f"{o.scenario}: {o.simulator_calls} calls for {o.commands} commands")
    return wrong


async def run(args: argparse.Namespace, rig: Rig) -> int:
    """Every scenario in turn; the table; the JSON."""
    bodies = command_bodies(args.example, args.count, secrets.token_hex(3))
    print(
        f"backlog: {args.count} commands; prefetch {args.prefetch}, concurrency "
        f"{args.concurrency}; {len(os.sched_getaffinity(0))} CPUs; Redis AOF appendfsync always"
    )
    runs: dict[str, list[Outcome]] = {scenario: [] for scenario in args.scenarios}
    for round_ in range(args.repeat):
        for scenario in args.scenarios:  # interleaved: a busy spell of the machine hits all
            run_id = secrets.token_hex(3)  # fresh codes in every run
            scenario_bodies = [
                (command_id, body.replace(b"bench-rc-", f"bench-rc-{run_id}-".encode()))
                for command_id, body in bodies
            ]
            outcome = await run_scenario(rig, scenario, scenario_bodies)
            runs[scenario].append(outcome)
            print(
                f"  [{round_ + 1}/{args.repeat}] {scenario}: {outcome.commands} in "
                f"{outcome.seconds:.2f} s = {outcome.rate:,.0f}/s, "
                f"{outcome.cpu_us_per_command:.0f} µs worker CPU per command"
            )
    outcomes = [median_run(runs[scenario]) for scenario in args.scenarios]
    print()
    print_table(outcomes)
    redis_to_sqlite = ratio(outcomes)
    print()
    print_scaling(outcomes)
    if redis_to_sqlite is not None:
        verdict = "MET" if redis_to_sqlite <= TARGET_REDIS_TO_SQLITE else "NOT MET"
        print(
            f"\nRedis store / SQLite store, worker CPU per command: {redis_to_sqlite:.2f}x "
            f"(target <= {TARGET_REDIS_TO_SQLITE}x): {verdict}"
        )
    wrong = problems([o for group in runs.values() for o in group])
    report = {
        "count": args.count,
        "repeat": args.repeat,
        "runs": {scenario: [asdict(o) for o in group] for scenario, group in runs.items()},
        "cpus": len(os.sched_getaffinity(0)),
        "scenarios": [asdict(o) for o in outcomes],
        "redis_to_sqlite_cpu": redis_to_sqlite,
        "scaling": scaling(outcomes),
        "problems": wrong,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    print(f"written: {args.json}")
    for problem in wrong:
        print(f"WRONG: {problem}")
    return 1 if wrong else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="backlog per scenario")
    parser.add_argument("--example", default="text_notice", help="seed request")
    parser.add_argument(
        "--scenarios",
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        default=list(SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)}",
    )
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64, help="WECOM_CONCURRENCY")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per scenario, interleaved; the median shows"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "replicas.json")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Start the broker and Redis, run, stop everything."""
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="wecom-bench-replicas-"))
    children = Children(work)
    print("starting RabbitMQ and Redis ...")
    with RabbitMQNode() as node, RedisServer() as server:
        rig = Rig(node.url, pids_with(str(node.base_dir)), server, children, work, args)
        try:
            code = uvloop.run(run(args, rig))
        except BenchError as error:
            print(f"bench failed: {error}\nlogs kept in {work}")
            return 1
        finally:
            children.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
