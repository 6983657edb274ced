"""Approvals end to end: who may approve, deny and revoke, timeouts, scheduled and follow-up access.

Every test works in a namespace of its own, labelled so that only the approval policies below
(and not developers-edit) allow requests there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from .harness import GROUP, VERSION, Cluster, Operator, User, eventually, now, parse_time, policy
from .harness import unique as unique_name

pytestmark = pytest.mark.e2e

LABEL = "daypass.dev/approval"


@pytest.fixture(scope="module")
def approval_policies(cluster: Cluster, operator: Operator) -> Iterator[dict[str, str]]:
    names = {"one": "sre-approval-one", "two": "sre-approval-two", "quick": "sre-approval-quick"}
    for kind, name in names.items():
        cluster.apply(keep=True, manifest=policy(
            name,
            namespaces={"selector": {"matchLabels": {LABEL: kind}}},
            approval={"required": True, "approvers": {"groups": ["sre-leads"]},
                      "count": 2 if kind == "two" else 1,
                      "timeout": "4s" if kind == "quick" else "1h"},
        ))
    yield names
    for name in names.values():
        cluster.delete_policy(name)


def namespace_for(cluster: Cluster, kind: str) -> str:
    name = unique_name(f"appr-{kind}")
    cluster.ensure_namespace(name, labels={LABEL: kind})
    return name


def review(user: User, namespace: str, request: str, decision: str,
           reason: str | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AccessReview",
        "metadata": {"generateName": f"{request}-"},
        "spec": {"request": request, "decision": decision, **extra},
    }
    if reason:
        body["spec"]["reason"] = reason
    created = user.custom.create_namespaced_custom_object(GROUP, VERSION, namespace,
                                                          "accessreviews", body)
    return str(created["metadata"]["name"])


def outcome(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    def answered() -> dict[str, Any] | None:
        body = cluster.admin.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "accessreviews", name)
        status: dict[str, Any] = body.get("status") or {}
        return status if status.get("outcome") else None

    return eventually(answered, timeout=10, what=f"review {name} to be answered")


def history(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    status = cluster.get_request(namespace, name)["status"]
    return [(h["event"], h["actor"], h["phase"]) for h in status["history"]]


def test_only_an_approver_who_is_not_the_requester_approves_and_revocation_is_immediate(
    cluster: Cluster, approval_policies: dict[str, str], alice: User, carol: User,
) -> None:
    bob = cluster.users["bob"]
    namespace = namespace_for(cluster, "one")
    name = alice.request(namespace, duration="5m")["metadata"]["name"]
    cluster.wait_phase(namespace, name, "Pending")

    carols = outcome(cluster, namespace, review(carol, namespace, name, "Approve"))
    assert carols["outcome"] == "Rejected"
    assert "carol is not an approver of policy sre-approval-one" in carols["message"]
    alices = outcome(cluster, namespace, review(alice, namespace, name, "Approve"))
    assert alices["outcome"] == "Rejected"
    assert "cannot review it" in alices["message"]
    assert cluster.phase(namespace, name) == "Pending"
    assert not alice.can_list_pods(namespace)

    bobs = outcome(cluster, namespace, review(bob, namespace, name, "Approve", "on call agreed"))
    assert bobs["outcome"] == "Accepted"
    status = cluster.wait_phase(namespace, name, "Active")["status"]
    assert alice.can_list_pods(namespace)
    assert [(r["reviewer"], r["outcome"]) for r in status["reviews"]] == [
        ("carol", "Rejected"), ("alice", "Rejected"), ("bob", "Accepted")]

    outcome(cluster, namespace, review(bob, namespace, name, "Revoke", "incident over"))
    revoked_at = time.monotonic()
    eventually(lambda: not alice.can_list_pods(namespace), timeout=1.5,
               what="access to end at once on revocation")
    assert time.monotonic() - revoked_at < 1.5
    cluster.wait_phase(namespace, name, "Revoked")

    assert history(cluster, namespace, name) == [
        ("Requested", "alice", "Pending"),
        ("ApprovalRequired", "daypass", "Pending"),
        ("ReviewRejected", "carol", "Pending"),
        ("ReviewRejected", "alice", "Pending"),
        ("Approved", "bob", "Pending"),
        ("Granted", "daypass", "Active"),
        ("Revoked", "bob", "Revoked"),
    ]
    reasons = eventually(
        lambda: [e.reason for e in cluster.events(namespace, name)]
        if len(cluster.events(namespace, name)) >= 8 else None, timeout=8)
    assert reasons == ["Requested", "ApprovalRequired", "ReviewRejected", "ReviewRejected",
                       "Approved", "Granted", "Revoked", "UsageSummary"]
    messages = " ".join(e.message for e in cluster.events(namespace, name))
    assert "bob approved alice's ClusterRole/edit" in messages
    assert "incident over" in messages


def test_bob_cannot_review_in_someone_elses_name(
    cluster: Cluster, approval_policies: dict[str, str], alice: User,
) -> None:
    bob = cluster.users["bob"]
    namespace = namespace_for(cluster, "one")
    name = alice.request(namespace, duration="5m")["metadata"]["name"]
    with pytest.raises(ApiException) as refused:
        review(bob, namespace, name, "Approve", reviewer={"username": "erin",
                                                          "groups": ["sre-leads"]})
    assert "spec.reviewer must be you (bob)" in refused.value.body
    assert cluster.wait_phase(namespace, name, "Pending")


def test_two_approvals_from_two_different_approvers(
    cluster: Cluster, approval_policies: dict[str, str], alice: User,
) -> None:
    bob, erin = cluster.users["bob"], cluster.users["erin"]
    namespace = namespace_for(cluster, "two")
    name = alice.request(namespace, duration="5m")["metadata"]["name"]
    cluster.wait_phase(namespace, name, "Pending")

    assert outcome(cluster, namespace, review(bob, namespace, name, "Approve"))["outcome"] == (
        "Accepted")
    assert cluster.phase(namespace, name) == "Pending"
    again = outcome(cluster, namespace, review(bob, namespace, name, "Approve"))
    assert again["outcome"] == "Rejected"
    assert "each approver counts once" in again["message"]
    assert cluster.phase(namespace, name) == "Pending"
    assert not alice.can_list_pods(namespace)

    assert outcome(cluster, namespace, review(erin, namespace, name, "Approve"))["outcome"] == (
        "Accepted")
    status = cluster.wait_phase(namespace, name, "Active")["status"]
    assert "approved by bob, erin" in status["message"]
    assert alice.can_list_pods(namespace)


def test_an_approvers_deny_denies(
    cluster: Cluster, approval_policies: dict[str, str], alice: User,
) -> None:
    bob = cluster.users["bob"]
    namespace = namespace_for(cluster, "one")
    name = alice.request(namespace, duration="5m")["metadata"]["name"]
    cluster.wait_phase(namespace, name, "Pending")
    assert outcome(cluster, namespace, review(bob, namespace, name, "Deny", "not now"))[
        "outcome"] == "Accepted"
    status = cluster.wait_phase(namespace, name, "Denied")["status"]
    assert status["history"][-1]["actor"] == "bob"
    assert "not now" in status["message"]
    assert not alice.can_list_pods(namespace)


def test_an_unanswered_request_expires_and_a_late_approval_is_rejected(
    cluster: Cluster, approval_policies: dict[str, str], alice: User,
) -> None:
    bob = cluster.users["bob"]
    namespace = namespace_for(cluster, "quick")
    name = alice.request(namespace, duration="5m")["metadata"]["name"]
    deadline = parse_time(cluster.wait_phase(namespace, name, "Pending")["status"][
        "approvalDeadline"])
    status = cluster.wait_phase(namespace, name, "Expired", timeout=10)["status"]
    assert parse_time(status["endedAt"]) >= deadline
    assert "no approval" in status["message"]

    late = outcome(cluster, namespace, review(bob, namespace, name, "Approve"))
    assert late["outcome"] == "Rejected"
    assert "already ended (Expired)" in late["message"]
    assert not alice.can_list_pods(namespace)


def test_alice_gives_her_access_back(
    cluster: Cluster, approval_policies: dict[str, str], alice: User,
) -> None:
    bob = cluster.users["bob"]
    namespace = namespace_for(cluster, "one")
    name = alice.request(namespace, duration="5m")["metadata"]["name"]
    cluster.wait_phase(namespace, name, "Pending")
    outcome(cluster, namespace, review(bob, namespace, name, "Approve"))
    cluster.wait_phase(namespace, name, "Active")
    assert alice.can_list_pods(namespace)

    assert outcome(cluster, namespace, review(alice, namespace, name, "Revoke", "done"))[
        "outcome"] == "Accepted"
    eventually(lambda: not alice.can_list_pods(namespace), timeout=1.5)
    status = cluster.wait_phase(namespace, name, "Revoked")["status"]
    assert "alice gave back alice's ClusterRole/edit" in status["message"]


def test_a_review_of_a_request_that_does_not_exist_is_rejected(
    cluster: Cluster, approval_policies: dict[str, str],
) -> None:
    namespace = namespace_for(cluster, "one")
    answer = outcome(cluster, namespace, review(cluster.users["bob"], namespace, "nothing-here",
                                                "Approve"))
    assert answer["outcome"] == "Rejected"
    assert "there is no AccessRequest nothing-here" in answer["message"]


def test_a_scheduled_request_starts_at_start_at(
    cluster: Cluster, approval_policies: dict[str, str], alice: User,
) -> None:
    bob = cluster.users["bob"]
    namespace = namespace_for(cluster, "one")
    start_at = (now() + timedelta(seconds=8)).replace(microsecond=0)
    name = alice.request(namespace, duration="1m",
                         startAt=start_at.strftime("%Y-%m-%dT%H:%M:%SZ"))["metadata"]["name"]
    cluster.wait_phase(namespace, name, "Pending")
    outcome(cluster, namespace, review(bob, namespace, name, "Approve"))
    cluster.wait_phase(namespace, name, "Scheduled")
    assert not alice.can_list_pods(namespace)

    eventually(lambda: now() >= start_at, timeout=15, what="startAt")
    eventually(lambda: alice.can_list_pods(namespace), timeout=1.5, every=0.05,
               what="access to start at startAt")
    status = cluster.wait_phase(namespace, name, "Active")["status"]
    granted = parse_time(status["grantedAt"])
    assert timedelta(0) <= granted - start_at < timedelta(seconds=1)
    assert parse_time(status["expiresAt"]) - granted == timedelta(minutes=1)
    assert [h["event"] for h in status["history"]] == [
        "Requested", "ApprovalRequired", "Approved", "Scheduled", "Granted"]


def test_a_follow_up_continues_access_without_a_gap(
    cluster: Cluster, approval_policies: dict[str, str], alice: User,
) -> None:
    bob = cluster.users["bob"]
    namespace = namespace_for(cluster, "one")
    first = alice.request(namespace, duration="8s", reason="INC-1")["metadata"]["name"]
    cluster.wait_phase(namespace, first, "Pending")
    outcome(cluster, namespace, review(bob, namespace, first, "Approve"))
    first_status = cluster.wait_phase(namespace, first, "Active")["status"]
    first_expiry = parse_time(first_status["expiresAt"])

    gaps: list[float] = []
    checking = threading.Event()
    checking.set()

    def keep_checking() -> None:
        while checking.is_set():
            if not alice.can_list_pods(namespace):
                gaps.append(time.monotonic())
            time.sleep(0.02)

    checker = threading.Thread(target=keep_checking)
    checker.start()
    try:
        second = alice.request(namespace, duration="10s", reason="INC-1",
                               extends=first)["metadata"]["name"]
        cluster.wait_phase(namespace, second, "Pending")
        outcome(cluster, namespace, review(bob, namespace, second, "Approve"))
        scheduled = cluster.wait_phase(namespace, second, "Scheduled")["status"]
        assert now() < first_expiry, "the follow-up must be approved before the first ends"
        assert parse_time(scheduled["startAt"]) == first_expiry - timedelta(seconds=2)
        second_status = cluster.wait_phase(namespace, second, "Active", timeout=15)["status"]
        eventually(lambda: now() > first_expiry + timedelta(seconds=2), timeout=15)
    finally:
        checking.clear()
        checker.join()

    assert gaps == [], "alice lost access at the boundary between the two requests"
    assert cluster.phase(namespace, first) == "Expired"
    granted_at = parse_time(second_status["grantedAt"])
    assert parse_time(second_status["expiresAt"]) - granted_at == timedelta(seconds=10), (
        "a follow-up lasts its own duration, never longer")
    assert timedelta(0) <= granted_at - (first_expiry - timedelta(seconds=2)) < timedelta(
        seconds=1)
    assert f"follows {first}" in second_status["history"][-1]["message"]
    first_history = cluster.get_request(namespace, first)["status"]
    assert first_history["extendedBy"] == second
    assert any(h["event"] == "Extended" and second in h["message"]
               for h in first_history["history"])

    second_expiry = parse_time(second_status["expiresAt"])
    eventually(lambda: now() >= second_expiry, timeout=15)
    eventually(lambda: not alice.can_list_pods(namespace), timeout=1.5)


def test_a_follow_up_of_someone_elses_request_is_denied(
    cluster: Cluster, approval_policies: dict[str, str], alice: User, carol: User,
) -> None:
    namespace = namespace_for(cluster, "one")
    first = alice.request(namespace, duration="5m")["metadata"]["name"]
    second = carol.request(namespace, duration="5m", extends=first)["metadata"]["name"]
    status = cluster.wait_phase(namespace, second, "Denied")["status"]
    assert "a follow-up must be the same requester's" in status["message"]
