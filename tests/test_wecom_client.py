"""WeComClient against the real simulator on port 0: every errcode path, retries, budgets, leaks.

Each test builds the real parts (TokenCache on an aiohttp session, HttpOrigin,
LocalRateLimiter, CorpConcurrency, Metrics), with a retry budget of a second or two and
backoffs of milliseconds. The wall clock handed to the client and the limiter
starts at a chosen second of a minute, so 45009 blocks have a known length.
"""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from aiohttp import web
from prometheus_client import generate_latest
from structlog.testing import capture_logs

from simulator import App as SimApp
from simulator import Fault, RunningSimulator, SimulatorConfig, run_simulator
from tests.services import LOOPBACK, free_port
from worker.apps import App
from worker.concurrency import CorpConcurrency
from worker.metrics import Metrics, errcode_label
from worker.ports import Answered
from worker.ratelimit import LocalRateLimiter, Window
from worker.wecom.client import UPDATE_TEMPLATE_CARD_PATH, WeComClient
from worker.wecom.http import READ_TIMEOUT, HttpOrigin
from worker.wecom.retry import RetryPolicy
from worker.wecom.tokens import TokenCache, create_session

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

SECRET = "cl1ent-test-s3cret-value"
CORP = "ww-client-corp"
AGENT = 1000002
SIM_APP = SimApp(corp_id=CORP, agentid=AGENT, secret=SECRET)
APP = App(corp_id=CORP, agentid=AGENT, secret=SECRET)
# 2025-11-24 17:00:00 UTC, the start of an hour; test clocks start a few seconds into it.
HOUR_START = 1_764_003_600.0
FAST = RetryPolicy(budget=2.0, base_delay=0.005, max_delay=0.02)
MAX_LIMITER_WAIT = 5.0


def body(code: str, userids: list[str] | None = None, agentid: int = AGENT) -> bytes:
    """An update_template_card request (button mode) for ``code``."""
    request: dict[str, object] = {
        "agentid": agentid,
        "response_code": code,
        "button": {"replace_name": "done"},
    }
    if userids is not None:
        request["userids"] = userids
    return msgspec.json.encode(request)


def wall_clock_from(start: float) -> Callable[[], float]:
    """Unix seconds that start at ``start`` now and advance in real time."""
    origin = time.monotonic()
    return lambda: start + (time.monotonic() - origin)


