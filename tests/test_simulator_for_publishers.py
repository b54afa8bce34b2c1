"""The simulator for upstream teams: its image's dependencies, and the examples of its docs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from simulator import DEMO_APP, SimulatorConfig, run_simulator

ROOT = Path(__file__).parents[1]


def test_simulator_imports_nothing_but_aiohttp_msgspec_and_the_standard_library() -> None:
    """Importing and configuring the simulator loads none of the worker's other dependencies."""
    program = (
        "import sys\n"
        "import simulator, simulator.cli\n"
        "simulator.cli.build_config(simulator.cli.build_parser().parse_args([]), {})\n"
        "foreign = {'worker', 'wecom_card_contracts', 'aio_pika', 'aiormq', 'redis', "
        "'structlog', 'prometheus_client'}\n"
        "print(sorted(foreign & {name.split('.')[0] for name in sys.modules}))\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert answer.stdout.strip() == "[]"


def test_image_installs_what_the_simulator_imports_and_runs_it_on_all_interfaces() -> None:
    """The Dockerfile installs aiohttp and msgspec, copies simulator/, binds 0.0.0.0."""
    dockerfile = (ROOT / "simulator" / "Dockerfile").read_text("utf-8")
    installed = set(re.findall(r"'([a-z]+)>=", dockerfile))
    assert installed == {"aiohttp", "msgspec"}
    assert "COPY simulator ./simulator" in dockerfile
    assert 'CMD ["--host", "0.0.0.0", "--port", "8089"]' in dockerfile


def doc_json_blocks() -> list[dict[str, Any]]:
    """The JSON blocks of docs/simulator.md, in order."""
    text = (ROOT / "docs" / "simulator.md").read_text("utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.DOTALL)]


async def test_documented_examples_are_what_the_control_api_takes_and_gives() -> None:
    """The faults body of docs/simulator.md is accepted; a code's calls answer in the shown shape."""
    calls_example, faults_example = doc_json_blocks()
    async with run_simulator(SimulatorConfig()) as sim, aiohttp.ClientSession() as http:
        async with http.get(
            f"{sim.url}/cgi-bin/gettoken",
            params={"corpid": DEMO_APP.corp_id, "corpsecret": DEMO_APP.secret},
        ) as answer:
            token = (await answer.json())["access_token"]
        request = calls_example["calls"][0]["request"]
        async with http.post(
            f"{sim.url}/cgi-bin/message/update_template_card",
            params={"access_token": token},
            json=request,
        ) as answer:
            assert (await answer.json())["errcode"] == 0
        async with http.get(f"{sim.url}/_sim/codes/RC-88-close/calls") as answer:
            shown = await answer.json()
        async with http.post(f"{sim.url}/_sim/faults", json=faults_example) as answer:
            assert answer.status == 200
            view = await answer.json()
    assert shown["code"] == calls_example["code"]
    [call] = shown["calls"]
    [documented] = calls_example["calls"]
    assert {k: v for k, v in call.items() if k != "time"} == {
        k: v for k, v in documented.items() if k != "time"
    }
    assert [f["kind"] for f in view["faults"]] == ["lost_answer", "errcode", "http_500"]
