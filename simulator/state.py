"""The simulator's WeCom behaviour as plain functions of (state, request, clock).

`SimulatorState` decides every answer and records every call; the HTTP layer
only sleeps, writes or drops what it is told. So the rules below can be tested
with a fake clock and no sockets.

gettoken answers 41002 without corpid, 40013 for an unknown corp, 41004 without
corpsecret, 40001 for a wrong secret, else the app's token (after a gettoken
fault, if one applies).

update_template_card checks, in this order (the first that fails answers):

1. `access_token` missing → 41001; never issued → 40014; past its TTL, past
   its call budget (`token_expire_every`) or expired by a fault → 42001.
2. body not a JSON object → 47001.
3. `agentid` missing → 41011; not an integer → 40056; not the token's app → 301002.
4. `response_code` missing or empty → 40058; `userids` not a list of strings → 40058.
5. an injected fault, if the call takes one (see `simulator.faults`); a fault
   with `consume_code` runs steps 6-8 first, then replaces their answer.
6. the corp's rate limit → 45009; more calls in flight than `max_concurrency` → 45033.
7. `response_code` already spent or marked expired → 60140.
8. success: the code is spent; `invaliduser` lists the request's `userids`
   that are unknown users, lower-cased, each once, in request order.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec

from simulator import errcodes
from simulator.codes import CodeBook
from simulator.faults import Endpoint, Fault, FaultKind, FaultQueue, StandingFaults
from simulator.ratelimit import FixedWindowLimiter
from simulator.records import CallRecord, CodeStats
from simulator.tokens import IssuedToken, TokenBook

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from simulator.config import App, SimulatorConfig

HTTP_OK: Final = 200
HTTP_SERVER_ERROR: Final = 500
_SERVER_ERROR_BODY: Final = b"500 Internal Server Error"


class _UpdateEnvelope(msgspec.Struct):
    """The fields of an update request the simulator looks at; the card itself is ignored."""

    agentid: Any = None
    response_code: Any = None
    userids: Any = None


_ENVELOPE_DECODER: Final = msgspec.json.Decoder(_UpdateEnvelope)
_ENCODER: Final = msgspec.json.Encoder()
_OK_NO_INVALID: Final = _ENCODER.encode({"errcode": 0, "errmsg": "ok", "invaliduser": []})


@dataclass(frozen=True, slots=True)
class Answer:
    """What to do for one call: after `delay` seconds, answer `status` with `body`.

    `status` None means: close the connection without any HTTP response.
    """

    status: int | None
    body: bytes
    delay: float
    record: CallRecord


def _error_body(errcode: int, errmsg: str | None = None) -> bytes:
    message = errcodes.errmsg(errcode) if errmsg is None else errmsg
    return _ENCODER.encode({"errcode": errcode, "errmsg": message})


class SimulatorState:
    """Apps, tokens, codes, faults, rate windows and the call log of one simulator."""

    def __init__(self, config: SimulatorConfig, *, clock: Callable[[], float] = time.time) -> None:
        """Start as `config` says; `clock` gives Unix seconds (a fake one in unit tests)."""
        self.config: Final = config
        self._clock = clock
        self._apps: dict[str, dict[str, App]] = {}
        for app in config.apps:
            self._apps.setdefault(app.corp_id, {})[app.secret] = app
        self._invalid_users = frozenset(user.lower() for user in config.invalid_users)
        prefix = config.invalid_user_prefix
        self._invalid_prefix = prefix.lower() if prefix else None
        self._tokens = TokenBook(config.token_ttl)
        self._codes = CodeBook()
        self._faults = FaultQueue()
        self._limiter = FixedWindowLimiter(config.rate_limit)
        self._calls: deque[CallRecord] = deque(maxlen=config.call_log_limit)
        self._standing = config.standing_faults()
        self._in_flight = 0
        self._faults.add(config.faults)

    # --- inspection and control (the Python side of /_sim/) -----------------

    @property
    def calls(self) -> list[CallRecord]:
        """Every recorded call, oldest first."""
        return list(self._calls)

    @property
    def call_count(self) -> int:
        """How many calls are recorded."""
        return len(self._calls)

    @property
    def in_flight(self) -> int:
        """update_template_card calls being handled right now."""
        return self._in_flight

    @property
    def apps(self) -> list[tuple[str, int]]:
        """(corp_id, agentid) of every configured app; secrets stay inside."""
        return [(app.corp_id, app.agentid) for app in self.config.apps]

    def calls_of(self, response_code: str) -> list[CallRecord]:
        """The update calls that carried `response_code`, oldest first, with their bodies."""
        return [call for call in self._calls if call.response_code == response_code]

    def code_stats(self, response_code: str) -> CodeStats:
        """How often `response_code` reached update_template_card and whether it was spent."""
        return self._codes.stats(response_code)

    def add_faults(self, *faults: Fault) -> None:
        """Queue counted faults; raise ValueError (queuing none) when one is invalid."""
        self._faults.add(faults)

    def pending_faults(self) -> list[Fault]:
        """Queued faults, oldest first, each with the calls it has left as `count`."""
        return self._faults.pending()

    @property
    def standing_faults(self) -> StandingFaults:
        """Latency, token call budget and concurrency ceiling in force."""
        return self._standing

    def set_standing_faults(self, standing: StandingFaults) -> None:
        """Replace the standing faults; a new token call budget counts from zero."""
        if standing.token_expire_every != self._standing.token_expire_every:
            self._tokens.restart_call_counts()
        self._standing = standing

    def clear_faults(self) -> None:
        """Drop every queued fault and restore the standing faults of the configuration."""
        self._faults.clear()
        self.set_standing_faults(self.config.standing_faults())

    def expire_codes(self, codes: Iterable[str]) -> None:
        """Make `codes` answer 60140 as if their 72 hours had passed."""
        for code in codes:
            self._codes.expire(code)

    def reset(self) -> None:
        """Forget calls, codes, tokens, rate windows and faults; requeue the configured faults."""
        self._calls.clear()
        self._codes.clear()
        self._tokens.clear()
        self._limiter.clear()
        self.clear_faults()
        self._faults.add(self.config.faults)

    # --- the HTTP layer's hooks ----------------------------------------------

    def latency(self, endpoint: Endpoint) -> float:
        """Seconds to wait before processing a call on `endpoint` (latency plus jitter)."""
        standing = self._standing
        if endpoint == "gettoken" and not standing.latency_on_gettoken:
            return 0.0
        millis = standing.latency_ms
        if standing.jitter_ms:
            millis += random.uniform(0.0, standing.jitter_ms)  # noqa: S311 - jitter, not crypto
        return millis / 1000.0

    def admit_update(self) -> bool:
        """Count an arriving update call in flight; True when that exceeds `max_concurrency`."""
        self._in_flight += 1
        ceiling = self._standing.max_concurrency
        return ceiling is not None and self._in_flight > ceiling

    def release_update(self) -> None:
        """Count an update call as no longer in flight."""
        self._in_flight -= 1

    # --- gettoken --------------------------------------------------------------

    def gettoken(self, corpid: str | None, corpsecret: str | None) -> Answer:
        """Answer `GET /cgi-bin/gettoken?corpid=...&corpsecret=...`."""
        call = _Call(now=self._clock(), endpoint="gettoken", corp_id=corpid or None)
        if not corpid:
            return self._reply(call, errcodes.CORPID_MISSING)
        apps = self._apps.get(corpid)
        if apps is None:
            return self._reply(call, errcodes.INVALID_CORPID)
        if not corpsecret:
            return self._reply(call, errcodes.CORPSECRET_MISSING)
        app = apps.get(corpsecret)
        if app is None:
            return self._reply(call, errcodes.INVALID_CREDENTIAL)
        call.agentid = app.agentid
        fault = self._faults.take("gettoken", None)
        if fault is not None and not fault.spends_code:
            return self._reply_fault(call, fault)
        token, issued = self._tokens.current(app, call.now)
        body = _ENCODER.encode(
            {
                "errcode": errcodes.OK,
                "errmsg": "ok",
                "access_token": token,
                "expires_in": max(0, int(issued.expires_at - call.now)),
            }
        )
        if fault is not None:
            return self._reply_fault(call, fault, processed=(errcodes.OK, body))
        return self._reply(call, errcodes.OK, body=body)

    # --- update_template_card ------------------------------------------------

    def update_template_card(
        self, access_token: str | None, body: bytes, *, over_concurrency: bool = False
    ) -> Answer:
        """Answer `POST /cgi-bin/message/update_template_card?access_token=...` with `body`.

        `over_concurrency` is what `admit_update` said when the call arrived.
        """
        call = _Call(now=self._clock(), endpoint="update_template_card")
        try:
            envelope: _UpdateEnvelope | None = _ENVELOPE_DECODER.decode(body)
        except msgspec.DecodeError:
            envelope = None
        if envelope is not None:
            call.request = msgspec.Raw(body)  # a JSON object: safe to embed in JSON answers
            if type(envelope.agentid) is int:
                call.agentid = envelope.agentid
            if isinstance(envelope.response_code, str) and envelope.response_code:
                call.response_code = envelope.response_code
                self._codes.count_call(envelope.response_code)

        issued = self._authenticate(access_token, call.now)
        if isinstance(issued, int):
            return self._reply(call, issued)
        call.corp_id = issued.app.corp_id
        checked = _read_request(envelope, issued.app)
        if isinstance(checked, _Refusal):
            return self._reply(call, checked.errcode, checked.errmsg)
        code, userids = checked

        fault = self._faults.take("update_template_card", code)
        if fault is not None and fault.kind == "token_expired":
            issued.revoked = True
        if fault is not None and not fault.spends_code:
            return self._reply_fault(call, fault)
        errcode, answer, accepted = self._process(
            call.corp_id, code, userids, over_concurrency, call.now
        )
        if fault is None:
            return self._reply(call, errcode, body=answer, accepted=accepted)
        return self._reply_fault(call, fault, processed=(errcode, answer), accepted=accepted)

    def _authenticate(self, access_token: str | None, now: float) -> IssuedToken | int:
        """The token's record, counting this call against it, or the errcode refusing it."""
        if not access_token:
            return errcodes.ACCESS_TOKEN_MISSING
        issued = self._tokens.get(access_token)
        if issued is None:
            return errcodes.INVALID_ACCESS_TOKEN
        budget = self._standing.token_expire_every
        if not issued.is_valid(now) or (budget is not None and issued.calls >= budget):
            issued.revoked = True
            return errcodes.ACCESS_TOKEN_EXPIRED
        issued.calls += 1
        return issued

    def _process(
        self, corp_id: str, code: str, userids: list[str] | None, over_concurrency: bool, now: float
    ) -> tuple[int, bytes, bool]:
        """Steps 6-8 of the module docstring: (errcode, body, whether the code was spent)."""
        if not self._limiter.allow(corp_id, now):
            errcode = errcodes.FREQ_OUT_OF_LIMIT
        elif over_concurrency:
            errcode = errcodes.CONCURRENT_OUT_OF_LIMIT
        elif not self._codes.spend(code):
            errcode = errcodes.INVALID_RESPONSE_CODE
        else:
            invalid = self._invalid_among(userids) if userids else []
            if not invalid:
                return errcodes.OK, _OK_NO_INVALID, True
            body = _ENCODER.encode({"errcode": errcodes.OK, "errmsg": "ok", "invaliduser": invalid})
            return errcodes.OK, body, True
        return errcode, _error_body(errcode), False

    def _invalid_among(self, userids: list[str]) -> list[str]:
        """The unknown users among `userids`, lower-cased, each once, in request order."""
        found: dict[str, None] = {}
        for user in userids:
            lowered = user.lower()
            if lowered in self._invalid_users or (
                self._invalid_prefix is not None and lowered.startswith(self._invalid_prefix)
            ):
                found[lowered] = None
        return list(found)

    # --- answers -----------------------------------------------------------------

    def _reply(
        self,
        call: _Call,
        errcode: int,
        errmsg: str | None = None,
        *,
        body: bytes | None = None,
        accepted: bool = False,
    ) -> Answer:
        """Record and return a JSON answer (HTTP 200); `body` defaults to the error body."""
        record = call.record(errcode=errcode, http_status=HTTP_OK, accepted=accepted)
        self._calls.append(record)
        if body is None:
            body = _error_body(errcode, errmsg)
        return Answer(status=HTTP_OK, body=body, delay=0.0, record=record)

    def _reply_fault(
        self,
        call: _Call,
        fault: Fault,
        *,
        processed: tuple[int, bytes] | None = None,
        accepted: bool = False,
    ) -> Answer:
        """Record and return the answer `fault` gives; `processed` is the normal answer."""
        status: int | None = HTTP_OK
        errcode: int | None
        match fault.kind:
            case "http_500":
                status, errcode, body = HTTP_SERVER_ERROR, None, _SERVER_ERROR_BODY
            case "lost_answer":
                status, errcode, body = None, None, b""
            case "slow_answer" if processed is not None:
                errcode, body = processed
            case "errcode" if fault.errcode is not None:
                errcode = fault.errcode
                body = _error_body(errcode, fault.errmsg)
            case _:
                errcode = _FAULT_ERRCODES[fault.kind]
                body = _error_body(errcode)
        record = call.record(
            errcode=errcode, http_status=status, fault=fault.kind, accepted=accepted
        )
        self._calls.append(record)
        return Answer(status=status, body=body, delay=fault.delay_ms / 1000.0, record=record)


