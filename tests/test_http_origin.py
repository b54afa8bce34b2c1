"""HttpOrigin against real servers on 127.0.0.1 that answer well, oddly, or not at all.

Each server is an ``asyncio.start_server`` whose handler plays one behaviour on
purpose: keep-alive or not, every body framing, interim answers, resets,
truncation, silence, garbage, oversized answers, TLS with a certificate made by
the ``openssl`` command for the test. What is checked is the contract the WeCom
client relies on: an answer, ``ConnectFailed`` when nothing was sent, or
``AnswerLost`` when the request may have reached the server, within the
timeouts, never with the access_token in the message. A few of the cases run
again on uvloop, the loop the worker runs on.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import ssl
import struct
import subprocess
import time
import zlib
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import uvloop

from tests.services import LOOPBACK, free_port
from worker.errors import AnswerLost, ConnectFailed
from worker.wecom.http import HttpOrigin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
    from pathlib import Path
    from typing import Any

TOKEN = "tok-Secret-0123456789abcdef"
PATH = f"/cgi-bin/message/update_template_card?access_token={TOKEN}"
BODY = b'{"agentid":1000002,"response_code":"rc-1","button":{"replace_name":"done"}}'
ANSWER = b'{"errcode":0,"errmsg":"ok","invaliduser":[]}'


@dataclass
class Request:
    """One request as the server read it."""

    line: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """What a test server saw."""

    port: int = 0
    connections: int = 0
    open_now: int = 0
    peak: int = 0
    requests: list[Request] = field(default_factory=list)
    ended: int = 0  # connections the client closed (the server read EOF)


def raw_deflate(data: bytes) -> bytes:
    """``data`` deflated without the zlib wrapper (what some servers send as deflate)."""
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def answer(
    body: bytes = ANSWER, *, status: str = "200 OK", headers: str = "", version: str = "1.1"
) -> bytes:
    """An HTTP answer with Content-Length."""
    head = f"HTTP/{version} {status}\r\nContent-Type: application/json\r\n{headers}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def read_request(reader: asyncio.StreamReader, server: Server) -> Request | None:
    """The next request on a connection, or None at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        server.ended += 1
        return None
    line, *rest = head.decode().rstrip("\r\n").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in rest)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    request = Request(line, headers, body)
    server.requests.append(request)
    return request


