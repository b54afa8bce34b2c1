"""The WeCom simulator: its API answers, faults, limits, control API and command line.

Server tests run a real simulator on 127.0.0.1 port 0 and talk to it with
aiohttp; rules that depend on time run on a fake clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from simulator import (
    DEMO_APP,
    App,
    Fault,
    RateWindow,
    RunningSimulator,
    SimulatorConfig,
    SimulatorState,
    parse_app,
    parse_apps,
    parse_rate_limit,
    run_simulator,
)
from simulator.cli import build_config, build_parser, parse_fault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent
UPDATE_PATH = "/cgi-bin/message/update_template_card"
# A Unix time at the start of a minute and of an hour, so windows do not roll over mid-test.
WINDOW_START = 1_764_003_600.0
OTHER_APP = App(corp_id="ww-other-corp", agentid=42, secret="other-secret")
SAME_CORP_APP = App(corp_id=DEMO_APP.corp_id, agentid=1000003, secret="second-secret")


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self, now: float = WINDOW_START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    config = SimulatorConfig(
        apps=(DEMO_APP, OTHER_APP, SAME_CORP_APP), invalid_users=frozenset({"Bob.Smith"})
    )
    async with run_simulator(config) as running:
        yield running


async def get_json(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> dict[str, Any]:
    async with http.request(method, url, **kwargs) as response:
        assert response.status == 200, await response.text()
        payload: dict[str, Any] = await response.json()
        return payload


async def get_token(http: aiohttp.ClientSession, base: str, app: App = DEMO_APP) -> str:
    params = {"corpid": app.corp_id, "corpsecret": app.secret}
    answer = await get_json(http, "GET", f"{base}/cgi-bin/gettoken", params=params)
    assert answer["errcode"] == 0, answer
    token: str = answer["access_token"]
    return token


async def update(
    http: aiohttp.ClientSession,
    base: str,
    token: str | None,
    code: str | None,
    *,
    agentid: Any = DEMO_APP.agentid,
    userids: Any = None,
    give_up_after: float | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"agentid": agentid, "button": {"replace_name": "done"}}
    if code is not None:
        body["response_code"] = code
    if userids is not None:
        body["userids"] = userids
    params = {} if token is None else {"access_token": token}
    client_timeout = aiohttp.ClientTimeout(total=give_up_after)
    return await get_json(
        http, "POST", f"{base}{UPDATE_PATH}", params=params, json=body, timeout=client_timeout
    )


async def errcode_of(
    http: aiohttp.ClientSession, base: str, token: str | None, code: str | None, **kwargs: Any
) -> int:
    answer = await update(http, base, token, code, **kwargs)
    errcode: int = answer["errcode"]
    return errcode


async def http_status_of(http: aiohttp.ClientSession, base: str, token: str, code: str) -> int:
    body = {"agentid": DEMO_APP.agentid, "response_code": code}
    url = f"{base}{UPDATE_PATH}"
    async with http.post(url, params={"access_token": token}, json=body) as response:
        return response.status


async def wait_until(condition: Callable[[], bool]) -> None:
    # The simulator's state has no event to wait on; polling it briefly is the simple way.
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


# --- parsing -----------------------------------------------------------------


def test_parse_rate_limit_reads_the_worker_syntax() -> None:
    """`N/s`, `N/min`, `N/h` joined by commas parse to windows; an empty spec is no limit."""
    assert parse_rate_limit("10000/min, 150000/h,5/s") == (
        RateWindow(10000, 60),
        RateWindow(150000, 3600),
        RateWindow(5, 1),
    )
    assert parse_rate_limit("") == ()


@pytest.mark.parametrize("spec", ["10/day", "ten/min", "0/s", "-1/s", "10", "10/"])
def test_parse_rate_limit_rejects_other_forms(spec: str) -> None:
    """A rate-limit entry that is not N/s, N/min or N/h with N ≥ 1 is refused."""
    with pytest.raises(ValueError, match="N/s, N/min or N/h"):
        parse_rate_limit(spec)


def test_parse_app_keeps_colons_in_the_secret_and_hides_it() -> None:
    """An app's secret is everything after the second colon, and its repr leaves it out."""
    app = parse_app("ww1:1000002:se:cr:et")
    assert app == App(corp_id="ww1", agentid=1000002, secret="se:cr:et")
    assert "se:cr:et" not in repr(app)
    assert parse_apps("a:1:x, b:2:y") == (App("a", 1, "x"), App("b", 2, "y"))


