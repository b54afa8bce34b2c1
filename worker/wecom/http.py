"""HTTP/1.1 POSTs to one origin over a pool of keep-alive connections: the update call's client.

The worker sends one request shape (a small JSON POST to update_template_card)
to one origin. A general client spends most of its time on what that shape
does not need (URL objects, header multidicts, a writer task and trace hooks per
request): aiohttp cost about 110 µs of CPU per call. Here a request is one
``transport.write`` of a head built from constant parts, and one future that
:class:`_Connection` (an ``asyncio.Protocol``) resolves once the answer is
complete; one timer handle per request enforces both the read and the call
timeout. gettoken, a few calls an hour, stays on aiohttp.

Failures are split by what the server may have seen, because a response_code
may be used once (:mod:`worker.errors`):

* :class:`~worker.errors.ConnectFailed`: DNS, refused, a connect or TLS
  handshake failure or timeout, no free connection in time: not a byte was written.
* :class:`~worker.errors.AnswerLost`: anything once the request was handed to
  the transport: a reset, the end of the stream before the answer's end (even
  with no byte of it on a reused connection: the server may have processed the
  request), the read or call timeout, a malformed or oversized answer. Nothing
  is retried here; the caller decides.

An idle connection the server closed (or spoke on) is dropped when taken from
the pool, before anything is written to it. Answers may be HTTP/1.1 or 1.0,
delimited by ``Content-Length``, chunked (extensions and trailers ignored) or
the end of the stream, gzip or deflate encoded; 1xx answers are skipped.
Messages never contain the target (the access_token is in its query), nor
bytes of the answer (a server could echo the request).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import urlsplit

from worker.errors import AnswerLost, ConnectFailed

if TYPE_CHECKING:
    from collections.abc import Callable

CONNECT_TIMEOUT: Final = 5.0  # seconds to connect (TLS handshake included)
READ_TIMEOUT: Final = 10.0  # seconds without a byte from the server, once the request is written
TOTAL_TIMEOUT: Final = 15.0  # seconds per request, from the call to the answer's last byte
IDLE_TIMEOUT: Final = 15.0  # seconds an unused connection is kept open
MAX_ANSWER_BYTES: Final = 1 << 20  # an answer's body, decoded; WeCom's are a few dozen bytes
MAX_HEAD_BYTES: Final = 64 * 1024  # status line and headers, and the trailers of a chunked body
_MAX_CHUNK_LINE: Final = 4096
_CONTROL: Final = bytes(range(33)) + b"\x7f"  # never in a target: space, CR, LF and the rest
_HEX: Final = b"0123456789abcdefABCDEF"
_NO_BODY: Final = frozenset({204, 304})
_CLOCK_SLACK: Final = 0.001  # a timer may fire this early (uvloop's clock ticks in ms)

# What the parser waits for next.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _UNTIL_CLOSE = range(6)


class _BadAnswer(Exception):
    """The answer cannot be used; the text says why (it becomes an AnswerLost)."""


class _Connection(asyncio.Protocol):
    """One connection: sends a request, parses its answer and resolves the request's future."""

    transport: asyncio.Transport

    def __init__(self, loop: asyncio.AbstractEventLoop, limits: _Limits) -> None:
        self.loop = loop
        self._limits = limits
        self.closed = False  # the stream ended, broke or was given up: never written to again
        self.reusable = False  # the last answer ended cleanly and the server keeps the connection
        self.idle_since = 0.0
        self.lost: asyncio.Future[None] = loop.create_future()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline = 0.0
        self._last_byte = 0.0
        self._received = 0  # bytes of the current answer
        self._buffer = bytearray()
        self._state = _HEAD
        self._status = 0
        self._remaining = 0
        self._chunks: list[bytes] = []
        self._body_size = 0
        self._keep_alive = False
        self._encoding = b""

    def send(self, request: bytes, deadline: float) -> asyncio.Future[tuple[int, bytes]]:
        """Write ``request``; the future gets (status, body) or an :class:`AnswerLost`."""
        loop = self.loop
        now = loop.time()
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._waiter = waiter
        self._deadline = deadline
        self._last_byte = now
        self._received = 0
        self.reusable = False
        self._timer = loop.call_at(min(now + self._limits.read, deadline), self._on_timer)
        try:
            self.transport.write(request)
        except (OSError, RuntimeError) as exc:  # part of it may have gone out
            self._fail(f"the request could not be written ({type(exc).__name__})")
        return waiter

    def abort(self) -> None:
        """Close at once, whatever is in flight (its future, if any, is already settled)."""
        self.closed = True
        self.transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (TCP or TLS)."""
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        """Parse what came; settle the request's future once its answer is complete."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            # Bytes no request asked for: where the next answer would start is unknown.
            self.abort()
            return
        self._last_byte = self.loop.time()
        self._received += len(data)
        self._buffer += data
        try:
            self._parse()
        except _BadAnswer as bad:
            self._fail(str(bad))

    def eof_received(self) -> None:
        """The server closed its side: no request goes out on this connection again."""
        self.closed = True  # the transport closes itself; connection_lost settles the request

    def connection_lost(self, exc: Exception | None) -> None:
        """The end of the stream: an answer delimited by it is complete, any other is lost."""
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        if self._waiter is None:
            return
        if self._state == _UNTIL_CLOSE and exc is None:
            try:
                self._finish(bytes(self._buffer))
            except _BadAnswer as bad:
                self._fail(str(bad))
            return
        how = (
            "the server closed the connection"
            if exc is None
            else f"the connection broke ({type(exc).__name__}: {exc})"
        )
        received = self._received
        self._fail(
            f"{how} after {received} bytes of the answer"
            if received
            else f"{how} before any byte of the answer"
        )

    def _on_timer(self) -> None:
        """The read or call timeout may be due: fail the request, or look again later."""
        self._timer = None
        if self._waiter is None:
            return
        now = self.loop.time() + _CLOCK_SLACK
        limits = self._limits
        if now >= self._deadline:
            self._fail(f"no complete answer within the {limits.total:g} s call timeout")
        elif now >= self._last_byte + limits.read:
            self._fail(f"read timeout: nothing from the server for {limits.read:g} s")
        else:  # bytes came since the timer was set
            when = min(self._last_byte + limits.read, self._deadline)
            self._timer = self.loop.call_at(when, self._on_timer)

    def _fail(self, reason: str) -> None:
        """The request gets an AnswerLost; the connection is closed."""
        waiter = self._waiter
        self._waiter = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(AnswerLost(reason))
        self.abort()

    def _finish(self, body: bytes) -> None:
        """The answer is complete: decode its body and hand it to the request's future."""
        if self._encoding:
            body = _decode(body, self._encoding, self._limits.max_body)
        waiter = self._waiter
        self._waiter = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Bytes after the answer belong to no request: such a connection is not used again.
        self.reusable = self._keep_alive and not self._buffer and not self.closed
        self._state = _HEAD
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, body))

    def _parse(self) -> None:
        """Consume the buffer as far as it goes: a step per part of the answer, none per byte."""
        steps = _STEPS
        while self._waiter is not None and steps[self._state](self):
            pass

    def _step_head(self) -> bool:
        """Status line and headers, once all are here."""
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0 and len(buffer) <= MAX_HEAD_BYTES:
            return False
        if not 0 <= end <= MAX_HEAD_BYTES:
            raise _BadAnswer(f"the answer's header is over {MAX_HEAD_BYTES} bytes")
        head = bytes(buffer[:end])
        del buffer[: end + 4]
        self._read_head(head)
        return True

    def _step_length(self) -> bool:
        """A body of Content-Length bytes, once all are here."""
        buffer = self._buffer
        size = self._remaining
        if len(buffer) < size:
            return False
        body = bytes(buffer[:size])
        del buffer[:size]
        self._finish(body)
        return True

    def _step_chunk_size(self) -> bool:
        """A chunk-size line (extensions ignored): then its data, or the trailers after size 0."""
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > _MAX_CHUNK_LINE:
                raise _BadAnswer("malformed answer: a chunk-size line is too long")
            return False
        size_text = bytes(buffer[:end]).partition(b";")[0].strip(b" \t")
        if not size_text or len(size_text) > 15 or size_text.translate(None, _HEX):
            raise _BadAnswer("malformed answer: a chunk size that is not hexadecimal")
        del buffer[: end + 2]
        size = int(size_text, 16)
        if size == 0:
            self._state = _TRAILERS
            return True
        self._body_size += size
        if self._body_size > self._limits.max_body:
            raise _BadAnswer(f"the answer is over {self._limits.max_body} bytes")
        self._state, self._remaining = _CHUNK_DATA, size
        return True

    def _step_chunk_data(self) -> bool:
        """A chunk's data and its CRLF, once all are here."""
        buffer = self._buffer
        size = self._remaining
        if len(buffer) < size + 2:
            return False
        if buffer[size : size + 2] != b"\r\n":
            raise _BadAnswer("malformed answer: a chunk does not end with CRLF")
        self._chunks.append(bytes(buffer[:size]))
        del buffer[: size + 2]
        self._state = _CHUNK_SIZE
        return True

    def _step_trailers(self) -> bool:
        """The trailer section after the last chunk, checked and dropped: the body is complete."""
        buffer = self._buffer
        if buffer[:2] == b"\r\n":
            del buffer[:2]
        else:
            end = buffer.find(b"\r\n\r\n")
            if end < 0 and len(buffer) <= MAX_HEAD_BYTES:
                return False
            if not 0 <= end <= MAX_HEAD_BYTES:
                raise _BadAnswer(f"the answer's trailers are over {MAX_HEAD_BYTES} bytes")
            for line in bytes(buffer[:end]).split(b"\r\n"):
                if b":" not in line or line[:1] in {b" ", b"\t"}:
                    raise _BadAnswer("malformed answer: a trailer line without a colon")
            del buffer[: end + 4]
        body = b"".join(self._chunks)
        self._chunks = []
        self._finish(body)
        return True

    def _step_until_close(self) -> bool:
        """A body delimited by the end of the stream: connection_lost finishes it."""
        if len(self._buffer) > self._limits.max_body:
            raise _BadAnswer(f"the answer is over {self._limits.max_body} bytes")
        return False

    def _read_head(self, head: bytes) -> None:
        """The status line and headers: how the body is delimited, encoded, and what follows it."""
        if head.count(b"\n") != head.count(b"\r\n"):
            raise _BadAnswer("malformed answer: a bare LF in the header")
        status_line, _, fields = head.partition(b"\r\n")
        status, keep_alive = _status_line(status_line)
        if status < 200:
            if status == 101:
                raise _BadAnswer("the server switched protocols (101)")
            return  # an interim answer (100 Continue, 103 Early Hints): the final one follows
        length, codings, keep_alive, encoding = _header_fields(fields, keep_alive)
        self._status = status
        self._encoding = b"" if encoding == b"identity" else encoding
        self._keep_alive = keep_alive
        max_body = self._limits.max_body
        if status in _NO_BODY:
            self._state, self._remaining = _LENGTH, 0
        elif codings:
            if codings[-1] != b"chunked" or any(c != b"identity" for c in codings[:-1]):
                raise _BadAnswer("unsupported Transfer-Encoding (chunked is the only one read)")
            if length is not None:  # both framings: a smuggling risk, so not used again
                self._keep_alive = False
            self._state, self._body_size, self._chunks = _CHUNK_SIZE, 0, []
        elif length is not None:
            if length > max_body:
                raise _BadAnswer(f"the answer is over {max_body} bytes ({length})")
            self._state, self._remaining = _LENGTH, length
        else:
            self._state, self._keep_alive = _UNTIL_CLOSE, False


