"""Rendering the install manifests with the tools a platform team uses: kubectl's built-in
kustomize and helm, both built from their Go modules, and finding objects in what they render.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "daypass"
NAMESPACE = "daypass-system"
OPERATOR_USER = "system:serviceaccount:daypass-system:daypass"
# The oldest release the chart supports, and the one the local control plane runs.
KUBE_VERSION = "1.36.3"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Tools:
    kubectl: Path
    helm: Path

    def run(self, *argv: str | Path, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(arg) for arg in argv], input=input, capture_output=True,
                              text=True, check=False, timeout=300)

    def kustomize(self, directory: Path = DEPLOY) -> str:
        done = self.run(self.kubectl, "kustomize", directory)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def helm_template(self, *args: str, values: Mapping[str, Any] | None = None,
                      crds: bool = True) -> subprocess.CompletedProcess[str]:
        """`helm template` of the chart into daypass-system; never raises."""
        argv: list[str | Path] = [self.helm, "template", "daypass", CHART,
                                  "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
        if crds:
            argv.append("--include-crds")
        if values is not None:
            argv += ["--values", "-"]
        return self.run(*argv, *args, input=yaml.safe_dump(dict(values)) if values else None)

    def chart(self, *args: str, values: Mapping[str, Any] | None = None) -> str:
        done = self.helm_template(*args, values=values)
        assert done.returncode == 0, done.stderr
        return done.stdout


def parse(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def key(manifest: Manifest) -> tuple[str, str, str]:
    """kind, namespace (empty when cluster-scoped) and name: what identifies an object."""
    metadata = manifest["metadata"]
    return (manifest["kind"], metadata.get("namespace", ""), metadata["name"])


def find(manifests: Iterable[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def comparable(manifest: Manifest) -> Any:
    """The object minus its labels, which Helm adds to (release, chart version) by design,
    with each run of whitespace in a string made one space.

    kustomize re-writes folded block scalars whose lines are indented further (the CEL
    expressions of the admission policies) with an extra blank line: the same CEL, other bytes.
    """
    copy = yaml.safe_load(yaml.safe_dump(manifest))
    copy["metadata"].pop("labels", None)
    template = (copy.get("spec") or {}).get("template")
    if isinstance(template, dict):
        template.get("metadata", {}).pop("labels", None)
    return _squeeze(copy)


def _squeeze(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, dict):
        return {k: _squeeze(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_squeeze(v) for v in value]
    return value


def operator_container(manifests: Iterable[Manifest]) -> Manifest:
    containers = find(manifests, "Deployment", "daypass")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    container: Manifest = containers[0]
    return container


def bind_rules(cluster_role: Manifest) -> dict[str, list[str]]:
    """resource (clusterroles, roles) -> the names the rule lets the operator bind."""
    rules: dict[str, list[str]] = {}
    for rule in cluster_role["rules"]:
        if "bind" in rule["verbs"]:
            for resource in rule["resources"]:
                rules.setdefault(resource, []).extend(rule.get("resourceNames", []))
    return rules
