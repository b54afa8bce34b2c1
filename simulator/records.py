"""What the simulator remembers about calls and response codes, as the control API shows it.

Records name the corp and agentid, never a secret or an access token.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from simulator.faults import Endpoint, FaultKind

CodeStatus = Literal["unused", "used", "expired"]


class CallRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One call that reached the simulator.

    `time` is Unix seconds at arrival. `corp_id` is the token's corp (update) or
    the corpid asked for (gettoken); `agentid` is the request body's (update) or
    the matched app's (gettoken), null when unknown. `errcode` is null when no
    JSON answer was given (HTTP 500 or lost answer). `fault` names the injected
    fault the call took, if any; `accepted` is true when this call spent its
    response_code.
    """

    time: float
    endpoint: Endpoint
    corp_id: str | None
    agentid: int | None
    response_code: str | None
    errcode: int | None
    http_status: int | None
    fault: FaultKind | None = None
    accepted: bool = False
    request: msgspec.Raw | None = None


class CodeStats(msgspec.Struct, frozen=True, kw_only=True):
    """How often a response_code reached update_template_card, and whether it was spent.

    `calls` counts every update call whose body carried the code, whatever the
    answer; `accepted` counts the calls that spent it (at most 1 between resets).
    `status` is `unused`, `used` (spent by a call) or `expired` (marked through
    the control API).
    """

    response_code: str
    calls: int
    accepted: int
    status: CodeStatus
