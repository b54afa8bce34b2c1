"""Faults the simulator can inject, and the queue that hands them to calls.

Two sorts:

* Counted faults (`Fault`): "the next `count` calls answer X". A fault is
  *targeted* when it names a `response_code` (only calls carrying that code take
  it) and *global* otherwise. A call takes at most one fault: the oldest
  targeted fault for its code, else the oldest global fault for its endpoint.
  Update calls take faults only after they pass the token and body checks,
  gettoken calls after the corp and secret checks (a call those checks refuse
  leaves the queue untouched).

  | kind | the call's answer |
  | --- | --- |
  | `http_500` | HTTP 500, no JSON |
  | `system_busy` | errcode -1 "system busy" |
  | `concurrent_limit` | errcode 45033 "api concurrent out of limit" |
  | `freq_limit` | errcode 45009 "api freq out of limit" (no block follows) |
  | `errcode` | the fault's own `errcode` / `errmsg` |
  | `token_expired` | errcode 42001; the token stays expired for good |
  | `lost_answer` | none: the server closes the connection without an HTTP response |
  | `slow_answer` | the normal answer, held back for `delay_ms` |

  `consume_code` says whether the call is first processed as a normal call
  (spending its response_code when that would succeed) before the fault
  replaces its answer. It defaults to true for `lost_answer` and `slow_answer`
  (the request reached WeCom, the answer did not reach the caller) and to
  false for the others (WeCom refused the call). `delay_ms` holds the answer
  (or the close) back that long, for any kind.

* Standing faults (`StandingFaults`): conditions that apply to every call until
  changed: latency plus jitter, token expiry every N calls, a ceiling on
  concurrent calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import count as counter
from typing import TYPE_CHECKING, Final, Literal, get_args

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

FaultKind = Literal[
    "http_500",
    "system_busy",
    "concurrent_limit",
    "freq_limit",
    "errcode",
    "token_expired",
    "lost_answer",
    "slow_answer",
]
Endpoint = Literal["gettoken", "update_template_card"]

FAULT_KINDS: Final[tuple[str, ...]] = get_args(FaultKind)
ENDPOINTS: Final[tuple[str, ...]] = get_args(Endpoint)
_CONSUMING_BY_DEFAULT: Final = frozenset({"lost_answer", "slow_answer"})


class Fault(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The next `count` calls (carrying `response_code`, when set) get this fault."""

    kind: FaultKind
    count: int = 1
    response_code: str | None = None
    endpoint: Endpoint = "update_template_card"
    consume_code: bool | None = None
    delay_ms: float = 0.0
    errcode: int | None = None
    errmsg: str | None = None

    @property
    def spends_code(self) -> bool:
        """Whether the call is processed normally before the fault replaces its answer."""
        if self.consume_code is None:
            return self.kind in _CONSUMING_BY_DEFAULT
        return self.consume_code


_RULES: Final[tuple[tuple[Callable[[Fault], bool], str], ...]] = (
    (lambda f: f.kind not in FAULT_KINDS, f"kind must be one of {', '.join(FAULT_KINDS)}"),
    (lambda f: f.endpoint not in ENDPOINTS, f"endpoint must be one of {', '.join(ENDPOINTS)}"),
    (lambda f: f.count < 1, "count must be at least 1"),
    (lambda f: f.delay_ms < 0, "delay_ms must not be negative"),
    (lambda f: f.kind == "errcode" and f.errcode is None, "an errcode fault needs errcode"),
    (
        lambda f: f.kind != "errcode" and (f.errcode is not None or f.errmsg is not None),
        "errcode and errmsg belong to errcode faults only",
    ),
    (
        lambda f: f.kind == "slow_answer" and (f.delay_ms <= 0 or f.consume_code is False),
        "a slow_answer fault needs delay_ms > 0 and is always processed (consume_code true)",
    ),
    (
        lambda f: f.endpoint == "gettoken" and f.response_code is not None,
        "gettoken carries no response_code: a gettoken fault cannot target one",
    ),
    (
        lambda f: f.endpoint == "gettoken" and f.kind == "token_expired",
        "token_expired applies to update_template_card only",
    ),
    (lambda f: f.response_code == "", "a targeted fault needs a non-empty response_code"),
)


def validate_fault(fault: Fault) -> None:
    """Raise ValueError when `fault` is not one the simulator can apply."""
    for breaks_rule, message in _RULES:
        if breaks_rule(fault):
            raise ValueError(f"fault {fault.kind!r}: {message}")


@dataclass(frozen=True, slots=True)
class StandingFaults:
    """Conditions applied to every call until changed.

    `latency_ms` plus a uniform random `jitter_ms` delays each update_template_card
    call (and gettoken when `latency_on_gettoken`) before it is processed;
    `token_expire_every` N makes every token answer 42001 after N
    update_template_card calls made with it; `max_concurrency` N answers 45033
    to calls that arrive while N others are in flight (at once, without the latency).
    """

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    latency_on_gettoken: bool = False
    token_expire_every: int | None = None
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        """Refuse values no call could honour."""
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ValueError("latency_ms and jitter_ms must not be negative")
        if self.token_expire_every is not None and self.token_expire_every < 1:
            raise ValueError("token_expire_every must be at least 1")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")


@dataclass(slots=True)
class _Pending:
    fault: Fault
    remaining: int
    order: int


class FaultQueue:
    """Counted faults waiting for calls; see the module docstring for who takes which."""

    def __init__(self) -> None:
        """Start empty."""
        self._targeted: dict[str, deque[_Pending]] = {}
        self._global: dict[str, deque[_Pending]] = {}
        self._order = counter()
        self._size = 0

    def add(self, faults: Iterable[Fault]) -> None:
        """Validate every fault, then queue them all in order (none when one is invalid)."""
        batch = list(faults)
        for fault in batch:
            validate_fault(fault)
        for fault in batch:
            pending = _Pending(fault=fault, remaining=fault.count, order=next(self._order))
            if fault.response_code is None:
                self._global.setdefault(fault.endpoint, deque()).append(pending)
            else:
                self._targeted.setdefault(fault.response_code, deque()).append(pending)
            self._size += 1

    def take(self, endpoint: Endpoint, response_code: str | None) -> Fault | None:
        """Return the fault the next call on `endpoint` carrying `response_code` gets, if any."""
        if not self._size:
            return None
        if response_code is not None and endpoint == "update_template_card":
            fault = self._take_from(self._targeted, response_code)
            if fault is not None:
                return fault
        return self._take_from(self._global, endpoint)

    def _take_from(self, queues: dict[str, deque[_Pending]], key: str) -> Fault | None:
        queue = queues.get(key)
        if not queue:
            return None
        pending = queue[0]
        pending.remaining -= 1
        if pending.remaining == 0:
            queue.popleft()
            self._size -= 1
            if not queue:
                del queues[key]
        return pending.fault

    def pending(self) -> list[Fault]:
        """Faults still waiting, oldest first, each with `count` set to the calls it has left."""
        everything = [p for q in (*self._targeted.values(), *self._global.values()) for p in q]
        everything.sort(key=lambda p: p.order)
        return [msgspec.structs.replace(p.fault, count=p.remaining) for p in everything]

    def clear(self) -> None:
        """Drop every waiting fault."""
        self._targeted.clear()
        self._global.clear()
        self._size = 0
