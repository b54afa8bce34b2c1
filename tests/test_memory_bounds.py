"""Memory one hostile message can cost is bounded by a small multiple of the size cap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.hostile_memory import CAP, CASES, KIB

ROOT = Path(__file__).resolve().parents[1]
PEAK_BOUND_KIB = 32 * CAP // KIB + 4 * KIB
"""The worst shape found (a JSON list of short strings) peaks near 32 x the cap in RSS."""
RETURN_BOUND_KIB = 6 * KIB
"""What "within a few MiB of the baseline" means after every hostile case has run."""


@pytest.fixture(scope="module")
def figures() -> dict[str, dict[str, Any]]:
    """Every hostile case run once through the pipeline in a fresh interpreter."""
    run = subprocess.run(
        [sys.executable, "-m", "tests.hostile_memory", *CASES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    return {line["case"]: line for line in lines}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_body_is_rejected_within_the_memory_bound(
    figures: dict[str, dict[str, Any]], case: str
) -> None:
    """Given an oversized, nested, bomb or length-lying body, it is rejected; RSS peaks stay low."""
    figure = figures[case]
    assert figure["status"] == "rejected"
    assert figure["message"]
    assert figure["peak_growth_kib"] <= PEAK_BOUND_KIB, figure
    assert figure["traced_peak_kib"] <= 16 * CAP // KIB, figure


@pytest.mark.parametrize("case", ["oversized_userids", "oversized_msgpack", "gzip_bomb"])
def test_refused_body_still_names_its_command(
    figures: dict[str, dict[str, Any]], case: str
) -> None:
    """An oversized or bomb body's rejection carries its command_id, read in bounded memory."""
    assert figures[case]["command_id"] is not None


def test_memory_returns_to_the_baseline_after_hostile_bodies(
    figures: dict[str, dict[str, Any]],
) -> None:
    """After every hostile case the resident set is within a few MiB of where it started."""
    assert figures["all"]["after_kib"] <= RETURN_BOUND_KIB, figures["all"]