@pytest.mark.parametrize("entry", ["ww1:notanumber:secret", "ww1:1000002", ":1:secret"])
def test_parse_app_rejects_malformed_entries_without_echoing_the_secret(entry: str) -> None:
    """A malformed app entry is refused, and the message does not contain the secret."""
    with pytest.raises(ValueError, match="CORP_ID:AGENTID:SECRET") as caught:
        parse_app(entry)
    assert "secret" not in str(caught.value).replace("SECRET", "")


def test_config_refuses_apps_that_would_be_ambiguous() -> None:
    """Two apps with one corp and agentid, or one corp and secret, are refused."""
    with pytest.raises(ValueError, match="configured twice"):
        SimulatorConfig(apps=(DEMO_APP, replace(DEMO_APP, secret="other")))
    with pytest.raises(ValueError, match="share one secret"):
        SimulatorConfig(apps=(DEMO_APP, replace(DEMO_APP, agentid=7)))


def test_parse_fault_reads_short_and_key_value_forms() -> None:
    """`--fault KIND[:COUNT]` and `--fault key=value,...` give the same Fault as the JSON API."""
    assert parse_fault("system_busy:3") == Fault(kind="system_busy", count=3)
    assert parse_fault("kind=lost_answer,response_code=rc-1,consume_code=false") == Fault(
        kind="lost_answer", response_code="rc-1", consume_code=False
    )
    assert parse_fault("kind=errcode,errcode=60020,errmsg=ip") == Fault(
        kind="errcode", errcode=60020, errmsg="ip"
    )
    with pytest.raises(ValueError, match="kind"):
        parse_fault("no_such_fault")


def test_build_config_takes_apps_from_flags_then_env_then_demo() -> None:
    """--app wins over SIMULATOR_APPS, which wins over the demo app; the prefix can be turned off."""
    parser = build_parser()
    env = {"SIMULATOR_APPS": "ww-env:7:env-secret,ww-env2:8:s2"}
    from_env = build_config(parser.parse_args([]), env)
    assert [(a.corp_id, a.agentid) for a in from_env.apps] == [("ww-env", 7), ("ww-env2", 8)]
    from_flag = build_config(parser.parse_args(["--app", "ww-flag:9:f"]), env)
    assert from_flag.apps == (App("ww-flag", 9, "f"),)
    default = build_config(parser.parse_args(["--no-invalid-user-prefix"]), {})
    assert default.apps == (DEMO_APP,)
    assert default.invalid_user_prefix is None
    flags = ["--rate-limit", "2/s", "--max-concurrency", "3", "--fault", "http_500"]
    configured = build_config(parser.parse_args(flags), {})
    assert configured.rate_limit == (RateWindow(2, 1),)
    assert configured.max_concurrency == 3
    assert configured.faults == (Fault(kind="http_500"),)


# --- gettoken ----------------------------------------------------------------


async def test_gettoken_answers_a_token_with_its_lifetime(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """gettoken with a configured corp and secret answers errcode 0, a token and expires_in 7200."""
    params = {"corpid": DEMO_APP.corp_id, "corpsecret": DEMO_APP.secret}
    answer = await get_json(http, "GET", f"{sim.url}/cgi-bin/gettoken", params=params)
    assert answer["errcode"] == 0
    assert answer["errmsg"] == "ok"
    assert answer["expires_in"] == 7200
    assert len(answer["access_token"]) >= 32


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"corpid": "ww-unknown", "corpsecret": DEMO_APP.secret}, 40013),
        ({"corpid": DEMO_APP.corp_id, "corpsecret": "wrong"}, 40001),
        ({"corpsecret": DEMO_APP.secret}, 41002),
        ({"corpid": DEMO_APP.corp_id}, 41004),
    ],
)
async def test_gettoken_refuses_bad_credentials(
    sim: RunningSimulator, http: aiohttp.ClientSession, params: dict[str, str], errcode: int
) -> None:
    """Unknown corp → 40013, wrong secret → 40001, missing corpid / secret → 41002 / 41004."""
    answer = await get_json(http, "GET", f"{sim.url}/cgi-bin/gettoken", params=params)
    assert answer["errcode"] == errcode
    assert "access_token" not in answer


