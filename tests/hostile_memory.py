"""Hostile bodies through the pipeline's decode path, measuring memory in a fresh process.

Run as ``python -m tests.hostile_memory CASE [CASE ...]`` (by tests/test_memory_bounds.py):
prints one JSON line per case with the peak resident set growth while the case's
delivery was processed and the resident set after it, both against the baseline
just before, then a line ``{"case": "all", ...}`` with the resident set after
every case against the one before the first (every body is built before that). Peak RSS is the kernel's high-water mark
(``VmHWM``), reset before each case through ``/proc/self/clear_refs``, so
building the body does not hide what decoding it costs.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import re
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from tests.hostile_bodies import rejecting_pipeline
from worker.pipeline import Pipeline, Reply
from worker.ports import Delivery

CAP = 256 * 1024
"""WECOM_MAX_MESSAGE_BYTES of the run (the default)."""
KIB = 1024


def oversized_userids() -> Delivery:
    """12.5 MB of JSON: 2.5 million short userids, then the command_id."""
    head = b'{"request":{"agentid":1,"response_code":"rc","userids":["ab"'
    return Delivery(head + b',"ab"' * 2_500_000 + b']},"command_id":"huge"}')


def oversized_msgpack() -> Delivery:
    """The same in msgpack: an array32 of 2.5 million two-byte strings."""
    head = b"\x82\xaacommand_id\xa4huge\xa7request\x81\xa7userids\xdd" + (2_500_000).to_bytes(4)
    return Delivery(head + b"\xa2ab" * 2_500_000, content_type="application/msgpack")


def userids_in_cap() -> Delivery:
    """Just under the cap: 52,000 short userids in JSON, the costliest shape to decode typed."""
    count = (CAP - 200) // 5
    head = b'{"command_id":"ids","request":{"agentid":1,"response_code":"rc","userids":["ab"'
    return Delivery(head + b',"ab"' * count + b"]}}")


def many_objects() -> Delivery:
    """Just under the cap: a list of 260,000 empty maps where six cards may stand."""
    count = CAP - 200
    head = (
        b"\x82\xaacommand_id\xa4objs\xa7request\x83\xa7agentid\x01\xadresponse_code\xa2rc"
        b"\xadtemplate_card\x82\xa9card_type\xabtext_notice"
        b"\xb7horizontal_content_list\xdd" + count.to_bytes(4)
    )
    return Delivery(head + b"\x80" * count, content_type="application/msgpack")


def many_lists_json() -> Delivery:
    """Just under the cap: 87,000 empty lists as userids in JSON."""
    count = (CAP - 200) // 3
    head = b'{"command_id":"lists","request":{"agentid":1,"response_code":"rc","userids":[[]'
    return Delivery(head + b",[]" * count + b"]}}")


def deeply_nested() -> Delivery:
    """Just under the cap: a request nested 130,000 lists deep."""
    depth = CAP // 2 - 100
    body = b'{"command_id":"deep","request":' + b"[" * depth + b"]" * depth + b"}"
    return Delivery(body)


def gzip_bomb() -> Delivery:
    """A few KiB of gzip that inflates to 200 MB."""
    plain = b'{"command_id":"bomb","padding":"' + b"0" * 200_000_000 + b'"}'
    return Delivery(gzip.compress(plain, 9), content_encoding="gzip")


def huge_length_claim() -> Delivery:
    """msgpack headers claiming 4 GiB of string and 4 billion items."""
    body = b"\x82\xaacommand_id\xdb\xff\xff\xff\xf0ab\xa7request\xdd\xff\xff\xff\xff"
    return Delivery(body, content_type="application/msgpack")


CASES: dict[str, Callable[[], Delivery]] = {
    "oversized_userids": oversized_userids,
    "oversized_msgpack": oversized_msgpack,
    "userids_in_cap": userids_in_cap,
    "many_objects": many_objects,
    "many_lists_json": many_lists_json,
    "deeply_nested": deeply_nested,
    "gzip_bomb": gzip_bomb,
    "huge_length_claim": huge_length_claim,
}


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory figure, in KiB."""
    text = Path("/proc/self/status").read_text("ascii")
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return int(found.group(1))


def reset_peak() -> None:
    """Start a new high-water mark of the resident set at the current size."""
    Path("/proc/self/clear_refs").write_text("5", "ascii")


async def measure(pipeline: Pipeline, name: str, delivery: Delivery) -> dict[str, object]:
    """Process one hostile delivery; memory figures against the baseline just before."""
    gc.collect()
    reset_peak()
    baseline = status_kib("VmRSS")
    tracemalloc.start()
    disposition = await pipeline.process(delivery)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = status_kib("VmHWM")
    assert isinstance(disposition, Reply)
    result = disposition.result
    del disposition
    gc.collect()
    return {
        "case": name,
        "status": result.status,
        "command_id": result.command_id,
        "message": result.error.message if result.error else None,
        "baseline_kib": baseline,
        "peak_growth_kib": peak - baseline,
        "traced_peak_kib": traced_peak // KIB,
        "after_kib": status_kib("VmRSS") - baseline,
    }


async def main(names: list[str]) -> None:
    """Build a pipeline on real parts (SQLite store, WeCom client), then run each case."""
    async with rejecting_pipeline(CAP) as pipeline:
        # Every body is built first: what the allocator keeps of building them is no
        # part of what decoding them costs.
        deliveries = {name: CASES[name]() for name in names}
        gc.collect()
        start = status_kib("VmRSS")
        for name, delivery in deliveries.items():
            figure = await measure(pipeline, name, delivery)
            sys.stdout.write(json.dumps(figure) + "\n")
        gc.collect()
        sys.stdout.write(
            json.dumps({"case": "all", "after_kib": status_kib("VmRSS") - start}) + "\n"
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or list(CASES)))
