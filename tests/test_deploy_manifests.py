"""deploy/k8s: every rendered manifest against the Kubernetes schemas and the CRDs' schemas, and
the promises the manifests make (hardening, secrets as files, one SQLite replica, KEDA's trigger).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy_sources import known_settings
from tests.kustomize import Document, build, find
from worker.settings import load_settings

# The worker's defaults, as it reads them with only an app configured.
DEFAULTS = load_settings({"WECOM_CORP_ID": "ww", "WECOM_AGENT_ID": "1", "WECOM_SECRET": "s"})

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ("base", "overlays/example", "overlays/sqlite")
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # the oldest supported and the newest known
CUSTOM_KINDS = frozenset(
    {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
)
CRD_PACKAGES = ("@kubernetes-models/keda@2.0.0", "@kubernetes-models/prometheus-operator@6.0.0")
CRD_CACHE = Path(tempfile.gettempdir()) / "wecom-card-worker-crd-models-1"
# Keys of free-form maps inside custom resources: their contents are not schema fields.
FREE_FORM = frozenset({"metadata", "matchLabels", "labels", "annotations"})
# The rabbitmq scaler's metadata (KEDA 2.x docs); `host` must come from the TriggerAuthentication.
RABBITMQ_TRIGGER_FIELDS = frozenset(
    {
        "protocol", "mode", "value", "activationValue", "queueName", "vhostName", "useRegex",
        "excludeUnacknowledged", "pageSize", "operation", "timeout", "unsafeSsl",
    }
)  # fmt: skip
SECRET_MOUNT = "/run/secrets/wecom"


def rendered(kustomization: str) -> list[Document]:
    """The resources of one kustomization directory."""
    return build(K8S / kustomization)


def container(documents: list[Document]) -> Document:
    """The worker container of the Deployment."""
    deployment = find(documents, "Deployment", "wecom-card-worker")
    [worker] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(worker)


def configmap(documents: list[Document]) -> dict[str, str]:
    """The settings ConfigMap's data."""
    data: dict[str, str] = find(documents, "ConfigMap", "wecom-card-worker-settings")["data"]
    return data


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_core_resources_validate_against_the_kubernetes_schemas(
    kustomization: str, version: str
) -> None:
    """Given a rendered kustomization, every core resource passes strict schema validation."""
    documents = [d for d in rendered(kustomization) if d["kind"] not in CUSTOM_KINDS]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The validator bites: a typo in the Deployment is an error, not silently dropped."""
    deployment = find(rendered("base"), "Deployment", "wecom-card-worker")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.fixture(scope="module")
def crd_models() -> Path:
    """The @kubernetes-models packages with the CRDs' schemas, from npm, cached across runs."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        pytest.skip("node and npm are needed to check custom resources (Debian: nodejs npm)")
    marker = CRD_CACHE / "installed"
    if not marker.exists():
        CRD_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(CRD_CACHE), "--no-audit", "--no-fund",
             "--ignore-scripts", "--loglevel=error", *CRD_PACKAGES],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        marker.write_text("\n".join(CRD_PACKAGES))
    return CRD_CACHE


