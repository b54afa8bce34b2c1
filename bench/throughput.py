"""Throughput of the worker against a bare aio-pika loop (the ceiling), on one broker, in one run.

    make bench                       # = .venv/bin/python bench/throughput.py
    .venv/bin/python bench/throughput.py --count 20000 --json bench/results/throughput.json

Starts its own RabbitMQ (``tests.services.RabbitMQNode``; or uses ``--amqp-url``)
and, per worker scenario, the WeCom simulator as a subprocess. Every scenario
gets its own queues and the same backlog: ``--count`` commands (the seed's
``--example`` request, distinct response_codes, identical bytes in every
scenario), published with confirms and counted on the queue before the consumer
starts. The bench then consumes the result queue (no-ack) until every result is
there; the same counting consumer runs in every scenario.

* ``ceiling``: ``bench/ceiling.py`` -- consume with prefetch 256, publish a
  reply (a worker-sized Result) with an awaited confirm, ack. Nothing else.
* ``worker-0ms``: ``python -m worker run`` against the simulator answering at once.
* ``worker-100ms``: the same with ``--latency-ms 100``; its bound is
  ``WECOM_CONCURRENCY / latency``.

The window runs from "consuming" (the ceiling prints it; for the worker the
first ``/readyz`` 200, or the first result if that comes earlier) to the last
result on the result queue. CPU time (user + sys, every thread) is read from
``/proc/PID/stat`` at both ends of the window, so imports and start-up are left
out; peak RSS is ``VmHWM`` from ``/proc/PID/status`` at the end. The broker's and
the simulator's CPU per command are shown too: on a small machine they share
the cores with the process measured.

``--profile DIR`` runs the ceiling and the worker under cProfile (or, with
``--profiler pyinstrument``, a CPU-time sampler) for the window only (SIGUSR1 /
SIGUSR2; see ``bench/profile_worker.py``) and writes ``DIR/<scenario>.prof``
(``.pyisession``); summarise with ``bench/profile_report.py``. Figures taken
under a profiler are not comparable with unprofiled ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import msgspec
import uvloop
from aiormq.abc import DeliveredMessage

from wecom_card_contracts import Result, decode_result, encode_result
from wecom_card_contracts.examples import seed_examples

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))  # tests/ is not an installed package

from bench.http_client import bodies as update_bodies  # noqa: E402
from bench.http_client import drive, fetch_token, origin_client  # noqa: E402
from tests.services import RabbitMQNode, RedisServer, free_port  # noqa: E402 - needs ROOT on sys.path
from tests.worker_process import AGENT, CORP, SECRET  # noqa: E402 - same
from worker.amqp import Topology  # noqa: E402 - same

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
SCENARIOS = (
    "ceiling",
    "worker-0ms",
    "worker-redis-0ms",
    "worker-100ms",
    "steady-ceiling",
    "steady-50ms",
)
STEADY_SCENARIOS = frozenset({"steady-ceiling", "steady-50ms"})
REDIS_SCENARIOS = frozenset({"worker-redis-0ms"})
ZERO_LATENCY_SCENARIOS = frozenset({"worker-0ms", "worker-redis-0ms"})  # compared with ceiling
PUBLISH_BATCH = 1000
READY_POLL = 0.01
PROGRESS_EVERY = 10.0
# The performance targets (ratios within one run).
TARGET_CEILING_RATIO = 1.0  # worker-0ms (SQLite) throughput / the bare loop's
TARGET_REDIS_CEILING_RATIO = 0.8  # worker-redis-0ms throughput / the bare loop's
TARGET_CPU_RATIO = 1.0  # worker-0ms CPU per command / the bare loop's per message
TARGET_BOUND_RATIO = 0.98  # worker-100ms / (WECOM_CONCURRENCY / latency)
BARE_HTTP_CALLS = 5000  # calls of the bare HTTP loop against worker-100ms's simulator
TARGET_ADDED_P50_MS = 2.0  # steady-50ms: publish to result, minus the WeCom call
TARGET_ADDED_P99_MS = 10.0
TARGET_RSS_MIB = 60.0
STEADY_RATE = 200.0  # commands per second in steady-50ms
STEADY_LATENCY_MS = 50.0


class BenchError(RuntimeError):
    """The benchmark could not run as intended, or the worker's results were wrong."""


