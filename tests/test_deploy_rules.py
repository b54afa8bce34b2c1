"""deploy/prometheus and deploy/grafana without a live run: promtool, the PrometheusRule copy, the
runbook, the dashboard's conventions, and every metric they read existing in the worker."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy_queries import (
    ROOT,
    RULES,
    alerts,
    dashboard,
    metric_names,
    panel_queries,
    panels,
    rule_groups,
)
from worker.metrics import CALL_FAILURES, KNOWN_ERRCODES, Metrics, errcode_label
from worker.wecom import errcodes

RULE_TESTS = ROOT / "deploy" / "prometheus" / "rules.test.yaml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"
RUNBOOK = ROOT / "deploy" / "RUNBOOK.md"
CATALOGUE = ROOT / "deploy" / "README.md"
# The alerts operators need, by what they watch.
REQUIRED_ALERTS = {
    "WeComIndeterminateResults",
    "WeComFailedRatioHigh",
    "WeComFrequencyLimitHit",
    "WeComConcurrencyLimitHit",
    "WeComCommandQueueNoConsumer",
    "WeComCommandBacklogGrowing",
    "WeComCommandBacklogTooOld",
    "WeComDeadLetterQueueGrowing",
    "WeComReplicaNotReady",
    "WeComStateStoreNotDurable",
    "WeComTokenRefreshFailing",
    "WeComWorkerDown",
}
RABBITMQ_SERIES = {
    "rabbitmq_detailed_queue_messages_ready",
    "rabbitmq_detailed_queue_messages_unacked",
    "rabbitmq_detailed_queue_messages",
    "rabbitmq_detailed_queue_consumers",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run Debian's promtool (package prometheus)."""
    program = shutil.which("promtool")
    if program is None:
        pytest.fail("promtool not found: run scripts/ensure-system-packages.sh")
    return subprocess.run(
        [program, *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` finds every rule valid."""
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_promtool_unit_tests_pass_with_each_alert_firing_and_quiet() -> None:
    """Every alert has a firing and a quiet unit test, and `promtool test rules` passes them."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    expectations: dict[str, set[bool]] = {}
    for test in tests:
        for case in test["alert_rule_test"]:
            expectations.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert expectations == {alert.name: {True, False} for alert in alerts()}
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_issue_s_alerts_exist_with_annotations_and_a_runbook_section() -> None:
    """Each alert has summary, description and a runbook_url whose anchor is a RUNBOOK heading."""
    assert {alert.name for alert in alerts()} == REQUIRED_ALERTS
    headings = {
        line.removeprefix("## ").strip().lower()
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    for alert in alerts():
        annotations = alert.rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}
        url = annotations["runbook_url"]
        assert url.split("#")[0].endswith("deploy/RUNBOOK.md")
        assert url.split("#")[1] == alert.name.lower()
        assert alert.name.lower() in headings
        assert alert.rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_prometheusrule_holds_the_same_groups_as_rules_yaml() -> None:
    """The Operator's PrometheusRule and the plain rule file cannot drift apart."""
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["spec"]["groups"] == rule_groups()


def exposed_names() -> set[str]:
    """Series names a worker with one configured corp exposes."""
    metrics = Metrics()
    metrics.watch_corps(["ww-corp"], lambda _: 1, concurrency=1, prefetch=1)
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_dashboard_and_alerts_read_exists() -> None:
    """Each wecom_* name in a panel or an alert is a series the worker exposes."""
    used = set().union(*(metric_names(q.expr) for q in panel_queries()))
    used |= set().union(*(metric_names(a.expr) for a in alerts()))
    worker_names = {name for name in used if name.startswith("wecom_")}
    assert worker_names <= exposed_names()
    assert used - worker_names - {"up"} <= RABBITMQ_SERIES


def test_the_catalogue_lists_every_metric_the_worker_exposes() -> None:
    """deploy/README.md's metrics catalogue names each metric family, with its type."""
    catalogue = CATALOGUE.read_text()
    rows = dict(re.findall(r"^\| `(wecom_[a-z_]+)` \| (\w+) \|", catalogue, flags=re.MULTILINE))
    families = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in Metrics().registry.collect()
    }
    assert rows == families


def test_no_created_series_and_a_build_info_with_the_version() -> None:
    """The client library's *_created series are off; build_info carries the version."""
    names = exposed_names()
    assert not [name for name in names if name.endswith("_created")]
    assert "wecom_worker_build_info" in names


def test_errcode_label_is_bounded() -> None:
    """Known errcodes and failures are themselves; any other value is `other`."""
    acted_on = {
        value
        for name, value in vars(errcodes).items()
        if name.isupper() and isinstance(value, int) and name != "HOUR_ESCALATION_GRACE"
    }
    assert acted_on <= KNOWN_ERRCODES
    assert errcode_label(45009) == "45009"
    assert errcode_label(-1) == "-1"
    assert errcode_label(42015) == "other"
    assert errcode_label(10**9) == "other"
    assert {errcode_label(name) for name in CALL_FAILURES} == CALL_FAILURES
    assert errcode_label("made-up") == "other"


def test_the_dashboard_follows_the_conventions() -> None:
    """A hidden datasource variable used everywhere, no data source UIDs, windows from Grafana,
    and a replica named in the legend of every per-replica query."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["hide"] == 2
    reference = {"type": "prometheus", "uid": "${datasource}"}
    for panel in panels():
        assert panel["datasource"] == reference, panel["title"]
        assert all(target["datasource"] == reference for target in panel["targets"])
        assert panel.get("description"), panel["title"]
    for query in panel_queries():
        windows = re.findall(r"\[([^\]]+)\]", query.expr)
        assert all(w in {"$__rate_interval", "$__range"} for w in windows), query.expr
        if re.search(r"by \([^)]*instance", query.expr):
            assert "{{instance}}" in query.legend, query.panel
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


def test_the_dashboard_answers_the_issue_s_questions() -> None:
    """Panels exist for each question an operator asks."""
    text = " ".join(q.expr for q in panel_queries())
    for needed in (
        "wecom_commands_total",
        "wecom_command_duration_seconds_bucket",
        "wecom_api_call_duration_seconds_bucket",
        "wecom_api_calls_total",
        "wecom_rate_limiter_wait_seconds_bucket",
        "wecom_commands_deferred_total",
        "wecom_commands_in_flight",
        "wecom_concurrency_configured",
        "wecom_corp_concurrency_limit",
        "wecom_token_refreshes_total",
        "wecom_invalid_users_total",
        'status="indeterminate"',
        'status="failed"',
        "rabbitmq_detailed_queue_messages_ready",
        "rabbitmq_detailed_queue_consumers",
        "$command_queue.delay",
        "$dead_letter_queue",
        "wecom_state_store_durable",
        "wecom_worker_ready",
    ):
        assert needed in text, needed


def test_rule_files_are_found_relative_to_the_test_file() -> None:
    """The unit tests load the rules beside them (promtool resolves paths from the test file)."""
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert [RULE_TESTS.parent / name for name in tests["rule_files"]] == [RULES]
    assert Path(RULES).is_file()