@dataclass
class Harness:
    """A client wired to a running simulator, and what the tests inspect."""

    sim: RunningSimulator
    client: WeComClient
    tokens: TokenCache
    concurrency: CorpConcurrency
    metrics: Metrics
    wall_clock: Callable[[], float]

    async def call(
        self,
        request: bytes,
        *,
        maybe_spent: bool = False,
        max_limiter_wait: float = MAX_LIMITER_WAIT,
        app: App = APP,
    ) -> Any:
        """Run one command's call: a :data:`CallOutcome` (Any: assertions read every variant)."""
        return await self.client.update_template_card(
            app, request, maybe_spent=maybe_spent, max_limiter_wait=max_limiter_wait
        )

    def sample(self, name: str, **labels: str) -> float:
        """A metric sample's value (0 when never set)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def calls(self, errcode: str) -> float:
        """wecom_api_calls_total for the test corp and ``errcode``."""
        return self.sample("wecom_api_calls_total", corp_id=CORP, errcode=errcode)

    def gettoken_calls(self) -> int:
        """gettoken calls the simulator saw."""
        return sum(1 for c in self.sim.state.calls if c.endpoint == "gettoken")


@asynccontextmanager
async def harness(
    config: SimulatorConfig | None = None,
    *,
    policy: RetryPolicy = FAST,
    wall_start: float = HOUR_START + 1.0,
    api_base: str | None = None,
    read_timeout: float = READ_TIMEOUT,
    window: Window | None = None,
) -> AsyncIterator[Harness]:
    """A simulator and a client on it; ``api_base`` overrides where update calls go."""
    async with run_simulator(config or SimulatorConfig(apps=(SIM_APP,))) as sim:
        origin = HttpOrigin(api_base or sim.url, max_connections=8, read_timeout=read_timeout)
        async with create_session() as session:
            metrics = Metrics()
            tokens = TokenCache(session, sim.url, metrics)
            wall = wall_clock_from(wall_start)
            limiter = LocalRateLimiter([window or Window(10_000, 60)], wall_clock=wall)
            concurrency = CorpConcurrency(8)
            client = WeComClient(
                origin,
                tokens=tokens,
                limiter=limiter,
                concurrency=concurrency,
                metrics=metrics,
                max_in_flight=8,
                policy=policy,
                wall_clock=wall,
            )
            try:
                yield Harness(sim, client, tokens, concurrency, metrics, wall)
            finally:
                await origin.close()


def with_faults(*faults: Fault) -> SimulatorConfig:
    """A simulator configuration for SIM_APP with ``faults`` queued."""
    return SimulatorConfig(apps=(SIM_APP,), faults=faults)


# --- answers --------------------------------------------------------------------------------


async def test_errcode_0_is_ok_and_spends_the_code() -> None:
    """A plain success: ok, one attempt, the code spent at WeCom and counted under errcode 0."""
    async with harness() as h:
        outcome = await h.call(body("rc-ok"))
        assert outcome == Answered(
            status="ok", attempts=1, errcode=0, errmsg="ok", spent=True, maybe_spent=False
        )
        assert h.sim.state.code_stats("rc-ok").accepted == 1
        assert h.calls("0") == 1
        assert h.sample("wecom_rate_limiter_wait_seconds_count", corp_id=CORP) == 1
        assert h.sample("wecom_api_call_duration_seconds_count") == 1


async def test_invalid_users_give_partial_with_the_lower_cased_list() -> None:
    """WeCom's invaliduser (lower case, request order) becomes partial with the same list."""
    async with harness() as h:
        users = ["Alice", "INVALID_Bob", "invalid_carol"]
        outcome = await h.call(body("rc-partial", users))
        assert outcome.status == "partial"
        assert outcome.invalid_users == ("invalid_bob", "invalid_carol")
        assert outcome.spent
        assert h.sample("wecom_invalid_users_total") == 2


async def test_60140_on_a_first_call_is_failed_and_spent() -> None:
    """A code WeCom no longer accepts, with no earlier attempt: failed / wecom_error, spent."""
    async with harness() as h:
        h.sim.state.expire_codes(["rc-old"])
        outcome = await h.call(body("rc-old"))
        assert (outcome.status, outcome.error_code, outcome.errcode) == (
            "failed",
            "wecom_error",
            60140,
        )
        assert outcome.errmsg == "invalid response_code"
        assert outcome.spent
        assert outcome.attempts == 1


async def test_60140_after_an_earlier_holder_may_have_sent_it_is_indeterminate() -> None:
    """maybe_spent from the claim (a lease that ran out mid-call) turns 60140 into indeterminate."""
    async with harness() as h:
        await h.call(body("rc-taken"))
        outcome = await h.call(body("rc-taken"), maybe_spent=True)
        assert (outcome.status, outcome.error_code, outcome.errcode) == (
            "indeterminate",
            "outcome_unknown",
            60140,
        )
        assert outcome.spent


async def test_301002_is_a_configuration_failure() -> None:
    """A token of one agent used for another agent's card: failed / wecom_error, not spent."""
    async with harness() as h:
        outcome = await h.call(body("rc-agent", agentid=AGENT + 1))
        assert (outcome.status, outcome.error_code, outcome.errcode) == (
            "failed",
            "wecom_error",
            301002,
        )
        assert not outcome.spent
        assert outcome.attempts == 1


