"""Hostile bodies through ``read_command`` at volume: inputs per second and peak RSS.

    .venv/bin/python bench/fuzz.py [--count 100000] [--seed 1] [--json PATH]
    .venv/bin/python bench/fuzz.py --replay N [--seed 1]     # one input, its recipe and verdict

Input ``i`` is made by ``tests.hostile_bodies.hostile_delivery`` from one of the
seed's six requests with ``random.Random(seed * 1_000_003 + i)``, so any input
replays alone. Every input must end in a Command or a ``CommandInvalid`` with a
message; anything else stops the run with the input's number (exit 1). The
rate counts ``read_command`` time only (building inputs is left out); peak RSS
is the process's ``VmHWM`` at the end, baseline its ``VmRSS`` before the first.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.hostile_bodies, when run as a script

from tests.hostile_bodies import MAX_BYTES, hostile_delivery, judge  # noqa: E402
from wecom_card_contracts.examples import seed_examples  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fuzz.json"


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory figure, in KiB."""
    text = Path("/proc/self/status").read_text("ascii")
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def bases() -> list[dict[str, Any]]:
    """The valid commands inputs are made from: one per seed request."""
    return [
        {"command_id": f"fuzz-{name}", "code_issued_at": 1764000000.0, "request": request}
        for name, request in seed_examples().items()
    ]


def input_rng(seed: int, index: int) -> random.Random:
    """The generator of input ``index``: each input replays on its own."""
    return random.Random(seed * 1_000_003 + index)


def run(count: int, seed: int) -> dict[str, Any]:
    """Judge ``count`` hostile inputs; the figures of the run."""
    commands = bases()
    verdicts: Counter[str] = Counter()
    judged = 0.0
    slowest = (0.0, -1)
    total_bytes = 0
    baseline = status_kib("VmRSS")
    started = time.perf_counter()
    for index in range(count):
        rng = input_rng(seed, index)
        hostile = hostile_delivery(commands[index % len(commands)], rng)
        total_bytes += len(hostile.body)
        before = time.perf_counter()
        try:
            verdicts[judge(hostile)] += 1
        except Exception as error:
            print(f"input {index} (seed {seed}) escaped: {error!r}; recipe {hostile.recipe}")
            raise SystemExit(1) from error
        spent = time.perf_counter() - before
        judged += spent
        slowest = max(slowest, (spent, index))
    wall = time.perf_counter() - started
    return {
        "count": count,
        "seed": seed,
        "max_message_bytes": MAX_BYTES,
        "valid": verdicts["valid"],
        "invalid": verdicts["invalid"],
        "mean_body_bytes": round(total_bytes / count),
        "inputs_per_second": round(count / judged),
        "inputs_per_second_with_generation": round(count / wall),
        "slowest_ms": round(slowest[0] * 1000, 2),
        "slowest_input": slowest[1],
        "baseline_rss_mib": round(baseline / 1024, 1),
        "peak_rss_mib": round(status_kib("VmHWM") / 1024, 1),
        "python": platform.python_version(),
    }


def replay(index: int, seed: int) -> None:
    """Print one input's recipe, size, properties and verdict."""
    commands = bases()
    hostile = hostile_delivery(commands[index % len(commands)], input_rng(seed, index))
    print(f"input {index}: {' -> '.join(hostile.recipe)}")
    print(
        f"  {len(hostile.body)} bytes, content_type={hostile.content_type!r}, "
        f"content_encoding={hostile.content_encoding!r}"
    )
    print(f"  first bytes: {hostile.body[:80]!r}")
    print(f"  verdict: {judge(hostile)}")


def main() -> None:
    """Parse the options, run, print the figures and write them to ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--replay", type=int, default=None, help="show input N only")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.replay is not None:
        replay(args.replay, args.seed)
        return
    figures = run(args.count, args.seed)
    print(
        f"{figures['count']} hostile inputs (seed {figures['seed']}, cap "
        f"{figures['max_message_bytes']} bytes, mean body {figures['mean_body_bytes']} bytes): "
        f"{figures['valid']} valid, {figures['invalid']} refused, none escaped"
    )
    print(
        f"read_command: {figures['inputs_per_second']} inputs/s "
        f"({figures['inputs_per_second_with_generation']}/s with generation); "
        f"slowest {figures['slowest_ms']} ms (input {figures['slowest_input']})"
    )
    print(f"RSS: baseline {figures['baseline_rss_mib']} MiB, peak {figures['peak_rss_mib']} MiB")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(figures, indent=2) + "\n", "utf-8")


if __name__ == "__main__":
    main()
