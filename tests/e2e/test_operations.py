"""Running Daypass: usage from audit events, metrics, retention, roles it may not bind, and two
replicas with one active.
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from .conftest import METRICS_PORT, operator_args, wait_until_serving
from .harness import (
    Cluster,
    Operator,
    User,
    eventually,
    now,
    parse_time,
    policy,
    unique,
)

pytestmark = pytest.mark.e2e


def metric(name: str, **labels: str) -> float:
    """One sample from the operator's /metrics, 0 when it has none yet."""
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as page:
        text = page.read().decode()
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_usage_counts_what_the_holder_did_while_access_was_active(
    cluster: Cluster, operator: Operator, space: str, alice: User, carol: User,
) -> None:
    used = alice.request(space, duration="8s", reason="INC-21")["metadata"]["name"]
    unused = carol.request(space, duration="5s", reason="INC-22")["metadata"]["name"]
    status = cluster.wait_phase(space, used, "Active")["status"]
    cluster.wait_phase(space, unused, "Active")
    if cluster.local is None:
        # Another cluster's API server sends its audit events elsewhere: usage says so.
        assert status["usage"] == {"collected": False, "requests": 0, "verbs": {}}
        return
    assert status["usage"] == {"collected": True, "requests": 0, "verbs": {}}

    for _ in range(3):
        alice.core.list_namespaced_pod(space)
    alice.core.create_namespaced_config_map(space, {"metadata": {"name": unique("cm")},
                                                    "data": {"a": "b"}})

    def counted() -> dict[str, object] | None:
        usage = cluster.get_request(space, used)["status"].get("usage") or {}
        return usage if usage.get("requests") == 4 else None

    assert eventually(counted, timeout=8, what="usage in the status while active")["verbs"] == {
        "list": 3, "create": 1}

    final = cluster.wait_phase(space, used, "Expired", timeout=15)["status"]
    summary = eventually(lambda: [e for e in cluster.events(space, used)
                                  if e.reason == "UsageSummary"], timeout=8)
    assert "alice made 4 requests" in summary[0].message
    final = cluster.get_request(space, used)["status"]
    assert final["usage"]["requests"] == 4 and final["usage"]["unused"] is False

    cluster.wait_phase(space, unused, "Expired", timeout=15)
    never = eventually(lambda: [e for e in cluster.events(space, unused)
                                if e.reason == "UsageSummary"], timeout=8)
    assert "carol never used" in never[0].message
    assert cluster.get_request(space, unused)["status"]["usage"]["unused"] is True


def test_metrics_move_with_grants_and_expiries(
    cluster: Cluster, operator: Operator, space: str, alice: User,
) -> None:
    granted = metric("daypass_transitions_total", event="Granted")
    expired = metric("daypass_transitions_total", event="Expired")
    latencies = metric("daypass_grant_latency_seconds_count")
    lateness = metric("daypass_expiry_lateness_seconds_count")
    # Grants left by an earlier run may have ended late, while no operator ran.
    on_time = metric("daypass_expiry_lateness_seconds_bucket", le="1.0")

    names = [alice.request(space, duration="4s", reason="INC-31")["metadata"]["name"]
             for _ in range(3)]
    for name in names:
        cluster.wait_phase(space, name, "Active")
    # At least: grants of earlier tests may still be ending meanwhile.
    assert metric("daypass_transitions_total", event="Granted") >= granted + 3
    assert metric("daypass_grant_latency_seconds_count") >= latencies + 3
    assert metric("daypass_active_grants") >= 3

    for name in names:
        cluster.wait_phase(space, name, "Expired", timeout=10)
    assert metric("daypass_transitions_total", event="Expired") >= expired + 3
    assert metric("daypass_expiry_lateness_seconds_count") >= lateness + 3
    assert metric("daypass_expiry_lateness_seconds_bucket", le="1.0") >= on_time + 3
    assert metric("daypass_api_calls_total", verb="create", resource="role_binding") > 0


def test_a_role_the_operator_may_not_bind_is_reported_and_never_granted(
    cluster: Cluster, operator: Operator, alice: User,
) -> None:
    namespace = unique("team-admin")
    cluster.ensure_namespace(namespace)
    name_of_policy = unique("admins")
    cluster.apply(policy(name_of_policy, roles=[{"kind": "ClusterRole", "name": "admin"}],
                         namespaces={"names": [namespace]}))

    def bindable() -> dict[str, str] | None:
        body = cluster.admin.custom.get_cluster_custom_object(
            "daypass.dev", "v1alpha1", "accesspolicies", name_of_policy)
        found = [c for c in (body.get("status") or {}).get("conditions") or []
                 if c["type"] == "RolesBindable"]
        return found[0] if found else None

    condition = eventually(bindable, timeout=8)
    assert condition["status"] == "False"
    assert "may not bind ClusterRole/admin" in condition["message"]
    assert "bindableRoles" in condition["message"]

    name = alice.request(namespace, role="admin", duration="5m")["metadata"]["name"]
    status = cluster.wait_phase(namespace, name, "Failed")["status"]
    assert "could not grant ClusterRole/admin" in status["message"]
    assert status["history"][-1]["event"] == "GrantFailed"
    assert not alice.can_list_pods(namespace)
    assert cluster.binding(namespace, f"daypass-{name}") is None


