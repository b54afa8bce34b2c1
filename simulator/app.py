"""The simulator as an aiohttp application: WeCom endpoints plus the `/_sim/` control API."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from aiohttp import web

from simulator.config import SimulatorConfig
from simulator.control_api import ControlRoutes
from simulator.state import SimulatorState
from simulator.wecom_api import WeComRoutes

if TYPE_CHECKING:
    from collections.abc import Callable

STATE_KEY: Final = web.AppKey("simulator_state", SimulatorState)


def create_app(
    config: SimulatorConfig | None = None, *, clock: Callable[[], float] = time.time
) -> web.Application:
    """Build a simulator application for `config` (default: one demo app, no faults).

    Its state is `state_of(app)`. `clock` (Unix seconds) drives token expiry,
    rate windows and call times; pass a fake one to control them in tests.
    """
    state = SimulatorState(config or SimulatorConfig(), clock=clock)
    app = web.Application()
    app[STATE_KEY] = state
    app.add_routes(WeComRoutes(state).routes())
    app.add_routes(ControlRoutes(state).routes())
    return app


def state_of(app: web.Application) -> SimulatorState:
    """The state behind an application made by `create_app`."""
    return app[STATE_KEY]