@dataclass(slots=True)
class _Call:
    """What is known of a call so far, to record once it is answered."""

    now: float
    endpoint: Endpoint
    corp_id: str | None = None
    agentid: int | None = None
    response_code: str | None = None
    request: msgspec.Raw | None = None

    def record(
        self,
        *,
        errcode: int | None,
        http_status: int | None,
        fault: FaultKind | None = None,
        accepted: bool = False,
    ) -> CallRecord:
        """The record of this call answered so."""
        return CallRecord(
            time=self.now,
            endpoint=self.endpoint,
            corp_id=self.corp_id,
            agentid=self.agentid,
            response_code=self.response_code,
            errcode=errcode,
            http_status=http_status,
            fault=fault,
            accepted=accepted,
            request=self.request,
        )


@dataclass(frozen=True, slots=True)
class _Refusal:
    """An update request refused before any fault or code is looked at."""

    errcode: int
    errmsg: str | None = None


def _read_request(
    envelope: _UpdateEnvelope | None, app: App
) -> tuple[str, list[str] | None] | _Refusal:
    """Steps 2-4 of the module docstring: (response_code, userids), or why they are refused."""
    if envelope is None:
        return _Refusal(errcodes.DATA_FORMAT_ERROR)
    if envelope.agentid is None:
        return _Refusal(errcodes.AGENTID_MISSING)
    if type(envelope.agentid) is not int:
        return _Refusal(errcodes.INVALID_AGENTID)
    if envelope.agentid != app.agentid:
        return _Refusal(errcodes.ANOTHER_AGENT)
    code = envelope.response_code
    if not isinstance(code, str) or not code:
        return _Refusal(errcodes.INVALID_PARAMETER, "invalid parameter: missing response_code")
    userids = envelope.userids
    if userids is not None and not (
        isinstance(userids, list) and all(isinstance(user, str) for user in userids)
    ):
        return _Refusal(errcodes.INVALID_PARAMETER, "invalid parameter: userids must be strings")
    return code, userids


_FAULT_ERRCODES: Final[dict[str, int]] = {
    "system_busy": errcodes.SYSTEM_BUSY,
    "concurrent_limit": errcodes.CONCURRENT_OUT_OF_LIMIT,
    "freq_limit": errcodes.FREQ_OUT_OF_LIMIT,
    "token_expired": errcodes.ACCESS_TOKEN_EXPIRED,
    "slow_answer": errcodes.OK,
}
