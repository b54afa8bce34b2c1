"""The request examples published on the seed page, as data.

Used by the demo and the tests; the seed's examples are the first thing any
validator must accept.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def seed_examples() -> dict[str, dict[str, Any]]:
    """The seed's six request bodies by name: ``button`` and the five ``card_type`` values."""
    text = resources.files("wecom_card_contracts").joinpath("seed_examples.json").read_text("utf-8")
    examples: dict[str, dict[str, Any]] = json.loads(text)
    return examples
