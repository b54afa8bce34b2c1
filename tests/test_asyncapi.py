"""The AsyncAPI 3.0 document: generated from the Structs, committed current, valid by the spec.

The official JSON Schema of AsyncAPI 3.0.0 comes from npm (``@asyncapi/specs``),
installed once into a cache directory outside the repository.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from wecom_card_contracts import CONTRACT_VERSION, message_schema, wire
from wecom_card_contracts.asyncapi import asyncapi_document, asyncapi_text

ROOT = Path(__file__).parents[1]
COMMITTED = ROOT / "docs" / "asyncapi.json"
SPECS_PACKAGE = "@asyncapi/specs@6.11.1"  # exact: the schema file a pass was checked against
SPEC_FILE = Path("node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json")


def specs_cache() -> Path:
    """Where the npm package is installed: the user's cache, never the repository."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "wecom-card-worker" / SPECS_PACKAGE.replace("/", "+")


@pytest.fixture(scope="module")
def asyncapi_schema() -> dict[str, Any]:
    """The official AsyncAPI 3.0.0 JSON Schema (draft-07), fetched with npm on first use."""
    cache = specs_cache()
    spec = cache / SPEC_FILE
    if not spec.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(
                "npm is not installed: cannot fetch the AsyncAPI 3.0.0 JSON Schema "
                f"({SPECS_PACKAGE}); scripts/ensure-system-packages.sh installs it"
            )
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(cache),
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=error",
                SPECS_PACKAGE,
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    schema: dict[str, Any] = json.loads(spec.read_text("utf-8"))
    return schema


def spec_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """Every complaint of the AsyncAPI schema about a document, with where it is."""
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(document)]


def test_generated_document_is_valid_asyncapi_3(asyncapi_schema: dict[str, Any]) -> None:
    """The generated document passes the official AsyncAPI 3.0.0 JSON Schema."""
    assert asyncapi_document()["asyncapi"] == "3.0.0"
    assert spec_errors(asyncapi_schema, asyncapi_document()) == []


def test_the_official_schema_refuses_a_broken_document(asyncapi_schema: dict[str, Any]) -> None:
    """Given a wrong AMQP delivery mode and an OpenAPI-style discriminator, the spec says so."""
    document = copy.deepcopy(asyncapi_document())
    document["operations"]["sendResult"]["bindings"]["amqp"]["deliveryMode"] = 3
    document["components"]["schemas"]["Command"]["discriminator"] = {"propertyName": "x"}
    errors = spec_errors(asyncapi_schema, document)
    assert any("sendResult" in e for e in errors)
    assert any("discriminator" in e for e in errors)


def test_committed_copy_is_current() -> None:
    """docs/asyncapi.json is what `wecom-card-worker asyncapi` prints (regenerate on change)."""
    printed = subprocess.run(
        [sys.executable, "-m", "worker", "asyncapi"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert printed == asyncapi_text()
    assert COMMITTED.read_text("utf-8") == printed, (
        "regenerate: .venv/bin/wecom-card-worker asyncapi > docs/asyncapi.json"
    )


def test_queues_and_both_encodings_are_described() -> None:
    """Three queues with their contract names, and command and result in JSON and msgpack."""
    document = asyncapi_document()
    addresses = {c["address"] for c in document["channels"].values()}
    assert {wire.COMMAND_QUEUE, wire.RESULT_QUEUE, wire.DEAD_LETTER_QUEUE} <= addresses
    messages = document["components"]["messages"]
    content_types = {(m["name"], m.get("contentType")) for m in messages.values()}
    for name in ("command", "result"):
        assert {(name, wire.JSON), (name, wire.MSGPACK)} <= content_types
    assert document["info"]["version"] == CONTRACT_VERSION


def test_payload_schemas_are_the_json_schema_of_the_structs() -> None:
    """Every payload schema equals the one in schema.json, up to refs and the discriminator."""
    document = asyncapi_document()
    text = json.dumps(document["components"]["schemas"], sort_keys=True)
    text = text.replace("#/components/schemas/", "#/$defs/").replace(
        "x-discriminator", "discriminator"
    )
    assert json.loads(text) == message_schema()["$defs"]
