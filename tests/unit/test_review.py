"""Reviews: whether an AccessReview counts (G2), and what it records on its request.

Pure: every judgement is made at a fixed `now`. A judged status is read back through the wire
format, the way the reconciler writes it and reads it again.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import NOW, policy, request
from daypass.lifecycle import approvals, decide
from daypass.models import (
    AccessPolicy,
    AccessRequest,
    AccessReview,
    Outcome,
    Phase,
)
from daypass.review import MAX_RECORDED_REJECTIONS, Judgement, judge

LATER = NOW + timedelta(minutes=10)
APPROVERS = {"users": ["erin"], "groups": ["sre-leads"]}
TWO_APPROVALS = [
    policy(approval={"required": True, "approvers": APPROVERS, "count": 2, "timeout": "2h"})
]
AUTO = [policy()]


def review(
    decision: str = "Approve",
    username: str = "bob",
    groups: list[str] | None = None,
    *,
    name: str | None = None,
    target: str = "alice-edit",
    reason: str | None = "checked with on-call",
) -> AccessReview:
    """A review of alice-edit in team-a by bob of sre-leads, as admission writes it."""
    spec: dict[str, Any] = {
        "request": target,
        "decision": decision,
        "reviewer": {
            "username": username,
            "groups": ["sre-leads"] if groups is None else groups,
        },
    }
    if reason is not None:
        spec["reason"] = reason
    return AccessReview.model_validate(
        {
            "apiVersion": "daypass.dev/v1alpha1",
            "kind": "AccessReview",
            "metadata": {"name": name or f"{target}-{decision.lower()}-{username}",
                         "namespace": "team-a"},
            "spec": spec,
        }
    )


def decided(req: AccessRequest, policies: list[AccessPolicy], now: datetime = NOW,
            ) -> AccessRequest:
    plan = decide(req, policies, None, now)
    return AccessRequest.model_validate(req.wire() | {"status": plan.status.wire()})


def pending(**spec: Any) -> AccessRequest:
    """alice's request, waiting for two approvals since NOW."""
    req = decided(request(**spec), TWO_APPROVALS)
    assert req.status.phase is Phase.PENDING
    return req


def active() -> AccessRequest:
    req = decided(request(duration="30m"), AUTO)
    assert req.status.phase is Phase.ACTIVE
    return req


def scheduled() -> AccessRequest:
    req = decided(request(startAt=(NOW + timedelta(hours=3)).isoformat()), AUTO)
    assert req.status.phase is Phase.SCHEDULED
    return req


def judged(rev: AccessReview, req: AccessRequest | None,
           policies: list[AccessPolicy] = TWO_APPROVALS, now: datetime = LATER,
           ) -> tuple[Judgement, AccessRequest | None]:
    """The judgement, and the request as it reads back once its status is written."""
    judgement = judge(rev, req, policies, now)
    if req is None or judgement.status is None:
        return judgement, req
    return judgement, AccessRequest.model_validate(
        req.wire() | {"status": judgement.status.wire()}
    )


def last_line(req: AccessRequest | None) -> tuple[Phase, str | None, str | None]:
    assert req is not None
    entry = req.status.history[-1]
    return entry.phase, entry.event, entry.actor


def assert_rejected_changes_only_the_record(
    judgement: Judgement, before: AccessRequest, after: AccessRequest | None, rev: AccessReview,
) -> None:
    """A rejected review keeps the phase, message and times; it adds one record and one line."""
    assert judgement.outcome is Outcome.REJECTED
    assert after is not None
    assert after.status.phase == before.status.phase
    assert after.status.message == before.status.message
    assert after.status.ended_at == before.status.ended_at
    assert after.status.expires_at == before.status.expires_at
    assert len(after.status.history) == len(before.status.history) + 1
    assert last_line(after) == (
        before.status.phase or Phase.PENDING, "ReviewRejected", rev.spec.reviewer.username,
    )
    assert after.status.history[-1].at == LATER
    assert judgement.message in after.status.history[-1].message
    assert after.status.reviews[:-1] == before.status.reviews
    record = after.status.reviews[-1]
    assert (record.review, record.reviewer, record.decision, record.outcome) == (
        rev.metadata.name, rev.spec.reviewer.username, rev.spec.decision.value, "Rejected",
    )
    assert [step.event for step in judgement.steps] == ["ReviewRejected"]
    assert judgement.steps[0].warning


# Approve