# The parser's step for each state, indexed by it.
_STEPS: Final = (
    _Connection._step_head,  # noqa: SLF001
    _Connection._step_length,  # noqa: SLF001
    _Connection._step_chunk_size,  # noqa: SLF001
    _Connection._step_chunk_data,  # noqa: SLF001
    _Connection._step_trailers,  # noqa: SLF001
    _Connection._step_until_close,  # noqa: SLF001
)


def _status_line(line: bytes) -> tuple[int, bool]:
    """The status code of ``HTTP/1.x NNN reason``, and whether the version keeps connections."""
    version, _, rest = line.partition(b" ")
    code = rest[:3]
    if (
        version not in {b"HTTP/1.1", b"HTTP/1.0"}
        or len(code) != 3
        or not code.isdigit()
        or rest[3:4] not in {b"", b" "}
    ):
        raise _BadAnswer("malformed answer: not an HTTP/1.x status line")
    return int(code), version == b"HTTP/1.1"


def _header_fields(fields: bytes, keep_alive: bool) -> tuple[int | None, list[bytes], bool, bytes]:
    """Content-Length, the transfer codings, keep-alive and Content-Encoding of the header lines."""
    length: int | None = None
    codings: list[bytes] = []
    encoding = b""
    # Names and the values read here are case-insensitive: one lower() for all of them.
    for line in fields.lower().split(b"\r\n") if fields else ():
        name, colon, value = line.partition(b":")
        if not colon or not name or b" " in name or b"\t" in name:
            raise _BadAnswer("malformed answer: a header line without a name and a colon")
        if name == b"content-length":
            length = _content_length(value.strip(b" \t"), length)
        elif name == b"transfer-encoding":
            codings.extend(c.strip(b" \t") for c in value.split(b","))
        elif name == b"connection":
            options = {t.strip(b" \t") for t in value.split(b",")}
            if b"close" in options:
                keep_alive = False
            elif b"keep-alive" in options:
                keep_alive = True
        elif name == b"content-encoding":
            encoding = value.strip(b" \t")
    return length, codings, keep_alive, encoding