@pytest.mark.parametrize(
    ("errcode", "errmsg"),
    [(40058, "invalid parameter"), (42015, "bad"), (81013, "user & party & tag all invalid")],
)
async def test_request_errors_fail_with_errcode_and_errmsg(errcode: int, errmsg: str) -> None:
    """Errcodes that say the request is wrong end the call at once: failed, not spent."""
    fault = Fault(kind="errcode", errcode=errcode, errmsg=errmsg)
    async with harness(with_faults(fault)) as h:
        outcome = await h.call(body("rc-bad"))
        assert (outcome.status, outcome.error_code) == ("failed", "wecom_error")
        assert (outcome.errcode, outcome.errmsg) == (errcode, errmsg)
        assert outcome.attempts == 1
        assert not outcome.spent
        assert h.calls(errcode_label(errcode)) == 1  # 42015 is not a known errcode: other


async def test_60020_fails_and_raises_the_ip_gauge_until_a_call_succeeds() -> None:
    """IP not trusted: failed, wecom_ip_not_trusted set for the corp, cleared by a later success."""
    fault = Fault(kind="errcode", errcode=60020, errmsg="not allow to access from your ip")
    async with harness(with_faults(fault)) as h:
        outcome = await h.call(body("rc-ip"))
        assert (outcome.status, outcome.errcode) == ("failed", 60020)
        assert h.sample("wecom_ip_not_trusted", corp_id=CORP) == 1
        assert (await h.call(body("rc-ip-2"))).status == "ok"
        assert h.sample("wecom_ip_not_trusted", corp_id=CORP) == 0


# --- tokens ---------------------------------------------------------------------------------


async def test_the_token_is_fetched_once_for_many_calls() -> None:
    """Sequential calls reuse the cached token: one gettoken for three updates."""
    async with harness() as h:
        for code in ("rc-a", "rc-b", "rc-c"):
            assert (await h.call(body(code))).status == "ok"
        assert h.gettoken_calls() == 1


async def test_fifty_concurrent_calls_on_a_cold_cache_make_one_gettoken() -> None:
    """Single flight: fifty commands at once share one token refresh."""
    config = SimulatorConfig(apps=(SIM_APP,), latency_ms=20, latency_on_gettoken=True)
    async with harness(config) as h:
        outcomes = await asyncio.gather(*(h.call(body(f"rc-{n}")) for n in range(50)))
        assert {o.status for o in outcomes} == {"ok"}
        assert h.gettoken_calls() == 1
        assert h.calls("0") == 50


async def test_an_expired_token_is_refreshed_and_the_call_retried_once() -> None:
    """42001: the token is dropped, gettoken called again, the retry succeeds (two attempts)."""
    async with harness(with_faults(Fault(kind="token_expired"))) as h:
        outcome = await h.call(body("rc-expired-token"))
        assert (outcome.status, outcome.attempts) == ("ok", 2)
        assert h.gettoken_calls() == 2
        assert h.sample("wecom_api_retries_total", reason="token") == 1
        assert h.calls("42001") == 1


async def test_a_token_refused_twice_fails_the_call() -> None:
    """The token is retried once only: a second 42001 is failed / wecom_error, code not spent."""
    async with harness(with_faults(Fault(kind="token_expired", count=2))) as h:
        outcome = await h.call(body("rc-token-twice"))
        assert (outcome.status, outcome.error_code, outcome.errcode) == (
            "failed",
            "wecom_error",
            42001,
        )
        assert outcome.attempts == 2
        assert not outcome.spent


async def test_a_wrong_secret_fails_with_gettokens_errcode_and_no_secret_anywhere() -> None:
    """gettoken refuses the secret: failed / wecom_error with 40001, nothing sent, secret absent."""
    wrong = App(corp_id=CORP, agentid=AGENT, secret="wrong-" + SECRET)
    async with harness() as h:
        outcome = await h.call(body("rc-secret"), app=wrong)
        assert (outcome.status, outcome.error_code, outcome.errcode) == (
            "failed",
            "wecom_error",
            40001,
        )
        assert outcome.errmsg == "invalid credential"
        assert (outcome.attempts, outcome.spent) == (0, False)
        for field in fields(outcome):
            assert SECRET not in str(getattr(outcome, field.name))
        assert SECRET not in repr(outcome)