# ---------------------------------------------------------------------------- /proc accounting


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (every thread) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def thread_cpu(pid: int) -> dict[int, float]:
    """User + system CPU of each thread of a process, by thread id."""
    threads: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            threads[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return threads


def status_mib(pid: int, key: str) -> float:
    """A ``kB`` line of ``/proc/PID/status`` (VmHWM, VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024 / MIB
    raise BenchError(f"no {key} in /proc/{pid}/status")


def pids_with(marker: str) -> list[int]:
    """Processes whose command line contains ``marker`` (the broker's data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def group_cpu(pids: list[int]) -> float:
    """CPU of several processes together; those gone count as 0."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine spent not idle so far (every CPU, every process)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / CLOCK_TICKS


@dataclass
class CpuMark:
    """CPU readings of everything that works during a window, taken at one moment."""

    at: float
    consumer: float
    threads: dict[int, float]
    broker: float | None
    simulator: float | None
    bench: float
    machine: float


def cpu_mark(pid: int, broker_pids: list[int], simulator_pid: int | None) -> CpuMark:
    """Read every CPU counter now."""
    return CpuMark(
        at=time.monotonic(),
        consumer=cpu_seconds(pid),
        threads=thread_cpu(pid),
        broker=group_cpu(broker_pids) if broker_pids else None,
        simulator=cpu_seconds(simulator_pid) if simulator_pid is not None else None,
        bench=cpu_seconds(os.getpid()),
        machine=machine_busy(),
    )


# ---------------------------------------------------------------------------------- processes


class Children:
    """Every process the bench starts; each logs to a file; all are stopped at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start a process in its own session; its stdout and stderr go to ``<name>.log``."""
        with self.log(name).open("ab") as out:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.running[name] = process
        return process.pid

    def log(self, name: str) -> Path:
        """The log file of a process."""
        return self.logs / f"{name}.log"

    def tail(self, name: str, lines: int = 30) -> str:
        """The last lines a process wrote."""
        try:
            text = self.log(name).read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self, name: str) -> None:
        """Raise with its output if the process has exited."""
        code = self.running[name].poll()
        if code is not None:
            raise BenchError(f"{name} exited with {code}:\n{self.tail(name)}")

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Send a signal to a running process."""
        self.running[name].send_signal(sig)

    def stop(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; the exit code."""
        process = self.running.pop(name)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  {name} did not stop within {timeout:.0f} s; killed")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait()

    def stop_all(self) -> None:
        """Stop everything still running."""
        for name in list(self.running):
            self.stop(name, timeout=15.0)

    def search(self, name: str, pattern: re.Pattern[str]) -> re.Match[str] | None:
        """The first match of ``pattern`` in what a process wrote so far."""
        try:
            return pattern.search(self.log(name).read_text("utf-8", "replace"))
        except FileNotFoundError:
            return None


async def wait_for_line(
    children: Children, name: str, pattern: re.Pattern[str], within: float
) -> re.Match[str]:
    """The first match of ``pattern`` in a process's log, waiting while it runs."""
    deadline = time.monotonic() + within
    while True:
        found = children.search(name, pattern)
        if found:
            return found
        children.check_alive(name)
        if time.monotonic() > deadline:
            raise BenchError(f"{name} printed no {pattern.pattern!r} in {within:.0f} s")
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------- AMQP


def command_bodies(example: str, count: int, run_id: str) -> list[tuple[str, bytes]]:
    """``count`` commands (command_id, JSON bytes): one seed request, distinct response_codes."""
    request = dict(seed_examples()[example])
    request["agentid"] = AGENT
    bodies = []
    for index in range(count):
        command_id = f"bench-{index:06d}"
        request["response_code"] = f"bench-rc-{run_id}-{index:06d}"
        command = {"command_id": command_id, "request": request}
        bodies.append((command_id, msgspec.json.encode(command)))
    return bodies


def ceiling_reply(run_id: str) -> bytes:
    """What the ceiling publishes per command: a Result the size of the worker's."""
    now = time.time()
    result = Result(
        command_id="bench-000000",
        correlation_id="bench-000000",
        status="ok",
        agentid=AGENT,
        response_code=f"bench-rc-{run_id}-000000",
        errcode=0,
        errmsg="ok",
        invalid_users=[],
        attempts=1,
        received_at=now,
        finished_at=now,
    )
    return encode_result(result)


def topology(queues: dict[str, str]) -> Topology:
    """The worker's queue names and arguments for one scenario's queues."""
    return Topology(
        command_queue=queues["commands"],
        result_queue=queues["results"],
        dead_letter_queue=queues["dead"],
        delay_queue=queues["delay"],
    )


async def declare(channel: aiormq.abc.AbstractChannel, queues: dict[str, str]) -> None:
    """The command, result and dead-letter queues, with the arguments the worker declares them with.

    The worker refuses nothing here (it declares the same again); the ceiling
    consumes the same command queue (dead-letter exchange and all), passively.
    """
    t = topology(queues)
    await channel.queue_declare(t.dead_letter_queue, durable=True, arguments=t.durable_arguments())
    await channel.queue_declare(t.command_queue, durable=True, arguments=t.command_arguments())
    await channel.queue_declare(t.result_queue, durable=True, arguments=t.durable_arguments())


async def prefill(
    channel: aiormq.abc.AbstractChannel, queue: str, bodies: list[tuple[str, bytes]]
) -> float:
    """Publish the backlog with confirms, ``PUBLISH_BATCH`` at a time; the seconds it took."""
    started = time.monotonic()
    for first in range(0, len(bodies), PUBLISH_BATCH):
        batch = bodies[first : first + PUBLISH_BATCH]
        confirms = await asyncio.gather(
            *(
                channel.basic_publish(
                    body,
                    routing_key=queue,
                    mandatory=True,
                    properties=aiormq.spec.Basic.Properties(
                        content_type="application/json",
                        delivery_mode=2,
                        correlation_id=command_id,
                    ),
                )
                for command_id, body in batch
            )
        )
        refused = [c for c in confirms if not isinstance(c, aiormq.spec.Basic.Ack)]
        if refused:
            raise BenchError(f"the broker refused {len(refused)} backlog publishes: {refused[0]}")
    return time.monotonic() - started


async def wait_for_depth(
    channel: aiormq.abc.AbstractChannel, queue: str, expected: int, within: float = 60.0
) -> None:
    """Until the queue reports ``expected`` messages (quorum queue counts can lag a little)."""
    deadline = time.monotonic() + within
    while True:
        declared = await channel.queue_declare(queue, passive=True)
        if declared.message_count == expected:
            return
        if time.monotonic() > deadline:
            raise BenchError(
                f"{queue} holds {declared.message_count} messages, not {expected}, "
                f"{within:.0f} s after the backlog was confirmed"
            )
        await asyncio.sleep(0.05)


class ResultCounter:
    """Counts the results on a queue (no-ack consumer), with their statuses and arrival times."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.statuses: Counter[str] = Counter()
        self.command_ids: set[str | None] = set()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.undecodable = 0
        self.arrivals: dict[str, float] = {}  # correlation_id -> time.time() at arrival (steady)
        self.keep_arrivals = False
        self.done = asyncio.Event()

    async def on_message(self, message: DeliveredMessage) -> None:
        """aiormq's consumer callback."""
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
        self.count += 1
        packed = message.header.properties.content_type == "application/msgpack"
        try:
            result = decode_result(message.body, "msgpack" if packed else "json")
        except msgspec.DecodeError:
            self.undecodable += 1
        else:
            self.statuses[result.status] += 1
            self.command_ids.add(result.command_id)
        # By correlation_id (the bench's command_id): the ceiling's replies all carry one body.
        correlation_id = message.header.properties.correlation_id
        if self.keep_arrivals and correlation_id is not None:
            self.arrivals[correlation_id] = time.time()
        if self.count >= self.expected and not self.done.is_set():
            self.last_at = now
            self.done.set()


# ----------------------------------------------------------------------------------- scenarios


@dataclass
class Outcome:
    """The figures of one scenario."""

    scenario: str
    commands: int
    seconds: float
    rate: float
    steady_rate: float | None  # (n - 1) / (last result - first result)
    cpu_s: float
    cpu_us_per_command: float
    cpu_main_thread_s: float
    cpu_other_threads_s: float
    peak_rss_mib: float
    rss_at_end_mib: float
    broker_cpu_us_per_command: float | None
    simulator_cpu_us_per_command: float | None
    bench_cpu_us_per_command: float  # this process: the backlog's result counter
    other_cpu_us_per_command: float | None  # the rest of the machine (other processes, kernel)
    machine_busy: float  # share of all CPUs not idle during the window
    statuses: dict[str, int]
    distinct_command_ids: int
    prefill_seconds: float
    latency_ms: float | None = None
    bound_rate: float | None = None  # WECOM_CONCURRENCY / latency
    ratio_to_ceiling: float | None = None
    ratio_to_bound: float | None = None
    exit_code: int | None = None
    simulator_calls: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bench:
    """What every scenario shares."""

    amqp_url: str
    broker_pids: list[int]
    redis_url: str | None
    children: Children
    work: Path
    run_id: str
    bodies: list[tuple[str, bytes]]
    args: argparse.Namespace

    def queues(self, scenario: str) -> dict[str, str]:
        """Queue names of one scenario (unique per run)."""
        prefix = f"bench.{self.run_id}.{scenario}."
        return {
            "commands": f"{prefix}commands",
            "results": f"{prefix}results",
            "dead": f"{prefix}dead",
            "delay": f"{prefix}commands.delay",
        }

    def profile_path(self, scenario: str) -> Path | None:
        """Where the scenario's cProfile goes, when profiling."""
        if self.args.profile is None:
            return None
        directory: Path = self.args.profile
        directory.mkdir(parents=True, exist_ok=True)
        suffix = ".pyisession" if self.args.profiler == "pyinstrument" else ".prof"
        return directory.resolve() / f"{scenario}{suffix}"


async def run_scenario(bench: Bench, scenario: str, count: int) -> Outcome:
    """Pre-fill, start the consumer, measure until every result is in, stop it."""
    queues = bench.queues(scenario)
    bodies = bench.bodies[:count]
    consumer_tag = f"bench-results-{scenario}"
    async with aiormq.connect(bench.amqp_url) as connection:
        channel = await connection.channel()
        try:
            await declare(channel, queues)
            prefill_seconds = 0.0
            if scenario not in STEADY_SCENARIOS:
                prefill_seconds = await prefill(channel, queues["commands"], bodies)
                await wait_for_depth(channel, queues["commands"], count)
                print(
                    f"  {scenario}: backlog of {count} confirmed in {prefill_seconds:.1f} s "
                    f"({count / prefill_seconds:,.0f}/s)"
                )
            counter = ResultCounter(count)
            await channel.basic_qos(prefetch_count=0)
            consume = await channel.basic_consume(
                queues["results"], counter.on_message, no_ack=True, consumer_tag=consumer_tag
            )
            assert consume.consumer_tag == consumer_tag
            if scenario == "ceiling":
                outcome = await measure_ceiling(bench, queues, counter)
            elif scenario in STEADY_SCENARIOS:
                outcome = await measure_steady(
                    bench, scenario, queues, counter=counter, channel=channel, bodies=bodies
                )
            else:
                latency = 100.0 if scenario == "worker-100ms" else 0.0
                outcome = await measure_worker(bench, scenario, queues, counter, latency)
            outcome.prefill_seconds = prefill_seconds
            profile = bench.profile_path(scenario)
            if profile is not None:  # profile_report.py reads the window's size from here
                profile.with_suffix(".commands").write_text(f"{outcome.commands}\n")
        finally:
            with contextlib.suppress(Exception):
                await channel.basic_cancel(consumer_tag)
            buckets = [name for _, name in topology(queues).buckets()]
            for name in [*queues.values(), *buckets]:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)
    return outcome


async def measure_ceiling(
    bench: Bench,
    queues: dict[str, str],
    counter: ResultCounter,
    *,
    name: str = "ceiling",
    feed: Callable[[], Awaitable[None]] | None = None,
) -> Outcome:
    """The bare aio-pika loop over the backlog (or what ``feed`` publishes)."""
    reply = bench.work / "ceiling-reply.json"
    reply.write_bytes(ceiling_reply(bench.run_id))
    argv = [
        sys.executable,
        str(BENCH / "ceiling.py"),
        "--amqp-url", bench.amqp_url,
        "--queue", queues["commands"],
        "--reply-queue", queues["results"],
        "--reply-body", str(reply),
        "--prefetch", str(bench.args.prefetch),
    ]  # fmt: skip
    profile = bench.profile_path(name)
    if profile is not None:
        argv += ["--profile", str(profile)]
    pid = bench.children.spawn(name, argv)
    try:
        line = await wait_for_line(
            bench.children, name, re.compile(r'\{"event": "consuming".*\}'), 60.0
        )
        start = cpu_mark(pid, bench.broker_pids, None)
        started_at = float(json.loads(line.group(0))["at"])
        feeding = asyncio.ensure_future(feed()) if feed is not None else None
        try:
            return await finish_window(
                bench,
                name=name,
                pid=pid,
                counter=counter,
                started_at=started_at,
                start=start,
                sim_pid=None,
                profile=profile,
            )
        finally:
            await stop_feeding(feeding)
    finally:
        bench.children.stop(name)


async def measure_steady(
    bench: Bench,
    scenario: str,
    queues: dict[str, str],
    *,
    counter: ResultCounter,
    channel: aiormq.abc.AbstractChannel,
    bodies: list[tuple[str, bytes]],
) -> Outcome:
    """Commands at a steady ``STEADY_RATE``/s to a running worker, WeCom answering in 50 ms.

    ``steady-ceiling`` sends the same to the bare loop (no WeCom, no hold): the
    broker's own publish-to-reply time on this machine, the floor under the
    worker's added latency.

    The added latency of a command is the time from its publish (this
    process's ``time.time()`` just before the frame is written) to its result's
    arrival here, minus the simulator's 50 ms hold: what the worker, the broker
    and the loopback add around the WeCom call. The simulator's record of each
    call (its ``time``: when it answered, after the hold; same clock) splits
    that into the part before the call (consume, decode, claim, limiter,
    request) and the part after (answer read, record, publish confirmed, result
    delivered here).
    """
    counter.keep_arrivals = True
    published: dict[str, float] = {}

    async def feed() -> None:
        interval = 1.0 / STEADY_RATE
        confirms = []
        begun = time.monotonic()
        for index, (command_id, body) in enumerate(bodies):
            delay = begun + index * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            published[command_id] = time.time()
            confirms.append(
                asyncio.ensure_future(
                    channel.basic_publish(
                        body,
                        routing_key=queues["commands"],
                        mandatory=True,
                        properties=aiormq.spec.Basic.Properties(
                            content_type="application/json",
                            delivery_mode=2,
                            correlation_id=command_id,
                        ),
                    )
                )
            )
        answers = await asyncio.gather(*confirms)
        refused = [a for a in answers if not isinstance(a, aiormq.spec.Basic.Ack)]
        if refused:
            raise BenchError(f"the broker refused {len(refused)} steady publishes")

    if scenario == "steady-ceiling":
        outcome = await measure_ceiling(bench, queues, counter, name=scenario, feed=feed)
        hold = 0.0
    else:
        outcome = await measure_worker(
            bench, scenario, queues, counter, STEADY_LATENCY_MS, feed=feed, keep_calls=True
        )
        hold = STEADY_LATENCY_MS / 1000
    calls: dict[str, float] = outcome.extra.pop("call_times", {})
    added, before, after = [], [], []
    for index, (command_id, _) in enumerate(bodies):
        sent, arrived = published.get(command_id), counter.arrivals.get(command_id)
        if sent is None or arrived is None:
            continue
        added.append((arrived - sent - hold) * 1000)
        called = calls.get(f"bench-rc-{bench.run_id}-{index:06d}")
        if called is not None:
            before.append((called - hold - sent) * 1000)
            after.append((arrived - called) * 1000)
    outcome.extra["added_latency_ms"] = percentiles(added)
    outcome.extra["before_call_ms"] = percentiles(before)
    outcome.extra["after_call_ms"] = percentiles(after)
    outcome.extra["steady_rate"] = STEADY_RATE
    return outcome


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of some milliseconds (nearest rank)."""
    if not values:
        return {}
    ordered = sorted(values)
    last = len(ordered) - 1

    def rank(q: float) -> float:
        return round(ordered[min(last, round(q * last))], 3)

    return {"p50": rank(0.5), "p90": rank(0.9), "p99": rank(0.99), "max": round(ordered[-1], 3)}


async def measure_worker(
    bench: Bench,
    scenario: str,
    queues: dict[str, str],
    counter: ResultCounter,
    latency_ms: float,
    *,
    feed: Callable[[], Awaitable[None]] | None = None,
    keep_calls: bool = False,
) -> Outcome:
    """The real worker over the backlog (or what ``feed`` publishes), against a fresh simulator."""
    sim_name = f"simulator-{scenario}"
    sim_argv = [
        sys.executable, "-m", "simulator",
        "--host", "127.0.0.1",
        "--port", "0",
        "--quiet",
        "--app", f"{CORP}:{AGENT}:{SECRET}",
        "--latency-ms", str(latency_ms),
    ]  # fmt: skip
    sim_pid = bench.children.spawn(sim_name, sim_argv)
    try:
        listening = await wait_for_line(
            bench.children, sim_name, re.compile(r"simulator listening on (http://\S+)"), 30.0
        )
        api_base = listening.group(1)
        outcome = await run_worker(
            bench,
            scenario=scenario,
            queues=queues,
            counter=counter,
            api_base=api_base,
            sim_pid=sim_pid,
            feed=feed,
        )
        outcome.simulator_calls = await simulator_calls(api_base)
        if scenario == "worker-100ms":
            outcome.extra["bare_http_rate"] = await bare_http_rate(
                api_base, bench.args.concurrency, min(outcome.commands, BARE_HTTP_CALLS)
            )
        if keep_calls:
            outcome.extra["call_times"] = await simulator_call_times(api_base)
    finally:
        bench.children.stop(sim_name)
    outcome.latency_ms = latency_ms
    if latency_ms > 0 and scenario == "worker-100ms":
        outcome.bound_rate = bench.args.concurrency / (latency_ms / 1000)
        outcome.ratio_to_bound = outcome.rate / outcome.bound_rate
    return outcome


async def bare_http_rate(api_base: str, concurrency: int, calls: int) -> float:
    """What the simulator allows: ``concurrency`` coroutines doing nothing but update calls.

    Run in this process once the worker stopped, with the worker's HTTP client: the
    simulator answers a burst of calls one after another, so even a loop without a
    worker stays a few percent under ``concurrency / latency``.
    """
    token = await fetch_token(api_base, CORP, SECRET)
    post, close = await origin_client(api_base, token, concurrency)
    try:
        requests = update_bodies(secrets.token_hex(3), calls, AGENT)
        _, wall = await drive(post, requests, concurrency)
    finally:
        await close()
    return calls / wall


def worker_env(
    bench: Bench, scenario: str, queues: dict[str, str], api_base: str, port: int
) -> dict[str, str]:
    """The worker's environment: as tests/worker_process.py, tuned for throughput."""
    state_dir = Path(tempfile.mkdtemp(prefix="state-", dir=bench.work))
    state_url = f"sqlite:///{state_dir / 'state.sqlite3'}"
    if scenario in REDIS_SCENARIOS:
        if bench.redis_url is None:
            raise BenchError(f"{scenario} needs a Redis (started by main())")
        state_url = bench.redis_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("WECOM_")}
    env.update(
        {
            "WECOM_AMQP_URL": bench.amqp_url,
            "WECOM_API_BASE": api_base,
            "WECOM_CORP_ID": CORP,
            "WECOM_AGENT_ID": str(AGENT),
            "WECOM_SECRET": SECRET,
            "WECOM_STATE_URL": state_url,
            "WECOM_HTTP_HOST": "127.0.0.1",
            "WECOM_HTTP_PORT": str(port),
            "WECOM_LOG_LEVEL": bench.args.log_level,
            "WECOM_RATE_LIMIT": "1000000/s",
            "WECOM_PREFETCH": str(bench.args.prefetch),
            "WECOM_CONCURRENCY": str(bench.args.concurrency),
            "WECOM_SHUTDOWN_GRACE": "10",
            "WECOM_COMMAND_QUEUE": queues["commands"],
            "WECOM_RESULT_QUEUE": queues["results"],
            "WECOM_DEAD_LETTER_QUEUE": queues["dead"],
            "WECOM_DELAY_QUEUE": queues["delay"],
        }
    )
    for setting in bench.args.worker_env:
        key, _, value = setting.partition("=")
        env[key] = value
    return env


async def run_worker(
    bench: Bench,
    *,
    scenario: str,
    queues: dict[str, str],
    counter: ResultCounter,
    api_base: str,
    sim_pid: int,
    feed: Callable[[], Awaitable[None]] | None = None,
) -> Outcome:
    """Start the worker, find the start of its window, measure, stop it."""
    port = free_port()
    env = worker_env(bench, scenario, queues, api_base, port)
    profile = bench.profile_path(scenario)
    argv = [sys.executable, "-m", "worker", "run"]
    if profile is not None:
        argv = [sys.executable, str(BENCH / "profile_worker.py"), str(profile)]
    pid = bench.children.spawn(scenario, argv, env)
    try:
        started_at = await worker_ready(bench.children, scenario, port, counter)
        start = cpu_mark(pid, bench.broker_pids, sim_pid)
        feeding = asyncio.ensure_future(feed()) if feed is not None else None
        try:
            outcome = await finish_window(
                bench,
                name=scenario,
                pid=pid,
                counter=counter,
                started_at=started_at,
                start=start,
                sim_pid=sim_pid,
                profile=profile,
            )
        finally:
            await stop_feeding(feeding)
    finally:
        outcome_code = bench.children.stop(scenario)
    outcome.exit_code = outcome_code
    return outcome


async def worker_ready(children: Children, name: str, port: int, counter: ResultCounter) -> float:
    """When the worker began consuming: its first /readyz 200, or its first result if earlier."""
    url = f"http://127.0.0.1:{port}/readyz"
    deadline = time.monotonic() + 60.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        while counter.first_at is None:
            asked = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as answer:
                    if answer.status == 200:
                        return min(asked, counter.first_at or asked)
            children.check_alive(name)
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not ready after 60 s:\n{children.tail(name)}")
            await asyncio.sleep(READY_POLL)
    return counter.first_at


async def finish_window(
    bench: Bench,
    *,
    name: str,
    pid: int,
    counter: ResultCounter,
    started_at: float,
    start: CpuMark,
    sim_pid: int | None,
    profile: Path | None,
) -> Outcome:
    """Wait for every result, read the counters, and turn the two marks into figures."""
    if profile is not None:
        bench.children.signal(name, signal.SIGUSR1)
    deadline = time.monotonic() + bench.args.timeout
    next_progress = time.monotonic() + PROGRESS_EVERY
    while not counter.done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(counter.done.wait(), 0.5)
        bench.children.check_alive(name)
        now = time.monotonic()
        if now > deadline:
            raise BenchError(
                f"{name}: {counter.count} of {counter.expected} results after "
                f"{bench.args.timeout:.0f} s:\n{bench.children.tail(name)}"
            )
        if now >= next_progress:
            print(f"    {name}: {counter.count}/{counter.expected} results")
            next_progress = now + PROGRESS_EVERY
    end = cpu_mark(pid, bench.broker_pids, sim_pid)
    peak = status_mib(pid, "VmHWM")
    rss = status_mib(pid, "VmRSS")
    if profile is not None:
        bench.children.signal(name, signal.SIGUSR2)
        await wait_for_file(profile, 30.0)
    assert counter.last_at is not None
    assert counter.first_at is not None
    seconds = counter.last_at - started_at
    n = counter.expected
    main_thread = end.threads.get(pid, 0.0) - start.threads.get(pid, 0.0)
    consumer_cpu = end.consumer - start.consumer
    machine_cpu = end.machine - start.machine
    bench_cpu = end.bench - start.bench
    known = consumer_cpu + bench_cpu
    for before, after in ((start.broker, end.broker), (start.simulator, end.simulator)):
        if before is not None and after is not None:
            known += after - before
    cpus = len(os.sched_getaffinity(0))
    return Outcome(
        scenario=name,
        commands=n,
        seconds=seconds,
        rate=n / seconds,
        steady_rate=(n - 1) / (counter.last_at - counter.first_at)
        if counter.last_at > counter.first_at
        else None,
        cpu_s=consumer_cpu,
        cpu_us_per_command=consumer_cpu / n * 1e6,
        cpu_main_thread_s=main_thread,
        cpu_other_threads_s=consumer_cpu - main_thread,
        peak_rss_mib=peak,
        rss_at_end_mib=rss,
        broker_cpu_us_per_command=per_command(start.broker, end.broker, n),
        simulator_cpu_us_per_command=per_command(start.simulator, end.simulator, n),
        bench_cpu_us_per_command=bench_cpu / n * 1e6,
        other_cpu_us_per_command=(machine_cpu - known) / n * 1e6
        if start.broker is not None
        else None,
        machine_busy=machine_cpu / (cpus * (end.at - start.at)),
        statuses=dict(counter.statuses),
        distinct_command_ids=len(counter.command_ids),
        prefill_seconds=0.0,
        extra={"undecodable_results": counter.undecodable},
    )


def per_command(before: float | None, after: float | None, n: int) -> float | None:
    """CPU µs per command between two readings, when both exist."""
    if before is None or after is None:
        return None
    return (after - before) / n * 1e6


def file_size(path: Path) -> int:
    """A file's size, -1 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


async def wait_for_file(path: Path, within: float) -> None:
    """Until a file exists and stopped growing (a profile being dumped)."""
    deadline = time.monotonic() + within
    size = -1
    while time.monotonic() < deadline:
        now = file_size(path)
        if now == size and size > 0:
            return
        size = now
        await asyncio.sleep(0.2)
    raise BenchError(f"{path} was not written within {within:.0f} s")


async def simulator_calls(api_base: str) -> int | None:
    """How many calls the simulator saw (gettoken included)."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError, ValueError):
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session,
            session.get(f"{api_base}/_sim/health") as answer,
        ):
            return int((await answer.json())["calls"])
    return None


