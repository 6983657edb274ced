"""What `eligible` offers, how `request` checks an ask, and what waits for whose review."""

from __future__ import annotations

from typing import Any

from builders import NOW, policy, request
from daypass.cli.plugin.eligibility import awaits_review_by, check, infer_kind, offers, refusal
from daypass.models import RoleKind, RoleRef, UserInfo
from daypass.policy import Ask

ALICE = UserInfo(username="alice", groups=["developers", "system:authenticated"])
BOB = UserInfo(username="bob", groups=["sre-leads", "system:authenticated"])
DAVE = UserInfo(username="dave", groups=["system:authenticated"])
EDIT = RoleRef(kind=RoleKind.CLUSTER_ROLE, name="edit")

STANDARD = policy(
    subjects={"groups": ["developers"]},
    namespaces={"names": ["team-a"], "selector": {"matchLabels": {"daypass.dev/eligible": "true"}}},
    reason={"required": True, "pattern": "^[A-Z]+-[0-9]+"},
)
APPROVED = policy(
    "prod-view",
    subjects={"groups": ["developers"]},
    roles=[{"kind": "ClusterRole", "name": "view"}],
    namespaces={"names": ["prod"]},
    approval={"required": True, "approvers": {"groups": ["sre-leads"]}, "count": 1,
              "timeout": "1h"},
)


def ask(**changes: Any) -> Ask:
    fields: dict[str, Any] = {"requester": ALICE, "role": EDIT, "namespace": "team-a",
                              "reason": "INC-1 payments"}
    fields.update(changes)
    return Ask(**fields)


def test_eligible_lists_each_policy_naming_the_caller_with_its_terms() -> None:
    found = offers([APPROVED, STANDARD], ALICE)
    assert [offer.policy for offer in found] == ["developers-edit", "prod-view"]
    standard, approved = found
    assert standard.roles == ["ClusterRole/edit", "Role/debugger"]
    assert standard.namespaces == "team-a, labelled daypass.dev/eligible=true"
    assert (standard.max_duration, standard.default_duration) == ("4h", "1h")
    assert standard.reason == "required, matching ^[A-Z]+-[0-9]+"
    assert standard.approval == "no"
    assert approved.approval == "1 from groups sre-leads within 1h"
    assert approved.wire()["maxDuration"] == "4h"
    assert "problem" not in approved.wire()


def test_eligible_is_empty_for_someone_no_policy_names() -> None:
    assert offers([STANDARD, APPROVED], DAVE) == []


def test_an_unusable_policy_naming_the_caller_says_why() -> None:
    broken = policy("broken", maxDuration="1h", defaultDuration="2h")
    [offer] = offers([broken], ALICE)
    assert offer.problem == "defaultDuration 2h is longer than maxDuration 1h"


def test_the_default_duration_is_the_one_the_operator_would_use() -> None:
    [offer] = offers([policy(defaultDuration=None, maxDuration="30m")], ALICE)
    assert offer.default_duration == "30m"


def test_a_role_without_kind_takes_the_only_kind_the_callers_policies_name() -> None:
    assert infer_kind("debugger", [STANDARD], ALICE) == RoleKind.ROLE
    assert infer_kind("edit", [STANDARD], ALICE) == RoleKind.CLUSTER_ROLE
    assert infer_kind("unknown", [STANDARD], ALICE) == RoleKind.CLUSTER_ROLE
    # dave is not a subject: the policy's kinds are none of his business.
    assert infer_kind("debugger", [STANDARD], DAVE) == RoleKind.CLUSTER_ROLE


def test_check_allows_what_the_operator_allows() -> None:
    verdict = check(ask(), [STANDARD], {}, NOW)
    assert verdict.allowed and verdict.policy == "developers-edit"


def test_unknown_labels_give_a_selector_the_benefit_of_the_doubt() -> None:
    # Users may not read namespaces: the operator, who may, decides on the labels.
    assert check(ask(namespace="space-1"), [STANDARD], None, NOW).allowed
    assert not check(ask(namespace="space-1"), [STANDARD], {}, NOW).allowed
    view = RoleRef(kind=RoleKind.CLUSTER_ROLE, name="view")
    assert check(ask(namespace="prod", role=view), [APPROVED], None, NOW).allowed
    assert not check(ask(namespace="staging", role=view), [APPROVED], None, NOW).allowed


def test_a_missing_reason_is_refused_saying_what_reason_would_do() -> None:
    the_ask = ask(reason=None)
    verdict = check(the_ask, [STANDARD], None, NOW)
    assert not verdict.allowed
    message = refusal(verdict, the_ask, [STANDARD])
    assert message.startswith("a reason is required by policy developers-edit")
    assert "pass --reason TEXT, a reason matching '^[A-Z]+-[0-9]+'" in message
    assert "kubectl daypass eligible" in message


def test_an_unknown_role_is_refused_naming_the_roles_allowed() -> None:
    the_ask = ask(role=RoleRef(kind=RoleKind.CLUSTER_ROLE, name="admin"))
    message = refusal(check(the_ask, [STANDARD], None, NOW), the_ask, [STANDARD])
    assert "ClusterRole/admin is not among the roles of policy developers-edit" in message
    assert "(ClusterRole/edit, Role/debugger)" in message


def pending(**changes: Any) -> Any:
    status: dict[str, Any] = {"phase": "Pending", "policy": "prod-view"}
    status.update(changes)
    return request("alice-view", namespace="prod", role={"kind": "ClusterRole", "name": "view"},
                   status=status)


def test_a_pending_request_awaits_the_review_of_its_policys_approvers() -> None:
    policies = {"prod-view": APPROVED, "developers-edit": STANDARD}
    assert awaits_review_by(pending(), policies, BOB)
    assert not awaits_review_by(pending(), policies, DAVE)
    assert not awaits_review_by(pending(phase="Active"), policies, BOB)
    assert not awaits_review_by(pending(policy="developers-edit"), policies, BOB)
    assert not awaits_review_by(pending(policy="gone"), policies, BOB)


def test_nobody_is_asked_to_review_their_own_request() -> None:
    approvers_too = APPROVED.model_copy(deep=True)
    approvers_too.spec.approval.approvers.groups.append("developers")
    assert not awaits_review_by(pending(), {"prod-view": approvers_too}, ALICE)


def test_a_request_already_reviewed_waits_no_more_for_that_reviewer() -> None:
    reviewed = pending(reviews=[{"reviewer": "bob", "decision": "Approve",
                                 "at": "2026-12-04T09:00:00Z", "outcome": "Accepted"}])
    rejected = pending(reviews=[{"reviewer": "bob", "decision": "Approve",
                                 "at": "2026-12-04T09:00:00Z", "outcome": "Rejected"}])
    assert not awaits_review_by(reviewed, {"prod-view": APPROVED}, BOB)
    assert awaits_review_by(rejected, {"prod-view": APPROVED}, BOB)
