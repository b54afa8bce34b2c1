"""What a simulator starts with: apps, unknown users, limits, faults.

An app is WeCom's (corp_id, agentid, secret): gettoken with that corp and
secret yields a token that may update cards of that agentid only. Apps are
written `CORP_ID:AGENTID:SECRET` on the command line (`--app`) and in the
`SIMULATOR_APPS` environment variable (entries joined by commas); the secret is
everything after the second colon.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Final

from simulator.faults import Fault, StandingFaults
from simulator.ratelimit import RateWindow

DEFAULT_INVALID_USER_PREFIX: Final = "invalid"
DEFAULT_TOKEN_TTL: Final = 7200.0


@dataclass(frozen=True, slots=True)
class App:
    """One WeCom app; the secret never appears in its repr."""

    corp_id: str
    agentid: int
    secret: str = field(repr=False)


DEMO_APP: Final = App(corp_id="ww-demo-corp", agentid=1000002, secret="demo-secret")  # noqa: S106 - a documented demo credential


def parse_app(entry: str) -> App:
    """Parse `CORP_ID:AGENTID:SECRET`; raise ValueError without echoing the secret."""
    corp_id, _, rest = entry.strip().partition(":")
    agentid, _, secret = rest.partition(":")
    if not corp_id or not secret or not agentid.strip().isdigit():
        raise ValueError(
            f"app for corp {corp_id!r} is not CORP_ID:AGENTID:SECRET with a numeric AGENTID"
        )
    return App(corp_id=corp_id, agentid=int(agentid), secret=secret)


def parse_apps(entries: str) -> tuple[App, ...]:
    """Parse comma-joined `CORP_ID:AGENTID:SECRET` entries (the `SIMULATOR_APPS` format)."""
    return tuple(parse_app(entry) for entry in entries.split(",") if entry.strip())


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything a simulator starts with; `POST /_sim/reset` returns to exactly this.

    `invalid_users` are user ids WeCom would report in `invaliduser` (compared
    case-insensitively); so is every user id starting with `invalid_user_prefix`
    (case-insensitively; None turns that rule off). `token_ttl` is in seconds.
    The standing-fault fields are described on `StandingFaults`; `faults` are
    queued at start (and again on reset). `call_log_limit` bounds the recorded
    calls (the oldest are forgotten first).
    """

    apps: Sequence[App] = (DEMO_APP,)
    invalid_users: Collection[str] = frozenset()
    invalid_user_prefix: str | None = DEFAULT_INVALID_USER_PREFIX
    rate_limit: Sequence[RateWindow] = ()
    token_ttl: float = DEFAULT_TOKEN_TTL
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    latency_on_gettoken: bool = False
    token_expire_every: int | None = None
    max_concurrency: int | None = None
    faults: Sequence[Fault] = ()
    call_log_limit: int = 1_000_000

    def __post_init__(self) -> None:
        """Refuse a configuration the simulator could not serve faithfully."""
        if isinstance(self.invalid_users, str):
            raise TypeError("invalid_users is a collection of user ids, not one string")
        if not self.apps:
            raise ValueError("at least one app is needed")
        seen_agents: set[tuple[str, int]] = set()
        seen_secrets: set[tuple[str, str]] = set()
        for app in self.apps:
            if (app.corp_id, app.agentid) in seen_agents:
                raise ValueError(f"app {app.corp_id}:{app.agentid} is configured twice")
            if (app.corp_id, app.secret) in seen_secrets:
                raise ValueError(f"two apps of corp {app.corp_id} share one secret")
            seen_agents.add((app.corp_id, app.agentid))
            seen_secrets.add((app.corp_id, app.secret))
        if self.token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        if self.call_log_limit < 1:
            raise ValueError("call_log_limit must be at least 1")
        self.standing_faults()  # validates the standing-fault fields

    def standing_faults(self) -> StandingFaults:
        """The standing faults this configuration starts with."""
        return StandingFaults(
            latency_ms=self.latency_ms,
            jitter_ms=self.jitter_ms,
            latency_on_gettoken=self.latency_on_gettoken,
            token_expire_every=self.token_expire_every,
            max_concurrency=self.max_concurrency,
        )
