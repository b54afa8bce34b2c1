"""The control API under `/_sim/`: inspect calls and codes, inject faults, reset.

JSON in, JSON out. A request the API cannot use answers HTTP 400
`{"error": "..."}`. Nothing here reveals a secret or an access token.

| request | answer |
| --- | --- |
| `GET /_sim/health` | `{"status": "ok", "in_flight": 0, "calls": 12, "apps": [App, ...]}` |
| `GET /_sim/calls[?response_code=C][&endpoint=E]` | `{"calls": [CallRecord, ...]}` oldest first |
| `GET /_sim/codes/{code}` | `CodeStats`: `{"response_code", "calls", "accepted", "status"}` |
| `GET /_sim/codes/{code}/calls` | `{"code": CodeStats, "calls": [CallRecord, ...]}` with bodies |
| `POST /_sim/codes/expire` `{"codes": ["c1", ...]}` | `{"codes": [CodeStats, ...]}` |
| `GET /_sim/faults` | the faults view (below) |
| `POST /_sim/faults` (body below) | the faults view after the change |
| `DELETE /_sim/faults` | drops queued faults, restores the start-up standing faults; the view |
| `POST /_sim/reset` | forgets calls, codes, tokens, rate windows, faults: `{"status": "reset"}` |

`POST /_sim/faults` body, every key optional:

    {"faults": [{"kind": "lost_answer", "count": 1, "response_code": "rc-1",
                 "endpoint": "update_template_card", "consume_code": true,
                 "delay_ms": 0, "errcode": null, "errmsg": null}],
     "latency_ms": 20, "jitter_ms": 5, "latency_on_gettoken": false,
     "token_expire_every": 3, "max_concurrency": 10}

`faults` are queued after those already waiting (see `simulator.faults` for
kinds and who takes which); each other key given replaces that standing fault
(`null` turns `token_expire_every` / `max_concurrency` off). The change is all or
nothing. The faults view has the same shape, with the queued faults' `count`
being the calls each has left. An App in health is `{"corp_id": "...", "agentid": 1}`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final

import msgspec
from aiohttp import web

from simulator.faults import Fault, StandingFaults
from simulator.records import CallRecord, CodeStats

if TYPE_CHECKING:
    from simulator.state import SimulatorState

PREFIX: Final = "/_sim"


class FaultsChange(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of `POST /_sim/faults`: faults to queue and standing faults to replace."""

    faults: list[Fault] = []
    latency_ms: float | msgspec.UnsetType = msgspec.UNSET
    jitter_ms: float | msgspec.UnsetType = msgspec.UNSET
    latency_on_gettoken: bool | msgspec.UnsetType = msgspec.UNSET
    token_expire_every: int | msgspec.UnsetType | None = msgspec.UNSET
    max_concurrency: int | msgspec.UnsetType | None = msgspec.UNSET


class FaultsView(msgspec.Struct, kw_only=True):
    """Queued faults and standing faults in force."""

    faults: list[Fault]
    latency_ms: float
    jitter_ms: float
    latency_on_gettoken: bool
    token_expire_every: int | None
    max_concurrency: int | None


class ExpireCodes(msgspec.Struct, forbid_unknown_fields=True):
    """Body of `POST /_sim/codes/expire`."""

    codes: list[str]


class CallsView(msgspec.Struct):
    """Answer of `GET /_sim/calls`."""

    calls: list[CallRecord]


class CodeCallsView(msgspec.Struct):
    """Answer of `GET /_sim/codes/{code}/calls`."""

    code: CodeStats
    calls: list[CallRecord]


class CodesView(msgspec.Struct):
    """Answer of `POST /_sim/codes/expire`."""

    codes: list[CodeStats]


_FAULTS_CHANGE_DECODER: Final = msgspec.json.Decoder(FaultsChange)
_EXPIRE_DECODER: Final = msgspec.json.Decoder(ExpireCodes)
_ENCODER: Final = msgspec.json.Encoder()


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=_ENCODER.encode(payload), content_type="application/json"
    )


def _bad_request(message: str) -> web.Response:
    return _json({"error": message}, status=400)


