"""The queries of deploy/: every dashboard panel expression and every alert, as the tests read them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "wecom-card-worker.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
# An alert is `VALUE OP THRESHOLD`: the value part is what the live test evaluates on real data.
ALERT_SHAPE = re.compile(
    r"^(?P<value>.+?)\s*(?P<op>[<>]=?|==|!=)\s*(?P<threshold>[0-9.e+-]+)$", re.DOTALL
)


@dataclass(frozen=True)
class PanelQuery:
    """One target of one dashboard panel."""

    panel: str
    legend: str
    expr: str


@dataclass(frozen=True)
class Alert:
    """One alerting rule, its expression split into value and threshold."""

    name: str
    expr: str
    value: str
    rule: dict[str, Any]


def dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    """Every panel that is not a row, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def panel_queries() -> list[PanelQuery]:
    """Every query of every panel."""
    return [
        PanelQuery(panel["title"], target.get("legendFormat", ""), target["expr"])
        for panel in panels()
        for target in panel["targets"]
    ]


def substitute(expr: str, variables: dict[str, str]) -> str:
    """The expression with Grafana's variables replaced (longest names first)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${name}", variables[name])
    if "$" in expr:
        raise ValueError(f"a variable is left in {expr}")
    return expr


def rule_groups() -> list[dict[str, Any]]:
    """The groups of deploy/prometheus/rules.yaml."""
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text("utf-8"))["groups"]
    return groups


def alerts() -> list[Alert]:
    """Every alerting rule."""
    found = []
    for group in rule_groups():
        for rule in group["rules"]:
            shape = ALERT_SHAPE.match(rule["expr"].strip())
            if shape is None:
                raise ValueError(f"{rule['alert']}: expression is not VALUE OP THRESHOLD")
            found.append(Alert(rule["alert"], rule["expr"], shape["value"], rule))
    return found


def metric_names(expr: str) -> set[str]:
    """Names of the worker's and RabbitMQ's series an expression reads."""
    return set(re.findall(r"\b((?:wecom|rabbitmq)_[a-z0-9_]+)", expr)) | (
        {"up"} if re.search(r"\bup\{", expr) else set()
    )
