"""Where the CPU goes: a cProfile of ``throughput.py --profile DIR`` summarised per command.

    .venv/bin/python bench/profile_report.py DIR/worker-0ms.prof [--commands N] [--top 30]
    .venv/bin/python bench/profile_report.py DIR/worker-0ms.pyisession

Own time (``tottime``) is grouped by area: the library (or worker module) the
code belongs to, C functions by the type they are methods of. Then the
functions with the most own time, and the cumulative time of the worker's hot
path steps. cProfile slows Python code down (every call is timed) and C code
not at all, so its shares are indicative; pyinstrument samples CPU time and
distorts less, but charges C code to its Python caller. Use the unprofiled
``throughput.py`` run for absolute figures.
"""

from __future__ import annotations

import argparse
import importlib
import pstats
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (pattern in the file name or the C function's text, area), first match wins
AREAS: tuple[tuple[str, str], ...] = (
    ("/aio_pika/", "aio-pika"),
    ("/aiormq/", "aiormq"),
    ("/pamqp/", "pamqp (AMQP frames)"),
    ("/aiohttp/", "aiohttp"),
    ("/yarl/", "aiohttp"),
    ("/multidict/", "aiohttp"),
    ("/aiohappyeyeballs/", "aiohttp"),
    ("/propcache/", "aiohttp"),
    ("/structlog/", "structlog"),
    ("/prometheus_client/", "prometheus_client"),
    ("/contracts/", "contracts (decode, validate, encode)"),
    ("/worker/state/", "worker: state store (event-loop side)"),
    ("/worker/wecom/http.py", "worker: HTTP/1.1 client (update calls)"),
    ("/worker/wecom/", "worker: WeCom client"),
    ("/worker/amqp", "worker: amqp adapter"),
    ("/worker/consumer.py", "worker: consumer"),
    ("/worker/pipeline.py", "worker: pipeline"),
    ("/worker/", "worker: other modules"),
    ("/asyncio/", "asyncio (stdlib, Python)"),
    ("/logging/", "logging (stdlib)"),
    ("msgspec", "msgspec"),
    ("uvloop", "uvloop (C)"),
    ("_asyncio", "asyncio (C: tasks, futures)"),
    ("_contextvars", "contextvars"),
    ("sqlite3", "sqlite3"),
)
# Issue 10's components: (pattern in the file name, pattern in the function name or "", component).
# First match wins. C functions (cProfile's "~") are charged to the components of their callers.
COMPONENTS: tuple[tuple[str, str, str], ...] = (
    ("/contracts/", "encode", "result encode"),
    ("/worker/pipeline.py", "reply", "result encode"),
    ("/contracts/", "", "decode + validate"),
    ("/aio_pika/", "", "AMQP frames in/out"),
    ("/aiormq/", "", "AMQP frames in/out"),
    ("/pamqp/", "", "AMQP frames in/out"),
    ("/worker/amqp", "", "AMQP frames in/out"),
    ("/worker/acks.py", "", "AMQP frames in/out"),
    ("/worker/state/", "", "state store"),
    ("/worker/redis_batch.py", "", "state store"),
    ("/redis/", "", "state store"),
    ("/worker/ratelimit.py", "", "limiter"),
    ("/worker/concurrency.py", "", "limiter"),
    ("/worker/redis_ratelimit.py", "", "limiter"),
    ("/worker/redis_concurrency.py", "", "limiter"),
    ("/aiohttp/", "", "HTTP client"),
    ("/yarl/", "", "HTTP client"),
    ("/multidict/", "", "HTTP client"),
    ("/aiohappyeyeballs/", "", "HTTP client"),
    ("/propcache/", "", "HTTP client"),
    ("/worker/wecom/http.py", "", "HTTP client"),
    ("/worker/wecom/", "", "HTTP client"),
    ("/structlog/", "", "logging"),
    ("/logging/", "", "logging"),
    ("/worker/logs.py", "", "logging"),
    ("/worker/redact.py", "", "logging"),
    ("/prometheus_client/", "", "metrics"),
    ("/worker/metrics.py", "", "metrics"),
    ("/worker/", "", "pipeline + consumer (own code)"),
    ("/asyncio/", "", "event loop, tasks, futures"),
    ("uvloop", "", "event loop, tasks, futures"),
    ("ceiling.py", "", "AMQP frames in/out"),
)
C_COMPONENTS: tuple[tuple[str, str], ...] = (
    ("sqlite3", "state store"),
    ("_asyncio", "event loop, tasks, futures"),
    ("uvloop", "event loop, tasks, futures"),
    ("_contextvars", "event loop, tasks, futures"),
    ("msgspec", "decode + validate"),
)

HOT_PATH = (
    "consumer.py:on_message",
    "consumer.py:handle",
    "pipeline.py:process",
    "codec.py:decode_command",
    "pipeline.py:claim_and_call",
    "sqlite.py:claim",
    "sqlite.py:complete",
    "client.py:update_template_card",
    "client.py:_attempt",
    "client.py:_post",
    "http.py:post",
    "http.py:data_received",
    "consumer.py:publish_reply",
    "amqp.py:publish",
    "amqp.py:settle",
    "consumer.py:finished",
    "ceiling.py:on_message",
    "exchange.py:publish",
    "message.py:ack",
    "channel.py:basic_publish",
    "channel.py:basic_ack",
    "channel.py:_on_deliver_frame",
    "client.py:_request",
    "_log_methods.py:info",
    "_native.py:meth",
    "metrics.py:inc",
    "metrics.py:observe",
)

Key = tuple[str, int, str]


def area_of(key: Key) -> str:
    """The area a profiled function belongs to."""
    filename, _, name = key
    text = filename if filename != "~" else name
    for pattern, area in AREAS:
        if pattern in text:
            return area
    if filename == "~":
        return "other C builtins"
    if "/site-packages/" in filename:
        return "other libraries"
    return "stdlib, other"


def component_of(key: Key) -> str | None:
    """The component of a Python function; None for C functions (charged to their callers)."""
    filename, _, name = key
    if filename == "~":
        return None
    for file_pattern, name_pattern, component in COMPONENTS:
        if file_pattern in filename and name_pattern in name:
            return component
    return "other"


def c_component_of(key: Key) -> str:
    """A C function called from nowhere profiled (or from another C function), by its name."""
    for pattern, component in C_COMPONENTS:
        if pattern in key[2]:
            return component
    return "other"


def components(profile: Profile) -> dict[str, float]:
    """Own seconds per component; a C function's own time split over its callers' components."""
    found: dict[str, float] = defaultdict(float)
    for key, seconds in profile.own.items():
        component = component_of(key)
        if component is not None:
            found[component] += seconds
            continue
        callers = (profile.callers or {}).get(key, {})
        shares = {c: t for c, t in callers.items() if component_of(c) is not None and t > 0}
        spread = sum(shares.values())
        if not spread:
            found[c_component_of(key)] += seconds
            continue
        for caller, weight in shares.items():
            found[component_of(caller) or "other"] += seconds * weight / spread
    return dict(found)


def label(key: Key) -> str:
    """``module.py:function`` (C functions as cProfile names them)."""
    filename, line, name = key
    if filename == "~":
        return name
    return f"{Path(filename).name}:{line}:{name}"


def short(key: Key) -> str:
    """``module.py:function`` without the line number, to match ``HOT_PATH``."""
    filename, _, name = key
    return name if filename == "~" else f"{Path(filename).name}:{name}"


@dataclass
class Profile:
    """Seconds per function (own and cumulative), calls when counted, the total."""

    own: dict[Key, float]
    cumulative: dict[Key, float]
    calls: dict[Key, int] | None
    total: float
    kind: str
    callers: dict[Key, dict[Key, float]] | None = None  # cProfile: own seconds by caller


def load_cprofile(path: Path) -> Profile:
    """A cProfile dump."""
    stats = pstats.Stats(str(path))
    table: dict[Key, tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    return Profile(
        own={key: row[2] for key, row in table.items()},
        cumulative={key: row[3] for key, row in table.items()},
        calls={key: row[1] for key, row in table.items()},
        total=sum(row[2] for row in table.values()),
        kind="cProfile (every call timed)",
        callers={
            key: {caller: figures[2] for caller, figures in row[4].items()}
            for key, row in table.items()
        },
    )


def load_pyinstrument(path: Path) -> Profile:
    """A pyinstrument session; synthetic frames ([self], [await]) count for their parent."""
    session = importlib.import_module("pyinstrument.session").Session.load(str(path))
    root = session.root_frame(trim_stem=False)
    own: dict[Key, float] = defaultdict(float)
    cumulative: dict[Key, float] = defaultdict(float)
    pending: list[tuple[Any, Key]] = [(root, ("~", 0, "<root>"))]
    while pending:
        frame, owner = pending.pop()
        key = owner if frame.file_path is None else (frame.file_path, frame.line_no, frame.function)
        own[key] += frame.time - sum(child.time for child in frame.children)
        if key != owner:
            cumulative[key] += frame.time
        pending.extend((child, key) for child in frame.children)
    return Profile(
        own=dict(own),
        cumulative=dict(cumulative),
        calls=None,
        total=float(root.time),
        kind=(
            "pyinstrument (main-thread stack sampled every 1 ms of wall time; C code counts "
            "for its Python caller; idle and uvloop C time for runners.py:run)"
        ),
    )


def window_size(profile: Path, parser: argparse.ArgumentParser) -> int:
    """The commands of the profiled window, as throughput.py wrote them beside the profile."""
    beside = profile.with_suffix(".commands")
    if not beside.exists():
        parser.error(f"no {beside.name} beside the profile: give --commands")
    return int(beside.read_text())


def main(argv: list[str] | None = None) -> int:
    """Print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument(
        "--commands",
        type=int,
        help="commands in the window (default: what throughput.py wrote beside the profile)",
    )
    parser.add_argument("--top", type=int, default=30, help="functions to list by own time")
    args = parser.parse_args(argv)
    if args.profile.suffix == ".pyisession":
        profile = load_pyinstrument(args.profile)
    else:
        profile = load_cprofile(args.profile)
    n = args.commands if args.commands is not None else window_size(args.profile, parser)
    total = profile.total
    print(f"{args.profile}: {profile.kind}; {total:.2f} s profiled, {n} commands")
    print(f"  {total / n * 1e6:.0f} µs per command under the profiler")
    if profile.calls is not None:
        calls = sum(profile.calls.values())
        tasks = sum(nc for key, nc in profile.calls.items() if "create_task" in key[2])
        print(
            f"  {calls / n:.0f} Python/C calls per command, "
            f"{tasks / n:.1f} create_task calls per command"
        )
    areas: dict[str, float] = defaultdict(float)
    for key, seconds in profile.own.items():
        areas[area_of(key)] += seconds
    print("\nown time by area")
    for area, seconds in sorted(areas.items(), key=lambda item: -item[1]):
        print(f"  {area:<40} {seconds / n * 1e6:>7.1f} µs/cmd {seconds / total:>6.1%}")
    print("\nown time by component (C functions charged to their callers)")
    for component, seconds in sorted(components(profile).items(), key=lambda item: -item[1]):
        print(f"  {component:<40} {seconds / n * 1e6:>7.1f} µs/cmd {seconds / total:>6.1%}")
    print(f"\ntop {args.top} functions by own time")
    ranked = sorted(profile.own.items(), key=lambda item: -item[1])[: args.top]
    for key, seconds in ranked:
        calls_text = f"{profile.calls[key] / n:>6.1f} calls/cmd  " if profile.calls else ""
        print(
            f"  {seconds / n * 1e6:>7.1f} µs/cmd own "
            f"{profile.cumulative.get(key, 0.0) / n * 1e6:>8.1f} cum {calls_text}{label(key)[:90]}"
        )
    print("\nhot-path steps, cumulative time per command (coroutines: time running, not waiting)")
    for step in HOT_PATH:
        for key, seconds in profile.cumulative.items():
            if short(key) == step:
                print(f"  {seconds / n * 1e6:>8.1f} µs/cmd  {label(key)[:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