async def test_gettoken_busy_is_retried_within_the_budget() -> None:
    """gettoken answering -1 once: retried after a backoff, then the update succeeds."""
    fault = Fault(kind="system_busy", endpoint="gettoken")
    async with harness(with_faults(fault)) as h:
        outcome = await h.call(body("rc-gettoken-busy"))
        assert (outcome.status, outcome.attempts) == ("ok", 1)
        assert h.sample("wecom_api_retries_total", reason="gettoken") == 1


async def test_gettoken_unavailable_for_the_whole_budget_is_retries_exhausted() -> None:
    """gettoken failing every time: failed / retries_exhausted, no update call, code not spent."""
    fault = Fault(kind="http_500", endpoint="gettoken", count=10_000)
    async with harness(
        with_faults(fault), policy=RetryPolicy(budget=0.3, base_delay=0.01, max_delay=0.02)
    ) as h:
        outcome = await h.call(body("rc-no-token"))
        assert (outcome.status, outcome.error_code) == ("failed", "retries_exhausted")
        assert (outcome.attempts, outcome.spent, outcome.maybe_spent) == (0, False, False)
        assert "HTTP 500" in (outcome.error_message or "")


# --- retries --------------------------------------------------------------------------------


async def test_system_busy_then_ok_is_ok_after_two_attempts() -> None:
    """-1 once, then success: ok, two attempts, one retry counted as system_busy."""
    async with harness(with_faults(Fault(kind="system_busy"))) as h:
        outcome = await h.call(body("rc-busy-once"))
        assert (outcome.status, outcome.attempts, outcome.errcode) == ("ok", 2, 0)
        assert h.sample("wecom_api_retries_total", reason="system_busy") == 1


async def test_system_busy_three_times_is_indeterminate() -> None:
    """-1 may have done the work: after three -1 answers the outcome is unknown, the code spent."""
    async with harness(with_faults(Fault(kind="system_busy", count=3))) as h:
        outcome = await h.call(body("rc-busy"))
        assert (outcome.status, outcome.error_code, outcome.errcode) == (
            "indeterminate",
            "outcome_unknown",
            -1,
        )
        assert (outcome.attempts, outcome.spent, outcome.maybe_spent) == (3, True, True)
        assert h.sim.state.code_stats("rc-busy").calls == 3


async def test_http_500_is_retried_and_not_taken_as_spent() -> None:
    """An HTTP 500 answer is retried; the success after it is ok and maybe_spent stays false."""
    async with harness(with_faults(Fault(kind="http_500"))) as h:
        outcome = await h.call(body("rc-500"))
        assert (outcome.status, outcome.attempts, outcome.maybe_spent) == ("ok", 2, False)
        assert h.calls("http_5xx") == 1


async def test_http_500_until_the_budget_ends_is_retries_exhausted() -> None:
    """5xx on every attempt: the budget runs out with failed / retries_exhausted, not spent."""
    policy = RetryPolicy(budget=0.3, base_delay=0.01, max_delay=0.02)
    async with harness(with_faults(Fault(kind="http_500", count=10_000)), policy=policy) as h:
        outcome = await h.call(body("rc-500-always"))
        assert (outcome.status, outcome.error_code, outcome.spent) == (
            "failed",
            "retries_exhausted",
            False,
        )
        assert outcome.attempts >= 2
        assert outcome.attempts == h.calls("http_5xx")
        assert "0.3 s retry budget" in (outcome.error_message or "")


async def test_a_lost_answer_then_60140_is_indeterminate_and_the_code_was_sent_twice() -> None:
    """The first call spent the code but its answer was lost; the retry's 60140 cannot tell more."""
    async with harness(with_faults(Fault(kind="lost_answer", response_code="rc-lost"))) as h:
        outcome = await h.call(body("rc-lost"))
        assert (outcome.status, outcome.error_code, outcome.errcode) == (
            "indeterminate",
            "outcome_unknown",
            60140,
        )
        assert (outcome.attempts, outcome.spent, outcome.maybe_spent) == (2, True, True)
        stats = h.sim.state.code_stats("rc-lost")
        assert (stats.calls, stats.accepted) == (2, 1)
        assert h.calls("network") == 1


