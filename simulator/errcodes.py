"""The WeCom errcodes the simulator answers, with the errmsg it sends for each.

Codes and wording follow WeCom's global error code page where it has one; the
simulator never invents a code WeCom does not use.
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
SYSTEM_BUSY: Final = -1
INVALID_CREDENTIAL: Final = 40001
INVALID_CORPID: Final = 40013
INVALID_ACCESS_TOKEN: Final = 40014
INVALID_AGENTID: Final = 40056
INVALID_PARAMETER: Final = 40058
ACCESS_TOKEN_MISSING: Final = 41001
CORPID_MISSING: Final = 41002
CORPSECRET_MISSING: Final = 41004
AGENTID_MISSING: Final = 41011
ACCESS_TOKEN_EXPIRED: Final = 42001
FREQ_OUT_OF_LIMIT: Final = 45009
CONCURRENT_OUT_OF_LIMIT: Final = 45033
DATA_FORMAT_ERROR: Final = 47001
INVALID_RESPONSE_CODE: Final = 60140
ANOTHER_AGENT: Final = 301002

ERRMSG: Final[dict[int, str]] = {
    OK: "ok",
    SYSTEM_BUSY: "system busy",
    INVALID_CREDENTIAL: "invalid credential",
    INVALID_CORPID: "invalid corpid",
    INVALID_ACCESS_TOKEN: "invalid access_token",
    INVALID_AGENTID: "invalid agentid",
    INVALID_PARAMETER: "invalid parameter",
    ACCESS_TOKEN_MISSING: "access_token missing",
    CORPID_MISSING: "corpid missing",
    CORPSECRET_MISSING: "corpsecret missing",
    AGENTID_MISSING: "agentid missing",
    ACCESS_TOKEN_EXPIRED: "access_token expired",
    FREQ_OUT_OF_LIMIT: "api freq out of limit",
    CONCURRENT_OUT_OF_LIMIT: "api concurrent out of limit",
    DATA_FORMAT_ERROR: "data format error",
    INVALID_RESPONSE_CODE: "invalid response_code",
    ANOTHER_AGENT: "not allow operate another agent with this accesstoken.",
}


def errmsg(errcode: int) -> str:
    """Return the errmsg the simulator sends with `errcode`."""
    return ERRMSG.get(errcode, "simulated error")
