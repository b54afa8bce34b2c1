"""Decode + validate time per command, for the six seed examples, JSON and msgpack.

    .venv/bin/python bench/decode.py [--repeats 9] [--target-ms 40] [--json PATH]

Each figure is ``wecom_card_contracts.decode_command`` on the bytes of one command
(``{"command_id": ..., "request": <seed example>}``): typed decode plus every
seed rule. The invalid row is the diagnostic path: the seed's text_notice with
``agentid`` as a string, which the typed decoder refuses and ``diagnose`` then
explains. Each repeat times a loop long enough to last about ``--target-ms``;
the median of the repeats is reported with the fastest and slowest.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgspec

from wecom_card_contracts import BodyFormat, CommandInvalid, decode_command
from wecom_card_contracts.examples import seed_examples

LARGEST = "news_notice"
FORMATS: tuple[BodyFormat, ...] = ("json", "msgpack")


@dataclass(frozen=True)
class Figure:
    """One row: microseconds per decode, median of the repeats, and their spread."""

    example: str
    fmt: str
    valid: bool
    body_bytes: int
    median_us: float
    min_us: float
    max_us: float
    loops: int


def command_bytes(request: dict[str, Any], fmt: BodyFormat) -> bytes:
    """A command around a seed request, encoded as an upstream service would."""
    command = {"command_id": "bench-decode-000001", "request": request}
    return msgspec.json.encode(command) if fmt == "json" else msgspec.msgpack.encode(command)


def decode_valid(body: bytes, fmt: BodyFormat) -> Callable[[], object]:
    """One decode of a valid command."""

    def run() -> object:
        return decode_command(body, fmt)

    return run


def decode_invalid(body: bytes, fmt: BodyFormat) -> Callable[[], object]:
    """One decode of an invalid command, down to the explained rejection."""

    def run() -> object:
        try:
            decode_command(body, fmt)
        except CommandInvalid as invalid:
            return invalid.summary
        raise AssertionError("the invalid command decoded")

    return run


def loops_for(run: Callable[[], object], target_s: float) -> int:
    """How many calls make one repeat last about ``target_s``."""
    loops = 1
    while True:
        started = time.perf_counter_ns()
        for _ in range(loops):
            run()
        elapsed = (time.perf_counter_ns() - started) / 1e9
        if elapsed >= target_s / 10 or loops >= 1 << 22:
            return max(1, int(loops * target_s / max(elapsed, 1e-9)))
        loops *= 4


def measure(run: Callable[[], object], repeats: int, target_s: float) -> tuple[list[float], int]:
    """Microseconds per call for each repeat, and the loop count."""
    loops = loops_for(run, target_s)
    per_call: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(loops):
            run()
        per_call.append((time.perf_counter_ns() - started) / loops / 1000)
    return per_call, loops


def figure(
    example: str,
    fmt: BodyFormat,
    body: bytes,
    run: Callable[[], object],
    *,
    valid: bool,
    repeats: int,
    target_s: float,
) -> Figure:
    """Time one body."""
    per_call, loops = measure(run, repeats, target_s)
    return Figure(
        example=example,
        fmt=fmt,
        valid=valid,
        body_bytes=len(body),
        median_us=statistics.median(per_call),
        min_us=min(per_call),
        max_us=max(per_call),
        loops=loops,
    )


def invalid_request() -> dict[str, Any]:
    """The seed's text_notice with ``agentid`` as a string."""
    request = copy.deepcopy(seed_examples()["text_notice"])
    request["agentid"] = str(request["agentid"])
    return request


def run_all(repeats: int, target_s: float) -> list[Figure]:
    """Every seed example in both formats, then the invalid command in both."""
    figures: list[Figure] = []
    for name, request in seed_examples().items():
        for fmt in FORMATS:
            body = command_bytes(request, fmt)
            figures.append(
                figure(
                    name,
                    fmt,
                    body,
                    decode_valid(body, fmt),
                    valid=True,
                    repeats=repeats,
                    target_s=target_s,
                )
            )
    for fmt in FORMATS:
        body = command_bytes(invalid_request(), fmt)
        figures.append(
            figure(
                "text_notice, agentid a string (invalid)",
                fmt,
                body,
                decode_invalid(body, fmt),
                valid=False,
                repeats=repeats,
                target_s=target_s,
            )
        )
    return figures


def print_table(figures: list[Figure]) -> None:
    """The figures as a small table; the largest seed card marked."""
    header = f"{'example':<42} {'format':<8} {'bytes':>6} {'median µs':>10} {'min':>8} {'max':>8}"
    print(header)
    print("-" * len(header))
    for f in figures:
        mark = "  <- largest seed card" if f.example == LARGEST else ""
        print(
            f"{f.example:<42} {f.fmt:<8} {f.body_bytes:>6} {f.median_us:>10.2f} "
            f"{f.min_us:>8.2f} {f.max_us:>8.2f}{mark}"
        )


def main(argv: list[str] | None = None) -> int:
    """Run, print, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per body")
    parser.add_argument(
        "--target-ms", type=float, default=40.0, help="approximate length of one repeat"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    print(
        f"decode_command, µs per command (median of {args.repeats}); "
        f"python {platform.python_version()}, msgspec {msgspec.__version__}"
    )
    figures = run_all(args.repeats, args.target_ms / 1000)
    print_table(figures)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "python": platform.python_version(),
            "msgspec": msgspec.__version__,
            "repeats": args.repeats,
            "unit": "microseconds per decode_command",
            "figures": [asdict(f) for f in figures],
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n", "utf-8")
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
