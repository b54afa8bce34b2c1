"""A local stand-in for WeCom's gettoken and update_template_card APIs.

For the worker's demo and tests and for upstream teams developing against it:
single-use response codes, unknown users, per-corp rate limits, and faults
(HTTP 500, errcodes, lost and slow answers, token expiry, latency, a
concurrency ceiling) injectable at start and at run time.

In the same process:

    from simulator import Fault, SimulatorConfig, run_simulator

    async with run_simulator(SimulatorConfig(max_concurrency=8)) as sim:
        sim.state.add_faults(Fault(kind="lost_answer", response_code="rc-1"))
        ...  # WECOM_API_BASE=sim.url
        assert sim.state.code_stats("rc-1").accepted == 1

As a process: `python -m simulator --port 0` prints
`simulator listening on http://127.0.0.1:PORT`; `--help` lists the options, and
the `/_sim/` control API (see `simulator.control_api`) inspects and faults it.
"""

from simulator.app import create_app, state_of
from simulator.config import DEMO_APP, App, SimulatorConfig, parse_app, parse_apps
from simulator.faults import Fault, FaultKind, StandingFaults
from simulator.ratelimit import RateWindow, parse_rate_limit
from simulator.records import CallRecord, CodeStats
from simulator.server import RunningSimulator, run_simulator
from simulator.state import SimulatorState

__all__ = [
    "DEMO_APP",
    "App",
    "CallRecord",
    "CodeStats",
    "Fault",
    "FaultKind",
    "RateWindow",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorState",
    "StandingFaults",
    "create_app",
    "parse_app",
    "parse_apps",
    "parse_rate_limit",
    "run_simulator",
    "state_of",
]