def keep_answering(
    *answers: bytes, pause: float = 0.0
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter, Server], Awaitable[None]]:
    """A handler that answers each request with the next of ``answers`` (the last repeats)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        count = 0
        while await read_request(reader, s) is not None:
            if pause:
                await asyncio.sleep(pause)
            writer.write(answers[min(count, len(answers) - 1)])
            await writer.drain()
            count += 1

    return handle


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@asynccontextmanager
async def serve(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter, Server], Awaitable[None]],
    *,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Server]:
    """A server on 127.0.0.1 running ``handler`` per connection; handlers are ended on exit."""
    state = Server()
    tasks: set[asyncio.Task[Any]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        state.connections += 1
        state.open_now += 1
        state.peak = max(state.peak, state.open_now)
        try:
            await handler(reader, writer, state)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            state.open_now -= 1
            writer.close()
            with suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_connect, LOOPBACK, 0, ssl=tls)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@asynccontextmanager
async def origin_on(
    server: Server, scheme: str = "http", **options: Any
) -> AsyncIterator[HttpOrigin]:
    """An HttpOrigin for ``server``, closed on exit."""
    options.setdefault("max_connections", 4)
    origin = HttpOrigin(f"{scheme}://{LOOPBACK}:{server.port}", **options)
    try:
        yield origin
    finally:
        await origin.close()


async def post(origin: HttpOrigin, body: bytes = BODY) -> tuple[int, bytes]:
    """One POST to the update path, with the token in the query."""
    return await origin.post(origin.target(PATH), body)


async def lost(origin: HttpOrigin) -> str:
    """The message of the AnswerLost a POST must raise (checked free of the token)."""
    with pytest.raises(AnswerLost) as caught:
        await post(origin)
    assert TOKEN not in str(caught.value)
    return str(caught.value)


# --- answers ---------------------------------------------------------------------------------


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_is() -> None:
    """Sequential posts go over one connection; the request line, headers and body are exact."""
    async with serve(keep_answering(answer())) as server, origin_on(server) as origin:
        for _ in range(5):
            assert await post(origin) == (200, ANSWER)
        assert server.connections == 1
        request = server.requests[0]
        assert request.line == f"POST {PATH} HTTP/1.1"
        assert request.headers["host"] == f"{LOOPBACK}:{server.port}"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["content-length"] == str(len(BODY))
        assert "accept-encoding" not in request.headers
        assert request.body == BODY


async def test_a_base_path_prefixes_the_target() -> None:
    """``http://host:port/base/`` sends ``/base/<path>``."""
    async with serve(keep_answering(answer())) as server:
        origin = HttpOrigin(f"http://{LOOPBACK}:{server.port}/base/", max_connections=1)
        try:
            await post(origin)
        finally:
            await origin.close()
        assert server.requests[0].line == f"POST /base{PATH} HTTP/1.1"


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
    b"5;name=value\r\n" + ANSWER[:5] + b"\r\n"
    b"%x\r\n" % (len(ANSWER) - 5) + ANSWER[5:] + b"\r\n"
    b"0\r\nX-Sum: 42\r\nX-Other: 1\r\n\r\n"
)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("content-length", answer()),
        ("chunked with extensions and trailers", CHUNKED),
        ("chunked without trailers", CHUNKED.split(b"0\r\nX-Sum")[0] + b"0\r\n\r\n"),
        ("100 Continue first", b"HTTP/1.1 100 Continue\r\n\r\n" + answer()),
        (
            "103 and 100 first",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n"
            + answer(),
        ),
        ("lower-case and odd header names", answer(headers="x-A: 1\r\nCONNECTION: keep-alive\r\n")),
        ("HTTP/1.0 keep-alive", answer(version="1.0", headers="Connection: Keep-Alive\r\n")),
        ("gzip", answer(gzip.compress(ANSWER), headers="Content-Encoding: gzip\r\n")),
        ("deflate", answer(zlib.compress(ANSWER), headers="Content-Encoding: deflate\r\n")),
        ("raw deflate", answer(raw_deflate(ANSWER), headers="Content-Encoding: deflate\r\n")),
    ],
)
async def test_each_framing_gives_the_body_and_keeps_the_connection(name: str, raw: bytes) -> None:
    """Every length-delimited answer (``name``) is read whole, decoded, its connection reused."""
    async with serve(keep_answering(raw)) as server, origin_on(server) as origin:
        assert await post(origin) == (200, ANSWER)
        assert await post(origin) == (200, ANSWER)
        assert server.connections == 1


async def test_an_answer_arriving_a_byte_at_a_time_is_parsed() -> None:
    """A chunked answer written one byte per segment: the parser resumes where it stopped."""

    async def trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        while await read_request(reader, s) is not None:
            for i in range(len(CHUNKED)):
                writer.write(CHUNKED[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.001)

    async with serve(trickle) as server, origin_on(server) as origin:
        assert await post(origin) == (200, ANSWER)
        assert await post(origin) == (200, ANSWER)
        assert server.connections == 1


async def test_no_content_and_non_200_statuses_are_answers() -> None:
    """204 has no body (the connection is reused); 500 and 429 come back as statuses."""
    raw = (
        b"HTTP/1.1 204 No Content\r\n\r\n",
        answer(b"busy", status="500 Internal Server Error"),
        answer(b"", status="429 Too Many Requests"),
    )
    async with serve(keep_answering(*raw)) as server, origin_on(server) as origin:
        assert await post(origin) == (204, b"")
        assert await post(origin) == (500, b"busy")
        assert await post(origin) == (429, b"")
        assert server.connections == 1


@pytest.mark.parametrize(
    "raw",
    [
        answer(headers="Connection: close\r\n"),
        answer(version="1.0"),
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + ANSWER,
    ],
    ids=["connection-close", "http-1.0", "close-delimited"],
)
async def test_answers_that_end_the_connection_are_read_and_not_reused(raw: bytes) -> None:
    """Connection: close, HTTP/1.0 without keep-alive, a body up to the end: a new connection each."""

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        if await read_request(reader, s) is not None:
            writer.write(raw)
            await writer.drain()
            if b"Content-Length" not in raw:
                writer.close()  # the end of the body
            else:
                await reader.read()  # keep the connection open: the client must not reuse it

    async with serve(once) as server, origin_on(server) as origin:
        assert await post(origin) == (200, ANSWER)
        assert await post(origin) == (200, ANSWER)
        assert server.connections == 2


async def test_an_answer_before_the_request_is_written_whole_is_fine() -> None:
    """The server answers a 4 MiB request after its head, then reads the body: the answer counts."""

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(answer())
        await writer.drain()
        await reader.readexactly(4 << 20)
        s.requests.append(Request(head.decode().split("\r\n")[0], {}, b""))
        await keep_answering(answer())(reader, writer, s)

    async with serve(early) as server, origin_on(server) as origin:
        assert await post(origin, b"x" * (4 << 20)) == (200, ANSWER)
        assert await post(origin) == (200, ANSWER)
        assert server.connections == 1
        assert len(server.requests) == 2


# --- idle connections ------------------------------------------------------------------------


async def test_a_connection_the_server_closed_while_idle_is_replaced_silently() -> None:
    """The server closes after each answer (no header says so): the next post connects anew."""

    async def answer_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        if await read_request(reader, s) is not None:
            writer.write(answer())
            await writer.drain()

    async with serve(answer_then_close) as server, origin_on(server) as origin:
        for _ in range(3):
            assert await post(origin) == (200, ANSWER)
            await asyncio.sleep(0.05)  # the FIN arrives while the connection is idle
        assert server.connections == 3
        assert len(server.requests) == 3


async def test_bytes_on_an_idle_connection_drop_it() -> None:
    """Garbage after a complete answer: that connection is never used again."""

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        while await read_request(reader, s) is not None:
            writer.write(answer())
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"HTTP/1.1 200 OK\r\n")

    async with serve(chatty) as server, origin_on(server) as origin:
        assert await post(origin) == (200, ANSWER)
        await asyncio.sleep(0.05)
        assert await post(origin) == (200, ANSWER)
        assert server.connections == 2


