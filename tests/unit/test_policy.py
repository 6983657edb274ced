"""Policy matching as SPEC.md describes it: who, which role, where, how long, why and when."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from builders import NOW, policy
from daypass.models import AccessPolicy, RoleRef, UserInfo
from daypass.policy import Ask, Verdict, compile_policy, evaluate

EDIT = RoleRef.model_validate({"kind": "ClusterRole", "name": "edit"})
ALICE = UserInfo(username="alice", groups=[])
CAROL = UserInfo(username="carol", groups=["developers", "system:authenticated"])
DAVE = UserInfo(username="dave", groups=["system:authenticated"])


def ask(
    requester: UserInfo = CAROL,
    role: RoleRef = EDIT,
    namespace: str = "team-a",
    **rest: Any,
) -> Ask:
    return Ask(requester=requester, role=role, namespace=namespace, **rest)


def verdict(
    the_ask: Ask,
    *policies: AccessPolicy,
    labels: Mapping[str, str] | None = None,
) -> Verdict:
    return evaluate(the_ask, list(policies), labels, NOW)


# Who may ask


def test_a_user_listed_by_name_is_allowed() -> None:
    result = verdict(ask(requester=ALICE), policy())

    assert result.allowed
    assert result.policy == "developers-edit"
    assert result.message == "allowed by policy developers-edit"


def test_anyone_in_a_listed_group_is_allowed() -> None:
    assert verdict(ask(requester=CAROL), policy()).allowed


def test_someone_in_no_policy_is_denied_with_a_message_naming_the_closest_policy() -> None:
    sre_admin = policy("sre-admin", subjects={"groups": ["sre"]})

    result = verdict(ask(requester=DAVE), policy(), sre_admin)

    assert not result.allowed
    assert result.policy is None
    # Both refuse at the first check; the tie goes to the first policy by name.
    assert result.message == (
        "dave is not among the subjects of policy developers-edit"
        " (users: alice; groups: developers)"
    )


def test_a_username_equal_to_a_group_name_is_not_a_member_of_that_group() -> None:
    impostor = UserInfo(username="developers", groups=[])

    assert not verdict(ask(requester=impostor), policy()).allowed


# Which role


def test_a_listed_role_is_allowed() -> None:
    debugger = RoleRef.model_validate({"kind": "Role", "name": "debugger"})

    assert verdict(ask(role=debugger), policy()).allowed


def test_a_role_not_listed_is_refused_and_the_listed_roles_are_named() -> None:
    admin = RoleRef.model_validate({"kind": "ClusterRole", "name": "admin"})

    result = verdict(ask(role=admin), policy())

    assert not result.allowed
    assert result.message == (
        "ClusterRole/admin is not among the roles of policy developers-edit"
        " (ClusterRole/edit, Role/debugger)"
    )


def test_the_role_kind_matters_not_only_its_name() -> None:
    # A namespaced Role called edit is not the ClusterRole edit the policy lists.
    role_edit = RoleRef.model_validate({"kind": "Role", "name": "edit"})

    assert not verdict(ask(role=role_edit), policy()).allowed


# Where


def test_a_listed_namespace_is_allowed_even_when_its_labels_are_unknown() -> None:
    assert verdict(ask(namespace="team-a"), policy(), labels=None).allowed


def test_a_namespace_not_listed_is_refused() -> None:
    result = verdict(ask(namespace="payments"), policy(), labels={})

    assert not result.allowed
    assert result.message == (
        "namespace payments is not among the namespaces of policy developers-edit (names: team-a)"
    )


def by_label() -> AccessPolicy:
    return policy(
        namespaces={"selector": {"matchLabels": {"daypass.dev/eligible": "true"}}},
    )


def test_a_namespace_whose_labels_match_the_selector_is_allowed() -> None:
    result = verdict(ask(namespace="team-b"), by_label(), labels={"daypass.dev/eligible": "true"})

    assert result.allowed


def test_a_namespace_whose_labels_do_not_match_the_selector_is_refused() -> None:
    result = verdict(ask(namespace="team-b"), by_label(), labels={"daypass.dev/eligible": "no"})

    assert not result.allowed
    assert result.message.startswith(
        "namespace team-b is not among the namespaces of policy developers-edit"
    )
    assert "daypass.dev/eligible" in result.message


def test_an_unknown_namespace_never_matches_a_selector() -> None:
    # Labels are None when the namespace could not be read: fail closed, even for a selector
    # that would match any labels.
    match_all = policy(namespaces={"selector": {}})

    assert verdict(ask(namespace="team-b"), match_all, labels={}).allowed
    assert not verdict(ask(namespace="team-b"), match_all, labels=None).allowed


# How long


def test_the_default_duration_is_used_when_the_request_gives_none() -> None:
    result = verdict(ask(), policy(defaultDuration="2h"))

    assert result.allowed
    assert result.duration == timedelta(hours=2)


def test_without_a_default_duration_one_hour_is_used_or_the_maximum_when_shorter() -> None:
    assert verdict(ask(), policy(defaultDuration=None)).duration == timedelta(hours=1)
    short = policy(defaultDuration=None, maxDuration="15m")
    assert verdict(ask(), short).duration == timedelta(minutes=15)


def test_the_requested_duration_is_granted_up_to_max_duration() -> None:
    assert verdict(ask(duration="30m"), policy()).duration == timedelta(minutes=30)
    assert verdict(ask(duration="4h"), policy()).duration == timedelta(hours=4)


def test_a_duration_longer_than_max_duration_is_refused_with_the_spec_message() -> None:
    result = verdict(ask(duration="8h"), policy())

    assert not result.allowed
    assert result.message == "8h is longer than maxDuration 4h of policy developers-edit"


def test_a_duration_just_over_max_duration_is_refused() -> None:
    assert not verdict(ask(duration="4h0m1s"), policy()).allowed


def test_a_malformed_requested_duration_is_refused_with_what_a_valid_one_looks_like() -> None:
    result = verdict(ask(duration="forever"), policy())

    assert not result.allowed
    assert "'forever' is not a duration" in result.message
    assert "90s, 30m or 1h30m" in result.message


# Why


def test_a_required_reason_must_be_given() -> None:
    strict = policy(reason={"required": True})

    for missing in (None, "", "   "):
        result = verdict(ask(reason=missing), strict)
        assert not result.allowed
        assert result.message == "a reason is required by policy developers-edit"
    assert verdict(ask(reason="INC-4211 payments API returns 500"), strict).allowed


def test_the_reason_must_match_the_pattern_from_its_start() -> None:
    # No ^ in the pattern: a ticket id somewhere in the middle is still not enough.
    ticket = policy(reason={"required": True, "pattern": "[A-Z]+-[0-9]+"})

    assert verdict(ask(reason="INC-4211 payments API returns 500"), ticket).allowed
    refused = verdict(ask(reason="payments broken, see INC-4211"), ticket)
    assert not refused.allowed
    assert refused.message == (
        "reason 'payments broken, see INC-4211' does not match the pattern '[A-Z]+-[0-9]+'"
        " of policy developers-edit"
    )


# When


def test_a_start_within_max_start_delay_is_allowed() -> None:
    soon = policy(maxStartDelay="24h")

    assert verdict(ask(start_at=NOW + timedelta(hours=24)), soon).allowed


def test_a_start_further_ahead_than_max_start_delay_is_refused() -> None:
    soon = policy(maxStartDelay="24h")

    result = verdict(ask(start_at=NOW + timedelta(hours=25)), soon)

    assert not result.allowed
    assert result.message == (
        "startAt 2026-12-05T10:00:00+00:00 is further ahead than maxStartDelay 24h"
        " of policy developers-edit"
    )


def test_max_start_delay_defaults_to_thirty_days() -> None:
    assert verdict(ask(start_at=NOW + timedelta(days=30)), policy()).allowed
    assert not verdict(ask(start_at=NOW + timedelta(days=30, seconds=1)), policy()).allowed


# Several policies


def approved(name: str, count: int = 1, timeout: str | None = "2h") -> AccessPolicy:
    approval: dict[str, Any] = {
        "required": True,
        "approvers": {"groups": ["sre-leads"]},
        "count": count,
    }
    if timeout:
        approval["timeout"] = timeout
    return policy(name, approval=approval)


def test_when_several_policies_allow_the_one_needing_fewest_approvals_wins() -> None:
    result = verdict(ask(), approved("a-two", count=2), approved("b-one"), policy("c-auto"))

    assert result.policy == "c-auto"
    assert result.approvals_needed == 0


def test_approval_count_and_timeout_come_from_the_winning_policy() -> None:
    result = verdict(ask(), approved("a-two", count=2), approved("b-one", timeout="2h"))

    assert result.policy == "b-one"
    assert result.approvals_needed == 1
    assert result.approval_timeout == timedelta(hours=2)


def test_approval_timeout_defaults_to_one_hour() -> None:
    assert verdict(ask(), approved("one", timeout=None)).approval_timeout == timedelta(hours=1)


def test_approval_count_counts_only_when_approval_is_required() -> None:
    not_required = policy("auto", approval={"required": False, "count": 3})

    assert verdict(ask(), not_required).approvals_needed == 0


def test_ties_between_allowing_policies_go_to_the_first_by_name() -> None:
    # Listed out of order on purpose: the result must not depend on the listing order.
    result = verdict(ask(), policy("zulu"), policy("alpha"), policy("mike"))

    assert result.policy == "alpha"


def test_when_none_allows_the_closest_policy_explains_the_refusal() -> None:
    # alpha refuses carol outright; zulu would allow her, but not for 8h.
    alpha = policy("alpha", subjects={"users": ["bob"]})
    zulu = policy("zulu")

    result = verdict(ask(duration="8h"), alpha, zulu)

    assert not result.allowed
    assert result.message == "8h is longer than maxDuration 4h of policy zulu"
    assert set(result.refusals) == {"alpha", "zulu"}
    assert "carol is not among the subjects of policy alpha" in result.refusals["alpha"]


def test_an_allowing_policy_wins_over_any_refusing_one() -> None:
    result = verdict(ask(duration="8h"), policy("alpha"), policy("zulu", maxDuration="12h"))

    assert result.allowed
    assert result.policy == "zulu"
    assert result.duration == timedelta(hours=8)


# Policies that cannot be used


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ({"reason": {"pattern": "[A-Z"}}, "reason.pattern '[A-Z' is not a regular expression"),
        (
            {
                "namespaces": {
                    "names": ["team-a"],
                    "selector": {"matchExpressions": [{"key": "team", "operator": "Equals"}]},
                }
            },
            "namespaces.selector operator 'Equals' on key 'team' is not one of",
        ),
        (
            {"namespaces": {"selector": {"matchExpressions": [{"key": "t", "operator": "In"}]}}},
            "namespaces.selector operator In on key 't' needs values",
        ),
        ({"defaultDuration": "8h"}, "defaultDuration 8h is longer than maxDuration 4h"),
        ({"maxDuration": "forever"}, "'forever' is not a duration"),
        (
            {"approval": {"required": True, "approvers": {}}},
            "approval is required but no approvers (users or groups) are named",
        ),
    ],
)
def test_an_unusable_policy_allows_nothing_and_says_why(spec: dict[str, Any], why: str) -> None:
    broken = policy("broken", **spec)

    problem = compile_policy(broken)
    result = verdict(ask(), broken)

    assert isinstance(problem, str) and why in problem
    assert not result.allowed
    assert result.message.startswith("policy broken cannot be used: ")
    assert why in result.message


def test_a_usable_policy_compiles() -> None:
    assert not isinstance(compile_policy(policy()), str)


def test_an_unusable_policy_does_not_stop_another_from_allowing() -> None:
    result = verdict(ask(), policy("a-broken", defaultDuration="8h"), policy("b-fine"))

    assert result.allowed
    assert result.policy == "b-fine"


def test_with_no_policies_at_all_nothing_is_granted_and_the_message_says_so() -> None:
    result = verdict(ask())

    assert not result.allowed
    assert result.message == "no AccessPolicy exists, so nothing can be granted"