@pytest.fixture
def paused_operator(cluster: Cluster, operator: Operator) -> Iterator[Operator]:
    """The session's operator stopped for this test, and started again afterwards."""
    operator.stop()
    try:
        yield operator
    finally:
        operator.start()
        wait_until_serving(cluster, operator, "developers-edit")


def test_retention_deletes_ended_requests_and_never_an_active_one(
    cluster: Cluster, paused_operator: Operator, space: str, alice: User, dave: User,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    keeper = Operator(cluster.kubeconfig, cluster.operator_context,
                      tmp_path_factory.mktemp("retention"),
                      extra_args=[*operator_args(cluster), "--retention", "3s"])
    keeper.start()
    try:
        wait_until_serving(cluster, keeper, "developers-edit")
        active = alice.request(space, duration="9s", reason="INC-41")["metadata"]["name"]
        denied = dave.request(space, duration="1m")["metadata"]["name"]
        cluster.wait_phase(space, denied, "Denied")
        expires_at = parse_time(cluster.wait_phase(space, active, "Active")["status"][
            "expiresAt"])

        def gone(name: str) -> bool:
            try:
                cluster.get_request(space, name)
            except ApiException as error:
                return error.status == 404
            return False

        eventually(lambda: gone(denied), timeout=10, what="the denied request to be deleted")
        assert now() < expires_at and not gone(active), "an active request is never deleted"
        eventually(lambda: gone(active), timeout=20, what="the expired request to be deleted")
        assert now() >= expires_at
        deleted = [line for line in keeper.audit_lines() if line["event"] == "Deleted"]
        assert {denied, active} <= {line["request"] for line in deleted}
        record = next(line for line in deleted if line["request"] == active)
        assert record["phase"] == "Expired"
        assert [h["event"] for h in record["record"]["history"]][:3] == [
            "Requested", "Granted", "Expired"]
    finally:
        keeper.stop()


def test_two_replicas_one_active_and_the_other_takes_over(
    cluster: Cluster, paused_operator: Operator, space: str, alice: User,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # Without the audit webhook and metrics: two processes on one machine cannot share ports.
    args = ["--leader-election", "--lease-namespace", "daypass-system"]
    replicas = [Operator(cluster.kubeconfig, cluster.operator_context,
                         tmp_path_factory.mktemp(f"replica-{index}"), extra_args=args)
                for index in range(2)]
    for replica in replicas:
        replica.start()
    try:
        def leader() -> Operator | None:
            try:
                lease = kubernetes.client.CoordinationV1Api(
                    cluster.admin.client).read_namespaced_lease("daypass", "daypass-system")
            except ApiException:
                return None
            holder = lease.spec.holder_identity or ""
            return next((r for r in replicas if r.process is not None
                         and holder.endswith(f"-{r.process.pid}")), None)

        first = eventually(leader, timeout=20, what="one replica to lead")
        standby = next(r for r in replicas if r is not first)
        name = alice.request(space, duration="6s", reason="INC-51")["metadata"]["name"]
        expires_at = parse_time(cluster.wait_phase(space, name, "Active")["status"]["expiresAt"])
        assert "leading" not in standby.logs()

        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        eventually(lambda: leader() is standby, timeout=20, what="the standby to take over")
        probe = alice.request(space, duration="1m", reason="INC-52")["metadata"]["name"]
        cluster.wait_phase(space, probe, "Active", timeout=20)
        takeover = time.monotonic() - killed
        print(f"\ntakeover after the active replica was killed: {takeover:.2f}s")

        eventually(lambda: now() >= expires_at, timeout=20)
        cluster.wait_phase(space, name, "Expired", timeout=10)
        eventually(lambda: alice.can_list_pods(space) is True, timeout=2)  # the probe's grant
        ended = cluster.get_request(space, name)["status"]
        late = parse_time(ended["endedAt"]) - expires_at
        assert late.total_seconds() <= max(takeover, 0) + 1.0
        assert takeover < 15
    finally:
        for replica in replicas:
            replica.stop(kill=True)