def test_gettoken_returns_the_same_token_until_it_expires() -> None:
    """Within its TTL gettoken returns the same token with the seconds left; after it, a new one."""
    clock = FakeClock()
    state = SimulatorState(SimulatorConfig(token_ttl=100), clock=clock)
    first = json.loads(state.gettoken(DEMO_APP.corp_id, DEMO_APP.secret).body)
    clock.now += 40
    second = json.loads(state.gettoken(DEMO_APP.corp_id, DEMO_APP.secret).body)
    assert second["access_token"] == first["access_token"]
    assert (first["expires_in"], second["expires_in"]) == (100, 60)
    clock.now += 60
    third = json.loads(state.gettoken(DEMO_APP.corp_id, DEMO_APP.secret).body)
    assert third["access_token"] != first["access_token"]


def test_a_token_past_its_ttl_answers_42001() -> None:
    """An update with a token older than its TTL answers 42001 and does not spend the code."""
    clock = FakeClock()
    state = SimulatorState(SimulatorConfig(token_ttl=100), clock=clock)
    token = json.loads(state.gettoken(DEMO_APP.corp_id, DEMO_APP.secret).body)["access_token"]
    body = json.dumps({"agentid": DEMO_APP.agentid, "response_code": "rc"}).encode()
    clock.now += 100
    assert json.loads(state.update_template_card(token, body).body)["errcode"] == 42001
    assert state.code_stats("rc").accepted == 0


# --- update_template_card ------------------------------------------------------


async def test_update_succeeds_once_then_answers_60140(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """A response_code is accepted on its first call; a second call answers 60140."""
    token = await get_token(http, sim.url)
    first = await update(http, sim.url, token, "rc-once", userids=["alice"])
    assert first == {"errcode": 0, "errmsg": "ok", "invaliduser": []}
    second = await update(http, sim.url, token, "rc-once")
    assert second == {"errcode": 60140, "errmsg": "invalid response_code"}
    stats = sim.state.code_stats("rc-once")
    assert (stats.calls, stats.accepted, stats.status) == (2, 1, "used")


async def test_invaliduser_lists_unknown_users_lower_cased(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """Configured and `invalid`-prefixed userids come back lower-cased, once each, in order."""
    token = await get_token(http, sim.url)
    userids = ["alice", "BOB.SMITH", "Invalid-Carol", "bob.smith", "dave"]
    answer = await update(http, sim.url, token, "rc-users", userids=userids)
    assert answer["errcode"] == 0
    assert answer["invaliduser"] == ["bob.smith", "invalid-carol"]


async def test_the_invalid_prefix_rule_can_be_turned_off(http: aiohttp.ClientSession) -> None:
    """With invalid_user_prefix None, an `invalid…` userid is an ordinary user."""
    async with run_simulator(SimulatorConfig(invalid_user_prefix=None)) as running:
        token = await get_token(http, running.url)
        answer = await update(http, running.url, token, "rc", userids=["invalid-x"])
    assert answer["invaliduser"] == []


@pytest.mark.parametrize(("token", "errcode"), [(None, 41001), ("", 41001), ("forged", 40014)])
async def test_a_missing_or_unknown_token_is_refused(
    sim: RunningSimulator, http: aiohttp.ClientSession, token: str | None, errcode: int
) -> None:
    """No access_token answers 41001, one never issued 40014; the code stays unspent."""
    assert await errcode_of(http, sim.url, token, "rc-token") == errcode
    assert sim.state.code_stats("rc-token").accepted == 0


async def test_a_token_cannot_update_another_agents_cards(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """A token used with another agentid of its corp answers 301002; it belongs to its app."""
    token = await get_token(http, sim.url, SAME_CORP_APP)
    assert await errcode_of(http, sim.url, token, "rc-a", agentid=DEMO_APP.agentid) == 301002
    assert await errcode_of(http, sim.url, token, "rc-a", agentid=SAME_CORP_APP.agentid) == 0


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b"not json", 47001),
        (b'["a JSON array"]', 47001),
        (b'{"response_code": "rc-body"}', 41011),
        (b'{"agentid": "1000002", "response_code": "rc-body"}', 40056),
        (b'{"agentid": 1000002}', 40058),
        (b'{"agentid": 1000002, "response_code": ""}', 40058),
        (b'{"agentid": 1000002, "response_code": "rc-body", "userids": [1]}', 40058),
    ],
)
async def test_malformed_bodies_are_refused_without_spending_the_code(
    sim: RunningSimulator, http: aiohttp.ClientSession, body: bytes, errcode: int
) -> None:
    """Bad JSON → 47001, no agentid → 41011, non-integer agentid → 40056, no code → 40058."""
    token = await get_token(http, sim.url)
    url = f"{sim.url}{UPDATE_PATH}"
    answer = await get_json(http, "POST", url, params={"access_token": token}, data=body)
    assert answer["errcode"] == errcode
    assert await errcode_of(http, sim.url, token, "rc-body") == 0


