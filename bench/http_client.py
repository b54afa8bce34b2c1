"""CPU per update call: aiohttp, as the worker used it, against worker/wecom/http.py.

    .venv/bin/python bench/http_client.py [--calls 20000] [--concurrency 64] [--repeat 3]

One simulator (``python -m simulator --latency-ms 0 --quiet``) runs in its own
process. This process, on uvloop, fetches a token once, then per run POSTs
``--calls`` update_template_card requests (each its own response_code, bodies
built beforehand) with ``--concurrency`` in flight over keep-alive connections,
and reads ``time.process_time()`` (user + system, every thread of this process)
at both ends: the client's CPU per call, request building and answer reading
included, JSON decoding of the answer not. The clients alternate, ``--repeat``
times each; every answer must be HTTP 200 with errcode 0 (else exit 1).

* ``aiohttp``: ``ClientSession.post`` with a pre-parsed ``yarl.URL``, the JSON
  header and ``response.read()``, on the connector and timeouts the worker had.
* ``http.py``: :class:`worker.wecom.http.HttpOrigin` ``post`` with a prepared target.

The simulator shares the cores: the calls per second are shown, the CPU per call
is what to read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

import aiohttp
import msgspec
import uvloop
from yarl import URL

from worker.wecom.client import UPDATE_TEMPLATE_CARD_PATH
from worker.wecom.http import HttpOrigin

CORP, AGENT, SECRET = "ww-demo-corp", 1000002, "demo-secret"  # the simulator's demo app
WARM_UP = 500  # calls before each measured run: connections open, code paths warm
Post = Callable[[bytes], Awaitable[tuple[int, bytes]]]


def start_simulator(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    """The simulator on a free port, and its base URL."""
    argv = [sys.executable, "-m", "simulator", "--quiet", "--port", "0"]
    process = subprocess.Popen(
        [*argv, "--latency-ms", str(latency_ms)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"simulator listening on (http://\S+)", line)
        if found:
            return process, found[1]
    process.kill()
    sys.exit("the simulator did not start")


def bodies(run: str, count: int, agent: int = AGENT) -> list[bytes]:
    """Button-mode update requests, one response_code each."""
    return [
        msgspec.json.encode(
            {
                "agentid": agent,
                "response_code": f"bench-{run}-{i:06d}",
                "button": {"replace_name": "done"},
            }
        )
        for i in range(count)
    ]


async def drive(post: Post, requests: list[bytes], concurrency: int) -> tuple[float, float]:
    """Every request through ``post``, ``concurrency`` at once: (CPU seconds, wall seconds)."""
    next_index = 0
    failures = 0

    async def worker() -> None:
        nonlocal next_index, failures
        while next_index < len(requests):
            body = requests[next_index]
            next_index += 1
            status, payload = await post(body)
            if status != 200 or not payload.startswith(b'{"errcode":0,'):
                failures += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if failures:
        sys.exit(f"{failures} calls did not answer HTTP 200 errcode 0")
    return cpu, wall


async def aiohttp_client(
    api_base: str, token: str, concurrency: int
) -> tuple[Post, Callable[[], Awaitable[None]]]:
    """The worker's former update path: one ClientSession, a URL parsed once per token."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=concurrency + 4, ttl_dns_cache=300, keepalive_timeout=15.0
        ),
        timeout=aiohttp.ClientTimeout(total=15.0, connect=5.0, sock_read=10.0),
        raise_for_status=False,
    )
    url = URL(
        f"{api_base}{UPDATE_TEMPLATE_CARD_PATH}?access_token={quote(token, safe='')}", encoded=True
    )
    headers = {"Content-Type": "application/json"}

    async def post(body: bytes) -> tuple[int, bytes]:
        async with session.post(url, data=body, headers=headers) as response:
            return response.status, await response.read()

    return post, session.close


async def origin_client(
    api_base: str, token: str, concurrency: int
) -> tuple[Post, Callable[[], Awaitable[None]]]:
    """The worker's update path now: one HttpOrigin, a target encoded once per token."""
    origin = HttpOrigin(api_base, max_connections=concurrency)
    target = origin.target(f"{UPDATE_TEMPLATE_CARD_PATH}?access_token={quote(token, safe='')}")

    async def post(body: bytes) -> tuple[int, bytes]:
        return await origin.post(target, body)

    return post, origin.close


CLIENTS = {"aiohttp": aiohttp_client, "http.py": origin_client}


async def fetch_token(api_base: str, corp: str = CORP, secret: str = SECRET) -> str:
    """An app's token (the demo app's by default)."""
    async with aiohttp.ClientSession() as session:
        params = {"corpid": corp, "corpsecret": secret}
        async with session.get(f"{api_base}/cgi-bin/gettoken", params=params) as response:
            return str((await response.json())["access_token"])


async def main(args: argparse.Namespace) -> None:
    """Interleaved runs, then the table."""
    simulator, api_base = start_simulator(args.latency_ms)
    try:
        token = await fetch_token(api_base)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
        print(f"{args.calls} calls per run, {args.concurrency} in flight, simulator at {api_base}")
        print("| run | client | calls/s | CPU µs per call |")
        print("| --- | --- | ---: | ---: |")
        for repeat in range(args.repeat):
            for name, make in CLIENTS.items():
                post, close = await make(api_base, token, args.concurrency)
                try:
                    await drive(post, bodies(f"{repeat}-{name}-warm", WARM_UP), args.concurrency)
                    requests = bodies(f"{repeat}-{name}", args.calls)
                    cpu, wall = await drive(post, requests, args.concurrency)
                finally:
                    await close()
                results[name].append((cpu, wall))
                rate, micros = args.calls / wall, cpu / args.calls * 1e6
                print(f"| {repeat + 1} | {name} | {rate:,.0f} | {micros:.1f} |")
        print()
        print("| client | CPU µs per call, median (min-max) | calls/s, median |")
        print("| --- | ---: | ---: |")
        medians = {}
        for name, runs in results.items():
            per_call = [cpu / args.calls * 1e6 for cpu, _ in runs]
            medians[name] = statistics.median(per_call)
            rate = statistics.median(args.calls / wall for _, wall in runs)
            spread = f"{min(per_call):.1f}-{max(per_call):.1f}"
            print(f"| {name} | {medians[name]:.1f} ({spread}) | {rate:,.0f} |")
        print(f"\nhttp.py / aiohttp CPU per call: {medians['http.py'] / medians['aiohttp']:.2f}")
    finally:
        simulator.terminate()
        simulator.wait(10)


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="the simulator's answer delay (default 0)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    uvloop.run(main(parse_args()))