async def stop_feeding(feeding: asyncio.Future[None] | None) -> None:
    """Cancel the publishing of a steady scenario if it is still going; raise what it raised."""
    if feeding is None:
        return
    if not feeding.done():
        feeding.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feeding


async def simulator_call_times(api_base: str) -> dict[str, float]:
    """response_code -> when the simulator answered its (last) update_template_card call."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30.0)) as session,
        session.get(
            f"{api_base}/_sim/calls", params={"endpoint": "update_template_card"}
        ) as answer,
    ):
        calls = (await answer.json())["calls"]
    return {c["response_code"]: float(c["time"]) for c in calls if c.get("response_code")}


# ------------------------------------------------------------------------------------ reporting


def check_results(outcome: Outcome) -> list[str]:
    """Problems with a worker scenario's results: every command must end ``ok``, once."""
    if outcome.scenario in {"ceiling", "steady-ceiling"}:
        return []
    problems = []
    ok = outcome.statuses.get("ok", 0)
    if ok != outcome.commands:
        problems.append(
            f"{outcome.scenario}: {ok} of {outcome.commands} results ok: {outcome.statuses}"
        )
    if outcome.distinct_command_ids != outcome.commands:
        problems.append(
            f"{outcome.scenario}: {outcome.distinct_command_ids} distinct command_ids "
            f"in {outcome.commands} results"
        )
    if outcome.exit_code not in (0, None):
        problems.append(f"{outcome.scenario}: the worker exited with {outcome.exit_code}")
    return problems


