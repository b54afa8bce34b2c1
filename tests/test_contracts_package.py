"""wecom-card-contracts as a distribution of its own: msgspec only, one import name, typed."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import msgspec
import pytest

import wecom_card_contracts
from wecom_card_contracts import wire
from worker.settings import load_settings

ROOT = Path(__file__).parents[1]
CONTRACTS_PROJECT = ROOT / "contracts"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contracts wheel, built offline from a copy of ``contracts/`` with the venv's setuptools.

    A copy, so the build leaves nothing (``build/``, ``*.egg-info``) in the source tree.
    """
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "contracts"
    shutil.copytree(CONTRACTS_PROJECT, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("wecom_card_contracts-*.whl")
    return built


def test_version_is_the_contract_version_everywhere() -> None:
    """__version__, contracts/pyproject.toml and the installed metadata name one version."""
    project = tomllib.loads((CONTRACTS_PROJECT / "pyproject.toml").read_text("utf-8"))
    assert project["project"]["version"] == wecom_card_contracts.__version__
    assert metadata.version("wecom-card-contracts") == wecom_card_contracts.__version__


def test_worker_depends_on_this_major_version_of_the_contract() -> None:
    """The worker's pyproject pins the contracts distribution to the contract's major version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    major = wecom_card_contracts.__version__.split(".")[0]
    assert f"wecom-card-contracts~={major}.0" in project["project"]["dependencies"]


def test_wheel_installs_one_import_name_with_its_data_and_py_typed(wheel: Path) -> None:
    """Given the built wheel, its only top-level name is wecom_card_contracts, typed, with data."""
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"wecom_card_contracts"}
    for data in ("py.typed", "schema.json", "seed_examples.json"):
        assert f"wecom_card_contracts/{data}" in names


def test_wheel_requires_msgspec_only_and_aio_pika_for_the_client_extra(wheel: Path) -> None:
    """The wheel's metadata: msgspec is the only dependency; aio-pika only with [client]."""
    with zipfile.ZipFile(wheel) as archive:
        (meta_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(archive.read(meta_name).decode())
    requires = [r.replace(" ", "") for r in meta.get_all("Requires-Dist") or []]
    plain = [r for r in requires if "extra==" not in r]
    assert [r.split(">")[0] for r in plain] == ["msgspec"]
    assert any(r.startswith("aio-pika") and 'extra=="client"' in r for r in requires)
    assert meta["License-Expression"] == "MIT"
    assert meta["Name"] == "wecom-card-contracts"


def test_wheel_works_with_nothing_but_msgspec_and_the_standard_library(
    wheel: Path, tmp_path: Path
) -> None:
    """Given the wheel unpacked beside msgspec alone, a body decodes and the worker's deps stay out."""
    unpacked = tmp_path / "wheel"
    zipfile.ZipFile(wheel).extractall(unpacked)
    only_msgspec = tmp_path / "msgspec-only"
    only_msgspec.mkdir()
    (only_msgspec / "msgspec").symlink_to(Path(msgspec.__file__).parent)
    program = (
        "import sys; sys.path[:0] = sys.argv[1:3]\n"
        "import wecom_card_contracts as c\n"
        'body = b\'{"command_id":"a","request":{"agentid":1,"response_code":"r",'
        '"button":{"replace_name":"done"}}}\'\n'
        "assert c.decode_command(body).command_id == 'a'\n"
        "heavy = {'aio_pika', 'aiohttp', 'redis', 'prometheus_client', 'worker', 'simulator'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    # -I -S: no site-packages, no user site, no current directory on sys.path.
    answer = subprocess.run(
        [sys.executable, "-I", "-S", "-c", program, str(unpacked), str(only_msgspec)],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert answer.stdout.strip() == "[]"


def test_licence_files_are_one_text() -> None:
    """The repository's LICENSE and the contracts distribution's copy are identical."""
    assert (ROOT / "LICENSE").read_bytes() == (CONTRACTS_PROJECT / "LICENSE").read_bytes()


def test_wire_constants_are_the_worker_defaults() -> None:
    """Queue names, queue type and size cap in wecom_card_contracts.wire are the worker's defaults."""
    settings = load_settings(
        {"WECOM_CORP_ID": "ww-corp", "WECOM_AGENT_ID": "1000002", "WECOM_SECRET": "s"}
    )
    assert (settings.command_queue, settings.result_queue, settings.dead_letter_queue) == (
        wire.COMMAND_QUEUE,
        wire.RESULT_QUEUE,
        wire.DEAD_LETTER_QUEUE,
    )
    assert settings.queue_type == wire.QUEUE_TYPE
    assert settings.max_message_bytes == wire.MAX_MESSAGE_BYTES
