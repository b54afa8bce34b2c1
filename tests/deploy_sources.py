"""What the deploy tests read from the repository outside deploy/: the Dockerfile's stages and
the names of the worker's settings."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def stages() -> dict[str, str]:
    """The Dockerfile's stages by name, each its text from FROM to the next FROM."""
    parts = re.split(r"^(?=FROM )", DOCKERFILE.read_text(), flags=re.MULTILINE)
    named = {}
    for part in parts[1:]:
        name = re.match(r"FROM \S+ AS (\S+)", part)
        if name is None:
            raise ValueError(f"every stage is named (FROM ... AS name): {part.splitlines()[0]}")
        named[name.group(1)] = part
    return named


def known_settings() -> set[str]:
    """WECOM_* names the worker reads, plus the Redis settings of CONTRACT.md."""
    source = (ROOT / "worker" / "settings.py").read_text()
    return set(re.findall(r'"(WECOM_[A-Z_]+)"', source)) | {
        "WECOM_REDIS_WAIT_REPLICAS",
        "WECOM_REDIS_PASSWORD",
    }