def apply_faults_change(state: SimulatorState, change: FaultsChange) -> None:
    """Apply `change` to `state` entirely or, raising ValueError, not at all."""
    standing_changes = {
        field.name: getattr(change, field.name)
        for field in dataclasses.fields(StandingFaults)
        if getattr(change, field.name) is not msgspec.UNSET
    }
    standing = dataclasses.replace(state.standing_faults, **standing_changes)
    state.add_faults(*change.faults)
    state.set_standing_faults(standing)


def faults_view(state: SimulatorState) -> FaultsView:
    """The queued and standing faults of `state`."""
    standing = state.standing_faults
    return FaultsView(
        faults=state.pending_faults(),
        latency_ms=standing.latency_ms,
        jitter_ms=standing.jitter_ms,
        latency_on_gettoken=standing.latency_on_gettoken,
        token_expire_every=standing.token_expire_every,
        max_concurrency=standing.max_concurrency,
    )


class ControlRoutes:
    """aiohttp handlers for `/_sim/`, bound to one simulator's state."""

    def __init__(self, state: SimulatorState) -> None:
        """Control `state`."""
        self._state = state

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to an application."""
        return [
            web.get(f"{PREFIX}/health", self.health),
            web.get(f"{PREFIX}/calls", self.calls),
            web.get(f"{PREFIX}/codes/{{code}}", self.code),
            web.get(f"{PREFIX}/codes/{{code}}/calls", self.code_calls),
            web.post(f"{PREFIX}/codes/expire", self.expire_codes),
            web.get(f"{PREFIX}/faults", self.faults),
            web.post(f"{PREFIX}/faults", self.add_faults),
            web.delete(f"{PREFIX}/faults", self.clear_faults),
            web.post(f"{PREFIX}/reset", self.reset),
        ]

    async def health(self, _request: web.Request) -> web.Response:
        """`GET /_sim/health`: alive, with calls in flight, calls recorded and apps."""
        state = self._state
        return _json(
            {
                "status": "ok",
                "in_flight": state.in_flight,
                "calls": state.call_count,
                "apps": [{"corp_id": corp, "agentid": agent} for corp, agent in state.apps],
            }
        )

    async def calls(self, request: web.Request) -> web.Response:
        """`GET /_sim/calls`: recorded calls, optionally only one code's or one endpoint's."""
        calls = self._state.calls
        code = request.query.get("response_code")
        if code is not None:
            calls = [call for call in calls if call.response_code == code]
        endpoint = request.query.get("endpoint")
        if endpoint is not None:
            calls = [call for call in calls if call.endpoint == endpoint]
        return _json(CallsView(calls=calls))

    async def code(self, request: web.Request) -> web.Response:
        """`GET /_sim/codes/{code}`: how often the code was sent and accepted."""
        return _json(self._state.code_stats(request.match_info["code"]))

    async def code_calls(self, request: web.Request) -> web.Response:
        """`GET /_sim/codes/{code}/calls`: the update calls that carried the code, with bodies."""
        code = request.match_info["code"]
        return _json(
            CodeCallsView(code=self._state.code_stats(code), calls=self._state.calls_of(code))
        )

    async def expire_codes(self, request: web.Request) -> web.Response:
        """`POST /_sim/codes/expire`: mark codes expired (60140 from now on)."""
        try:
            body = _EXPIRE_DECODER.decode(await request.read())
        except msgspec.DecodeError as exc:
            return _bad_request(str(exc))
        self._state.expire_codes(body.codes)
        return _json(CodesView(codes=[self._state.code_stats(code) for code in body.codes]))

    async def faults(self, _request: web.Request) -> web.Response:
        """`GET /_sim/faults`: queued and standing faults."""
        return _json(faults_view(self._state))

    async def add_faults(self, request: web.Request) -> web.Response:
        """`POST /_sim/faults`: queue faults and replace standing faults, all or nothing."""
        try:
            change = _FAULTS_CHANGE_DECODER.decode(await request.read())
            apply_faults_change(self._state, change)
        except (msgspec.DecodeError, ValueError) as exc:
            return _bad_request(str(exc))
        return _json(faults_view(self._state))

    async def clear_faults(self, _request: web.Request) -> web.Response:
        """`DELETE /_sim/faults`: no queued faults, start-up standing faults."""
        self._state.clear_faults()
        return _json(faults_view(self._state))

    async def reset(self, _request: web.Request) -> web.Response:
        """`POST /_sim/reset`: back to the state at start-up."""
        self._state.reset()
        return _json({"status": "reset"})