@pytest.mark.parametrize(
    ("username", "groups"),
    [
        pytest.param("bob", ["sre-leads"], id="by group"),
        pytest.param("erin", [], id="by user"),
    ],
)
def test_an_approval_from_an_approver_of_the_policy_is_accepted(
    username: str, groups: list[str]
) -> None:
    req = pending()
    rev = review("Approve", username, groups)

    judgement, after = judged(rev, req)

    assert judgement.outcome is Outcome.ACCEPTED
    assert after is not None
    assert after.status.phase is Phase.PENDING
    assert after.status.ended_at is None
    assert approvals(after.status) == [username]
    record = after.status.reviews[-1]
    assert (record.review, record.reviewer, record.decision, record.outcome) == (
        rev.metadata.name, username, "Approve", "Accepted",
    )
    assert record.reason == "checked with on-call"
    assert record.at == LATER
    # Recorded under the policy it was judged under: it counts for that policy only (G2).
    assert record.policy == "developers-edit"
    assert last_line(after) == (Phase.PENDING, "Approved", username)
    assert after.status.history[-1].at == LATER
    assert judgement.message == (
        f"{username} approved alice's ClusterRole/edit in team-a (1 of 2): checked with on-call"
    )
    assert [(step.phase, step.event) for step in judgement.steps] == [
        (Phase.PENDING, "Approved")
    ]


def test_the_requester_cannot_approve_their_own_request_even_as_an_approver() -> None:
    # alice is in sre-leads too: G2 still refuses her approval of her own request.
    req = pending(groups=["developers", "sre-leads"])
    rev = review("Approve", "alice", ["developers", "sre-leads"])

    judgement, after = judged(rev, req)

    assert_rejected_changes_only_the_record(judgement, req, after, rev)
    assert judgement.message == "alice asked for this access and cannot review it (G2)"
    assert after is not None and approvals(after.status) == []


def test_the_requester_cannot_deny_their_own_request_either() -> None:
    req = pending(groups=["developers", "sre-leads"])
    rev = review("Deny", "alice", ["sre-leads"])

    judgement, after = judged(rev, req)

    assert_rejected_changes_only_the_record(judgement, req, after, rev)
    assert "(G2)" in judgement.message


@pytest.mark.parametrize("decision", ["Approve", "Deny"])
def test_a_review_from_someone_not_an_approver_is_rejected_and_names_the_approvers(
    decision: str,
) -> None:
    req = pending()
    rev = review(decision, "carol", ["developers"])

    judgement, after = judged(rev, req)

    assert_rejected_changes_only_the_record(judgement, req, after, rev)
    assert judgement.message == (
        "carol is not an approver of policy developers-edit (users: erin; groups: sre-leads)"
    )


def test_an_approver_counts_once_and_a_second_approval_is_rejected() -> None:
    _, once = judged(review(name="first"), pending())
    assert once is not None

    judgement, twice = judged(review(name="second"), once, now=LATER + timedelta(minutes=1))

    assert judgement.outcome is Outcome.REJECTED
    assert judgement.message == (
        "bob has already approved alice-edit; each approver counts once"
    )
    assert twice is not None
    assert approvals(twice.status) == ["bob"]
    assert [(r.review, r.outcome) for r in twice.status.reviews] == [
        ("first", "Accepted"), ("second", "Rejected"),
    ]
    assert twice.status.history[-1].event == "ReviewRejected"
    assert twice.status.phase is Phase.PENDING


def test_two_different_approvers_both_count() -> None:
    _, once = judged(review("Approve", "bob"), pending())
    judgement, twice = judged(review("Approve", "erin", []), once)

    assert judgement.outcome is Outcome.ACCEPTED
    assert "(2 of 2)" in judgement.message
    assert twice is not None and approvals(twice.status) == ["bob", "erin"]


@pytest.mark.parametrize("make", [active, scheduled], ids=["Active", "Scheduled"])
@pytest.mark.parametrize("decision", ["Approve", "Deny"])
def test_approve_or_deny_of_a_request_no_longer_pending_is_rejected(
    make: Callable[[], AccessRequest], decision: str
) -> None:
    req = make()
    rev = review(decision)

    # The request was auto-approved; its policy names approvers all the same, so that bob's
    # review gets as far as the phase.
    judgement, after = judged(rev, req, [policy(approval={"approvers": APPROVERS})])

    assert_rejected_changes_only_the_record(judgement, req, after, rev)
    assert judgement.message == (
        f"request alice-edit is {req.status.phase.value};"
        " only a Pending request can be approved or denied"
    )