async def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    """idle_timeout 0.1 s: the server sees the connection end, the next post opens another."""
    async with (
        serve(keep_answering(answer())) as server,
        origin_on(server, idle_timeout=0.1) as origin,
    ):
        assert await post(origin) == (200, ANSWER)
        await asyncio.sleep(0.4)
        assert server.ended == 1
        assert await post(origin) == (200, ANSWER)
        assert server.connections == 2


async def test_close_closes_idle_connections_and_refuses_new_posts() -> None:
    """After close() the server reads EOF on every idle connection; a post is ConnectFailed."""
    async with serve(keep_answering(answer(), pause=0.02)) as server:
        origin = HttpOrigin(f"http://{LOOPBACK}:{server.port}", max_connections=3)
        await asyncio.gather(*(post(origin) for _ in range(3)))
        assert server.connections == 3
        await origin.close()
        await asyncio.sleep(0.05)
        assert server.ended == 3
        with pytest.raises(ConnectFailed, match="closed"):
            await post(origin)


async def test_max_connections_holds_under_100_concurrent_posts() -> None:
    """100 posts at once through 4 connections: never more open, every answer right."""
    async with (
        serve(keep_answering(answer(), pause=0.005)) as server,
        origin_on(server, max_connections=4) as origin,
    ):
        answers = await asyncio.gather(*(post(origin) for _ in range(100)))
        assert answers == [(200, ANSWER)] * 100
        assert server.peak <= 4
        assert server.connections <= 4
        assert len(server.requests) == 100


