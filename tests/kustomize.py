"""Renders the kustomizations of ``deploy/k8s`` the way ``kubectl kustomize`` does, without kubectl.

It covers what ``deploy/k8s`` uses and refuses anything else, so a new kustomize feature in a
manifest fails the tests instead of being rendered wrongly: ``resources`` (files and
directories), ``namespace``, ``labels`` (``pairs`` with ``includeTemplates``; never
``includeSelectors``), ``images`` (``newName``, ``newTag``, ``digest``) and ``patches`` given by
``path``, as strategic merge patches: maps merge key by key, ``null`` deletes a key, the lists
Kubernetes merges by a key (containers, env, volumes, volume mounts, ports) merge item by item,
``$patch: delete`` deletes a list item or, at the top, a whole resource.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Document = dict[str, Any]

KUSTOMIZATION_KEYS = frozenset(
    {"apiVersion", "kind", "namespace", "resources", "patches", "images", "labels"}
)
CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
)
POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
# The lists Kubernetes' strategic merge merges by a key instead of replacing them.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


class KustomizeError(ValueError):
    """The kustomization uses something this renderer does not, or is inconsistent."""


def load_documents(path: Path) -> list[Document]:
    """The YAML documents of a file (empty documents skipped)."""
    return [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc is not None]


def build(directory: Path) -> list[Document]:
    """The resources a kustomization directory renders to, in order."""
    kustomization = load_documents(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    if unknown:
        raise KustomizeError(f"{directory}: unsupported kustomization keys {sorted(unknown)}")
    documents: list[Document] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        documents.extend(build(path) if path.is_dir() else load_documents(path))
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{directory}: only `patches: - path:` is supported, got {patch}")
        for patch_document in load_documents(directory / patch["path"]):
            documents = apply_patch(documents, patch_document)
    if "namespace" in kustomization:
        set_namespace(documents, kustomization["namespace"])
    for labels in kustomization.get("labels", []):
        add_labels(documents, labels)
    for image in kustomization.get("images", []):
        set_image(documents, image)
    return documents


def set_namespace(documents: list[Document], namespace: str) -> None:
    """``namespace:`` on every namespaced resource."""
    for document in documents:
        if document["kind"] not in CLUSTER_SCOPED:
            document["metadata"]["namespace"] = namespace


def find(documents: list[Document], kind: str, name: str) -> Document:
    """The one resource of this kind and name."""
    found = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        raise KustomizeError(f"{len(found)} resources {kind}/{name}, expected one")
    return found[0]


def apply_patch(documents: list[Document], patch: Document) -> list[Document]:
    """The resources with one strategic merge patch applied (or its target deleted)."""
    target = find(documents, patch["kind"], patch["metadata"]["name"])
    if patch.get("$patch") == "delete":
        return [d for d in documents if d is not target]
    merged = merge(target, patch)
    return [merged if d is target else d for d in documents]


def merge(base: Any, patch: Any, key: str = "") -> Any:
    """``patch`` merged into ``base`` (strategic merge, the subset described above)."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for name, value in patch.items():
            if name.startswith("$"):
                continue
            if value is None:
                merged.pop(name, None)
            elif name in merged:
                merged[name] = merge(merged[name], value, name)
            else:
                merged[name] = value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        return merge_list(base, patch, MERGE_KEYS[key])
    return patch


def merge_list(base: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    """Items merged by ``merge_key``; new ones appended; ``$patch: delete`` removes one."""
    merged = list(base)
    for item in patch:
        index = next((i for i, old in enumerate(merged) if old[merge_key] == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is None:
                raise KustomizeError(f"nothing to delete with {merge_key}={item[merge_key]}")
            del merged[index]
        elif index is None:
            merged.append(item)
        else:
            merged[index] = merge(merged[index], item)
    return merged


def add_labels(documents: list[Document], labels: Document) -> None:
    """``labels:`` on every resource's metadata and, with ``includeTemplates``, pod templates."""
    if labels.get("includeSelectors", False):
        raise KustomizeError("labels with includeSelectors are not supported: write selectors")
    pairs: dict[str, str] = labels["pairs"]
    for document in documents:
        document["metadata"].setdefault("labels", {}).update(pairs)
        if labels.get("includeTemplates", False) and document["kind"] in POD_TEMPLATE_KINDS:
            template = document["spec"]["template"].setdefault("metadata", {})
            template.setdefault("labels", {}).update(pairs)


def set_image(documents: list[Document], image: Document) -> None:
    """``images:``: a container image named ``name`` becomes ``newName:newTag`` (or ``@digest``)."""
    new = image.get("newName", image["name"])
    if "digest" in image:
        new = f"{new}@{image['digest']}"
    elif "newTag" in image:
        new = f"{new}:{image['newTag']}"
    for document in documents:
        if document["kind"] not in POD_TEMPLATE_KINDS:
            continue
        spec = document["spec"]["template"]["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            if container["image"].split("@")[0].rsplit(":", 1)[0] == image["name"]:
                container["image"] = new