def fmt(value: float | None, spec: str) -> str:
    """A number, or a dash."""
    return "-" if value is None else format(value, spec)


def print_table(outcomes: list[Outcome]) -> None:
    """The figures, one row per scenario."""
    header = (
        f"{'scenario':<13} {'commands':>8} {'seconds':>8} {'cmd/s':>8} {'÷ceiling':>9} "
        f"{'÷C/lat':>7} {'CPU µs/cmd':>11} {'peak RSS MiB':>13} {'broker µs/cmd':>14} "
        f"{'sim µs/cmd':>11} {'busy':>5} {'ok':>7}"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        ok = "-" if o.scenario in {"ceiling", "steady-ceiling"} else str(o.statuses.get("ok", 0))
        print(
            f"{o.scenario:<13} {o.commands:>8} {o.seconds:>8.2f} {o.rate:>8.0f} "
            f"{fmt(o.ratio_to_ceiling, '.2f'):>9} {fmt(o.ratio_to_bound, '.3f'):>7} "
            f"{o.cpu_us_per_command:>11.0f} {o.peak_rss_mib:>13.1f} "
            f"{fmt(o.broker_cpu_us_per_command, '.0f'):>14} "
            f"{fmt(o.simulator_cpu_us_per_command, '.0f'):>11} {o.machine_busy:>5.0%} {ok:>7}"
        )
    print(
        "÷ceiling: rate / the ceiling's rate; ÷C/lat: rate / (WECOM_CONCURRENCY / latency); "
        "CPU: the measured process, user+sys, every thread;\nbusy: share of all CPUs in use "
        "during the window (every process); ok: results with status ok"
    )


def print_steady(outcome: Outcome) -> None:
    """The added latency of a steady scenario, and its split around the WeCom call."""
    wecom = (
        "no WeCom" if outcome.scenario == "steady-ceiling" else f"WeCom {STEADY_LATENCY_MS:.0f} ms"
    )
    print(f"\n  {outcome.scenario} ({STEADY_RATE:.0f}/s, {wecom}), ms:")
    for key, label in (
        ("added_latency_ms", "publish -> result, minus the call"),
        ("before_call_ms", "publish -> the call reaches WeCom"),
        ("after_call_ms", "WeCom answers -> result here"),
    ):
        figures = outcome.extra.get(key) or {}
        if not figures:
            continue
        row = "  ".join(f"{q} {v:7.2f}" for q, v in figures.items())
        print(f"    {label:<36} {row}")


def print_verdicts(targets: list[dict[str, Any]], outcomes: list[Outcome]) -> None:
    """MET / NOT MET per target, then the steady scenario's latency split."""
    print()
    for target in targets:
        verdict = {True: "MET    ", False: "NOT MET", None: "-      "}[target["met"]]
        value = "" if target["value"] is None else f": {target['value']}"
        print(f"  {verdict}  {target['target']}{value}")
    for steady in outcomes:
        if steady.scenario in STEADY_SCENARIOS:
            print_steady(steady)


def verdicts(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """Issue 10's targets, each with its measured value (a ratio within this run) and verdict."""
    found: list[dict[str, Any]] = []

    def target(name: str, value: float, limit: float, *, at_most: bool = False) -> None:
        met = value <= limit if at_most else value >= limit
        found.append({"target": name, "value": round(value, 3), "met": met})

    by_name = {o.scenario: o for o in outcomes}
    ceiling, zero = by_name.get("ceiling"), by_name.get("worker-0ms")
    redis = by_name.get("worker-redis-0ms")
    if zero is not None and zero.ratio_to_ceiling is not None:
        target(
            f"worker-0ms (SQLite) throughput >= {TARGET_CEILING_RATIO} x ceiling",
            zero.ratio_to_ceiling,
            TARGET_CEILING_RATIO,
        )
    if redis is not None and redis.ratio_to_ceiling is not None:
        target(
            f"worker-redis-0ms throughput >= {TARGET_REDIS_CEILING_RATIO} x ceiling",
            redis.ratio_to_ceiling,
            TARGET_REDIS_CEILING_RATIO,
        )
    if ceiling is not None:
        for o in (zero, redis):
            if o is None:
                continue
            target(
                f"{o.scenario} CPU per command <= {TARGET_CPU_RATIO} x ceiling's per message "
                f"({o.cpu_us_per_command:.0f} vs {ceiling.cpu_us_per_command:.0f} µs)",
                o.cpu_us_per_command / ceiling.cpu_us_per_command,
                TARGET_CPU_RATIO,
                at_most=True,
            )
    slow = by_name.get("worker-100ms")
    if slow is not None and slow.ratio_to_bound is not None:
        target(
            f"worker-100ms >= {TARGET_BOUND_RATIO} x concurrency/latency",
            slow.ratio_to_bound,
            TARGET_BOUND_RATIO,
        )
        found.extend(bare_http_figures(slow))
    found.extend(latency_verdicts(by_name))
    for o in outcomes:
        if o.scenario not in {"ceiling", "steady-ceiling"}:
            target(
                f"{o.scenario} peak RSS <= {TARGET_RSS_MIB:.0f} MiB (prefetch 256)",
                o.peak_rss_mib,
                TARGET_RSS_MIB,
                at_most=True,
            )
    found.append(
        {
            "target": "replicas scaling (2 >= 1.8x, 3 >= 2.5x on Redis): see bench/replicas.py",
            "value": None,
            "met": None,
        }
    )
    return found


def bare_http_figures(slow: Outcome) -> list[dict[str, Any]]:
    """What the simulator of worker-100ms allows without a worker, and the worker's share of it."""
    bare = slow.extra.get("bare_http_rate")
    if not bare or not slow.bound_rate:
        return []
    figures = {
        "bare HTTP loop on worker-100ms's simulator (no worker; shown): x concurrency/latency": (
            bare / slow.bound_rate
        ),
        "worker-100ms / that bare HTTP loop (shown)": slow.rate / bare,
    }
    return [{"target": name, "value": round(v, 3), "met": None} for name, v in figures.items()]


def latency_verdicts(by_name: dict[str, Outcome]) -> list[dict[str, Any]]:
    """The added-latency targets of steady-50ms, and the broker's floor beside them."""
    found: list[dict[str, Any]] = []
    steady = by_name.get("steady-50ms")
    if steady is not None and steady.extra.get("added_latency_ms"):
        added = steady.extra["added_latency_ms"]
        for quantile, limit in (("p50", TARGET_ADDED_P50_MS), ("p99", TARGET_ADDED_P99_MS)):
            found.append(
                {
                    "target": f"steady-50ms added latency {quantile} <= {limit:g} ms",
                    "value": added[quantile],
                    "met": added[quantile] <= limit,
                }
            )
    floor = by_name.get("steady-ceiling")
    if floor is not None and floor.extra.get("added_latency_ms"):
        added = floor.extra["added_latency_ms"]
        found.append(
            {
                "target": "steady-ceiling publish -> reply p50 / p99 ms (broker floor; shown)",
                "value": f"{added['p50']} / {added['p99']}",
                "met": None,
            }
        )
    return found


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        **{name: version(name) for name in ("aio-pika", "aiormq", "aiohttp", "msgspec", "uvloop")},
    }


# ----------------------------------------------------------------------------------------- main


async def run(
    args: argparse.Namespace, amqp_url: str, broker_pids: list[int], redis_url: str | None
) -> int:
    """Every scenario in turn; the table; the JSON."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    work = Path(tempfile.mkdtemp(prefix="wecom-bench-"))
    children = Children(work)
    run_id = secrets.token_hex(3)
    bench = Bench(
        amqp_url=amqp_url,
        broker_pids=broker_pids,
        redis_url=redis_url,
        children=children,
        work=work,
        run_id=run_id,
        bodies=command_bodies(
            args.example, max(args.count, args.count_100ms, args.count_steady), run_id
        ),
        args=args,
    )
    outcomes: list[Outcome] = []
    failed = True
    try:
        async with aiormq.connect(amqp_url) as connection:
            broker_version = connection.server_properties.get("version", b"?")
        info = machine()
        info["rabbitmq"] = (
            broker_version.decode() if isinstance(broker_version, bytes) else str(broker_version)
        )
        print(
            f"machine: {info['nproc']} CPUs, Python {info['python']}, RabbitMQ {info['rabbitmq']}, "
            f"aio-pika {info['aio-pika']}, uvloop {info['uvloop']}"
        )
        print(
            f"backlog: {args.count} × seed {args.example!r} "
            f"({len(bench.bodies[0][1])} bytes); worker: prefetch {args.prefetch}, "
            f"concurrency {args.concurrency}, log level {args.log_level}, "
            f"WECOM_RATE_LIMIT=1000000/s"
            + (f", extra {' '.join(args.worker_env)}" if args.worker_env else "")
        )
        if args.profile is not None:
            print(f"PROFILING into {args.profile}: the figures below are not comparable")
        for scenario in args.scenarios:
            count = args.count_100ms if scenario == "worker-100ms" else args.count
            if scenario in STEADY_SCENARIOS:
                count = args.count_steady
            outcome = await run_scenario(bench, scenario, count)
            outcomes.append(outcome)
            print(
                f"  {scenario}: {outcome.commands} in {outcome.seconds:.2f} s "
                f"= {outcome.rate:,.0f}/s, {outcome.cpu_us_per_command:.0f} µs CPU per command"
            )
        ceiling = next((o for o in outcomes if o.scenario == "ceiling"), None)
        for o in outcomes:
            if ceiling is not None and o.scenario in ZERO_LATENCY_SCENARIOS:
                o.ratio_to_ceiling = o.rate / ceiling.rate
        print()
        print_table(outcomes)
        targets = verdicts(outcomes)
        print_verdicts(targets, outcomes)
        problems = [p for o in outcomes for p in check_results(o)]
        report = {
            "machine": info,
            "settings": {
                "count": args.count,
                "count_100ms": args.count_100ms,
                "count_steady": args.count_steady,
                "example": args.example,
                "command_bytes": len(bench.bodies[0][1]),
                "prefetch": args.prefetch,
                "concurrency": args.concurrency,
                "log_level": args.log_level,
                "rate_limit": "1000000/s",
                "worker_env": args.worker_env,
                "profiled": args.profile is not None,
            },
            "scenarios": [asdict(o) for o in outcomes],
            "targets": targets,
            "problems": problems,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
        print(f"\nwritten: {args.json}")
        if problems:
            print("\nWRONG RESULTS:")
            for problem in problems:
                print(f"  {problem}")
            return 1
        failed = False
        return 0
    finally:
        children.stop_all()
        if failed and not args.keep_logs:
            print(f"logs kept in {work}")
        elif args.keep_logs:
            print(f"logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="backlog per scenario")
    parser.add_argument(
        "--count-100ms", type=int, help="backlog of worker-100ms (default: --count)"
    )
    parser.add_argument(
        "--count-steady",
        type=int,
        default=3000,
        help=f"commands of steady-50ms, published at {STEADY_RATE:.0f}/s",
    )
    parser.add_argument("--amqp-url", help="use this broker instead of starting one")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one")
    parser.add_argument(
        "--example", default="text_notice", choices=sorted(seed_examples()), help="seed request"
    )
    parser.add_argument(
        "--scenarios",
        type=lambda text: [s.strip() for s in text.split(",") if s.strip()],
        default=list(SCENARIOS),
        help=f"comma-separated, from {','.join(SCENARIOS)}",
    )
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64, help="WECOM_CONCURRENCY")
    parser.add_argument("--log-level", default="warning", help="WECOM_LOG_LEVEL of the worker")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more worker setting (repeatable)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario")
    parser.add_argument(
        "--json", type=Path, default=BENCH / "results" / "throughput.json", help="figures file"
    )
    parser.add_argument("--profile", type=Path, help="profile each scenario into this folder")
    parser.add_argument(
        "--profiler",
        choices=("cprofile", "pyinstrument"),
        default="cprofile",
        help="pyinstrument samples CPU time (pip install it into the venv first)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    if args.count_100ms is None:
        args.count_100ms = args.count
    return args


def main(argv: list[str] | None = None) -> int:
    """Start (or reuse) the broker, run, stop everything."""
    args = parse_args(argv)
    node: RabbitMQNode | None = None
    redis: RedisServer | None = None
    try:
        if args.amqp_url:
            amqp_url, broker_pids = args.amqp_url, []
        else:
            print("starting RabbitMQ ...")
            node = RabbitMQNode()
            node.start()
            amqp_url, broker_pids = node.url, pids_with(str(node.base_dir))
        redis_url = args.redis_url
        if redis_url is None and REDIS_SCENARIOS.intersection(args.scenarios):
            print("starting Redis (appendfsync always) ...")
            redis = RedisServer()
            redis.start()
            redis_url = redis.url
        return uvloop.run(run(args, amqp_url, broker_pids, redis_url))
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    except asyncio.CancelledError:  # SIGTERM cancels the run (everything started is stopped)
        print("terminated")
        return 143
    except BenchError as error:
        print(f"bench failed: {error}")
        return 1
    finally:
        if redis is not None:
            redis.close()
        if node is not None:
            node.close()


if __name__ == "__main__":
    sys.exit(main())