def _content_length(value: bytes, earlier: int | None) -> int:
    """A Content-Length value, checked (digits only, the same as any earlier one)."""
    if not value.isdigit() or len(value) > 18:
        raise _BadAnswer("malformed answer: Content-Length is not a number")
    length = int(value)
    if earlier is not None and earlier != length:
        raise _BadAnswer("malformed answer: two different Content-Lengths")
    return length


def _decode(body: bytes, encoding: bytes, max_body: int) -> bytes:
    """A gzip or deflate body inflated, at most ``max_body`` bytes of it."""
    if encoding in {b"gzip", b"x-gzip"}:
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == b"deflate":
        # RFC 9110's deflate is zlib-wrapped; some servers send raw deflate.
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        raise _BadAnswer("unsupported Content-Encoding (gzip and deflate are the ones read)")
    inflater = zlib.decompressobj(wbits)
    try:
        decoded = inflater.decompress(body, max_body + 1)
    except zlib.error as exc:
        raise _BadAnswer(f"malformed {encoding.decode('latin-1')} body: {exc}") from None
    if len(decoded) > max_body:
        raise _BadAnswer(f"the answer is over {max_body} bytes once decoded")
    if not inflater.eof:
        raise _BadAnswer(f"truncated {encoding.decode('latin-1')} body")
    return decoded


