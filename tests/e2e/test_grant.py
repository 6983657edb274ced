"""The grant loop end to end, as the SPEC users with their own tokens."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from .harness import Cluster, Operator, User, eventually, now, parse_time, policy, unique

pytestmark = pytest.mark.e2e

# Access must be gone this soon after expiresAt (G4 allows one second; the rest is polling).
GONE_WITHIN = 1.5


def test_alice_gains_edit_in_team_a_and_loses_it_on_time(
    cluster: Cluster, operator: Operator, alice: User
) -> None:
    assert not alice.can_list_pods("team-a")

    created = alice.request("team-a", duration="20s", reason="INC-4211 payments API returns 500")
    name = created["metadata"]["name"]
    assert created["spec"]["requester"] == {
        "username": "alice", "groups": ["developers", "system:authenticated"]
    }

    active = cluster.wait_phase("team-a", name, "Active", timeout=10)
    status = active["status"]
    assert status["policy"] == "developers-edit"
    granted_at, expires_at = parse_time(status["grantedAt"]), parse_time(status["expiresAt"])
    assert (expires_at - granted_at).total_seconds() == 20
    assert alice.can_list_pods("team-a")
    assert not alice.can_list_pods("team-b")

    binding = cluster.binding("team-a", status["binding"])
    assert binding is not None
    assert [(s.kind, s.name) for s in binding.subjects] == [("User", "alice")]
    assert (binding.role_ref.kind, binding.role_ref.name) == ("ClusterRole", "edit")
    assert binding.metadata.labels["app.kubernetes.io/managed-by"] == "daypass"
    assert binding.metadata.labels["daypass.dev/request"] == name
    assert binding.metadata.owner_references[0].name == name

    eventually(lambda: now() >= expires_at, timeout=25, every=0.05, what="expiresAt")
    eventually(lambda: not alice.can_list_pods("team-a"), timeout=GONE_WITHIN, every=0.05,
               what="alice to lose access at expiresAt")
    ended = cluster.wait_phase("team-a", name, "Expired", timeout=5)["status"]
    assert cluster.binding("team-a", status["binding"]) is None

    history = ended["history"]
    assert [(h["phase"], h["event"], h["actor"]) for h in history] == [
        ("Pending", "Requested", "alice"),
        ("Active", "Granted", "daypass"),
        ("Expired", "Expired", "daypass"),
    ]
    assert "INC-4211" in history[0]["message"]
    assert "ClusterRole/edit in team-a" in history[1]["message"]
    reasons = eventually(
        lambda: [e.reason for e in cluster.events("team-a", name)]
        if len(cluster.events("team-a", name)) >= 4 else None,
        timeout=8, what="four events",
    )
    assert reasons == ["Requested", "Granted", "Expired", "UsageSummary"]
    for event in cluster.events("team-a", name):
        assert "alice" in event.message and "ClusterRole/edit" in event.message

    audit = operator.transitions(name)
    assert [line["event"] for line in audit] == ["Requested", "Granted", "Expired", "UsageSummary"]
    assert all(line["requester"] == "alice" for line in audit)


def test_alice_cannot_ask_in_bobs_name(cluster: Cluster, operator: Operator, alice: User) -> None:
    with pytest.raises(ApiException) as refused:
        alice.request("team-a", reason="INC-1", requester={"username": "bob"})
    assert refused.value.status in (403, 422)
    assert "spec.requester must be you (alice)" in refused.value.body

    with pytest.raises(ApiException):
        alice.request("team-a", reason="INC-1",
                      requester={"username": "alice", "groups": ["system:masters"]})


def test_the_spec_cannot_change(cluster: Cluster, space: str, alice: User) -> None:
    name = alice.request(space, duration="1m", reason="INC-7")["metadata"]["name"]
    with pytest.raises(ApiException) as refused:
        cluster.admin.custom.patch_namespaced_custom_object(
            "daypass.dev", "v1alpha1", space, "accessrequests", name,
            {"spec": {"duration": "4h"}},
        )
    assert "cannot change" in refused.value.body


def test_dave_whom_no_policy_names_is_denied(
    cluster: Cluster, operator: Operator, dave: User
) -> None:
    name = dave.request("team-a", duration="10m", reason="INC-9")["metadata"]["name"]
    status = cluster.wait_phase("team-a", name, "Denied")["status"]
    assert "dave is not among the subjects of policy developers-edit" in status["message"]
    assert not dave.can_list_pods("team-a")
    reasons = eventually(lambda: [e.reason for e in cluster.events("team-a", name)]
                         if len(cluster.events("team-a", name)) >= 2 else None, timeout=5)
    assert reasons == ["Requested", "Denied"]


@pytest.mark.parametrize(
    ("namespace", "role", "spec", "message"),
    [
        ("team-a", "edit", {"duration": "8h", "reason": "INC-1"},
         "8h is longer than maxDuration 4h of policy developers-edit"),
        ("team-a", "edit", {"duration": "10m", "reason": "because I want to"},
         "does not match the pattern '^[A-Z]+-[0-9]+' of policy developers-edit"),
        ("team-a", "edit", {"duration": "10m"}, "a reason is required by policy developers-edit"),
        ("team-a", "admin", {"duration": "10m", "reason": "INC-1"},
         "ClusterRole/admin is not among the roles of policy developers-edit"),
        ("team-b", "edit", {"duration": "10m", "reason": "INC-1"},
         "namespace team-b is not among the namespaces of policy developers-edit"),
    ],
    ids=["too-long", "reason-pattern", "reason-missing", "role", "namespace"],
)
def test_what_the_policy_does_not_allow_is_denied_with_the_reason(
    cluster: Cluster, operator: Operator, alice: User,
    namespace: str, role: str, spec: dict[str, str], message: str,
) -> None:
    name = alice.request(namespace, role=role, **spec)["metadata"]["name"]
    status = cluster.wait_phase(namespace, name, "Denied")["status"]
    assert message in status["message"]
    assert status.get("binding") is None
    assert not alice.can_list_pods(namespace)


@pytest.mark.parametrize("duration", ["forever", "-5m", "1d", "0s"])
def test_kubectl_apply_rejects_a_malformed_duration(
    cluster: Cluster, operator: Operator, duration: str
) -> None:
    manifest = f"""
