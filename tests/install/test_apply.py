"""The rendered manifests apply cleanly, with server-side apply, to a real API server of the
supported release, and what they install works there: the operator's service account may bind
exactly the listed roles, the pods pass Pod Security `restricted`, and admission writes the
requester (G1). No kubelet runs, so the pods are created but never start: that is expected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from daypass.controlplane.cluster import LocalCluster

from .manifests import NAMESPACE, Tools, key, parse

pytestmark = pytest.mark.e2e

FIELD_MANAGER = "daypass-install-test"
POD_SELECTOR = "app.kubernetes.io/name=daypass,app.kubernetes.io/component=operator"


def kubectl(cluster: LocalCluster, *args: str, user: str = "admin",
            input: str | None = None) -> str:
    done = cluster.kubectl(*args, user=user, input=input)
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def eventually(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def uninstall(cluster: LocalCluster, rendered: str) -> None:
    done = cluster.kubectl("delete", "--ignore-not-found", "--wait", "--timeout=120s", "-f", "-",
                           input=rendered)
    assert done.returncode == 0, done.stderr


def apply_cleanly(cluster: LocalCluster, rendered: str) -> None:
    done = cluster.kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}",
                           "-f", "-", input=rendered)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def assert_everything_exists(cluster: LocalCluster, rendered: str) -> list[dict[str, Any]]:
    found = json.loads(kubectl(cluster, "get", "-f", "-", "-o", "json", input=rendered))["items"]
    assert sorted(map(key, found)) == sorted(map(key, parse(rendered)))
    return list(found)


def can_i(cluster: LocalCluster, *question: str) -> bool:
    done = cluster.kubectl("auth", "can-i", *question, user="daypass")
    return done.stdout.strip() == "yes"


def assert_operator_may_bind_exactly(cluster: LocalCluster, cluster_roles: set[str]) -> None:
    """Asked of the API server as the operator's own service-account token user."""
    for role in ("edit", "view", "admin", "cluster-admin"):
        assert can_i(cluster, "bind", f"clusterroles/{role}") == (role in cluster_roles), role
    assert can_i(cluster, "bind", "roles/debugger", "-n", "default")
    assert not can_i(cluster, "bind", "roles/admin", "-n", "default")
    assert not can_i(cluster, "escalate", "clusterroles")
    assert not can_i(cluster, "escalate", "roles", "-n", "default")
    assert not can_i(cluster, "create", "clusterrolebindings")
    assert not can_i(cluster, "impersonate", "users")
    assert can_i(cluster, "create", "rolebindings", "-n", "default")
    assert can_i(cluster, "create", "leases", "-n", NAMESPACE)
    assert can_i(cluster, "update", "leases/daypass", "-n", NAMESPACE)
    assert not can_i(cluster, "update", "leases/another", "-n", NAMESPACE)
    assert not can_i(cluster, "update", "leases/kube-controller-manager", "-n", "kube-system")
    assert not can_i(cluster, "create", "leases", "-n", "kube-node-lease")
    assert not can_i(cluster, "get", "secrets", "-n", NAMESPACE)


def assert_pods_pass_pod_security(cluster: LocalCluster) -> None:
    """The ReplicaSet controller creates both pods only if Pod Security `restricted` lets it."""
    def pods() -> bool:
        listed = json.loads(kubectl(cluster, "get", "pods", "-n", NAMESPACE, "-l", POD_SELECTOR,
                                    "-o", "json"))
        return len(listed["items"]) == 2

    eventually(pods, "the ReplicaSet to create the operator's two pods")


def assert_admission_writes_the_requester(cluster: LocalCluster) -> None:
    kubectl(cluster, "wait", "--for=condition=established", "--timeout=60s",
            "crd/accessrequests.daypass.dev")
    request = json.dumps({
        "apiVersion": "daypass.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"generateName": "install-check-", "namespace": "default"},
        "spec": {"role": {"kind": "ClusterRole", "name": "view"},
                 "reason": "INSTALL-1 checking the admission policies"},
    })

    def requester() -> dict[str, Any] | None:
        # Admission policies take effect a moment after they are created.
        done = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                               user="alice", input=request)
        return json.loads(done.stdout)["spec"].get("requester") if done.returncode == 0 else None

    written = eventually(requester, "admission to accept alice's request")
    assert written == {"username": "alice", "groups": ["developers", "system:authenticated"]}


@pytest.fixture
def clean_cluster(private_cluster: LocalCluster, tools: Tools) -> Iterator[LocalCluster]:
    """The private cluster without any Daypass install, before and after the test."""
    leftovers = [tools.kustomize(), tools.chart("--set", "createNamespace=true")]
    for rendered in leftovers:
        uninstall(private_cluster, rendered)
    yield private_cluster
    for rendered in leftovers:
        uninstall(private_cluster, rendered)


def test_the_kustomization_applies_cleanly_and_works(
    clean_cluster: LocalCluster, tools: Tools
) -> None:
    rendered = tools.kustomize()

    apply_cleanly(clean_cluster, rendered)
    assert_everything_exists(clean_cluster, rendered)
    assert_operator_may_bind_exactly(clean_cluster, {"edit", "view"})
    assert_pods_pass_pod_security(clean_cluster)
    assert_admission_writes_the_requester(clean_cluster)

    apply_cleanly(clean_cluster, rendered)


def test_the_chart_applies_cleanly_and_an_extra_bindable_role_takes_effect(
    clean_cluster: LocalCluster, tools: Tools
) -> None:
    rendered = tools.chart("--set", "createNamespace=true")

    apply_cleanly(clean_cluster, rendered)
    installed = assert_everything_exists(clean_cluster, rendered)
    assert all(m["metadata"]["labels"]["app.kubernetes.io/name"] == "daypass" for m in installed)
    assert_operator_may_bind_exactly(clean_cluster, {"edit", "view"})
    assert_pods_pass_pod_security(clean_cluster)
    assert_admission_writes_the_requester(clean_cluster)

    roles = [{"kind": "ClusterRole", "name": "edit"}, {"kind": "ClusterRole", "name": "view"},
             {"kind": "Role", "name": "debugger"}, {"kind": "ClusterRole", "name": "admin"}]
    upgraded = tools.chart("--set", "createNamespace=true", values={"bindableRoles": roles})
    apply_cleanly(clean_cluster, upgraded)
    eventually(lambda: can_i(clean_cluster, "bind", "clusterroles/admin"),
               "the operator to be allowed to bind admin")
    assert_operator_may_bind_exactly(clean_cluster, {"edit", "view", "admin"})