async def test_a_token_expires_after_n_calls_and_gettoken_replaces_it(
    http: aiohttp.ClientSession,
) -> None:
    """With token_expire_every 2, a token's third update answers 42001; a new token works."""
    async with run_simulator(SimulatorConfig(token_expire_every=2)) as running:
        token = await get_token(http, running.url)
        assert await errcode_of(http, running.url, token, "rc-1") == 0
        assert await errcode_of(http, running.url, token, "rc-2") == 0
        assert await errcode_of(http, running.url, token, "rc-3") == 42001
        assert await errcode_of(http, running.url, token, "rc-3") == 42001
        fresh = await get_token(http, running.url)
        assert fresh != token
        assert await errcode_of(http, running.url, fresh, "rc-3") == 0


# --- faults ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "errcode"),
    [
        (Fault(kind="system_busy", count=2), -1),
        (Fault(kind="concurrent_limit", count=2), 45033),
        (Fault(kind="freq_limit", count=2), 45009),
        (Fault(kind="errcode", count=2, errcode=60020, errmsg="not allow to access"), 60020),
    ],
)
async def test_a_global_errcode_fault_answers_the_next_calls(
    sim: RunningSimulator, http: aiohttp.ClientSession, fault: Fault, errcode: int
) -> None:
    """A global fault answers its errcode to the next `count` calls whatever their code, then stops."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(fault)
    assert await errcode_of(http, sim.url, token, "rc-1") == errcode
    assert await errcode_of(http, sim.url, token, "rc-2") == errcode
    assert await errcode_of(http, sim.url, token, "rc-1") == 0
    assert await errcode_of(http, sim.url, token, "rc-2") == 0
    assert sim.state.pending_faults() == []


async def test_a_global_http_500_fault_answers_500_without_spending_the_code(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """An http_500 fault answers HTTP 500 (no JSON) once; the code is then still usable."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(Fault(kind="http_500"))
    assert await http_status_of(http, sim.url, token, "rc-500") == 500
    assert await errcode_of(http, sim.url, token, "rc-500") == 0
    assert [(c.errcode, c.http_status, c.fault) for c in sim.state.calls[-2:]] == [
        (None, 500, "http_500"),
        (0, 200, None),
    ]


async def test_a_targeted_fault_hits_only_calls_carrying_its_code(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """A fault naming a response_code leaves other codes alone and hits that code's next call."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(Fault(kind="http_500", response_code="rc-target"))
    assert await errcode_of(http, sim.url, token, "rc-other") == 0
    assert await http_status_of(http, sim.url, token, "rc-target") == 500
    assert await errcode_of(http, sim.url, token, "rc-target") == 0


async def test_targeted_faults_come_first_in_order_then_global_ones(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """A code's targeted faults apply in the order added, before any global fault."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(
        Fault(kind="freq_limit"),
        Fault(kind="system_busy", response_code="rc-a"),
        Fault(kind="concurrent_limit", response_code="rc-a"),
    )
    codes = [await errcode_of(http, sim.url, token, "rc-a") for _ in range(4)]
    assert codes == [-1, 45033, 45009, 0]