async def test_failures_and_cancellations_give_their_connection_back() -> None:
    """One connection allowed: lost answers and a cancelled post leave room for the next post."""
    truncated = answer()[:-5]
    asked = 0

    async def flaky(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        nonlocal asked
        while await read_request(reader, s) is not None:
            asked += 1
            if asked <= 2:
                writer.write(truncated)
                await writer.drain()
                return
            if asked == 3:
                await asyncio.sleep(10)  # the caller gives up first
            writer.write(answer())
            await writer.drain()

    async with serve(flaky) as server, origin_on(server, max_connections=1) as origin:
        await lost(origin)
        await lost(origin)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(post(origin), 0.1)
        assert await post(origin) == (200, ANSWER)
        assert server.connections == 4


# --- lost answers ----------------------------------------------------------------------------


async def test_a_reset_mid_answer_is_answer_lost() -> None:
    """Half a head, then a TCP reset: AnswerLost."""

    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        if await read_request(reader, s) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
            await writer.drain()
            await asyncio.sleep(0.02)
            reset(writer)

    async with serve(half) as server, origin_on(server) as origin:
        message = await lost(origin)
        assert "after 27 bytes of the answer" in message


async def test_a_truncated_body_is_answer_lost() -> None:
    """Content-Length promises more than comes before the server closes: AnswerLost."""

    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        if await read_request(reader, s) is not None:
            writer.write(answer()[:-10])
            await writer.drain()

    async with serve(short) as server, origin_on(server) as origin:
        message = await lost(origin)
        assert "the server closed the connection after" in message


async def test_eof_with_no_answer_on_a_reused_connection_is_answer_lost_not_retried() -> None:
    """The second request on a kept connection gets EOF: AnswerLost, and it is not sent again."""

    async def first_only(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        await read_request(reader, s)
        writer.write(answer())
        await writer.drain()
        await read_request(reader, s)  # read the second request, then close without a word

    async with serve(first_only) as server, origin_on(server) as origin:
        assert await post(origin) == (200, ANSWER)
        message = await lost(origin)
        assert "before any byte of the answer" in message
        await asyncio.sleep(0.05)
        assert len(server.requests) == 2
        assert server.connections == 1


async def test_no_answer_is_a_read_timeout_within_bounds() -> None:
    """A server that never answers: AnswerLost after the read timeout, not before, not long after."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        await read_request(reader, s)
        await reader.read()

    async with serve(silent) as server, origin_on(server, read_timeout=0.2) as origin:
        started = time.monotonic()
        message = await lost(origin)
        elapsed = time.monotonic() - started
        assert "read timeout" in message
        assert 0.19 <= elapsed < 1.5


async def test_a_trickling_answer_hits_the_call_timeout() -> None:
    """A byte every 50 ms keeps the read timeout away; the call timeout still ends it."""

    async def trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server
    ) -> None:
        await read_request(reader, s)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while True:
            writer.write(b"X: y\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with (
        serve(trickle) as server,
        origin_on(server, read_timeout=0.2, total_timeout=0.6) as origin,
    ):
        started = time.monotonic()
        message = await lost(origin)
        elapsed = time.monotonic() - started
        assert "0.6 s call timeout" in message
        assert 0.59 <= elapsed < 2.0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 2x0 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", "header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "Content-Lengths"),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok", "bare LF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nok\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX", "CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad\r\n\r\n", "trailer"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "Transfer-Encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nok", "Encoding"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok", "gzip"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
    ],
)
async def test_a_malformed_answer_is_answer_lost_with_a_reason(raw: bytes, reason: str) -> None:
    """Each malformed answer: AnswerLost naming what is wrong, the connection not reused."""

    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        if await read_request(reader, s) is not None:
            writer.write(raw)
            await writer.drain()
            await reader.read()

    async with serve(bad) as server, origin_on(server) as origin:
        message = await lost(origin)
        assert reason in message


@pytest.mark.parametrize(
    "raw",
    [
        answer(b"x" * 2048),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n"
        % ((b"400\r\n" + b"x" * 1024 + b"\r\n") * 2),
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 4096,
        answer(gzip.compress(b"x" * 100_000), headers="Content-Encoding: gzip\r\n"),
        b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70_000 + b"\r\n\r\n",
    ],
    ids=["content-length", "chunked", "close-delimited", "gzip", "header"],
)
async def test_an_oversized_answer_is_answer_lost(raw: bytes) -> None:
    """Over max_answer_bytes (1000 here), however framed: AnswerLost."""

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        if await read_request(reader, s) is not None:
            writer.write(raw)
            await writer.drain()
            await reader.read()

    async with serve(big) as server, origin_on(server, max_answer_bytes=1000) as origin:
        message = await lost(origin)
        assert "over" in message


# --- connect failures ------------------------------------------------------------------------


async def test_a_refused_connection_is_connect_failed() -> None:
    """Nothing listens: ConnectFailed, fast."""
    origin = HttpOrigin(f"http://{LOOPBACK}:{free_port()}", max_connections=1)
    try:
        with pytest.raises(ConnectFailed, match="cannot connect") as caught:
            await post(origin)
        assert TOKEN not in str(caught.value)
    finally:
        await origin.close()


async def test_a_stalled_tls_handshake_is_a_connect_timeout() -> None:
    """A TCP server that never speaks TLS: ConnectFailed after the connect timeout."""

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        await reader.read()

    async with (
        serve(mute) as server,
        origin_on(server, "https", connect_timeout=0.2) as origin,
    ):
        started = time.monotonic()
        with pytest.raises(ConnectFailed, match=r"within 0\.2 s"):
            await post(origin)
        assert 0.19 <= time.monotonic() - started < 1.5


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made by the openssl command."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "the openssl command is needed to make a test certificate"
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={LOOPBACK}",
            "-addext",
            f"subjectAltName=IP:{LOOPBACK}",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_tls(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """The test server's TLS context."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


async def test_https_round_trip_with_a_self_signed_certificate(
    certificate: tuple[Path, Path],
) -> None:
    """TLS with the hostname checked against the test certificate: answers, kept alive."""
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    async with (
        serve(keep_answering(answer(), CHUNKED), tls=server_tls(certificate)) as server,
        origin_on(server, "https", ssl_context=trusting) as origin,
    ):
        assert await post(origin) == (200, ANSWER)
        assert await post(origin) == (200, ANSWER)
        assert server.connections == 1
        assert server.requests[0].line == f"POST {PATH} HTTP/1.1"


async def test_an_untrusted_certificate_is_connect_failed(certificate: tuple[Path, Path]) -> None:
    """The system trust store does not know the test certificate: ConnectFailed, nothing sent."""
    async with (
        serve(keep_answering(answer()), tls=server_tls(certificate)) as server,
        origin_on(server, "https") as origin,
    ):
        with pytest.raises(ConnectFailed, match="TLS handshake") as caught:
            await post(origin)
        assert TOKEN not in str(caught.value)
        assert server.requests == []


# --- hooks, targets, the token ----------------------------------------------------------------


async def test_on_request_written_fires_after_each_write_and_can_end_the_request() -> None:
    """The hook runs once per request, after the write; what it raises ends that request only."""
    calls: list[int] = []

    class Injected(Exception):
        pass

    def hook() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise Injected

    async with (
        serve(keep_answering(answer())) as server,
        origin_on(server, on_request_written=hook) as origin,
    ):
        assert await post(origin) == (200, ANSWER)
        with pytest.raises(Injected):
            await post(origin)
        assert await post(origin) == (200, ANSWER)
        assert calls == [0, 1, 2]
        assert server.connections == 2  # the interrupted request's connection was dropped


def test_targets_and_base_urls_are_checked() -> None:
    """A target with a space or control byte, and URLs that are not plain origins, raise."""
    origin = HttpOrigin("https://qyapi.weixin.qq.com", max_connections=1)
    assert origin.port == 443
    assert origin.target("/a?b=c") == b"/a?b=c"
    for bad in ("/a b", "/a\r\nX: y", "a"):
        with pytest.raises(ValueError, match="target"):
            origin.target(bad)
    for url in ("ftp://x", "http://u:p@x", "http://x/?q=1", "http://x:99999"):
        with pytest.raises(ValueError):
            HttpOrigin(url, max_connections=1)


async def test_the_token_is_in_no_failure_message() -> None:
    """A server echoing the request back as its answer: the message holds no byte of it."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, s: Server) -> None:
        request = await read_request(reader, s)
        if request is not None:
            writer.write(f"{request.line}\r\nX-Echo: {request.line}\r\n\r\n".encode())
            await writer.drain()
            await reader.read()

    async with serve(echo) as server, origin_on(server) as origin:
        message = await lost(origin)
        assert "access_token" not in message
        assert "status line" in message


# --- the same on uvloop ----------------------------------------------------------------------

ON_UVLOOP: list[Callable[[], Coroutine[Any, Any, None]]] = [
    test_keep_alive_reuses_one_connection_and_sends_the_request_as_is,
    test_an_answer_arriving_a_byte_at_a_time_is_parsed,
    test_a_connection_the_server_closed_while_idle_is_replaced_silently,
    test_max_connections_holds_under_100_concurrent_posts,
    test_failures_and_cancellations_give_their_connection_back,
    test_a_reset_mid_answer_is_answer_lost,
    test_a_truncated_body_is_answer_lost,
    test_eof_with_no_answer_on_a_reused_connection_is_answer_lost_not_retried,
    test_no_answer_is_a_read_timeout_within_bounds,
    test_a_trickling_answer_hits_the_call_timeout,
    test_a_refused_connection_is_connect_failed,
    test_a_stalled_tls_handshake_is_a_connect_timeout,
    test_close_closes_idle_connections_and_refuses_new_posts,
]


@pytest.mark.parametrize("case", ON_UVLOOP, ids=lambda case: case.__name__.removeprefix("test_"))
def test_on_uvloop(case: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """The worker's loop: the cases whose transport behaviour differs most between loops."""
    uvloop.run(case())


def test_https_on_uvloop(certificate: tuple[Path, Path]) -> None:
    """TLS round trip and an untrusted certificate, on uvloop."""
    uvloop.run(test_https_round_trip_with_a_self_signed_certificate(certificate))
    uvloop.run(test_an_untrusted_certificate_is_connect_failed(certificate))
