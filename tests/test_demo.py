"""The README's demo command, end to end, against the test broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_demo_prints_every_kind_of_result(amqp_url: str) -> None:
    """scripts/demo.py runs the simulator and the worker and shows ok, partial, duplicate, expired, rejected."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WECOM_")}
    env["WECOM_AMQP_URL"] = amqp_url
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout
    for status in ("ok", "partial", "duplicate", "expired", "rejected"):
        assert f"  {status}  " in table, table
    assert "invalid-lisi" in table
    assert "request.agentid" in table
