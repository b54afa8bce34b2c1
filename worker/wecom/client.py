"""update_template_card over HTTP: token, rate-limit slot, POST, errcode, retry.

One :class:`WeComClient` per process, on one :class:`~worker.wecom.http.HttpOrigin`
(keep-alive connections to WeCom; gettoken goes through :class:`TokenCache`'s
aiohttp session). Each attempt: a token from :class:`TokenCache`, a slot from
the corp's :class:`~worker.ports.RateLimiter`, a place among the corp's calls in
flight (:class:`~worker.concurrency.CorpConcurrency`) and the process's
(``WECOM_CONCURRENCY``), then one POST. The answer is classified by
:func:`worker.wecom.errcodes.classify`.

Whether the code may be spent decides every ending, so each failure is sorted:

* before the request was sent: connection refused, DNS, connect or TLS
  timeout (``ConnectFailed``) -- cannot have spent it;
* after it may have been sent: read or call timeouts, the server closing the
  connection, a broken or non-JSON answer (``AnswerLost``), errcode -1 -- may
  have spent it;
* HTTP 5xx: an answer saying the request failed; treated as not spent, except
  504 (a gateway gave up waiting for a backend that may still have done the work);
  429 is retried like 5xx, any other non-200 status fails the call.

Once an attempt may have spent the code (``maybe_spent``), no later answer can
turn that into ``failed``: 60140 or any refusal then gives ``indeterminate``,
as does a budget that runs out. A rate-limit slot further away than
``max_limiter_wait`` defers the command (``deferred``, the code not spent);
after an unanswered attempt the client first waits for a slot for the rest of
the budget, since the command's outcome is open, and defers only if even that
is too short, with ``maybe_spent`` set so the claim is released remembering
it and a later 60140 still reads ``indeterminate``. A first attempt that finds
no place among the calls in flight for the whole budget (a prefetched backlog
behind a slow limit) is deferred too: WeCom never saw it.

The access_token travels in the query string: no URL, token or secret is ever
logged, put in an outcome or used as a metric label; exception texts are
scrubbed (:func:`~worker.wecom.tokens.describe_error`).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import msgspec
import structlog

from worker.errors import AnswerLost, ConnectFailed, TokenRejected, TokenUnavailable
from worker.metrics import errcode_label
from worker.ports import (
    Answered,
    CallOutcome,
    Deferred,
    NotSent,
    NotSentErrorCode,
    TooLong,
    Unsettled,
)
from worker.wecom.errcodes import Action, classify, frequency_block_until
from worker.wecom.retry import RetryPolicy
from worker.wecom.tokens import describe_error

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from prometheus_client import Counter, Histogram

    from worker.apps import App
    from worker.concurrency import CorpLimits, CorpSlots
    from worker.metrics import Metrics
    from worker.ports import RateLimiter
    from worker.wecom.http import HttpOrigin
    from worker.wecom.tokens import TokenCache

log = structlog.get_logger("worker.wecom.client")

UPDATE_TEMPLATE_CARD_PATH: Final = "/cgi-bin/message/update_template_card"
CLAIM_RECHECK_AFTER: Final = 1.0  # seconds of waiting before the first send re-asserts the claim
NO_PLACE_DEFERRAL: Final = 1.0  # seconds: a command that found no place in flight comes back
_HTTP_OK: Final = 200
_MAX_CACHED_TARGETS: Final = 64
_HTTP_TOO_MANY_REQUESTS: Final = 429
_HTTP_SERVER_ERROR: Final = 500
_HTTP_GATEWAY_TIMEOUT: Final = 504


class _Answer(msgspec.Struct):
    """The fields of an update_template_card answer the client reads."""

    errcode: int
    errmsg: str = ""
    invaliduser: list[str] | str = []  # a list per the API page; "a|b" as other WeCom APIs do


_ANSWER_DECODER: Final = msgspec.json.Decoder(_Answer)


@dataclass(slots=True)
class _Call:
    """What one command's call has been through so far."""

    app: App
    deadline: float  # on the client's monotonic clock
    maybe_spent: bool  # some attempt (this call's or an earlier holder's) may have reached WeCom
    attempts: int = 0
    retries: int = 0
    busy_answers: int = 0
    token_refreshed: bool = False
    errcode: int | None = None
    errmsg: str | None = None
    problem: str = ""  # the last thing that went wrong, for the ending's message
    unsettled: str = ""  # why the code may be spent, once it may be
    backoff: float = 0.0  # seconds to wait before the next attempt
    before_send: Callable[[], Awaitable[None]] | None = None

    def may_have_reached_wecom(self, why: str) -> None:
        """This attempt may have spent the code without a usable answer."""
        if not self.maybe_spent:
            self.maybe_spent = True
            self.unsettled = f"attempt {self.attempts} got no usable answer: {why}"


