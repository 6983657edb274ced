"""The manifests in deploy/ and the Helm chart render, agree with each other, and say what
SPEC's "Install" section and G7 promise: least privilege and a locked-down Deployment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .manifests import (
    CHART,
    DEPLOY,
    NAMESPACE,
    ROOT,
    Manifest,
    Tools,
    bind_rules,
    comparable,
    find,
    key,
    operator_container,
    parse,
)

pytestmark = pytest.mark.e2e

DEFAULT_BINDABLE = {"clusterroles": ["edit", "view"], "roles": ["debugger"]}
EVERY_KIND = {
    "Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
    "ClusterRoleBinding", "Role", "RoleBinding", "Deployment", "Service", "PodDisruptionBudget",
    "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
# What the chart must carry word for word, since helm reads nothing outside the chart.
COPIES = {
    **{CHART / "crds" / p.name: p for p in (ROOT / "crds").glob("*.yaml")},
    **{CHART / "files" / "admission" / p.name: p for p in (DEPLOY / "admission").glob("*.yaml")},
    CHART / "files" / "user-rbac.yaml": DEPLOY / "user-rbac.yaml",
}


def test_helm_lint_passes_strictly_with_defaults_and_with_the_audit_webhook(tools: Tools) -> None:
    for extra in ([], ["--set", "auditWebhook.enabled=true", "--set", "logFormat=text"]):
        done = tools.run(tools.helm, "lint", "--strict", CHART, "--kube-version", "1.36.3",
                         *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 chart(s) failed" in done.stdout


def test_helm_template_renders_everything_deploy_installs(tools: Tools) -> None:
    rendered = parse(tools.chart("--set", "createNamespace=true"))

    assert {m["kind"] for m in rendered} == EVERY_KIND
    assert {m["metadata"]["name"] for m in rendered if m["kind"] == "CustomResourceDefinition"} \
        == {"accesspolicies.daypass.dev", "accessrequests.daypass.dev", "accessreviews.daypass.dev"}


def test_chart_and_kustomization_install_the_same_objects(
    kustomized: list[Manifest], charted: list[Manifest]
) -> None:
    assert sorted(map(key, charted)) == sorted(map(key, kustomized))
    assert {m["kind"] for m in kustomized} == EVERY_KIND


def test_chart_defaults_render_the_same_objects_as_deploy_apart_from_labels(
    kustomized: list[Manifest], charted: list[Manifest]
) -> None:
    by_key = {key(m): comparable(m) for m in kustomized}
    for manifest in charted:
        assert comparable(manifest) == by_key[key(manifest)], f"{key(manifest)} differs"


def test_chart_leaves_the_namespace_to_helm_unless_asked(tools: Tools) -> None:
    kinds = {m["kind"] for m in parse(tools.chart())}

    assert "Namespace" not in kinds
    assert "Deployment" in kinds


def test_chart_carries_identical_copies_of_crds_admission_and_user_rbac() -> None:
    assert {p.name for p in (CHART / "crds").iterdir()} == \
        {p.name for p in (ROOT / "crds").glob("*.yaml")}
    assert {p.name for p in (CHART / "files" / "admission").iterdir()} == \
        {p.name for p in (DEPLOY / "admission").glob("*.yaml")}
    stale = [str(copy.relative_to(ROOT)) for copy, source in COPIES.items()
             if copy.read_bytes() != source.read_bytes()]
    assert not stale, f"out of date, run deploy/helm/sync.sh: {', '.join(stale)}"


@pytest.mark.parametrize("render", ["kustomize", "helm"])
def test_operator_may_bind_only_the_listed_roles_and_never_escalate(
    render: str, kustomized: list[Manifest], charted: list[Manifest]
) -> None:
    manifests = kustomized if render == "kustomize" else charted
    cluster_role = find(manifests, "ClusterRole", "daypass")

    assert bind_rules(cluster_role) == DEFAULT_BINDABLE
    for rule in cluster_role["rules"]:
        if "bind" in rule["verbs"]:
            assert rule["verbs"] == ["bind"]
            assert rule["apiGroups"] == ["rbac.authorization.k8s.io"]
            assert rule.get("resourceNames"), f"bind without resourceNames allows all: {rule}"
        assert "escalate" not in rule["verbs"]
        assert "impersonate" not in rule["verbs"]
    for manifest in manifests:
        if manifest["kind"] in ("ClusterRole", "Role"):
            for rule in manifest["rules"]:
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(field, []), f"{key(manifest)}: {rule}"
        if manifest["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            assert manifest["roleRef"]["name"] != "cluster-admin"


@pytest.mark.parametrize("render", ["kustomize", "helm"])
def test_leader_election_reaches_only_the_daypass_lease_in_the_operator_namespace(
    render: str, kustomized: list[Manifest], charted: list[Manifest]
) -> None:
    manifests = kustomized if render == "kustomize" else charted
    role = find(manifests, "Role", "daypass-leader-election")
    binding = find(manifests, "RoleBinding", "daypass-leader-election")

    for cluster_role in (m for m in manifests if m["kind"] == "ClusterRole"):
        assert all("coordination.k8s.io" not in r["apiGroups"] for r in cluster_role["rules"])
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    for rule in role["rules"]:
        assert rule["resources"] == ["leases"]
        if rule["verbs"] != ["create"]:
            assert rule["resourceNames"] == ["daypass"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "daypass", "namespace": NAMESPACE}]


def test_an_extra_bindable_cluster_role_shows_up_in_the_operator_cluster_role(
    tools: Tools
) -> None:
    roles = [{"kind": "ClusterRole", "name": "edit"}, {"kind": "ClusterRole", "name": "view"},
             {"kind": "Role", "name": "debugger"},
             {"kind": "ClusterRole", "name": "namespace-auditor"}]
    rendered = parse(tools.chart(values={"bindableRoles": roles}))

    assert bind_rules(find(rendered, "ClusterRole", "daypass")) == {
        "clusterroles": ["edit", "view", "namespace-auditor"], "roles": ["debugger"]}


def test_a_kind_with_no_bindable_roles_gets_no_bind_rule_at_all(tools: Tools) -> None:
    only_cluster_roles = [{"kind": "ClusterRole", "name": "view"}]

    rendered = parse(tools.chart(values={"bindableRoles": only_cluster_roles}))
    assert bind_rules(find(rendered, "ClusterRole", "daypass")) == {"clusterroles": ["view"]}

    rendered = parse(tools.chart(values={"bindableRoles": []}))
    assert bind_rules(find(rendered, "ClusterRole", "daypass")) == {}


@pytest.mark.parametrize("role", [
    {"kind": "ClusterRole", "name": "*"},
    {"kind": "ClusterRole", "name": "edit*"},
    {"kind": "ClusterRole", "name": ""},
    {"kind": "Group", "name": "edit"},
])
def test_the_chart_refuses_a_bindable_role_that_is_not_one_exact_role(
    tools: Tools, role: dict[str, str]
) -> None:
    done = tools.helm_template(values={"bindableRoles": [role]})

    assert done.returncode != 0
    assert "bindableRoles" in done.stderr


def test_the_chart_refuses_clusters_older_than_1_36(tools: Tools) -> None:
    done = tools.run(tools.helm, "template", "daypass", CHART, "--kube-version", "1.35.4")

    assert done.returncode != 0
    assert ">=1.36.0-0" in done.stderr


def test_the_chart_refuses_two_replicas_without_leader_election(tools: Tools) -> None:
    done = tools.helm_template("--set", "leaderElection=false")
    assert done.returncode != 0
    assert "leaderElection" in done.stderr

    single = parse(tools.chart("--set", "leaderElection=false", "--set", "replicas=1"))
    assert "--leader-election" not in operator_container(single)["args"]


@pytest.mark.parametrize("render", ["kustomize", "helm"])
def test_the_deployment_is_locked_down_probed_and_highly_available(
    render: str, kustomized: list[Manifest], charted: list[Manifest]
) -> None:
    manifests = kustomized if render == "kustomize" else charted
    deployment = find(manifests, "Deployment", "daypass")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(manifests)

    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["replicas"] == 2
    assert pod["serviceAccountName"] == "daypass"
    assert pod["automountServiceAccountToken"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }

    assert container["image"] == "ghcr.io/daypass/daypass:0.1.0"
    assert container["command"] == ["daypass"]
    assert container["args"][0] == "run"
    for flag in ("--log-format=json", "--health-port=8080", "--metrics-port=9090",
                 "--retention=2160h", "--leader-election"):
        assert flag in container["args"]
    assert {"name": "POD_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container["env"]

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert "memory" in container["resources"]["limits"]

    budget = find(manifests, "PodDisruptionBudget", "daypass")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"] == deployment["spec"]["selector"]
    service = find(manifests, "Service", "daypass")["spec"]
    assert service["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [(p["name"], p["port"]) for p in service["ports"]] == [("metrics", 9090)]


def test_chart_values_reach_the_deployment(tools: Tools) -> None:
    values = {
        "image": {"repository": "registry.example/daypass", "tag": "0.1.1",
                  "pullPolicy": "Always"},
        "replicas": 3,
        "logFormat": "text",
        "retention": "720h",
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"},
                      "limits": {"cpu": "500m", "memory": "256Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform",
                         "effect": "NoSchedule"}],
    }
    rendered = parse(tools.chart(values=values))
    deployment = find(rendered, "Deployment", "daypass")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(rendered)

    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "registry.example/daypass:0.1.1"
    assert container["imagePullPolicy"] == "Always"
    assert "--log-format=text" in container["args"]
    assert "--retention=720h" in container["args"]
    assert container["resources"] == values["resources"]
    assert pod["nodeSelector"] == values["nodeSelector"]
    assert pod["tolerations"] == values["tolerations"]


def test_chart_refuses_a_retention_that_is_not_a_go_duration(tools: Tools) -> None:
    done = tools.helm_template("--set", "retention=90d")

    assert done.returncode != 0
    assert "retention" in done.stderr


def audit_webhook_parts(
    manifests: list[Manifest],
) -> tuple[list[str], dict[str, int], list[Manifest], list[Manifest]]:
    container = operator_container(manifests)
    pod = find(manifests, "Deployment", "daypass")["spec"]["template"]["spec"]
    service = find(manifests, "Service", "daypass")["spec"]
    return (
        [a for a in container["args"] if a.startswith("--audit-webhook")],
        {p["name"]: p["containerPort"] for p in container["ports"]},
        [p for p in service["ports"] if p["name"] == "audit-webhook"],
        [v for v in pod["volumes"] if v["name"] == "audit-webhook-tls"],
    )


def test_audit_webhook_from_the_chart_and_the_kustomize_component_agree(
    tools: Tools, tmp_path: Path
) -> None:
    # kustomize refuses absolute paths to other kustomizations, so the overlay sits beside
    # copies of deploy/ and crds/.
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("helm"))
    shutil.copytree(ROOT / "crds", tmp_path / "crds")
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(
        "resources: [../deploy]\ncomponents: [../deploy/components/audit-webhook]\n")
    kustomized = parse(tools.kustomize(tmp_path / "overlay"))
    charted = parse(tools.chart("--set", "auditWebhook.enabled=true"))

    args, ports, service_ports, volumes = audit_webhook_parts(charted)
    assert args == ["--audit-webhook-port=8443",
                    "--audit-webhook-cert=/etc/daypass/audit-webhook/tls.crt",
                    "--audit-webhook-key=/etc/daypass/audit-webhook/tls.key"]
    assert ports["audit-webhook"] == 8443
    assert service_ports == [{"name": "audit-webhook", "port": 8443,
                              "targetPort": "audit-webhook", "protocol": "TCP"}]
    assert volumes == [{"name": "audit-webhook-tls",
                        "secret": {"secretName": "daypass-audit-webhook-tls"}}]
    assert audit_webhook_parts(kustomized) == (args, ports, service_ports, volumes)
    assert audit_webhook_parts(parse(tools.chart()))[0] == []