async def test_a_lost_answer_that_did_not_spend_the_code_is_settled_by_the_retry() -> None:
    """A lost answer WeCom never processed: the retry succeeds and settles it as ok."""
    fault = Fault(kind="lost_answer", response_code="rc-lost-early", consume_code=False)
    async with harness(with_faults(fault)) as h:
        outcome = await h.call(body("rc-lost-early"))
        assert (outcome.status, outcome.attempts, outcome.maybe_spent) == ("ok", 2, True)


async def test_a_read_timeout_counts_as_maybe_sent() -> None:
    """An answer slower than the read timeout: the code may be spent, the retry's 60140 indeterminate."""
    fault = Fault(kind="slow_answer", response_code="rc-slow", delay_ms=400)
    async with harness(with_faults(fault), read_timeout=0.1) as h:
        outcome = await h.call(body("rc-slow"))
        assert (outcome.status, outcome.errcode) == ("indeterminate", 60140)
        assert "AnswerLost: read timeout" in (outcome.error_message or "")


async def test_a_refused_connection_is_retried_then_retries_exhausted_not_spent() -> None:
    """Nothing listens where updates go: every attempt fails before sending; failed, not spent."""
    closed = f"http://{LOOPBACK}:{free_port()}"
    policy = RetryPolicy(budget=0.3, base_delay=0.01, max_delay=0.02)
    async with harness(api_base=closed, policy=policy) as h:
        outcome = await h.call(body("rc-refused"))
        assert (outcome.status, outcome.error_code) == ("failed", "retries_exhausted")
        assert (outcome.spent, outcome.maybe_spent) == (False, False)
        assert outcome.attempts >= 2
        assert h.calls("network") == outcome.attempts
        assert "ConnectFailed" in (outcome.error_message or "")


async def test_45033_lowers_the_corps_concurrency_and_the_retry_succeeds() -> None:
    """Too many concurrent calls: the corp's limit is halved, the call backs off and succeeds."""
    async with harness(with_faults(Fault(kind="concurrent_limit"))) as h:
        outcome = await h.call(body("rc-45033"))
        assert (outcome.status, outcome.attempts) == ("ok", 2)
        assert h.concurrency.limit(CORP) == 4
        assert h.sample("wecom_api_retries_total", reason="concurrency_limit") == 1


async def test_45033_until_the_budget_ends_is_retries_exhausted_with_the_errcode() -> None:
    """A budget that runs out on refusals that spent nothing: failed / retries_exhausted, 45033."""
    policy = RetryPolicy(budget=0.3, base_delay=0.01, max_delay=0.02)
    async with harness(
        with_faults(Fault(kind="concurrent_limit", count=10_000)), policy=policy
    ) as h:
        outcome = await h.call(body("rc-45033-always"))
        assert (outcome.status, outcome.error_code, outcome.errcode) == (
            "failed",
            "retries_exhausted",
            45033,
        )
        assert not outcome.spent
        assert h.concurrency.limit(CORP) == 1


async def test_a_budget_running_out_after_a_lost_answer_is_indeterminate() -> None:
    """Lost answer, then nothing but 500s until the budget ends: indeterminate, spent."""
    policy = RetryPolicy(budget=0.3, base_delay=0.01, max_delay=0.02)
    faults = (
        Fault(kind="lost_answer", response_code="rc-lost-500", consume_code=True),
        Fault(kind="http_500", response_code="rc-lost-500", count=10_000),
    )
    async with harness(with_faults(*faults), policy=policy) as h:
        outcome = await h.call(body("rc-lost-500"))
        assert (outcome.status, outcome.error_code) == ("indeterminate", "outcome_unknown")
        assert (outcome.spent, outcome.maybe_spent) == (True, True)