class WeComClient:
    """Calls update_template_card for commands, inside the limits, with retries."""

    def __init__(
        self,
        origin: HttpOrigin,
        *,
        tokens: TokenCache,
        limiter: RateLimiter,
        concurrency: CorpLimits,
        metrics: Metrics,
        max_in_flight: int = 64,
        policy: RetryPolicy | None = None,
        jitter: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Call update_template_card on ``origin``; ``max_in_flight`` is WECOM_CONCURRENCY.

        ``jitter`` draws uniformly from [0, 1) for the backoff, ``sleep`` waits
        between retries, ``clock`` (monotonic) times the budget, ``wall_clock``
        (Unix seconds) dates 45009 blocks and deferrals; tests replace them.
        """
        self._origin = origin
        self._targets: dict[str, bytes] = {}
        self._tokens = tokens
        self._limiter = limiter
        self._concurrency = concurrency
        self._metrics = metrics
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._policy = policy if policy is not None else RetryPolicy()
        self._jitter = jitter
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._minute_blocks: dict[str, float] = {}  # corp -> end of its last 45009 minute block
        self._untrusted: set[str] = set()  # corps whose last refusal was 60020
        self._call_counters: dict[tuple[str, int | str], Counter] = {}
        self._wait_histograms: dict[str, Histogram] = {}

    @property
    def untrusted_corps(self) -> frozenset[str]:
        """Corps whose last refusal was 60020 (this replica's IP is not on the trusted list)."""
        return frozenset(self._untrusted)

    async def update_template_card(
        self,
        app: App,
        body: bytes,
        *,
        maybe_spent: bool,
        max_limiter_wait: float,
        before_send: Callable[[], Awaitable[None]] | None = None,
    ) -> CallOutcome:
        """Send ``body`` (the JSON request) for ``app`` until a definite ending or the budget's end.

        ``maybe_spent``: an earlier holder of the code may have sent it. A
        rate-limit slot more than ``max_limiter_wait`` seconds away gives
        ``deferred`` (see the module docstring). ``before_send`` is awaited
        before the first request when the call waited more than
        ``CLAIM_RECHECK_AFTER`` for its places and slot (the pipeline re-asserts
        its claim there: a store that forgot it meanwhile gets it back first).
        """
        call = _Call(app=app, deadline=self._clock() + self._policy.budget, maybe_spent=maybe_spent)
        call.before_send = before_send
        if maybe_spent:
            call.unsettled = "an earlier holder of the code may have sent it"
        while True:
            outcome = await self._attempt(call, body, max_limiter_wait)
            if outcome is not None:
                return outcome
            if call.backoff:  # slept here, with no place in flight held
                await self._sleep(call.backoff)
                call.backoff = 0.0

    async def _attempt(
        self, call: _Call, body: bytes, max_limiter_wait: float
    ) -> CallOutcome | None:
        """One attempt: its outcome, or None to go again (after ``call.backoff``, if set).

        The budget is checked before each backoff (:meth:`_retry`); the immediate
        retries (a new token, once; a 45009, which the limiter then paces or
        defers) go ahead even at the budget's end.
        """
        token = self._tokens.cached(call.app)
        if token is None:
            fetched = await self._fetch_token(call)
            if not isinstance(fetched, str):
                return fetched
            token = fetched
        corp_id = call.app.corp_id
        corp_slots = self._concurrency.slot(corp_id)
        if not await self._hold_slots(corp_slots, call):
            if call.attempts == 0:
                # Never sent: a backlog behind a slow limit waits its turn here, and failing it
                # would end commands WeCom never saw; they come back through the delay queue.
                return self._deferred(
                    call,
                    NO_PLACE_DEFERRAL,
                    f"no free place among corp {corp_id}'s calls in flight within the "
                    f"{self._policy.budget:g} s retry budget",
                )
            return self._exhausted(call)
        try:
            max_wait = max_limiter_wait
            if call.maybe_spent:
                max_wait = max(max_wait, call.deadline - self._clock())
            slot = await self._limiter.acquire(corp_id, max_wait)
            if isinstance(slot, TooLong):
                return self._deferred(
                    call,
                    slot.wait,
                    f"no rate-limit slot for corp {corp_id} within {max_wait:.1f} s "
                    f"(next in {slot.wait:.1f} s)",
                )
            self._observe_wait(corp_id, slot.waited)
            if (
                call.before_send is not None
                and call.attempts == 0
                and (self._clock() - (call.deadline - self._policy.budget) > CLAIM_RECHECK_AFTER)
            ):
                await call.before_send()
            return await self._send(call, token, body)
        finally:
            self._in_flight.release()
            corp_slots.release()

    async def _hold_slots(self, corp_slots: CorpSlots, call: _Call) -> bool:
        """A place among the corp's and the process's calls in flight, before the rate-limit slot.

        In this order a granted rate-limit slot is used at once: a slot reserved
        first and used after a long wait for concurrency would bunch calls up
        at WeCom. The wait is bounded by the rest of the retry budget (False:
        it ran out). A free place is taken without yielding to the event loop.
        """
        if corp_slots.free and not self._in_flight.locked():
            await corp_slots.acquire()
            await self._in_flight.acquire()
            return True
        call.problem = "no free place among the calls in flight"
        try:
            async with asyncio.timeout(max(call.deadline - self._clock(), 0.0)):
                await corp_slots.acquire()
                try:
                    await self._in_flight.acquire()
                except BaseException:
                    corp_slots.release()
                    raise
        except TimeoutError:
            return False
        return True

    async def _fetch_token(self, call: _Call) -> str | CallOutcome | None:
        """A token from gettoken, or how the call ends (None: retry after the backoff)."""
        try:
            return await self._tokens.get(call.app)
        except TokenRejected as exc:
            call.errcode, call.errmsg = exc.errcode, exc.errmsg
            return self._refused(call, str(exc), answered=False)
        except TokenUnavailable as exc:
            return await self._retry(call, "gettoken", str(exc))

    async def _send(self, call: _Call, token: str, body: bytes) -> CallOutcome | None:
        """POST the request and act on the answer; None: go again."""
        app = call.app
        corp_id = app.corp_id
        call.attempts += 1
        try:
            status, payload = await self._post(self._target_for(token), body)
        except ConnectFailed as exc:
            self._count_call(corp_id, "network")
            return await self._retry(call, "connect", describe_error(exc, token, app.secret))
        except AnswerLost as exc:
            problem = describe_error(exc, token, app.secret)
            call.may_have_reached_wecom(problem)
            self._count_call(corp_id, "network")
            return await self._retry(call, "lost_answer", problem)
        if status != _HTTP_OK:
            return await self._http_error(call, status)
        try:
            answer = _ANSWER_DECODER.decode(payload)
        except msgspec.DecodeError:
            problem = "the answer is not WeCom's JSON"
            call.may_have_reached_wecom(problem)
            self._count_call(corp_id, "invalid_answer")
            return await self._retry(call, "invalid_answer", problem)
        self._count_call(corp_id, answer.errcode)
        call.errcode, call.errmsg = answer.errcode, answer.errmsg
        return await self._act(call, classify(answer.errcode), answer, token)

    def _target_for(self, token: str) -> bytes:
        """The call's request target for a token, encoded once per token (tokens live for hours)."""
        target = self._targets.get(token)
        if target is None:
            if len(self._targets) >= _MAX_CACHED_TARGETS:
                self._targets.clear()
            target = self._origin.target(
                f"{UPDATE_TEMPLATE_CARD_PATH}?access_token={quote(token, safe='')}"
            )
            self._targets[token] = target
        return target

    async def _post(self, target: bytes, body: bytes) -> tuple[int, bytes]:
        """One POST (its places in flight already held): (status, body)."""
        started = time.perf_counter()
        try:
            return await self._origin.post(target, body)
        finally:
            self._metrics.api_latency.observe(time.perf_counter() - started)

    async def _http_error(self, call: _Call, status: int) -> CallOutcome | None:
        """A non-200 answer: 5xx and 429 are retried, anything else fails the call."""
        problem = f"WeCom answered HTTP {status}"
        if status >= _HTTP_SERVER_ERROR or status == _HTTP_TOO_MANY_REQUESTS:
            if status == _HTTP_GATEWAY_TIMEOUT:
                call.may_have_reached_wecom(problem)
            self._count_call(call.app.corp_id, "http_5xx")
            return await self._retry(call, "http_5xx", problem)
        self._count_call(call.app.corp_id, "http_4xx")
        return self._refused(call, problem, answered=False)

    async def _act(
        self, call: _Call, action: Action, answer: _Answer, token: str
    ) -> CallOutcome | None:
        """Do what DESIGN.md's errcode table says for ``answer``."""
        if action is Action.SUCCESS:
            return self._succeeded(call, answer)
        app = call.app
        corp_id = app.corp_id
        described = f"WeCom answered errcode {answer.errcode} ({answer.errmsg})"
        match action:
            case Action.SYSTEM_BUSY:
                call.may_have_reached_wecom(described)
                call.busy_answers += 1
                if call.busy_answers >= self._policy.busy_tries:
                    return self._unknown(call, f"{described} {call.busy_answers} times")
                return await self._retry(call, "system_busy", described)
            case Action.REFRESH_TOKEN if not call.token_refreshed:
                call.token_refreshed = True
                await self._tokens.invalidate(app, token)
                self._note_retry(call, "token", described, 0.0)
                return None
            case Action.FREQUENCY_LIMIT:
                await self._frequency_limited(call, described)
                return None
            case Action.CONCURRENCY_LIMIT:
                self._concurrency.congested(corp_id)
                return await self._retry(call, "concurrency_limit", described)
            case Action.CODE_INVALID if not call.maybe_spent:
                return self._answered_refusal(call, described, spent=action.spends_code)
            case Action.IP_NOT_TRUSTED:
                self._untrusted.add(corp_id)
                self._metrics.ip_not_trusted.labels(corp_id).set(1)
                log.error("wecom.ip_not_trusted", corp_id=corp_id, agentid=app.agentid)
        return self._refused(call, described, answered=True)

    def _succeeded(self, call: _Call, answer: _Answer) -> CallOutcome:
        """errcode 0: ``ok``, or ``partial`` with the users WeCom found invalid."""
        corp_id = call.app.corp_id
        self._concurrency.succeeded(corp_id)
        if corp_id in self._untrusted:
            self._untrusted.discard(corp_id)
            self._metrics.ip_not_trusted.labels(corp_id).set(0)
        invalid = answer.invaliduser
        if isinstance(invalid, str):
            invalid = [user for user in invalid.split("|") if user]
        if not invalid:
            return Answered(
                status="ok",
                attempts=call.attempts,
                errcode=answer.errcode,
                errmsg=answer.errmsg,
                spent=True,
                maybe_spent=call.maybe_spent,
            )
        self._metrics.invalid_users.inc(len(invalid))
        return Answered(
            status="partial",
            attempts=call.attempts,
            errcode=answer.errcode,
            errmsg=answer.errmsg,
            invalid_users=tuple(invalid),
            spent=True,
            maybe_spent=call.maybe_spent,
        )

    async def _frequency_limited(self, call: _Call, described: str) -> None:
        """45009: no slot for the corp until its window is over (the minute, else the hour)."""
        corp_id = call.app.corp_id
        now = self._wall_clock()
        until = frequency_block_until(now, self._minute_blocks.get(corp_id))
        if until - now <= 60.0:
            self._minute_blocks[corp_id] = until
        await self._limiter.block(corp_id, until)
        self._note_retry(call, "frequency_limit", described, until - now)

    async def _retry(self, call: _Call, reason: str, problem: str) -> CallOutcome | None:
        """Back off before the next attempt, or end the call if the budget would run out."""
        call.problem = problem
        delay = self._policy.backoff(call.retries, self._jitter())
        call.retries += 1
        if self._clock() + delay >= call.deadline:
            return self._exhausted(call)
        self._note_retry(call, reason, problem, delay)
        call.backoff = delay
        return None

    def _note_retry(self, call: _Call, reason: str, problem: str, delay: float) -> None:
        call.problem = problem
        self._metrics.retries.labels(reason).inc()
        log.info(
            "wecom.retry",
            corp_id=call.app.corp_id,
            agentid=call.app.agentid,
            attempt=call.attempts,
            errcode=call.errcode,
            reason=reason,
            problem=problem,
            delay=round(delay, 3),
        )

    def _exhausted(self, call: _Call) -> CallOutcome:
        """The budget ran out: ``indeterminate`` if the code may be spent, else ``failed``."""
        ending = (
            f"the {self._policy.budget:g} s retry budget ran out after {call.attempts} attempts"
        )
        if call.problem:
            ending += f"; last: {call.problem}"
        if call.maybe_spent:
            return self._unknown(call, ending)
        return self._not_sent(call, "retries_exhausted", ending)

    def _refused(self, call: _Call, message: str, *, answered: bool) -> CallOutcome:
        """A refusal retrying cannot fix: ``failed``, or ``indeterminate`` after a lost answer.

        ``answered``: WeCom's update_template_card answered it (an errcode); else
        the refusal came before the call (gettoken) or from HTTP itself.
        """
        if call.maybe_spent:
            return self._unknown(call, message)
        if answered:
            return self._answered_refusal(call, message, spent=False)
        return self._not_sent(call, "wecom_error", message)

    def _not_sent(self, call: _Call, error_code: NotSentErrorCode, message: str) -> NotSent:
        """``failed`` with nothing accepted by WeCom: the code was not spent."""
        self._log_ending(call, "failed", error_code, message)
        return NotSent(
            attempts=call.attempts,
            errcode=call.errcode,
            errmsg=call.errmsg,
            error_code=error_code,
            error_message=message,
        )

    def _answered_refusal(self, call: _Call, message: str, *, spent: bool) -> Answered:
        """WeCom refused the update with an errcode; ``spent`` when the refusal used the code."""
        self._log_ending(call, "failed", "wecom_error", message)
        return Answered(
            status="failed",
            attempts=call.attempts,
            errcode=call.errcode,
            errmsg=call.errmsg,
            spent=spent,
            error_message=message,
        )

    def _unknown(self, call: _Call, message: str) -> Unsettled:
        """Some attempt may have reached WeCom and nothing since settled whether it did."""
        message = (
            f"the code may be spent ({call.unsettled}) and nothing since settled it; {message}"
        )
        self._log_ending(call, "indeterminate", "outcome_unknown", message)
        return Unsettled(
            attempts=call.attempts, errcode=call.errcode, errmsg=call.errmsg, error_message=message
        )

    def _deferred(self, call: _Call, wait: float, reason: str) -> Deferred:
        """Hand the command back for ``wait`` seconds: nothing was sent in this attempt."""
        log.info(
            "wecom.deferred",
            corp_id=call.app.corp_id,
            agentid=call.app.agentid,
            attempt=call.attempts,
            errcode=call.errcode,
            wait=round(wait, 3),
            maybe_spent=call.maybe_spent,
        )
        return Deferred(
            attempts=call.attempts,
            until=self._wall_clock() + wait,
            reason=reason,
            maybe_spent=call.maybe_spent,
            errcode=call.errcode,
            errmsg=call.errmsg,
        )

    def _log_ending(self, call: _Call, status: str, error_code: str, message: str) -> None:
        """An ending with an error, logged once."""
        log.warning(
            "wecom.call_failed",
            corp_id=call.app.corp_id,
            agentid=call.app.agentid,
            attempt=call.attempts,
            errcode=call.errcode,
            status=status,
            error_code=error_code,
            message=message,
        )

    def _observe_wait(self, corp_id: str, waited: float) -> None:
        """Record a rate-limit wait in ``wecom_rate_limiter_wait_seconds`` (children cached)."""
        histogram = self._wait_histograms.get(corp_id)
        if histogram is None:
            histogram = self._wait_histograms[corp_id] = self._metrics.limiter_wait.labels(corp_id)
        histogram.observe(waited)

    def _count_call(self, corp_id: str, outcome: int | str) -> None:
        """Count a call in ``wecom_api_calls_total`` (label children cached: no lookup per call)."""
        key = (corp_id, outcome)
        counter = self._call_counters.get(key)
        if counter is None:
            counter = self._call_counters[key] = self._metrics.api_calls.labels(
                corp_id, errcode_label(outcome)
            )
        counter.inc()