# Deny


def test_a_denial_from_an_approver_ends_the_request() -> None:
    req = pending()
    rev = review("Deny", reason="not during the freeze")

    judgement, after = judged(rev, req)

    assert judgement.outcome is Outcome.ACCEPTED
    assert after is not None
    assert after.status.phase is Phase.DENIED
    assert after.status.ended_at == LATER
    assert after.status.granted_at is None
    assert last_line(after) == (Phase.DENIED, "Denied", "bob")
    assert judgement.message == (
        "bob denied alice's ClusterRole/edit in team-a: not during the freeze"
    )
    assert after.status.message == judgement.message
    assert after.status.reviews[-1].outcome == "Accepted"
    assert after.status.reviews[-1].decision == "Deny"
    assert judgement.steps[0].warning


def test_a_denial_after_an_approval_still_ends_the_request() -> None:
    _, approved = judged(review("Approve", "bob"), pending())

    _, after = judged(review("Deny", "erin", []), approved)

    assert after is not None
    assert after.status.phase is Phase.DENIED
    assert [(r.reviewer, r.decision, r.outcome) for r in after.status.reviews] == [
        ("bob", "Approve", "Accepted"), ("erin", "Deny", "Accepted"),
    ]


# Revoke


@pytest.mark.parametrize(
    ("username", "groups", "verb", "warning"),
    [
        pytest.param("alice", ["developers"], "gave back", False, id="the requester"),
        pytest.param("bob", ["sre-leads"], "revoked", True, id="an approver by group"),
        pytest.param("erin", [], "revoked", True, id="an approver by user"),
    ],
)
def test_revoke_of_an_active_grant_is_accepted_from_the_requester_or_an_approver(
    username: str, groups: list[str], verb: str, warning: bool
) -> None:
    req = active()
    rev = review("Revoke", username, groups, reason=None)

    judgement, after = judged(rev, req, [policy(approval={"approvers": APPROVERS})])

    assert judgement.outcome is Outcome.ACCEPTED
    assert after is not None
    assert after.status.phase is Phase.REVOKED
    assert after.status.ended_at == LATER
    assert last_line(after) == (Phase.REVOKED, "Revoked", username)
    assert judgement.message == (
        f"{username} {verb} alice's ClusterRole/edit in team-a at 2026-12-04T09:10:00Z"
    )
    assert judgement.steps[0].warning is warning
    assert after.status.reviews[-1].outcome == "Accepted"


@pytest.mark.parametrize("make", [pending, scheduled], ids=["Pending", "Scheduled"])
def test_the_requester_may_withdraw_a_request_not_yet_granted(
    make: Callable[[], AccessRequest],
) -> None:
    req = make()

    judgement, after = judged(review("Revoke", "alice", ["developers"]), req,
                              TWO_APPROVALS + AUTO)

    assert judgement.outcome is Outcome.ACCEPTED
    assert after is not None
    assert after.status.phase is Phase.REVOKED
    assert after.status.ended_at == LATER
    assert "alice withdrew alice's" in judgement.message


def test_revoke_from_someone_neither_requester_nor_approver_is_rejected() -> None:
    req = active()
    rev = review("Revoke", "carol", ["developers"])

    judgement, after = judged(rev, req, [policy(approval={"approvers": APPROVERS})])

    assert_rejected_changes_only_the_record(judgement, req, after, rev)
    assert after is not None and after.status.phase is Phase.ACTIVE
    assert judgement.message == (
        "carol may not revoke: only the requester (alice) or an approver of policy"
        " developers-edit may"
    )


# Reviews of requests that cannot be reviewed


def test_a_review_of_a_missing_request_is_rejected_and_records_nothing() -> None:
    judgement = judge(review(target="nobody-edit"), None, TWO_APPROVALS, LATER)

    assert judgement.outcome is Outcome.REJECTED
    assert judgement.message == "there is no AccessRequest nobody-edit in team-a"
    assert judgement.status is None
    assert judgement.steps == ()