@dataclass(frozen=True, slots=True)
class _Limits:
    """Timeouts (seconds) and the body size cap, shared by an origin's connections."""

    read: float
    total: float
    max_body: int


class HttpOrigin:
    """Keep-alive connections to one ``http(s)://host[:port][/base-path]``, and POSTs over them.

    At most ``max_connections`` are open (a request past that waits for one,
    within its call timeout); idle ones are reused newest first and closed after
    ``idle_timeout``. Build it anywhere, use it inside one running event loop,
    and :meth:`close` it there.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_connections: int,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        total_timeout: float = TOTAL_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
        on_request_written: Callable[[], None] | None = None,
    ) -> None:
        """``ssl_context`` for https (default: the system's trust store, hostname checked).

        ``on_request_written`` is called right after each request was handed to the
        transport (the ``request_written`` fault point); what it raises ends the request.
        Raises ValueError for a URL that is not a plain http(s) origin.
        """
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("a user or password in the URL is not supported")
        if parts.query or parts.fragment:
            raise ValueError("the base URL may not have a query or a fragment")
        https = parts.scheme == "https"
        default_port = 443 if https else 80
        self.host = parts.hostname
        self.port = parts.port or default_port  # a malformed port raises ValueError here
        self.base_path = parts.path.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != default_port:
            host += f":{self.port}"
        self._where = host
        self._head = (
            b" HTTP/1.1\r\nHost: " + host.encode("idna") + b"\r\nUser-Agent: wecom-card-worker"
            b"\r\nContent-Type: application/json\r\nContent-Length: "
        )
        if ssl_context is not None and not https:
            raise ValueError("an SSL context is for https URLs")
        self._ssl = (ssl_context or ssl.create_default_context()) if https else None
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._limits = _Limits(min(read_timeout, total_timeout), total_timeout, max_answer_bytes)
        self._on_request_written = on_request_written
        self._idle: deque[_Connection] = deque()  # oldest first; taken from the right
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._open = 0  # connections open or being opened
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    def target(self, path_and_query: str) -> bytes:
        """The request target for ``path_and_query`` (percent-encoded), under the base path.

        Build it once and keep it (the client keeps one per token): :meth:`post` takes it as is.
        """
        target = (self.base_path + path_and_query).encode("ascii")
        if not target.startswith(b"/") or len(target.translate(None, _CONTROL)) != len(target):
            raise ValueError("a request target starts with / and has no space or control byte")
        return target

    async def post(self, target: bytes, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to ``target`` (from :meth:`target`): (status, decoded body).

        Raises :class:`~worker.errors.ConnectFailed` (nothing was sent) or
        :class:`~worker.errors.AnswerLost` (the server may have processed it).
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        deadline = now + self._limits.total
        connection = self._take_idle(now)
        if connection is None:
            connection = await self._checkout(loop, deadline)
        request = b"".join((b"POST ", target, self._head, b"%d\r\n\r\n" % len(body), body))
        answer = connection.send(request, deadline)
        try:
            if self._on_request_written is not None:
                self._on_request_written()
            result = await answer
        except BaseException:
            if not answer.done():
                answer.cancel()
            self._discard(connection)  # given up or broken: its stream is in an unknown state
            raise
        self._check_in(connection)
        return result

    async def close(self) -> None:
        """Close the idle connections (waiting up to a second for them); busy ones close when done.

        Requests started afterwards raise ConnectFailed.
        """
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle = list(self._idle)
        self._idle.clear()
        for connection in idle:
            connection.closed = True
            connection.transport.close()
            self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the connection pool is closed"))
        if idle:
            await asyncio.wait([c.lost for c in idle], timeout=1.0)
            for connection in idle:
                if not connection.lost.done():
                    connection.abort()

    def _take_idle(self, now: float) -> _Connection | None:
        """The most recently used idle connection still open, if any (the others closed)."""
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._idle_timeout:
                return connection
            self._discard(connection)
        return None

    async def _checkout(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        """A connection when none is idle: a new one, or a released one if all are taken."""
        if self._closed:
            raise ConnectFailed("the connection pool is closed")
        if self._open >= self._max_connections:
            released = await self._wait_for_slot(loop, deadline)
            if released is not None and not released.closed:
                return released
            if released is not None:  # closed meanwhile: its place is this request's
                released.abort()
        else:
            self._open += 1
        try:
            return await self._connect(loop, deadline)
        except BaseException:
            self._free_slot()
            raise

    async def _wait_for_slot(
        self, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> _Connection | None:
        """A connection handed over by a finished request, or None: a place to open one."""
        waiter: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter, deadline - loop.time())
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_back(waiter.result())  # handed over just as this request gave up
            if isinstance(exc, TimeoutError):
                raise ConnectFailed(
                    f"no free connection to {self._where} within the "
                    f"{self._limits.total:g} s call timeout"
                ) from None
            raise

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        """A new connection (TLS handshake done for https), or ConnectFailed."""
        connection = _Connection(loop, self._limits)
        timeout = min(self._connect_timeout, deadline - loop.time())
        where = self._where
        try:
            # wait_for, not asyncio.timeout: on 3.11 a timeout expiring just as the connection
            # is made leaves a cancellation pending that would hit the request's await.
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: connection,
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                ),
                max(timeout, 0.0),
            )
        except TimeoutError:
            raise ConnectFailed(f"no connection to {where} within {timeout:g} s") from None
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS handshake with {where} failed: {exc}") from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {where}: {exc.strerror or exc}") from None
        if connection.closed:
            connection.abort()
            raise ConnectFailed(f"{where} closed the new connection before the request was sent")
        return connection

    def _check_in(self, connection: _Connection) -> None:
        """After a complete answer: to a waiting request, to the idle pool, or closed."""
        if not connection.reusable or connection.closed or self._closed:
            self._discard(connection)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        loop = connection.loop
        connection.idle_since = loop.time()
        self._idle.append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_at(
                connection.idle_since + self._idle_timeout, self._sweep, loop
            )

    def _hand_back(self, released: _Connection | None) -> None:
        """What a request that gave up was handed: to the next one, or back."""
        if released is None:
            self._free_slot()
        else:
            self._check_in(released)

    def _discard(self, connection: _Connection) -> None:
        """Close a connection and let a waiting request open one in its place."""
        if not connection.lost.done():
            connection.abort()
        self._free_slot()

    def _free_slot(self) -> None:
        """One connection fewer: the first waiting request may open one."""
        self._open -= 1
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections idle for ``idle_timeout`` (the oldest are first in line)."""
        self._sweeper = None
        now = loop.time() + _CLOCK_SLACK
        idle = self._idle
        while idle and (idle[0].closed or now - idle[0].idle_since >= self._idle_timeout):
            self._discard(idle.popleft())
        if idle:
            when = idle[0].idle_since + self._idle_timeout
            self._sweeper = loop.call_at(when, self._sweep, loop)