def crd_verdicts(models: Path, resources: list[Document]) -> list[str | None]:
    """Per resource: None when its CRD's schema accepts it, else the validator's message."""
    done = subprocess.run(
        ["node", str(ROOT / "tests" / "crd_validate.mjs"), str(models)],
        input=json.dumps(resources), capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    verdicts: list[str | None] = json.loads(done.stdout)
    return verdicts


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_custom_resources_validate_against_their_crd_schemas(
    kustomization: str, crd_models: Path
) -> None:
    """ScaledObject, TriggerAuthentication, ServiceMonitor and PrometheusRule match their CRDs."""
    resources = [d for d in rendered(kustomization) if d["kind"] in CUSTOM_KINDS]
    assert {d["kind"] for d in resources} <= CUSTOM_KINDS
    assert crd_verdicts(crd_models, resources) == [None] * len(resources)


def test_crd_validation_rejects_a_wrong_type(crd_models: Path) -> None:
    """The CRD validator bites: a replica count given as a string is refused."""
    scaled = find(rendered("base"), "ScaledObject", "wecom-card-worker")
    scaled["spec"]["maxReplicaCount"] = "4"
    [verdict] = crd_verdicts(crd_models, [scaled])
    assert verdict is not None
    assert "maxReplicaCount" in verdict


def schema_field_names(models: Path) -> set[str]:
    """Every property name the compiled CRD (and Kubernetes) schemas validate."""
    names: set[str] = set()
    for script in models.glob("node_modules/**/_schemas/*.js"):
        names.update(re.findall(r'parentDataProperty:"([^"]+)"', script.read_text("utf-8")))
    return names


def field_names(value: Any) -> set[str]:
    """The keys used in a resource, outside free-form maps (labels, metadata, ...)."""
    if isinstance(value, dict):
        keys = set(value)
        for key, item in value.items():
            if key not in FREE_FORM:
                keys |= field_names(item)
        return keys
    if isinstance(value, list):
        return set().union(*(field_names(item) for item in value)) if value else set()
    return set()


def test_custom_resources_use_only_fields_their_schemas_know(crd_models: Path) -> None:
    """CRDs accept unknown fields (the API server prunes them): each field name must exist."""
    known = schema_field_names(crd_models)
    assert {"scaleTargetRef", "secretTargetRef", "endpoints", "groups"} <= known
    for kustomization in KUSTOMIZATIONS:
        for resource in rendered(kustomization):
            if resource["kind"] in CUSTOM_KINDS:
                unknown = field_names(resource["spec"]) - known
                assert not unknown, f"{resource['kind']}: unknown fields {unknown}"


def test_keda_scales_on_the_command_queue_with_the_workers_broker_secret() -> None:
    """The rabbitmq trigger uses known metadata only; its host comes from the worker's Secret."""
    documents = rendered("overlays/example")
    scaled = find(documents, "ScaledObject", "wecom-card-worker")
    [trigger] = scaled["spec"]["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "rabbitmq"
    assert set(metadata) <= RABBITMQ_TRIGGER_FIELDS
    assert (metadata["mode"], metadata["protocol"]) == ("QueueLength", "amqp")
    assert int(metadata["value"]) > 0
    assert metadata["queueName"] == DEFAULTS.command_queue
    assert scaled["spec"]["scaleTargetRef"]["name"] == "wecom-card-worker"
    assert 2 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
    auth = find(documents, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    [reference] = auth["spec"]["secretTargetRef"]
    deployment = find(documents, "Deployment", "wecom-card-worker")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    amqp_file = {e["name"]: e.get("value") for e in container(documents)["env"]}[
        "WECOM_AMQP_URL_FILE"
    ]
    assert reference["parameter"] == "host"
    assert reference["name"] == volumes["secrets"]["secret"]["secretName"]
    assert amqp_file == f"{SECRET_MOUNT}/{reference['key']}"


def dockerfile_user() -> int:
    """The numeric user the image's last stage runs as."""
    users = re.findall(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)
    return int(users[-1])


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_the_pod_is_locked_down(kustomization: str) -> None:
    """Non-root as the image's user, read-only root, no privilege escalation, no capabilities."""
    documents = rendered(kustomization)
    pod = find(documents, "Deployment", "wecom-card-worker")["spec"]["template"]["spec"]
    worker = container(documents)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_user()
    assert pod["securityContext"]["fsGroup"] == dockerfile_user()
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert worker["securityContext"]["allowPrivilegeEscalation"] is False
    assert worker["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert worker["resources"]["requests"]
    assert worker["resources"]["limits"]


def test_probes_port_and_grace_period() -> None:
    """Liveness on /healthz, readiness on /readyz, a named metrics port, grace beyond the drain."""
    documents = rendered("base")
    pod = find(documents, "Deployment", "wecom-card-worker")["spec"]["template"]["spec"]
    worker = container(documents)
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert worker["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert configmap(documents)["WECOM_HTTP_PORT"] == "8080"
    shutdown_grace = float(configmap(documents)["WECOM_SHUTDOWN_GRACE"])
    # Stopping the consumer and publishing the last results may take one publish timeout.
    assert pod["terminationGracePeriodSeconds"] > shutdown_grace + DEFAULTS.publish_timeout
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    service = find(documents, "Service", "wecom-card-worker")
    monitor = find(documents, "ServiceMonitor", "wecom-card-worker")
    assert service["spec"]["ports"][0]["name"] == monitor["spec"]["endpoints"][0]["port"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_settings_are_known_and_secrets_are_files(kustomization: str) -> None:
    """ConfigMap keys are real settings; secrets arrive as *_FILE paths into the mounted Secret."""
    documents = rendered(kustomization)
    assert not [d for d in documents if d["kind"] == "Secret"]
    settings = configmap(documents)
    env = {e["name"]: e["value"] for e in container(documents)["env"]}
    known = known_settings()
    assert set(settings) <= known
    # WECOM_APPS_FILE is a path setting of its own; the others are X_FILE for a setting X.
    assert all(name.endswith("_FILE") for name in env)
    assert all(name in known or name.removesuffix("_FILE") in known for name in env)
    assert all(value.startswith(f"{SECRET_MOUNT}/") for value in env.values())
    mounts = {m["name"]: m for m in container(documents)["volumeMounts"]}
    assert mounts["secrets"] == {"name": "secrets", "mountPath": SECRET_MOUNT, "readOnly": True}
    for value in settings.values():
        assert not re.search(r"://[^/@]*:[^/@]*@", value), "a password in a URL in the ConfigMap"


def test_redis_is_the_default_state_store_with_several_replicas() -> None:
    """The example: Redis (Sentinel), durable store required, a claim waits for a replica."""
    documents = rendered("overlays/example")
    settings = configmap(documents)
    assert settings["WECOM_STATE_URL"].startswith(("redis://", "rediss://", "redis+sentinel://"))
    assert settings["WECOM_REQUIRE_DURABLE_STORE"] == "true"
    assert int(settings["WECOM_REDIS_WAIT_REPLICAS"]) >= 1
    assert "WECOM_REDIS_PASSWORD_FILE" in {e["name"] for e in container(documents)["env"]}
    assert find(documents, "ScaledObject", "wecom-card-worker")["spec"]["minReplicaCount"] >= 2
    assert (
        find(documents, "PodDisruptionBudget", "wecom-card-worker")["spec"]["maxUnavailable"] == 1
    )


def test_sqlite_overlay_runs_exactly_one_replica_on_its_volume() -> None:
    """SQLite: one replica, Recreate, the state file on the claim, nothing that would scale it."""
    documents = rendered("overlays/sqlite")
    deployment = find(documents, "Deployment", "wecom-card-worker")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not [d for d in documents if d["kind"] in {"ScaledObject", "PodDisruptionBudget"}]
    claim = find(documents, "PersistentVolumeClaim", "wecom-card-worker-state")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container(documents)["volumeMounts"]}
    url = configmap(documents)["WECOM_STATE_URL"]
    assert url == f"sqlite:///{mounts['state']}/wecom-worker-state.sqlite3"
    assert "WECOM_REDIS_WAIT_REPLICAS" not in configmap(documents)
    assert "WECOM_REDIS_PASSWORD_FILE" not in {e["name"] for e in container(documents)["env"]}


def test_network_policy_admits_only_scrapes_and_reaches_only_what_the_worker_needs() -> None:
    """In: the metrics port. Out: DNS, RabbitMQ, Redis and Sentinel, HTTPS (WeCom)."""
    policy = find(rendered("base"), "NetworkPolicy", "wecom-card-worker")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["ingress"]
    assert ingress["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {
        (53, "UDP"), (53, "TCP"), (5672, "TCP"), (5671, "TCP"), (6379, "TCP"), (26379, "TCP"),
        (443, "TCP"),
    }  # fmt: skip