@pytest.mark.parametrize("phase", [Phase.EXPIRED, Phase.DENIED, Phase.REVOKED, Phase.FAILED])
@pytest.mark.parametrize("decision", ["Approve", "Deny", "Revoke"])
def test_a_review_of_an_ended_request_is_rejected(phase: Phase, decision: str) -> None:
    req = request(status={
        "phase": phase.value,
        "policy": "developers-edit",
        "message": "it ended",
        "endedAt": "2026-12-04T08:00:00Z",
        "history": [{"at": "2026-12-04T08:00:00Z", "phase": phase.value, "event": phase.value}],
    })
    # Even the requester's Revoke: an ended request cannot end again.
    username = "alice" if decision == "Revoke" else "bob"
    rev = review(decision, username)

    judgement = judge(rev, req, TWO_APPROVALS, LATER)

    assert judgement.outcome is Outcome.REJECTED
    assert judgement.message == f"request alice-edit has already ended ({phase.value})"
    assert judgement.status is None, "an ended request's record never grows"
    assert judgement.steps == ()


@pytest.mark.parametrize("decision", ["Approve", "Deny", "Revoke"])
def test_a_review_of_a_request_not_yet_looked_at_is_rejected(decision: str) -> None:
    req = request()
    rev = review(decision)

    judgement = judge(rev, req, TWO_APPROVALS, LATER)

    assert judgement.outcome is Outcome.REJECTED
    assert judgement.status is None
    assert "has not been looked at yet" in judgement.message


@pytest.mark.parametrize("decision", ["Approve", "Deny"])
def test_approve_or_deny_of_a_request_whose_policy_no_longer_exists_is_rejected(
    decision: str,
) -> None:
    req = pending()
    rev = review(decision)

    judgement, after = judged(rev, req, [policy("someone-else", approval={
        "required": True, "approvers": APPROVERS,
    })])

    assert_rejected_changes_only_the_record(judgement, req, after, rev)
    assert judgement.message == "policy developers-edit of request alice-edit no longer exists"


def test_the_requester_may_still_give_back_access_whose_policy_no_longer_exists() -> None:
    judgement, after = judged(review("Revoke", "alice", ["developers"]), active(), [])

    assert judgement.outcome is Outcome.ACCEPTED
    assert after is not None and after.status.phase is Phase.REVOKED


def test_an_approver_of_a_deleted_policy_can_no_longer_revoke() -> None:
    req = active()
    rev = review("Revoke", "bob")

    judgement, after = judged(rev, req, [])

    assert_rejected_changes_only_the_record(judgement, req, after, rev)


# Recording


@pytest.mark.parametrize(
    "rev",
    [
        pytest.param(review("Approve", "bob"), id="accepted"),
        pytest.param(review("Approve", "carol", ["developers"]), id="rejected"),
    ],
)
def test_a_review_already_recorded_is_not_recorded_twice(rev: AccessReview) -> None:
    first, once = judged(rev, pending())
    assert once is not None

    again = judge(rev, once, TWO_APPROVALS, LATER + timedelta(minutes=5))

    assert again.outcome is first.outcome
    assert again.status is None
    assert again.steps == ()
    assert [r.review for r in once.status.reviews] == [rev.metadata.name]


def test_judging_does_not_change_the_request_it_is_given() -> None:
    req = pending()
    before = req.model_copy(deep=True)

    judge(review("Deny"), req, TWO_APPROVALS, LATER)
    judge(review("Approve", "carol", ["developers"]), req, TWO_APPROVALS, LATER)

    assert req == before


def test_a_rejected_approval_never_counts_towards_the_grant() -> None:
    _, after = judged(review("Approve", "carol", ["developers"]), pending())
    assert after is not None
    _, after = judged(review("Approve", "bob"), after)
    assert after is not None

    plan = decide(after, TWO_APPROVALS, None, LATER)

    assert approvals(after.status) == ["bob"]
    assert plan.status.phase is Phase.PENDING
    assert plan.steps == []


def test_rejected_reviews_stop_growing_the_request_after_a_bound() -> None:
    req = pending()
    for index in range(MAX_RECORDED_REJECTIONS):
        judgement = judge(review("Approve", "dave", [], name=f"spam-{index}"), req, TWO_APPROVALS,
                          LATER)
        assert judgement.outcome is Outcome.REJECTED and judgement.status is not None
        req = req.model_copy(update={"status": judgement.status})
    history = len(req.status.history)

    flood = judge(review("Approve", "dave", [], name="spam-more"), req, TWO_APPROVALS, LATER)

    assert flood.outcome is Outcome.REJECTED
    assert flood.status is None and flood.steps == ()
    assert len(req.status.history) == history
    accepted = judge(review("Approve", "bob", name="real"), req, TWO_APPROVALS, LATER)
    assert accepted.outcome is Outcome.ACCEPTED, "an approver is still heard after a flood"
