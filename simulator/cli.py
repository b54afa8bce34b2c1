"""`python -m simulator`: run the WeCom stand-in until SIGTERM or SIGINT.

Once listening it writes exactly one line to stdout,
`simulator listening on http://HOST:PORT` (the real port when 0 was asked),
and nothing else; calls are logged to stderr, one line each, without tokens
or secrets (`--quiet` keeps only warnings). It exits 0 on SIGTERM/SIGINT and
1 when it cannot listen.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Final

import msgspec

from simulator.config import (
    DEFAULT_INVALID_USER_PREFIX,
    DEFAULT_TOKEN_TTL,
    DEMO_APP,
    SimulatorConfig,
    parse_app,
    parse_apps,
)
from simulator.faults import FAULT_KINDS, Fault, validate_fault
from simulator.ratelimit import parse_rate_limit
from simulator.server import run_simulator

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

DEFAULT_PORT: Final = 8089
APPS_ENV: Final = "SIMULATOR_APPS"

logger: Final = logging.getLogger("simulator")

_EPILOG: Final = f"""\
apps:
  An app is CORP_ID:AGENTID:SECRET. Apps come from --app (repeatable), else from
  the {APPS_ENV} environment variable (entries joined by commas), else the demo
  app {DEMO_APP.corp_id}:{DEMO_APP.agentid}:{DEMO_APP.secret}.

unknown users:
  update_template_card answers errcode 0 with invaliduser listing (lower-cased)
  the request's userids that are unknown: those given with --invalid-user and,
  by default, every userid starting with "{DEFAULT_INVALID_USER_PREFIX}" (case-insensitive;
  change with --invalid-user-prefix, turn off with --no-invalid-user-prefix).

rate limit:
  N/s, N/min, N/h joined by commas (the worker's WECOM_RATE_LIMIT syntax), per
  corp, in fixed windows aligned to the clock. A call beyond a limit answers
  45009 and the corp stays blocked until that window rolls over.

faults (--fault, repeatable; also at run time through POST /_sim/faults):
  KIND[:COUNT] or key=value pairs joined by commas, keys as in the control API:
    --fault system_busy:3
    --fault kind=lost_answer,count=1,response_code=rc-1
    --fault kind=errcode,errcode=60020,errmsg=not-allowed-ip
  A fault with a response_code applies to the next COUNT calls carrying that
  code, one without to the next COUNT calls. lost_answer closes the connection
  without answering, after spending the code (consume_code=false: before).
  kinds: {", ".join(FAULT_KINDS[:4])},
         {", ".join(FAULT_KINDS[4:])}.

answers (JSON, HTTP 200), checked in this order:
  gettoken: 41002 no corpid, 40013 unknown corp, 41004 no secret, 40001 wrong secret.
  update_template_card: 41001 no access_token, 40014 unknown token, 42001 expired
  token, 47001 body not a JSON object, 41011 no agentid, 40056 agentid not an
  integer, 301002 agentid of another app, 40058 no response_code; then an injected
  fault if one applies; 45009 rate limit, 45033 concurrency, 60140 response_code
  used or expired; else 0 with invaliduser. Every response_code is valid once.

control API (JSON):
  GET /_sim/health, GET /_sim/calls, GET /_sim/codes/CODE,
  GET /_sim/codes/CODE/calls (every call that carried CODE, with the body received),
  POST /_sim/codes/expire {{"codes": [...]}}, GET|POST|DELETE /_sim/faults,
  POST /_sim/reset. docs/simulator.md has examples of each.
"""


def parse_fault(spec: str) -> Fault:
    """Parse a `--fault` value: `KIND[:COUNT]` or `key=value,...` with the control API's keys."""
    fields: dict[str, str] = {}
    if "=" not in spec:
        kind, _, count = spec.partition(":")
        fields = {"kind": kind.strip()} | ({"count": count.strip()} if count else {})
    else:
        for pair in spec.split(","):
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"fault field {pair!r} is not key=value")
            fields[key.strip()] = value.strip()
    fault = msgspec.convert(fields, Fault, strict=False)
    validate_fault(fault)
    return fault


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m simulator`."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="A local stand-in for WeCom's gettoken and update_template_card APIs,\n"
        "with single-use response codes, unknown users, rate limits and injectable faults.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    add(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port, 0 for any free one (default: %(default)s)",
    )
    add(
        "--app",
        action="append",
        default=[],
        metavar="CORP_ID:AGENTID:SECRET",
        help="an app (repeatable)",
    )
    add(
        "--invalid-user",
        action="append",
        default=[],
        metavar="USERID",
        help="an unknown user (repeatable)",
    )
    add(
        "--invalid-user-prefix",
        default=DEFAULT_INVALID_USER_PREFIX,
        metavar="PREFIX",
        help="userids starting with this are unknown (default: %(default)s)",
    )
    add("--no-invalid-user-prefix", action="store_true", help="no userid is unknown by its prefix")
    add(
        "--rate-limit",
        default="",
        metavar="SPEC",
        help="per-corp limit, e.g. 10000/min,150000/h (default: none)",
    )
    add(
        "--token-ttl",
        type=float,
        default=DEFAULT_TOKEN_TTL,
        metavar="SECONDS",
        help="token lifetime (default: %(default)s)",
    )
    add(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="delay before each update call is processed",
    )
    add("--jitter-ms", type=float, default=0.0, metavar="MS", help="plus a random [0, MS] delay")
    add(
        "--latency-on-gettoken",
        action="store_true",
        help="apply latency and jitter to gettoken too",
    )
    add(
        "--token-expire-every",
        type=int,
        metavar="N",
        help="a token answers 42001 after N update calls",
    )
    add("--max-concurrency", type=int, metavar="N", help="calls beyond N in flight answer 45033")
    add(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="a fault queued at start (repeatable)",
    )
    add("--quiet", action="store_true", help="do not log each call (for benchmarks)")
    return parser


def build_config(args: argparse.Namespace, environ: Mapping[str, str]) -> SimulatorConfig:
    """Turn parsed arguments (and `SIMULATOR_APPS` in `environ`) into a configuration."""
    if args.app:
        apps = tuple(parse_app(entry) for entry in args.app)
    elif environ.get(APPS_ENV, "").strip():
        apps = parse_apps(environ[APPS_ENV])
    else:
        apps = (DEMO_APP,)
    prefix = None if args.no_invalid_user_prefix else (args.invalid_user_prefix or None)
    return SimulatorConfig(
        apps=apps,
        invalid_users=frozenset(args.invalid_user),
        invalid_user_prefix=prefix,
        rate_limit=parse_rate_limit(args.rate_limit),
        token_ttl=args.token_ttl,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        latency_on_gettoken=args.latency_on_gettoken,
        token_expire_every=args.token_expire_every,
        max_concurrency=args.max_concurrency,
        faults=tuple(parse_fault(spec) for spec in args.fault),
    )


async def serve(config: SimulatorConfig, host: str, port: int) -> None:
    """Listen until SIGTERM or SIGINT, announcing the address on stdout once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with run_simulator(config, host, port) as sim:
        sys.stdout.write(f"simulator listening on {sim.url}\n")
        sys.stdout.flush()
        apps = ", ".join(f"{corp}:{agent}" for corp, agent in sim.state.apps)
        logger.info("serving apps %s", apps)
        await stop.wait()
    logger.info("stopped")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, used when installed
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = build_config(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    logger.propagate = False
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config, args.host, args.port))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 0
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", args.host, args.port, exc)
        return 1
    return 0