@asynccontextmanager
async def gateway(status: int, text: str) -> AsyncIterator[str]:
    """A real HTTP server on port 0 that answers every update call ``status`` with ``text``.

    It stands for a proxy or gateway in front of WeCom; gettoken still goes to the simulator.
    """

    async def answer(_: web.Request) -> web.Response:
        return web.Response(status=status, text=text)

    app = web.Application()
    app.router.add_post(UPDATE_TEMPLATE_CARD_PATH, answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("status", "text", "ending", "label"),
    [
        (502, "bad gateway", ("failed", "retries_exhausted", False), "http_5xx"),
        (504, "gateway timeout", ("indeterminate", "outcome_unknown", True), "http_5xx"),
        (
            200,
            "<html>not json</html>",
            ("indeterminate", "outcome_unknown", True),
            "invalid_answer",
        ),
        (404, "not found", ("failed", "wecom_error", False), "http_4xx"),
    ],
)
async def test_answers_that_are_not_wecoms_json(
    status: int, text: str, ending: tuple[str, str, bool], label: str
) -> None:
    """5xx says failure (not spent), except 504; a non-JSON 200 may hide a done call; 404 is final."""
    policy = RetryPolicy(budget=0.2, base_delay=0.01, max_delay=0.02)
    async with gateway(status, text) as url, harness(api_base=url, policy=policy) as h:
        outcome = await h.call(body("rc-gateway"))
        assert (outcome.status, outcome.error_code, outcome.spent) == ending
        assert h.calls(label) == outcome.attempts
        if status == 404:
            assert outcome.attempts == 1


# --- 45009 and deferral ---------------------------------------------------------------------


async def test_45009_blocks_the_corp_and_a_short_wait_defers_the_command() -> None:
    """The limiter is blocked to the next minute; with 1 s allowed the command is deferred."""
    async with harness(with_faults(Fault(kind="freq_limit")), wall_start=HOUR_START + 1.0) as h:
        outcome = await h.call(body("rc-45009"), max_limiter_wait=1.0)
        assert outcome.status == "deferred"
        assert (outcome.spent, outcome.maybe_spent, outcome.attempts) == (False, False, 1)
        assert outcome.until is not None
        assert h.wall_clock() < outcome.until <= HOUR_START + 60.0 + 1.0
        assert h.sim.state.code_stats("rc-45009").accepted == 0
        # the block holds for every command of the corp, not just this one
        assert (await h.call(body("rc-next"), max_limiter_wait=1.0)).status == "deferred"


async def test_45009_near_a_minute_boundary_is_waited_out_then_retried() -> None:
    """Blocked until the minute boundary 0.2 s away: the call waits for it and succeeds."""
    async with harness(with_faults(Fault(kind="freq_limit")), wall_start=HOUR_START + 59.8) as h:
        outcome = await h.call(body("rc-45009-wait"))
        assert (outcome.status, outcome.attempts) == ("ok", 2)
        assert h.sample("wecom_rate_limiter_wait_seconds_sum", corp_id=CORP) > 0.1
        assert h.sample("wecom_api_retries_total", reason="frequency_limit") == 1


async def test_45009_right_after_a_minute_block_defers_to_the_next_hour() -> None:
    """A second 45009 just after the minute block ended means the hour window is full."""
    faults = (Fault(kind="freq_limit"), Fault(kind="freq_limit"))
    async with harness(with_faults(*faults), wall_start=HOUR_START + 59.9) as h:
        outcome = await h.call(body("rc-45009-hour"), max_limiter_wait=1.0)
        assert outcome.status == "deferred"
        assert outcome.until == pytest.approx(HOUR_START + 3600.0, abs=0.01)


async def test_deferral_after_a_lost_answer_carries_maybe_spent() -> None:
    """After an unanswered attempt a far slot is waited for within the budget, else deferred with maybe_spent."""
    faults = (
        Fault(kind="lost_answer", response_code="rc-lost-45009", consume_code=False),
        Fault(kind="freq_limit", response_code="rc-lost-45009"),
    )
    async with harness(with_faults(*faults), wall_start=HOUR_START + 1.0) as h:
        outcome = await h.call(body("rc-lost-45009"), max_limiter_wait=1.0)
        assert outcome.status == "deferred"
        assert (outcome.spent, outcome.maybe_spent, outcome.attempts) == (False, True, 2)