apiVersion: daypass.dev/v1alpha1
kind: AccessRequest
metadata: {{name: {unique("bad-duration")}, namespace: team-a}}
spec:
  role: {{kind: ClusterRole, name: edit}}
  duration: "{duration}"
  reason: INC-1
"""
    result = cluster.kubectl("apply", "-f", "-", user="alice", input=manifest)
    assert result.returncode != 0
    assert "spec.duration" in result.stderr
    assert "duration such as 90s, 30m or 1h30m" in result.stderr or "at least 1s" in result.stderr


def test_a_deleted_binding_is_restored_within_a_second(
    cluster: Cluster, space: str, alice: User
) -> None:
    name = alice.request(space, duration="2m", reason="INC-5")["metadata"]["name"]
    binding = cluster.wait_phase(space, name, "Active")["status"]["binding"]

    cluster.admin.rbac.delete_namespaced_role_binding(binding, space)
    deleted_at = time.monotonic()
    eventually(lambda: cluster.binding(space, binding), timeout=GONE_WITHIN,
               what="the binding to be restored")
    assert time.monotonic() - deleted_at < GONE_WITHIN
    assert alice.can_list_pods(space)

    def restored_in_history() -> dict[str, Any] | None:
        status: dict[str, Any] = cluster.get_request(space, name)["status"]
        return status if any(h["event"] == "BindingRestored" for h in status["history"]) else None

    status = eventually(restored_in_history, timeout=5, what="a BindingRestored history line")
    assert status["phase"] == "Active"
    events = eventually(lambda: [e for e in cluster.events(space, name)
                                 if e.reason == "BindingRestored"], timeout=5)
    assert events[0].type == "Warning"
    assert "was deleted" in events[0].message

    # An edit to the binding is undone too.
    cluster.admin.rbac.patch_namespaced_role_binding(binding, space, {"subjects": [
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}]})
    eventually(lambda: [s.name for s in cluster.binding(space, binding).subjects]
               == ["alice"], timeout=GONE_WITHIN, what="the binding's subjects to be restored")

    # So is one that strips the label, which the watch selects by, while adding a subject.
    cluster.admin.rbac.patch_namespaced_role_binding(binding, space, [
        {"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1managed-by"},
        {"op": "add", "path": "/subjects/-",
         "value": {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "dave"}},
    ])
    eventually(lambda: [s.name for s in cluster.binding(space, binding).subjects] == ["alice"]
               and cluster.binding(space, binding).metadata.labels.get(
                   "app.kubernetes.io/managed-by") == "daypass",
               timeout=GONE_WITHIN, what="the unlabelled binding to be restored")
    assert not cluster.users["dave"].can_list_pods(space)

    # And one stripped of its label and its owner both: it is still this grant's access.
    cluster.admin.rbac.patch_namespaced_role_binding(binding, space, [
        {"op": "remove", "path": "/metadata/labels/app.kubernetes.io~1managed-by"},
        {"op": "remove", "path": "/metadata/ownerReferences"},
    ])
    eventually(lambda: cluster.binding(space, binding).metadata.labels.get(
                   "app.kubernetes.io/managed-by") == "daypass"
               and cluster.binding(space, binding).metadata.owner_references,
               timeout=GONE_WITHIN, what="the binding stripped of label and owner restored")
    cluster.admin.custom.delete_namespaced_custom_object(
        "daypass.dev", "v1alpha1", space, "accessrequests", name)
    eventually(lambda: cluster.binding(space, binding) is None, timeout=GONE_WITHIN,
               what="the restored binding to go with its request")


def test_deleting_the_request_ends_access_at_once(
    cluster: Cluster, operator: Operator, space: str, alice: User
) -> None:
    name = alice.request(space, duration="2m", reason="INC-6")["metadata"]["name"]
    binding = cluster.wait_phase(space, name, "Active")["status"]["binding"]
    assert alice.can_list_pods(space)

    cluster.admin.custom.delete_namespaced_custom_object(
        "daypass.dev", "v1alpha1", space, "accessrequests", name)
    eventually(lambda: not alice.can_list_pods(space), timeout=GONE_WITHIN,
               what="access to end when the request is deleted")
    assert cluster.binding(space, binding) is None
    eventually(lambda: any(line.get("request") == name and line["event"] == "Revoked"
                           for line in operator.audit_lines()), timeout=5,
               what="an audit line for the deletion")


def test_a_request_held_by_a_finalizer_loses_its_access_when_deleted(
    cluster: Cluster, operator: Operator, space: str, alice: User
) -> None:
    name = alice.request(space, duration="2m", reason="INC-7")["metadata"]["name"]
    binding = cluster.wait_phase(space, name, "Active")["status"]["binding"]
    custom = cluster.admin.custom
    custom.patch_namespaced_custom_object("daypass.dev", "v1alpha1", space, "accessrequests",
                                          name, {"metadata": {"finalizers": ["example.com/hold"]}})
    try:
        custom.delete_namespaced_custom_object("daypass.dev", "v1alpha1", space,
                                               "accessrequests", name)
        eventually(lambda: not alice.can_list_pods(space), timeout=GONE_WITHIN,
                   what="access to end while the request waits on its finalizer")
        # Nothing brings it back while the request is still there, being deleted.
        time.sleep(2)
        assert cluster.binding(space, binding) is None
        assert not alice.can_list_pods(space)
        revoked = [line for line in operator.audit_lines()
                   if line.get("request") == name and line["event"] == "Revoked"]
        assert len(revoked) == 1
    finally:
        custom.patch_namespaced_custom_object("daypass.dev", "v1alpha1", space,
                                              "accessrequests", name,
                                              {"metadata": {"finalizers": None}})


def test_a_stray_daypass_binding_is_deleted(cluster: Cluster, operator: Operator) -> None:
    name = unique("stray")
    cluster.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": "team-a", "labels": {
            "app.kubernetes.io/managed-by": "daypass", "daypass.dev/request": "no-such-request"}},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "dave"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "view"},
    })
    eventually(lambda: cluster.binding("team-a", name) is None, timeout=5,
               what="the stray binding to be deleted")


def test_changing_the_policy_revokes_the_grants_it_no_longer_allows(
    cluster: Cluster, operator: Operator, carol: User
) -> None:
    namespace = unique("team-p")
    cluster.ensure_namespace(namespace)
    name_of_policy = unique("carol-view")
    cluster.apply(policy(name_of_policy, subjects={"users": ["carol"]},
                         roles=[{"kind": "ClusterRole", "name": "view"}],
                         namespaces={"names": [namespace]}))
    name = carol.request(namespace, role="view", duration="5m")["metadata"]["name"]
    assert cluster.wait_phase(namespace, name, "Active")["status"]["policy"] == name_of_policy
    assert carol.can_list_pods(namespace)

    cluster.apply(policy(name_of_policy, subjects={"users": ["carol"]},
                         roles=[{"kind": "ClusterRole", "name": "view"}],
                         namespaces={"names": [namespace]}, maxDuration="2m",
                         defaultDuration="1m"))
    status = cluster.wait_phase(namespace, name, "Revoked", timeout=5)["status"]
    assert "5m is longer than maxDuration 2m" in status["message"]
    eventually(lambda: not carol.can_list_pods(namespace), timeout=GONE_WITHIN)

    second = carol.request(namespace, role="view", duration="1m")["metadata"]["name"]
    cluster.wait_phase(namespace, second, "Active")
    cluster.delete_policy(name_of_policy)
    status = cluster.wait_phase(namespace, second, "Revoked", timeout=5)["status"]
    assert "no policy allows it any more" in status["message"]
    eventually(lambda: not carol.can_list_pods(namespace), timeout=GONE_WITHIN)


def test_a_policy_that_needs_approval_leaves_the_request_pending(
    cluster: Cluster, operator: Operator, alice: User
) -> None:
    namespace = unique("team-q")
    cluster.ensure_namespace(namespace, labels={"needs-approval": "true"})
    cluster.apply(policy(unique("needs-approval"), namespaces={
        "selector": {"matchLabels": {"needs-approval": "true"}}},
        approval={"required": True, "approvers": {"groups": ["sre-leads"]}, "count": 1}))
    name = alice.request(namespace, duration="10m")["metadata"]["name"]
    status = cluster.wait_phase(namespace, name, "Pending")["status"]
    assert status.get("approvalDeadline")
    reasons = eventually(lambda: [e.reason for e in cluster.events(namespace, name)]
                         if len(cluster.events(namespace, name)) >= 2 else None, timeout=5)
    assert reasons == ["Requested", "ApprovalRequired"]
    assert not alice.can_list_pods(namespace)


def test_an_unusable_policy_says_so_and_allows_nothing(
    cluster: Cluster, operator: Operator, alice: User
) -> None:
    namespace = unique("team-u")
    cluster.ensure_namespace(namespace)
    name_of_policy = unique("broken")
    cluster.apply(policy(name_of_policy, namespaces={"names": [namespace]},
                         reason={"pattern": "([unclosed"}))

    def ready_condition() -> dict[str, str] | None:
        body = cluster.admin.custom.get_cluster_custom_object(
            "daypass.dev", "v1alpha1", "accesspolicies", name_of_policy)
        found = [c for c in (body.get("status") or {}).get("conditions") or []
                 if c["type"] == "Ready"]
        return found[0] if found else None

    condition = eventually(ready_condition, timeout=5)
    assert condition["status"] == "False"
    assert "is not a regular expression" in condition["message"]
    name = alice.request(namespace, duration="10m", reason="x")["metadata"]["name"]
    status = cluster.wait_phase(namespace, name, "Denied")["status"]
    assert f"policy {name_of_policy} cannot be used" in status["message"]


def test_someone_elses_binding_with_the_grants_name_is_never_taken_over(
    cluster: Cluster, space: str, alice: User
) -> None:
    cluster.apply({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "daypass-collide", "namespace": space},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "erin"}],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "view"},
    })
    alice.request(space, name="collide", duration="5m", reason="INC-8")
    status = cluster.wait_phase(space, "collide", "Failed")["status"]
    assert "that Daypass does not own already exists" in status["message"]
    untouched = cluster.binding(space, "daypass-collide")
    assert untouched is not None
    assert [s.name for s in untouched.subjects] == ["erin"]
    assert not alice.can_list_pods(space)
