"""The two WeCom endpoints over HTTP: gettoken and update_template_card.

Every rule lives in `SimulatorState`; these handlers apply latency, hand the
request to the state, then write, delay or drop the answer it decides. Each
call is logged to the `simulator` logger at INFO, one line, naming corp,
agentid and response_code, never the token or secret.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from aiohttp import web

if TYPE_CHECKING:
    from simulator.state import Answer, SimulatorState

logger: Final = logging.getLogger("simulator")

GETTOKEN_PATH: Final = "/cgi-bin/gettoken"
UPDATE_TEMPLATE_CARD_PATH: Final = "/cgi-bin/message/update_template_card"


class WeComRoutes:
    """aiohttp handlers for the WeCom API, bound to one simulator's state."""

    def __init__(self, state: SimulatorState) -> None:
        """Serve the WeCom API from `state`."""
        self._state = state

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to an application."""
        return [
            web.get(GETTOKEN_PATH, self.gettoken),
            web.post(UPDATE_TEMPLATE_CARD_PATH, self.update_template_card),
        ]

    async def gettoken(self, request: web.Request) -> web.StreamResponse:
        """`GET /cgi-bin/gettoken?corpid=...&corpsecret=...`."""
        delay = self._state.latency("gettoken")
        if delay:
            await asyncio.sleep(delay)
        query = request.query
        answer = self._state.gettoken(query.get("corpid"), query.get("corpsecret"))
        return await _deliver(request, answer)

    async def update_template_card(self, request: web.Request) -> web.StreamResponse:
        """`POST /cgi-bin/message/update_template_card?access_token=...`."""
        state = self._state
        over_concurrency = state.admit_update()
        try:
            # A call refused for concurrency is answered at once, not after the latency.
            delay = 0.0 if over_concurrency else state.latency("update_template_card")
            if delay:
                await asyncio.sleep(delay)
            body = await request.read()
            answer = state.update_template_card(
                request.query.get("access_token"), body, over_concurrency=over_concurrency
            )
            return await _deliver(request, answer)
        finally:
            state.release_update()


async def _deliver(request: web.Request, answer: Answer) -> web.StreamResponse:
    """Wait the answer's delay, log the call, then answer it or drop the connection."""
    if answer.delay:
        await asyncio.sleep(answer.delay)
    if logger.isEnabledFor(logging.INFO):
        record = answer.record
        logger.info(
            "%s corp_id=%s agentid=%s response_code=%s errcode=%s http_status=%s fault=%s",
            record.endpoint,
            record.corp_id,
            record.agentid,
            record.response_code,
            record.errcode,
            record.http_status,
            record.fault,
        )
    if answer.status is None:
        # A lost answer: whatever the state did with the call, the caller never hears back.
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=499)  # never written: the connection is closing
    if answer.record.errcode is None:
        return web.Response(status=answer.status, body=answer.body, content_type="text/plain")
    return web.Response(
        status=answer.status, body=answer.body, content_type="application/json", charset="utf-8"
    )
