"""deploy/compose.yaml cannot run here (no container runtime): it is parsed and every image,
build target, setting, mounted file and scrape target it names is checked to exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_queries import RULES
from tests.deploy_sources import known_settings, stages

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
WORKERS = ("worker-1", "worker-2")


def compose() -> dict[str, Any]:
    """The compose file, YAML anchors and merge keys resolved."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services() -> dict[str, Any]:
    """The services by name."""
    found: dict[str, Any] = compose()["services"]
    return found


def test_the_stack_has_every_part_the_issue_names() -> None:
    """RabbitMQ, Redis, the simulator, two workers, Prometheus and Grafana."""
    assert set(services()) == {
        "rabbitmq", "redis", "simulator", *WORKERS, "prometheus", "grafana",
    }  # fmt: skip


def test_images_are_pinned_or_built_from_a_stage_of_the_dockerfile() -> None:
    """Third-party images carry an exact version; ours are Dockerfile targets that exist."""
    for name, service in services().items():
        if "build" in service:
            assert service["build"]["target"] in stages(), name
            assert (COMPOSE.parent / service["build"]["context"] / "Dockerfile").is_file()
        else:
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+(-\w+)?", service["image"]), name
    assert services()["worker-1"]["build"]["target"] == "worker"
    assert services()["simulator"]["build"]["target"] == "simulator"


def test_workers_use_only_real_settings_and_the_simulators_app() -> None:
    """Every WECOM_* a worker gets exists; its app is the one the simulator serves."""
    simulator = " ".join(services()["simulator"]["command"])
    for name in WORKERS:
        environment = services()[name]["environment"]
        assert set(environment) <= known_settings()
        app = f"{environment['WECOM_CORP_ID']}:{environment['WECOM_AGENT_ID']}"
        assert f"--app {app}:{environment['WECOM_SECRET']}" in simulator
        assert environment["WECOM_API_BASE"] == "http://simulator:8081"
        assert environment["WECOM_STATE_URL"].startswith("redis://redis:")
    redis = services()["redis"]["command"]
    assert redis[redis.index("--appendfsync") + 1] == "always"
    assert (
        "rabbitmq_prometheus" in (DEPLOY / "compose" / "rabbitmq" / "enabled_plugins").read_text()
    )


def test_every_mounted_file_exists() -> None:
    """Bind mounts name files of the repository (relative to deploy/)."""
    for service in services().values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), volume
    grafana = " ".join(services()["grafana"]["volumes"])
    assert "./grafana:/var/lib/grafana/dashboards/wecom" in grafana
    provider = yaml.safe_load((DEPLOY / "compose" / "grafana" / "dashboards.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/wecom"


def test_prometheus_scrapes_the_workers_and_rabbitmq_with_the_rules(tmp_path: Path) -> None:
    """promtool accepts the config with the rule file beside it; targets are compose services."""
    program = shutil.which("promtool")
    if program is None:
        pytest.fail("promtool not found: run scripts/ensure-system-packages.sh")
    config_path = DEPLOY / "compose" / "prometheus.yml"
    shutil.copy(config_path, tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / "rules.yaml")
    done = subprocess.run(
        [program, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    mounts = " ".join(services()["prometheus"]["volumes"])
    assert "./prometheus/rules.yaml:/etc/prometheus/rules.yaml" in mounts
    config = yaml.safe_load(config_path.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert targets == {"worker-1:8080", "worker-2:8080", "rabbitmq:15692"}
