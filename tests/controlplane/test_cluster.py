"""End-to-end tests of the local control plane: real etcd, API server and controller manager.

The shared control plane is reused and left running; the restart and stop test runs a private
one on other ports so it never stops what others use.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from daypass.controlplane import cluster

pytestmark = pytest.mark.e2e


def _pids(state_dir: Path) -> dict[str, int | None]:
    return {component.name: component.pid for component in cluster.status(state_dir)}


def _eventually(condition: Callable[[], bool], deadline: float = 60) -> bool:
    """Poll a controller's effect; the deadline only bounds a failure, it measures nothing."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_second_start_reuses_the_running_processes(local_cluster: cluster.LocalCluster) -> None:
    before = _pids(local_cluster.state_dir)

    again = cluster.start(state_dir=local_cluster.state_dir)

    assert all(pid is not None for pid in before.values())
    assert _pids(local_cluster.state_dir) == before
    assert again.tokens == local_cluster.tokens
    assert again.server == local_cluster.server


@pytest.mark.parametrize("user", list(cluster.USERS))
def test_each_user_authenticates_as_itself_with_its_groups(
    local_cluster: cluster.LocalCluster, user: str
) -> None:
    done = local_cluster.kubectl("auth", "whoami", "-o", "json", user=user)

    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)["status"]["userInfo"]
    assert info["username"] == user
    assert set(info.get("groups", [])) == {*cluster.USERS[user], "system:authenticated"}


def test_every_user_has_a_token_of_its_own(local_cluster: cluster.LocalCluster) -> None:
    assert set(local_cluster.tokens) == set(cluster.USERS)
    assert len(set(local_cluster.tokens.values())) == len(cluster.USERS)


def test_the_operator_context_is_named_daypass(local_cluster: cluster.LocalCluster) -> None:
    done = local_cluster.kubectl("config", "get-contexts", "-o", "name")

    assert set(done.stdout.split()) == {"daypass", *(set(cluster.USERS) - {cluster.OPERATOR_USER})}


def test_rbac_is_enforced(local_cluster: cluster.LocalCluster) -> None:
    can_i = local_cluster.kubectl("auth", "can-i", "list", "pods", "-n", "default", user="alice")
    listing = local_cluster.kubectl("get", "pods", "-n", "default", user="alice")

    assert can_i.stdout.strip() == "no"
    assert listing.returncode != 0
    assert "forbidden" in listing.stderr.lower()


def test_the_edit_cluster_role_is_aggregated(local_cluster: cluster.LocalCluster) -> None:
    done = local_cluster.kubectl("get", "clusterrole", "edit", "-o", "json")

    rules = json.loads(done.stdout)["rules"]
    assert any("pods" in rule.get("resources", []) and "list" in rule["verbs"] for rule in rules)


def test_the_controller_manager_aggregates_new_roles(local_cluster: cluster.LocalCluster) -> None:
    name = "controlplane-test-aggregate-to-edit"
    probe = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"},
        },
        "rules": [{"apiGroups": ["probe.daypass.dev"], "resources": ["widgets"], "verbs": ["get"]}],
    }
    made = local_cluster.kubectl("apply", "-f", "-", input=json.dumps(probe))
    assert made.returncode == 0, made.stderr

    def aggregated() -> bool:
        done = local_cluster.kubectl("get", "clusterrole", "edit", "-o", "json")
        rules = json.loads(done.stdout)["rules"]
        return any("probe.daypass.dev" in rule.get("apiGroups", []) for rule in rules)

    try:
        assert _eventually(aggregated)
    finally:
        local_cluster.kubectl("delete", "clusterrole", name)


def test_the_garbage_collector_cascades_owner_references(
    local_cluster: cluster.LocalCluster,
) -> None:
    local_cluster.kubectl("delete", "configmap", "controlplane-test-owner", "--ignore-not-found")
    made = local_cluster.kubectl("create", "configmap", "controlplane-test-owner")
    assert made.returncode == 0, made.stderr
    uid = local_cluster.kubectl(
        "get", "configmap", "controlplane-test-owner", "-o", "jsonpath={.metadata.uid}"
    ).stdout
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "controlplane-test-dependent",
            "namespace": "default",
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "name": "controlplane-test-owner",
                    "uid": uid,
                }
            ],
        },
    }
    made = local_cluster.kubectl("apply", "-f", "-", input=json.dumps(dependent))
    assert made.returncode == 0, made.stderr

    local_cluster.kubectl("delete", "configmap", "controlplane-test-owner")

    def collected() -> bool:
        done = local_cluster.kubectl("get", "configmap", "controlplane-test-dependent")
        return "NotFound" in done.stderr

    assert _eventually(collected)


def test_restart_keeps_data_and_stop_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAYPASS_APISERVER_PORT", "16543")
    monkeypatch.setenv("DAYPASS_ETCD_PORT", "12479")
    state = tmp_path / "cluster"
    ports = (16543, 12479, 12480)
    try:
        first = cluster.start(state_dir=state)
        made = first.kubectl("create", "configmap", "survivor", "-n", "default")
        assert made.returncode == 0, made.stderr
        before = _pids(state)
        apiserver = before[cluster.APISERVER]
        assert apiserver is not None
        os.kill(apiserver, signal.SIGKILL)

        second = cluster.start(state_dir=state)
        kept = second.kubectl("get", "configmap", "survivor", "-n", "default")
        assert kept.returncode == 0, kept.stderr
        assert second.tokens == first.tokens
        after = _pids(state)
        assert after[cluster.APISERVER] not in (None, apiserver)
        assert after[cluster.ETCD] == before[cluster.ETCD]
    finally:
        cluster.stop(state)

    assert all(pid is None for pid in _pids(state).values())
    assert all(_refused(port) for port in ports)
    assert not list(state.glob("*.pid"))

    cluster.stop(state, wipe=True)
    assert not state.exists()