async def test_a_fault_with_consume_code_spends_the_code_first(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """system_busy with consume_code true answers -1 yet spends the code: the retry gets 60140."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(Fault(kind="system_busy", response_code="rc-busy", consume_code=True))
    assert await errcode_of(http, sim.url, token, "rc-busy") == -1
    assert await errcode_of(http, sim.url, token, "rc-busy") == 60140
    assert sim.state.code_stats("rc-busy").accepted == 1


async def test_a_lost_answer_drops_the_connection_after_spending_the_code(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """lost_answer closes the connection without an answer; the code is spent (retry: 60140)."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(Fault(kind="lost_answer", response_code="rc-lost"))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await update(http, sim.url, token, "rc-lost")
    assert await errcode_of(http, sim.url, token, "rc-lost") == 60140
    lost = sim.state.calls[-2]
    assert (lost.errcode, lost.http_status, lost.fault, lost.accepted) == (
        None,
        None,
        "lost_answer",
        True,
    )
    stats = sim.state.code_stats("rc-lost")
    assert (stats.calls, stats.accepted) == (2, 1)


async def test_a_global_lost_answer_before_processing_leaves_the_code_unspent(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """lost_answer with consume_code false drops the call before processing: the retry succeeds."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(Fault(kind="lost_answer", consume_code=False))
    with pytest.raises(aiohttp.ClientConnectionError):
        await update(http, sim.url, token, "rc-early")
    assert await errcode_of(http, sim.url, token, "rc-early") == 0


async def test_a_slow_answer_outlives_the_callers_timeout_but_spends_the_code(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """slow_answer holds the answer back; a caller that times out finds the code spent."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(Fault(kind="slow_answer", response_code="rc-slow", delay_ms=300))
    with pytest.raises(asyncio.TimeoutError):
        await update(http, sim.url, token, "rc-slow", give_up_after=0.05)
    assert await errcode_of(http, sim.url, token, "rc-slow") == 60140


async def test_a_token_expired_fault_expires_the_token_for_good(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """token_expired answers 42001 and the token stays expired; gettoken then issues a new one."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(Fault(kind="token_expired"))
    assert await errcode_of(http, sim.url, token, "rc-tok") == 42001
    assert await errcode_of(http, sim.url, token, "rc-tok") == 42001
    fresh = await get_token(http, sim.url)
    assert fresh != token
    assert await errcode_of(http, sim.url, fresh, "rc-tok") == 0


async def test_gettoken_faults_apply_to_gettoken_only(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """A gettoken fault answers gettoken's next call and leaves update calls alone."""
    token = await get_token(http, sim.url)
    sim.state.add_faults(Fault(kind="system_busy", endpoint="gettoken"))
    assert await errcode_of(http, sim.url, token, "rc-gt") == 0
    params = {"corpid": DEMO_APP.corp_id, "corpsecret": DEMO_APP.secret}
    answer = await get_json(http, "GET", f"{sim.url}/cgi-bin/gettoken", params=params)
    assert answer == {"errcode": -1, "errmsg": "system busy"}
    assert await get_token(http, sim.url) == token


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="system_busy", count=0),
        Fault(kind="errcode"),
        Fault(kind="system_busy", errcode=1),
        Fault(kind="slow_answer"),
        Fault(kind="lost_answer", delay_ms=-1),
        Fault(kind="system_busy", endpoint="gettoken", response_code="rc"),
        Fault(kind="token_expired", endpoint="gettoken"),
        Fault(kind="system_busy", response_code=""),
    ],
)
def test_faults_that_cannot_apply_are_refused_and_nothing_is_queued(fault: Fault) -> None:
    """An impossible fault raises ValueError and the valid faults given with it are not queued."""
    state = SimulatorState(SimulatorConfig())
    with pytest.raises(ValueError, match="fault"):
        state.add_faults(Fault(kind="system_busy"), fault)
    assert state.pending_faults() == []