async def test_a_saturated_limiter_defers_before_anything_is_sent() -> None:
    """No slot within max_limiter_wait on the first attempt: deferred, zero attempts."""
    async with harness(window=Window(1, 3600, burst=1)) as h:
        assert (await h.call(body("rc-first"))).status == "ok"
        outcome = await h.call(body("rc-second"), max_limiter_wait=0.5)
        assert (outcome.status, outcome.attempts, outcome.maybe_spent) == ("deferred", 0, False)
        assert outcome.until is not None
        assert outcome.until > h.wall_clock() + 0.5
        assert h.sim.state.code_stats("rc-second").calls == 0


async def test_no_place_in_flight_within_the_budget_defers_a_call_never_sent() -> None:
    """Every place among the corp's calls in flight taken for the whole budget, before any
    attempt: deferred, not failed (a backlog behind a slow limit is not WeCom failing)."""
    policy = RetryPolicy(budget=0.3, base_delay=0.01, max_delay=0.02)
    async with harness(policy=policy) as h:
        places = h.concurrency.slot(CORP)
        for _ in range(places.limit):
            await places.acquire()
        outcome = await h.call(body("rc-no-place"))
        assert (outcome.status, outcome.attempts, outcome.maybe_spent) == ("deferred", 0, False)
        assert outcome.until is not None
        assert h.sim.state.code_stats("rc-no-place").calls == 0


# --- secrets --------------------------------------------------------------------------------


async def test_no_log_line_outcome_or_metric_holds_the_token_or_the_secret() -> None:
    """Across failures that carry URLs and secrets, neither token nor secret leaks anywhere."""
    faults = (
        Fault(kind="lost_answer", response_code="rc-leak-1"),
        Fault(kind="http_500", response_code="rc-leak-2"),
        Fault(kind="token_expired", response_code="rc-leak-3"),
        Fault(kind="errcode", errcode=40058, response_code="rc-leak-4"),
    )
    policy = RetryPolicy(budget=0.2, base_delay=0.01, max_delay=0.02)
    wrong = App(corp_id=CORP, agentid=AGENT, secret="wrong-" + SECRET)
    async with harness(with_faults(*faults), policy=policy) as h:
        with capture_logs() as logs:
            outcomes = [await h.call(body(f"rc-leak-{n}")) for n in range(1, 5)]
            token = h.tokens.cached(APP)
            outcomes.append(await h.call(body("rc-leak-5"), app=wrong))
        async with harness(api_base=f"http://{LOOPBACK}:{free_port()}", policy=policy) as closed:
            with capture_logs() as more_logs:
                outcomes.append(await closed.call(body("rc-leak-6")))
                closed_token = closed.tokens.cached(APP)
        assert token is not None
        assert closed_token is not None
        assert len(logs) > 4
        secrets = (token, closed_token, SECRET)
        texts = [repr(outcome) for outcome in outcomes]
        texts += [str(value) for entry in logs + more_logs for value in entry.values()]
        texts += [generate_latest(m.registry).decode() for m in (h.metrics, closed.metrics)]
        for text in texts:
            for secret in secrets:
                assert secret not in text


def test_backoff_is_full_jitter_capped_exponential() -> None:
    """Retry n waits draw * min(cap, base * 2**n): zero to the ceiling, never past the cap."""
    policy = RetryPolicy(budget=30, base_delay=0.1, max_delay=5.0)
    assert policy.backoff(0, 0.5) == pytest.approx(0.05)
    assert policy.backoff(3, 1.0) == pytest.approx(0.8)
    assert policy.backoff(10, 0.999) == pytest.approx(4.995)
    assert policy.backoff(10_000, 1.0) == 5.0
    assert policy.backoff(7, 0.0) == 0.0
    assert math.isfinite(policy.backoff(2**40, 0.5))
