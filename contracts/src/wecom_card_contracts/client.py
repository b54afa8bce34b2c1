"""A small client for services that publish card updates (``wecom-card-contracts[client]``).

Two ways to send a command::

    async with await CardUpdateClient.connect("amqp://guest:guest@127.0.0.1/") as client:
        await client.publish(command)                   # result on the result queue (or reply_to)
        result = await client.update(command, timeout=10.0)   # wait for this command's result

``publish`` waits for the broker's confirm and is ``mandatory``: a command the
broker cannot route (no command queue) raises :class:`CommandNotRouted`
instead of vanishing. ``update`` sends with RabbitMQ's direct reply-to, so the
result comes straight back on this connection, and returns the typed
:class:`~wecom_card_contracts.Result`. When it does not come in time,
:class:`ResultTimeout` says what that means: the command may still be carried
out, and re-sending the very same command (same ``command_id``) is safe: the
worker answers with the stored result (``replayed: true``) and never calls
WeCom a second time. ``update(..., resends=N)`` does that re-send for you.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
from typing import TYPE_CHECKING, Literal, Self

import aio_pika
import aio_pika.abc
import aio_pika.exceptions

from wecom_card_contracts import wire
from wecom_card_contracts.codec import (
    BodyFormat,
    decode_result,
    encode_command,
    validate_command,
)

if TYPE_CHECKING:
    from wecom_card_contracts.command import Command
    from wecom_card_contracts.result import Result

Compression = Literal["gzip"] | None


class CardUpdateClientError(Exception):
    """Anything this client raises on purpose."""


class CommandNotRouted(CardUpdateClientError):
    """The broker had no queue for the command: it was not queued at all."""

    def __init__(self, queue: str) -> None:
        super().__init__(
            f"the broker returned the command: no queue named {queue!r}; "
            "start the worker once (it declares its queues) or check the queue name"
        )
        self.queue = queue


class CommandNotConfirmed(CardUpdateClientError):
    """The broker refused the command (a negative confirm): it was not queued."""


class ResultTimeout(CardUpdateClientError, TimeoutError):
    """No result within the timeout. The command may still be carried out."""

    def __init__(self, command: Command, timeout: float, sends: int) -> None:
        super().__init__(
            f"no result for command {command.command_id!r} within {timeout:g} s "
            f"(sent {sends} time{'s' if sends != 1 else ''}). It may still be carried out: "
            "it can be waiting in the queue or in the worker. Re-send the same command "
            "(same command_id), e.g. client.update(command, resends=1): the worker then "
            "answers with its stored result (replayed: true) and never calls WeCom twice "
            "for it. A new command_id with the same response_code would be answered "
            "'duplicate' instead."
        )
        self.command = command
        self.timeout = timeout
        self.sends = sends


class CardUpdateClient:
    """One connection and one channel (publisher confirms on) to the worker's broker."""

    def __init__(
        self,
        connection: aio_pika.abc.AbstractConnection,
        channel: aio_pika.abc.AbstractChannel,
        *,
        command_queue: str = wire.COMMAND_QUEUE,
    ) -> None:
        self.connection = connection
        self.channel = channel
        self.command_queue = command_queue
        self._waiting: dict[str, asyncio.Future[Result]] = {}
        self._replies_consumed = False
        self._replies_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, url: str, *, command_queue: str = wire.COMMAND_QUEUE) -> Self:
        """Connect (reconnecting by itself later) and open the confirmed channel."""
        connection = await aio_pika.connect_robust(
            url, client_properties={"connection_name": "wecom-card-client"}
        )
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        except BaseException:
            await connection.close()
            raise
        return cls(connection, channel, command_queue=command_queue)

    async def close(self) -> None:
        """Close the connection; results still awaited fail with :class:`ResultTimeout`."""
        await self.connection.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def publish(
        self,
        command: Command,
        *,
        encoding: BodyFormat = "json",
        compression: Compression = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        check: bool = True,
    ) -> None:
        """Queue a command; returns once the broker confirmed it is stored.

        Its result goes to the result queue, or to ``reply_to`` when given. With
        ``check`` (the default) a command that breaks a rule raises
        :class:`~wecom_card_contracts.CommandInvalid` here instead of coming back
        ``rejected``. Raises :class:`CommandNotRouted` or
        :class:`CommandNotConfirmed` when the command was not queued.
        """
        if check:
            validate_command(command)
        body = encode_command(command, encoding)
        message = aio_pika.Message(
            gzip.compress(body) if compression == "gzip" else body,
            content_type=wire.MSGPACK if encoding == "msgpack" else wire.JSON,
            content_encoding=compression,
            correlation_id=correlation_id,
            reply_to=reply_to,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self.channel.default_exchange.publish(
                message, routing_key=self.command_queue, mandatory=True
            )
        except aio_pika.exceptions.PublishError:
            raise CommandNotRouted(self.command_queue) from None
        except aio_pika.exceptions.DeliveryError as error:
            raise CommandNotConfirmed(
                f"the broker did not confirm the command ({error.frame}); it was not queued"
            ) from None

    async def update(
        self,
        command: Command,
        *,
        timeout: float,  # noqa: ASYNC109 - per send, and re-sends follow: not one outer deadline
        resends: int = 0,
        encoding: BodyFormat = "json",
        compression: Compression = None,
    ) -> Result:
        """Send a command and wait for its result (direct reply-to).

        Waits ``timeout`` seconds per send; on a timeout re-sends the same
        command up to ``resends`` times (safe: the worker replays a stored
        result instead of calling WeCom again). Raises :class:`ResultTimeout`
        when no result came.
        """
        await self._consume_replies()
        for send in range(1, resends + 2):
            # A correlation id per send: a late answer to an earlier send is simply dropped.
            correlation_id = f"{command.command_id[:64]}:{uuid.uuid4().hex}"
            waiting = asyncio.get_running_loop().create_future()
            self._waiting[correlation_id] = waiting
            try:
                await self.publish(
                    command,
                    encoding=encoding,
                    compression=compression,
                    reply_to=wire.DIRECT_REPLY_TO,
                    correlation_id=correlation_id,
                )
                return await asyncio.wait_for(waiting, timeout)
            except TimeoutError:
                if send > resends:
                    raise ResultTimeout(command, timeout, send) from None
            finally:
                self._waiting.pop(correlation_id, None)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _consume_replies(self) -> None:
        """Start the direct reply-to consumer once (it must exist before the first send)."""
        async with self._replies_lock:
            if self._replies_consumed:
                return
            queue = await self.channel.get_queue(wire.DIRECT_REPLY_TO, ensure=False)
            await queue.consume(self._on_reply, no_ack=True)
            self._replies_consumed = True

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        media = (message.content_type or "").split(";", 1)[0].strip().lower()
        try:
            result = decode_result(message.body, "msgpack" if media == wire.MSGPACK else "json")
        except Exception as error:  # noqa: BLE001 - handed to the waiting caller, not swallowed
            waiting = self._waiting.get(message.correlation_id or "")
            if waiting is not None and not waiting.done():
                waiting.set_exception(CardUpdateClientError(f"unreadable result: {error}"))
            return
        # The body always carries the correlation id; the property only when it fits.
        waiting = self._waiting.get(message.correlation_id or result.correlation_id or "")
        if waiting is not None and not waiting.done():
            waiting.set_result(result)
        # else: the answer to a send nobody waits for any more (a timed-out earlier send).