# --- limits ------------------------------------------------------------------


async def test_the_rate_limit_answers_45009_and_blocks_the_corp_for_the_window(
    http: aiohttp.ClientSession,
) -> None:
    """Beyond N/min a corp gets 45009 until the minute rolls over; refused codes stay unspent."""
    clock = FakeClock()
    config = SimulatorConfig(apps=(DEMO_APP, OTHER_APP), rate_limit=parse_rate_limit("3/min"))
    async with run_simulator(config, clock=clock) as running:
        token = await get_token(http, running.url)
        other = await get_token(http, running.url, OTHER_APP)
        assert [await errcode_of(http, running.url, token, f"rc-{i}") for i in range(3)] == [0] * 3
        clock.now += 30
        assert await errcode_of(http, running.url, token, "rc-3") == 45009
        clock.now += 29.9
        assert await errcode_of(http, running.url, token, "rc-3") == 45009
        assert await errcode_of(http, running.url, other, "rc-o", agentid=OTHER_APP.agentid) == 0
        clock.now += 0.1
        assert await errcode_of(http, running.url, token, "rc-3") == 0


async def test_calls_beyond_max_concurrency_answer_45033(http: aiohttp.ClientSession) -> None:
    """With max_concurrency 1, a call arriving while another is in flight answers 45033."""
    config = SimulatorConfig(max_concurrency=1)
    async with run_simulator(config) as running:
        token = await get_token(http, running.url)
        running.state.add_faults(Fault(kind="slow_answer", response_code="rc-a", delay_ms=200))
        first = asyncio.create_task(update(http, running.url, token, "rc-a"))
        await wait_until(lambda: running.state.in_flight == 1)
        assert await errcode_of(http, running.url, token, "rc-b") == 45033
        assert (await first)["errcode"] == 0
        assert running.state.code_stats("rc-b").accepted == 0
        assert await errcode_of(http, running.url, token, "rc-b") == 0


async def test_latency_delays_processing_of_each_call(http: aiohttp.ClientSession) -> None:
    """With latency, a call is in flight but its code not yet seen until the delay has passed."""
    async with run_simulator(SimulatorConfig(latency_ms=200, jitter_ms=10)) as running:
        token = await get_token(http, running.url)
        call = asyncio.create_task(update(http, running.url, token, "rc-late"))
        await wait_until(lambda: running.state.in_flight == 1)
        assert running.state.code_stats("rc-late").calls == 0
        assert (await call)["errcode"] == 0
        assert running.state.code_stats("rc-late").calls == 1


# --- control API -------------------------------------------------------------


async def test_control_api_queues_lists_and_clears_faults(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """POST /_sim/faults queues faults and sets standing ones; GET shows what is left; DELETE clears."""
    faults_url = f"{sim.url}/_sim/faults"
    change = {
        "faults": [{"kind": "system_busy", "count": 2, "response_code": "rc-c"}],
        "max_concurrency": 5,
        "token_expire_every": 10,
    }
    view = await get_json(http, "POST", faults_url, json=change)
    assert view["faults"] == [
        {
            "kind": "system_busy",
            "count": 2,
            "response_code": "rc-c",
            "endpoint": "update_template_card",
            "consume_code": None,
            "delay_ms": 0.0,
            "errcode": None,
            "errmsg": None,
        }
    ]
    assert (view["max_concurrency"], view["token_expire_every"]) == (5, 10)
    token = await get_token(http, sim.url)
    assert await errcode_of(http, sim.url, token, "rc-c") == -1
    view = await get_json(http, "GET", faults_url)
    assert view["faults"][0]["count"] == 1
    cleared = await get_json(http, "DELETE", faults_url)
    assert cleared == {
        "faults": [],
        "latency_ms": 0.0,
        "jitter_ms": 0.0,
        "latency_on_gettoken": False,
        "token_expire_every": None,
        "max_concurrency": None,
    }
    assert await errcode_of(http, sim.url, token, "rc-c") == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"faults": [{"kind": "no_such_kind"}]}',
        b'{"faults": [{"kind": "system_busy", "count": 0}]}',
        b'{"faults": [{"kind": "system_busy"}], "max_concurrency": 0}',
        b'{"faults": [{"kind": "system_busy"}], "unknown_key": 1}',
    ],
)
async def test_control_api_refuses_bad_fault_bodies_entirely(
    sim: RunningSimulator, http: aiohttp.ClientSession, body: bytes
) -> None:
    """A fault change the simulator cannot apply answers 400 and changes nothing."""
    async with http.post(f"{sim.url}/_sim/faults", data=body) as response:
        assert response.status == 400
        assert "error" in await response.json()
    assert sim.state.pending_faults() == []
    assert sim.state.standing_faults == SimulatorConfig().standing_faults()


