"""The ceiling of ``bench/throughput.py``: a bare aio-pika consume -> confirmed reply -> ack loop.

Run by ``throughput.py`` as a child process so its CPU time and peak RSS can be
read from ``/proc`` like the worker's; not meant to be run by hand.

On uvloop, one connection, one channel with publisher confirms and prefetch
``--prefetch``: for each delivery of ``--queue`` publish ``--reply-body`` to
``--reply-queue`` (persistent, mandatory, the delivery's correlation_id, awaited
confirm), then ack. aiormq already runs each delivery's callback in its own
task, so up to ``--prefetch`` replies are in flight at once. Prints one JSON line
``{"event": "consuming", "at": <time.monotonic()>}`` once the broker confirmed the
consumer (CLOCK_MONOTONIC is shared by every process of the machine), then runs
until SIGTERM / SIGINT.

``--profile PATH``: a profile (cProfile, or pyinstrument for ``.pyisession``) of
SIGUSR1..SIGUSR2, written to PATH (see ``bench/profile_worker.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import signal
import sys
import time
from pathlib import Path

import aio_pika
import uvloop
from aio_pika.abc import AbstractIncomingMessage


async def run(args: argparse.Namespace, reply_body: bytes) -> int:
    """Consume until told to stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    connection = await aio_pika.connect(args.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=args.prefetch)
        # Declared by throughput.py as the worker declares them (quorum, dead-letter exchange).
        queue = await channel.declare_queue(args.queue, passive=True)
        await channel.declare_queue(args.reply_queue, passive=True)
        exchange = channel.default_exchange
        reply_queue = args.reply_queue

        async def on_message(message: AbstractIncomingMessage) -> None:
            await exchange.publish(
                aio_pika.Message(
                    reply_body,
                    content_type="application/json",
                    correlation_id=message.correlation_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=reply_queue,
                mandatory=True,
            )
            await message.ack()

        tag = await queue.consume(on_message)
        print(json.dumps({"event": "consuming", "at": time.monotonic()}), flush=True)
        await stop.wait()
        await queue.cancel(tag)
    finally:
        await connection.close()
    return 0


def install_profiler(path: str) -> None:
    """Profile from SIGUSR1 to SIGUSR2 as ``bench/profile_worker.py`` does the worker."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    profile_worker = importlib.import_module("profile_worker")
    profile_worker.install(path)


def main() -> int:
    """Parse the arguments and run on uvloop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--reply-queue", required=True)
    parser.add_argument("--reply-body", required=True, help="file holding the reply's bytes")
    parser.add_argument("--prefetch", type=int, default=256)
    parser.add_argument("--profile", help="write a profile of SIGUSR1..SIGUSR2 here")
    args = parser.parse_args()
    if args.profile:
        install_profiler(args.profile)
    return uvloop.run(run(args, Path(args.reply_body).read_bytes()))


if __name__ == "__main__":
    sys.exit(main())