async def test_control_api_expires_codes_and_reports_their_counts(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """An expired code answers 60140; GET /_sim/codes/{code} counts calls and acceptances."""
    expired = await get_json(
        http, "POST", f"{sim.url}/_sim/codes/expire", json={"codes": ["rc-old"]}
    )
    assert expired["codes"][0]["status"] == "expired"
    token = await get_token(http, sim.url)
    assert await errcode_of(http, sim.url, token, "rc-old") == 60140
    assert await errcode_of(http, sim.url, token, "rc-new") == 0
    old = await get_json(http, "GET", f"{sim.url}/_sim/codes/rc-old")
    new = await get_json(http, "GET", f"{sim.url}/_sim/codes/rc-new")
    never = await get_json(http, "GET", f"{sim.url}/_sim/codes/rc-never")
    assert old == {"response_code": "rc-old", "calls": 1, "accepted": 0, "status": "expired"}
    assert new == {"response_code": "rc-new", "calls": 1, "accepted": 1, "status": "used"}
    assert never == {"response_code": "rc-never", "calls": 0, "accepted": 0, "status": "unused"}


async def test_control_api_lists_calls_with_filters(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """GET /_sim/calls lists every call with corp, agentid, code, errcode and status, filterable."""
    token = await get_token(http, sim.url)
    await update(http, sim.url, token, "rc-list")
    await update(http, sim.url, token, "rc-list")
    everything = await get_json(http, "GET", f"{sim.url}/_sim/calls")
    assert [call["endpoint"] for call in everything["calls"]] == [
        "gettoken",
        "update_template_card",
        "update_template_card",
    ]
    only = await get_json(http, "GET", f"{sim.url}/_sim/calls", params={"response_code": "rc-list"})
    first = only["calls"][0]
    assert {k: first[k] for k in first if k != "time"} == {
        "endpoint": "update_template_card",
        "corp_id": DEMO_APP.corp_id,
        "agentid": DEMO_APP.agentid,
        "response_code": "rc-list",
        "errcode": 0,
        "http_status": 200,
        "fault": None,
        "accepted": True,
        "request": {
            "agentid": DEMO_APP.agentid,
            "button": {"replace_name": "done"},
            "response_code": "rc-list",
        },
    }
    assert [call["errcode"] for call in only["calls"]] == [0, 60140]
    tokens = await get_json(http, "GET", f"{sim.url}/_sim/calls", params={"endpoint": "gettoken"})
    assert len(tokens["calls"]) == 1
    assert tokens["calls"][0]["request"] is None


async def test_control_api_tells_which_calls_a_code_received(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """GET /_sim/codes/{code}/calls: the code's stats and each call with the body WeCom got."""
    token = await get_token(http, sim.url)
    await update(http, sim.url, token, "rc-mine", userids=["zhangsan"])
    await update(http, sim.url, token, "rc-other")
    await update(http, sim.url, token, "rc-mine")
    answer = await get_json(http, "GET", f"{sim.url}/_sim/codes/rc-mine/calls")
    assert answer["code"] == {
        "response_code": "rc-mine",
        "calls": 2,
        "accepted": 1,
        "status": "used",
    }
    assert [(c["errcode"], c["accepted"]) for c in answer["calls"]] == [(0, True), (60140, False)]
    assert answer["calls"][0]["request"]["userids"] == ["zhangsan"]
    assert all(token not in json.dumps(call) for call in answer["calls"])
    unused = await get_json(http, "GET", f"{sim.url}/_sim/codes/rc-never/calls")
    assert unused == {
        "code": {"response_code": "rc-never", "calls": 0, "accepted": 0, "status": "unused"},
        "calls": [],
    }


async def test_control_api_reset_forgets_calls_codes_tokens_and_faults(
    http: aiohttp.ClientSession,
) -> None:
    """POST /_sim/reset forgets everything and requeues the faults configured at start."""
    config = SimulatorConfig(faults=(Fault(kind="system_busy", response_code="rc-start"),))
    async with run_simulator(config) as running:
        token = await get_token(http, running.url)
        assert await errcode_of(http, running.url, token, "rc-start") == -1
        assert await errcode_of(http, running.url, token, "rc-start") == 0
        running.state.add_faults(Fault(kind="http_500", count=5))
        answer = await get_json(http, "POST", f"{running.url}/_sim/reset")
        assert answer == {"status": "reset"}
        assert running.state.calls == []
        assert running.state.pending_faults() == list(config.faults)
        assert await errcode_of(http, running.url, token, "rc-start") == 40014
        fresh = await get_token(http, running.url)
        assert await errcode_of(http, running.url, fresh, "rc-start") == -1
        assert await errcode_of(http, running.url, fresh, "rc-start") == 0


async def test_control_api_health_reports_apps_without_secrets(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """GET /_sim/health answers ok with calls in flight, calls recorded and apps sans secrets."""
    health = await get_json(http, "GET", f"{sim.url}/_sim/health")
    assert health["status"] == "ok"
    assert (health["in_flight"], health["calls"]) == (0, 0)
    assert {"corp_id": DEMO_APP.corp_id, "agentid": DEMO_APP.agentid} in health["apps"]


async def test_no_token_or_secret_appears_in_control_output_or_logs(
    sim: RunningSimulator, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """Calls are logged and listed by corp and agentid; the token and secret appear nowhere."""
    caplog.set_level(logging.INFO, logger="simulator")
    token = await get_token(http, sim.url)
    await update(http, sim.url, token, "rc-secret")
    await update(http, sim.url, "forged-token-value", "rc-secret")
    texts = [caplog.text]
    for path in ("calls", "health", "faults", "codes/rc-secret"):
        async with http.get(f"{sim.url}/_sim/{path}") as response:
            texts.append(await response.text())
    assert "rc-secret" in caplog.text
    for text in texts:
        assert token not in text
        assert "forged-token-value" not in text
        assert DEMO_APP.secret not in text


# --- command line -------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_python_m_simulator_serves_and_exits_0_on_a_stop_signal(
    http: aiohttp.ClientSession, stop_signal: signal.Signals
) -> None:
    """The CLI prints one parsable listening line, serves apps from SIMULATOR_APPS, exits 0."""
    env = {**os.environ, "SIMULATOR_APPS": "ww-env:7:env-secret"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--port",
        "0",
        "--invalid-user",
        "Zed",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        async with asyncio.timeout(10):
            line = (await process.stdout.readline()).decode()
        prefix = "simulator listening on "
        assert line.startswith(prefix), line
        url = line.removeprefix(prefix).strip()
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")
        app = App(corp_id="ww-env", agentid=7, secret="env-secret")
        token = await get_token(http, url, app)
        answer = await update(http, url, token, "rc-cli", agentid=7, userids=["ZED"])
        assert answer == {"errcode": 0, "errmsg": "ok", "invaliduser": ["zed"]}
    finally:
        if process.returncode is None:
            process.send_signal(stop_signal)
        async with asyncio.timeout(10):
            rest, stderr = await process.communicate()
    assert process.returncode == 0
    assert rest == b""
    assert b"rc-cli" in stderr
    assert token.encode() not in stderr
    assert b"env-secret" not in stderr


async def test_python_m_simulator_exits_1_when_it_cannot_listen() -> None:
    """When the port is taken the CLI says so on stderr and exits 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulator",
            "--port",
            str(port),
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(10):
            stdout, stderr = await process.communicate()
    assert process.returncode == 1
    assert stdout == b""
    assert b"cannot listen" in stderr
