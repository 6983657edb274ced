"""The lifecycle after a request is looked at: approvals, follow-ups and grants found after a crash.

Every test passes `now`; nothing sleeps. Reviews are written into the status the way `judge`
records them (under the policy the request was judged under), and each plan's status is read
back through the wire format, as the reconciler writes and reads it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import NOW, policy, request
from daypass.lifecycle import (
    FOLLOW_UP_OVERLAP,
    Binding,
    GrantTimes,
    Plan,
    approvals,
    decide,
    followed_by,
)
from daypass.models import AccessPolicy, AccessRequest, AccessReview, Outcome, Phase
from daypass.review import judge

APPROVERS = {"users": ["erin"], "groups": ["sre-leads"]}
TWO_APPROVALS = [
    policy(approval={"required": True, "approvers": APPROVERS, "count": 2, "timeout": "2h"})
]
AUTO = [policy()]
DEADLINE = NOW + timedelta(hours=2)
STAMP = "%Y-%m-%dT%H:%M:%SZ"


def carried_out(req: AccessRequest, plan: Plan) -> AccessRequest:
    return AccessRequest.model_validate(req.wire() | {"status": plan.status.wire()})


def run(req: AccessRequest, policies: list[AccessPolicy], now: datetime = NOW,
        **context: Any) -> tuple[Plan, AccessRequest]:
    plan = decide(req, policies, None, now, **context)
    return plan, carried_out(req, plan)


def events(plan: Plan) -> list[tuple[Phase, str]]:
    return [(step.phase, step.event) for step in plan.steps]


def reviewed(req: AccessRequest, *reviews: tuple[str, str, str | None], at: datetime,
             under: str | None = None) -> AccessRequest:
    """The request with (reviewer, decision, outcome) records added to its status, judged under
    policy `under` (the request's own policy unless given), as `judge` records them."""
    records = [
        {"review": f"{req.name}-{i}", "reviewer": who, "decision": decision, "outcome": outcome,
         "at": at.strftime(STAMP), "policy": under or req.status.policy}
        for i, (who, decision, outcome) in enumerate(reviews, len(req.status.reviews))
    ]
    status = req.status.wire()
    status["reviews"] = status.get("reviews", []) + records
    return AccessRequest.model_validate(req.wire() | {"status": status})


def pending(**spec: Any) -> AccessRequest:
    """alice's request for 30m, waiting since NOW for two approvals by DEADLINE."""
    _, req = run(request(duration="30m", **spec), TWO_APPROVALS)
    assert req.status.phase is Phase.PENDING
    assert req.status.approval_deadline == DEADLINE
    return req


def active(name: str = "alice-edit", duration: str = "30m", now: datetime = NOW,
           **kwargs: Any) -> AccessRequest:
    _, req = run(request(name, duration=duration, **kwargs), AUTO, now)
    assert req.status.phase is Phase.ACTIVE
    return req


# Counting approvals


def test_below_the_count_a_request_stays_pending_until_its_deadline() -> None:
    req = reviewed(pending(), ("bob", "Approve", "Accepted"), at=NOW + timedelta(minutes=5))

    plan, after = run(req, TWO_APPROVALS, NOW + timedelta(minutes=5))

    assert plan.steps == []
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at == DEADLINE
    assert after.status == req.status


def test_at_the_count_the_request_is_granted_and_the_message_names_the_approvers() -> None:
    approved = NOW + timedelta(minutes=20)
    req = reviewed(
        pending(),
        ("bob", "Approve", "Accepted"), ("erin", "Approve", "Accepted"),
        at=approved,
    )

    plan, after = run(req, TWO_APPROVALS, approved)

    assert events(plan) == [(Phase.ACTIVE, "Granted")]
    assert plan.binding is Binding.PRESENT
    assert plan.wake_at == approved + timedelta(minutes=30)
    assert after.status.phase is Phase.ACTIVE
    # The clock starts when access starts, not when it was asked for.
    assert after.status.granted_at == approved
    assert after.status.expires_at == approved + timedelta(minutes=30)
    assert after.status.binding == "daypass-alice-edit"
    assert ", approved by bob, erin from 2026-12-04T09:20:00Z until 2026-12-04T09:50:00Z" in (
        plan.steps[0].message
    )
    assert after.status.message == plan.steps[0].message


def test_more_approvals_than_the_count_also_grant() -> None:
    req = reviewed(pending(), ("bob", "Approve", "Accepted"), ("erin", "Approve", "Accepted"),
                   ("frank", "Approve", "Accepted"), at=NOW)

    _, after = run(req, [policy(approval={"required": True, "approvers": APPROVERS,
                                          "timeout": "2h", "count": 2})], NOW)

    assert after.status.phase is Phase.ACTIVE


@pytest.mark.parametrize(
    "reviews",
    [
        pytest.param([("bob", "Approve", "Accepted"), ("carol", "Approve", "Rejected")],
                     id="a rejected approval"),
        pytest.param([("bob", "Approve", "Accepted"), ("bob", "Approve", "Accepted")],
                     id="the same approver twice"),
        pytest.param([("bob", "Approve", "Accepted"), ("erin", "Revoke", "Rejected")],
                     id="a rejected revoke"),
        pytest.param([("bob", "Approve", "Accepted"), ("erin", "Approve", None)],
                     id="an approval without an outcome"),
    ],
)
def test_only_distinct_accepted_approvals_count(reviews: list[tuple[str, str, str]]) -> None:
    req = reviewed(pending(), *reviews, at=NOW + timedelta(minutes=5))

    plan, after = run(req, TWO_APPROVALS, NOW + timedelta(minutes=5))

    assert approvals(after.status) == ["bob"]
    assert plan.steps == []
    assert after.status.phase is Phase.PENDING


def test_past_the_deadline_a_request_short_of_approvals_expires() -> None:
    req = reviewed(pending(), ("bob", "Approve", "Accepted"), at=NOW + timedelta(minutes=5))

    plan, after = run(req, TWO_APPROVALS, DEADLINE)

    assert events(plan) == [(Phase.EXPIRED, "Expired")]
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at is None
    assert after.status.phase is Phase.EXPIRED
    assert after.status.ended_at == DEADLINE
    assert after.status.granted_at is None and after.status.binding is None
    assert "no approval for alice's ClusterRole/edit in team-a by the deadline" in (
        after.status.message
    )


def test_approved_with_a_future_start_is_scheduled_then_granted_at_the_start() -> None:
    start = NOW + timedelta(hours=5)
    req = reviewed(
        pending(startAt=start.isoformat()),
        ("bob", "Approve", "Accepted"), ("erin", "Approve", "Accepted"),
        at=NOW + timedelta(minutes=10),
    )

    plan, scheduled = run(req, TWO_APPROVALS, NOW + timedelta(minutes=10))

    assert events(plan) == [(Phase.SCHEDULED, "Scheduled")]
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at == start
    assert scheduled.status.start_at == start
    assert scheduled.status.granted_at is None

    # The approval deadline has long passed by the start: it no longer matters.
    plan, granted = run(scheduled, TWO_APPROVALS, start)

    assert events(plan) == [(Phase.ACTIVE, "Granted")]
    assert plan.binding is Binding.PRESENT
    assert granted.status.granted_at == start
    assert granted.status.expires_at == start + timedelta(minutes=30)
    assert "approved by bob, erin" in plan.steps[0].message
    assert [entry.event for entry in granted.status.history] == [
        "Requested", "ApprovalRequired", "Scheduled", "Granted",
    ]


# Re-checking a request under way: its own policy first, another only on its own terms (G2, G3)


def approval(users: list[str], count: int) -> dict[str, Any]:
    return {"required": True, "approvers": {"users": users}, "count": count, "timeout": "2h"}


def review_by(req: AccessRequest, reviewer: str, decision: str = "Approve") -> AccessReview:
    """An AccessReview of `req` by `reviewer`, in no group, as admission writes it."""
    return AccessReview.model_validate({
        "apiVersion": "daypass.dev/v1alpha1",
        "kind": "AccessReview",
        "metadata": {"name": f"{req.name}-{reviewer}-{len(req.status.reviews)}",
                     "namespace": req.namespace},
        "spec": {"request": req.name, "decision": decision,
                 "reviewer": {"username": reviewer, "groups": []}},
    })


def judged(req: AccessRequest, rev: AccessReview, policies: list[AccessPolicy],
           now: datetime) -> tuple[Outcome, str, AccessRequest]:
    """The review's outcome and message, and the request once the judged status is written."""
    judgement = judge(rev, req, policies, now)
    assert judgement.status is not None
    return judgement.outcome, judgement.message, AccessRequest.model_validate(
        req.wire() | {"status": judgement.status.wire()}
    )


# developers-edit with two approvals by bob or erin, then changed so that it no longer allows a
# 30m grant; platform-edit allows it with one approval, by frank only.
BY_BOB_OR_ERIN = policy(approval=approval(["bob", "erin"], 2))
NO_LONGER = policy(maxDuration="15m", defaultDuration="15m",
                   approval=approval(["bob", "erin"], 2))
NO_LONGER_REFUSAL = "30m is longer than maxDuration 15m of policy developers-edit"
BY_FRANK = policy("platform-edit", approval=approval(["frank"], 1))


def test_approvals_given_under_one_policy_never_count_for_another() -> None:
    # G2: only approvers of the policy count. bob approved under developers-edit; when that
    # policy no longer allows the request, platform-edit takes over, and bob never approved
    # under it: its one approval is still to come, from frank.
    _, req = run(request(duration="30m"), [BY_BOB_OR_ERIN])
    assert (req.status.phase, req.status.policy) == (Phase.PENDING, "developers-edit")
    outcome, _, req = judged(req, review_by(req, "bob"), [BY_BOB_OR_ERIN],
                             NOW + timedelta(minutes=5))
    assert outcome is Outcome.ACCEPTED
    assert req.status.reviews[-1].policy == "developers-edit"
    assert approvals(req.status) == ["bob"]

    changed = [NO_LONGER, BY_FRANK]
    moved_at = NOW + timedelta(minutes=10)
    plan, moved = run(req, changed, moved_at)

    assert moved.status.policy == "platform-edit"
    assert moved.status.phase is Phase.PENDING
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at == DEADLINE
    assert all(step.phase is Phase.PENDING for step in plan.steps)
    assert moved.status.granted_at is None and moved.status.binding is None
    assert approvals(moved.status) == []
    # bob's approval stays on record, under the policy it was given under.
    assert [(r.reviewer, r.outcome, r.policy) for r in moved.status.reviews] == [
        ("bob", "Accepted", "developers-edit"),
    ]
    # Deciding again changes nothing: bob's approval does not count on a second look either.
    again, _ = run(moved, changed, moved_at + timedelta(minutes=1))
    assert again.steps == [] and again.status.phase is Phase.PENDING

    # bob is no approver of platform-edit: approving again does not count either.
    outcome, message, moved = judged(moved, review_by(moved, "bob"), changed, moved_at)
    assert outcome is Outcome.REJECTED
    assert message.startswith("bob is not an approver of policy platform-edit")
    assert approvals(moved.status) == []

    outcome, message, approved = judged(moved, review_by(moved, "frank"), changed, moved_at)
    assert outcome is Outcome.ACCEPTED
    assert "(1 of 1)" in message
    assert approvals(approved.status) == ["frank"]

    plan, granted = run(approved, changed, moved_at)

    assert events(plan) == [(Phase.ACTIVE, "Granted")]
    assert granted.status.policy == "platform-edit"
    assert "under policy platform-edit, approved by frank from" in plan.steps[0].message
    assert "bob" not in plan.steps[0].message


def test_approvals_recorded_under_another_policy_do_not_count() -> None:
    req = reviewed(pending(), ("bob", "Approve", "Accepted"), at=NOW + timedelta(minutes=5),
                   under="platform-edit")
    req = reviewed(req, ("erin", "Approve", "Accepted"), at=NOW + timedelta(minutes=5))

    plan, after = run(req, TWO_APPROVALS, NOW + timedelta(minutes=5))

    assert approvals(after.status) == ["erin"]
    assert plan.steps == []
    assert after.status.phase is Phase.PENDING


def test_a_pending_request_its_own_policy_still_allows_stays_under_it() -> None:
    # Its own policy's approvers are the ones asked: a policy needing fewer approvals that
    # appears later does not take over while the own one still allows the request.
    req = reviewed(pending(), ("bob", "Approve", "Accepted"), at=NOW + timedelta(minutes=5))

    plan, after = run(req, [*TWO_APPROVALS, policy("platform-edit")], NOW + timedelta(minutes=5))

    assert plan.steps == []
    assert after.status.phase is Phase.PENDING
    assert after.status.policy == "developers-edit"
    assert approvals(after.status) == ["bob"]


def test_a_pending_request_moving_to_a_policy_needing_no_approval_is_granted() -> None:
    req = reviewed(pending(), ("bob", "Approve", "Accepted"), at=NOW + timedelta(minutes=5))
    later = NOW + timedelta(minutes=10)

    plan, after = run(req, [policy("platform-edit")], later)

    assert events(plan) == [(Phase.ACTIVE, "Granted")]
    assert after.status.policy == "platform-edit"
    assert after.status.granted_at == later
    assert after.status.expires_at == later + timedelta(minutes=30)
    assert "approved by" not in plan.steps[0].message


def test_a_pending_request_whose_policy_is_deleted_and_none_other_allows_is_denied() -> None:
    later = NOW + timedelta(minutes=10)

    plan, after = run(pending(), [policy("platform-edit", roles=[{"kind": "Role",
                                                                  "name": "debugger"}])], later)

    assert events(plan) == [(Phase.DENIED, "Denied")]
    assert after.status.ended_at == later
    assert after.status.message == (
        "denied ClusterRole/edit in team-a to alice:"
        " no policy allows it any more: policy developers-edit was deleted"
    )


@pytest.mark.parametrize(
    ("own", "refusal"),
    [
        pytest.param([NO_LONGER], NO_LONGER_REFUSAL, id="own policy changed"),
        pytest.param([], "policy developers-edit was deleted", id="own policy deleted"),
    ],
)
def test_an_active_grant_is_revoked_rather_than_moved_to_a_policy_needing_approval(
    own: list[AccessPolicy], refusal: str,
) -> None:
    granted = active("alice-edit", "30m")
    later = NOW + timedelta(minutes=5)

    plan, after = run(granted, [*own, BY_FRANK], later)

    assert events(plan) == [(Phase.REVOKED, "Revoked")]
    assert plan.steps[0].warning
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at is None
    assert after.status.ended_at == later
    assert after.status.policy == "developers-edit"
    assert after.status.message == (
        "revoked ClusterRole/edit in team-a from alice at 2026-12-04T09:05:00Z:"
        f" no policy allows it any more: {refusal};"
        " policy platform-edit would allow it only with 1 approval(s) of its own"
    )


def test_a_scheduled_grant_is_withdrawn_rather_than_moved_to_a_policy_needing_approval() -> None:
    start = NOW + timedelta(hours=3)
    _, scheduled = run(request(duration="30m", startAt=start.isoformat()), AUTO)
    assert scheduled.status.phase is Phase.SCHEDULED

    plan, after = run(scheduled, [NO_LONGER, BY_FRANK], start)

    assert events(plan) == [(Phase.REVOKED, "Revoked")]
    assert plan.binding is Binding.ABSENT
    assert after.status.granted_at is None
    assert after.status.message == (
        "scheduled access to ClusterRole/edit in team-a for alice withdrawn:"
        f" no policy allows it any more: {NO_LONGER_REFUSAL};"
        " policy platform-edit would allow it only with 1 approval(s) of its own"
    )


def test_an_active_grant_moves_to_another_policy_needing_no_approval() -> None:
    granted = active("alice-edit", "30m")
    later = NOW + timedelta(minutes=5)

    plan, after = run(granted, [NO_LONGER, BY_FRANK, policy("ops-edit")], later)

    assert [step for step in plan.steps if step.phase is not Phase.ACTIVE] == []
    assert plan.binding is Binding.PRESENT
    assert plan.wake_at == granted.status.expires_at
    assert after.status.phase is Phase.ACTIVE
    assert after.status.policy == "ops-edit"
    assert (after.status.granted_at, after.status.expires_at, after.status.binding) == (
        granted.status.granted_at, granted.status.expires_at, granted.status.binding,
    )
    assert after.status.ended_at is None


# Follow-ups


@pytest.mark.parametrize(
    "earlier",
    [
        pytest.param(active("carol-edit", username="carol"), id="another requester's"),
        pytest.param(active("alice-debug", role={"kind": "Role", "name": "debugger"}),
                     id="for another role"),
    ],
)
def test_a_follow_up_of_another_requesters_or_roles_request_is_denied(
    earlier: AccessRequest,
) -> None:
    follower = request("alice-more", duration="30m", extends=earlier.name)

    plan, after = run(follower, AUTO, NOW + timedelta(minutes=10), earlier=earlier)

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.DENIED, "Denied")]
    assert plan.binding is Binding.ABSENT
    assert after.status.phase is Phase.DENIED
    assert after.status.ended_at == NOW + timedelta(minutes=10)
    assert after.status.granted_at is None
    assert after.status.message.startswith(
        f"denied ClusterRole/edit in team-a to alice: it extends {earlier.name}, which is"
    )
    assert after.status.message.endswith(
        "a follow-up must be the same requester's, for the same role"
    )


def test_a_follow_up_of_a_missing_request_is_denied() -> None:
    follower = request("alice-more", duration="30m", extends="alice-gone")

    plan, after = run(follower, AUTO, earlier=None)

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.DENIED, "Denied")]
    assert after.status.ended_at == NOW
    assert after.status.message == (
        "denied ClusterRole/edit in team-a to alice:"
        " it extends alice-gone, but there is no request alice-gone in team-a"
    )


# active("alice-edit", "30m") ends at EARLIER_END; a follow-up of it starts just before.
EARLIER_END = NOW + timedelta(minutes=30)
FOLLOW_UP_START = EARLIER_END - FOLLOW_UP_OVERLAP


def test_a_follow_up_while_the_earlier_runs_is_scheduled_just_before_the_earlier_end() -> None:
    earlier = active("alice-edit", "30m")
    asked = NOW + timedelta(minutes=20)
    follower = request("alice-more", duration="1h", extends="alice-edit")

    plan, scheduled = run(follower, AUTO, asked, earlier=earlier)

    assert timedelta(seconds=2) == FOLLOW_UP_OVERLAP
    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.SCHEDULED, "Scheduled")]
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at == FOLLOW_UP_START
    assert scheduled.status.phase is Phase.SCHEDULED
    assert scheduled.status.start_at == FOLLOW_UP_START
    assert scheduled.status.granted_at is None and scheduled.status.expires_at is None
    assert scheduled.status.message == (
        "ClusterRole/edit in team-a for alice starts at 2026-12-04T09:29:58Z for 1h"
        " under policy developers-edit, just before alice-edit ends"
    )

    plan, waiting = run(scheduled, AUTO, FOLLOW_UP_START - timedelta(seconds=1), earlier=earlier)

    assert plan.steps == [] and plan.binding is Binding.ABSENT
    assert plan.wake_at == FOLLOW_UP_START
    assert waiting.status == scheduled.status

    plan, granted = run(scheduled, AUTO, FOLLOW_UP_START, earlier=earlier)

    assert events(plan) == [(Phase.ACTIVE, "Granted")]
    assert plan.binding is Binding.PRESENT
    # Both bindings exist for the overlap, so access has no gap at the boundary ...
    assert granted.status.granted_at == FOLLOW_UP_START < EARLIER_END
    # ... and the follow-up's own duration counts from its start, not a second more (G3).
    assert granted.status.expires_at == FOLLOW_UP_START + timedelta(hours=1)
    assert plan.wake_at == granted.status.expires_at
    assert plan.steps[-1].message.endswith(
        "from 2026-12-04T09:29:58Z until 2026-12-04T10:29:58Z (1h); binding daypass-alice-more;"
        " follows alice-edit, which ends at 2026-12-04T09:30:00Z"
    )
    assert [entry.event for entry in granted.status.history] == [
        "Requested", "Scheduled", "Granted",
    ]


@pytest.mark.parametrize(
    ("asked", "start"),
    [
        pytest.param(NOW, NOW + timedelta(hours=4) - FOLLOW_UP_OVERLAP, id="asked at once"),
        pytest.param(NOW + timedelta(hours=3, minutes=59), NOW + timedelta(hours=4)
                     - FOLLOW_UP_OVERLAP, id="asked a minute before the end"),
        pytest.param(NOW + timedelta(hours=4) - timedelta(seconds=1),
                     NOW + timedelta(hours=4) - timedelta(seconds=1),
                     id="asked within the overlap: granted at once"),
    ],
)
def test_a_follow_up_never_lasts_longer_than_its_duration(asked: datetime, start: datetime,
                                                          ) -> None:
    # Both at maxDuration 4h: the follow-up once ran from its grant to the earlier end plus its
    # duration, longer than any policy allowed (G3). Now each grant lasts its own duration.
    earlier = active("alice-edit", "4h")
    follower = request("alice-more", duration="4h", extends="alice-edit")

    _, after = run(follower, AUTO, asked, earlier=earlier)
    if after.status.phase is Phase.SCHEDULED:
        assert after.status.start_at == start
        _, after = run(after, AUTO, start, earlier=earlier)

    assert after.status.phase is Phase.ACTIVE
    assert after.status.granted_at == start
    assert after.status.expires_at == start + timedelta(hours=4)
    assert after.status.expires_at - after.status.granted_at <= timedelta(hours=4)


def test_a_follow_up_starting_after_the_earlier_end_keeps_its_own_start() -> None:
    earlier = active("alice-edit", "30m")
    own = NOW + timedelta(hours=2)
    follower = request("alice-more", duration="1h", extends="alice-edit", startAt=own.isoformat())

    plan, scheduled = run(follower, AUTO, NOW + timedelta(minutes=1), earlier=earlier)

    assert events(plan)[-1] == (Phase.SCHEDULED, "Scheduled")
    assert scheduled.status.start_at == own
    assert plan.wake_at == own

    _, granted = run(scheduled, AUTO, own, earlier=earlier.model_copy(
        update={"status": earlier.status.model_copy(update={"phase": Phase.EXPIRED})}))

    assert granted.status.granted_at == own
    assert granted.status.expires_at == own + timedelta(hours=1)


def test_a_follow_up_starting_before_the_earlier_end_waits_for_it() -> None:
    earlier = active("alice-edit", "30m")
    own = NOW + timedelta(minutes=10)
    follower = request("alice-more", duration="1h", extends="alice-edit", startAt=own.isoformat())

    _, scheduled = run(follower, AUTO, NOW + timedelta(minutes=1), earlier=earlier)

    assert scheduled.status.start_at == FOLLOW_UP_START


def test_a_follow_up_needing_approval_is_scheduled_before_the_earlier_end_once_approved() -> None:
    earlier = active("alice-edit", "30m")
    _, follower = run(request("alice-more", duration="30m", extends="alice-edit"),
                      TWO_APPROVALS, earlier=earlier)
    assert follower.status.phase is Phase.PENDING
    approved = NOW + timedelta(minutes=10)
    follower = reviewed(follower, ("bob", "Approve", "Accepted"),
                        ("erin", "Approve", "Accepted"), at=approved)

    plan, scheduled = run(follower, TWO_APPROVALS, approved, earlier=earlier)

    assert events(plan) == [(Phase.SCHEDULED, "Scheduled")]
    assert scheduled.status.start_at == FOLLOW_UP_START
    assert plan.wake_at == FOLLOW_UP_START

    plan, granted = run(scheduled, TWO_APPROVALS, FOLLOW_UP_START, earlier=earlier)

    assert events(plan) == [(Phase.ACTIVE, "Granted")]
    assert granted.status.granted_at == FOLLOW_UP_START
    assert granted.status.expires_at == FOLLOW_UP_START + timedelta(minutes=30)
    assert "approved by bob, erin" in plan.steps[0].message


def test_a_scheduled_follow_up_is_withdrawn_when_the_earlier_request_is_revoked() -> None:
    earlier = active("alice-edit", "30m")
    _, scheduled = run(request("alice-more", duration="1h", extends="alice-edit"), AUTO,
                       NOW + timedelta(minutes=5), earlier=earlier)
    assert scheduled.status.phase is Phase.SCHEDULED
    revoked_at = NOW + timedelta(minutes=10)
    _, revoked = run(earlier, [], revoked_at)
    assert revoked.status.phase is Phase.REVOKED

    plan, after = run(scheduled, AUTO, revoked_at, earlier=revoked)

    assert events(plan) == [(Phase.REVOKED, "Revoked")]
    assert plan.steps[0].warning
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at is None
    assert after.status.ended_at == revoked_at
    assert after.status.granted_at is None and after.status.expires_at is None
    assert after.status.message == (
        "scheduled access to ClusterRole/edit in team-a for alice withdrawn:"
        " it follows alice-edit, which was revoked"
    )
    # Ended: its start time passes without a grant.
    again, _ = run(after, AUTO, FOLLOW_UP_START, earlier=revoked)
    assert again.steps == [] and again.binding is Binding.ABSENT


def test_a_scheduled_follow_up_starts_when_the_earlier_request_expired() -> None:
    earlier = active("alice-edit", "30m")
    _, scheduled = run(request("alice-more", duration="1h", extends="alice-edit"), AUTO,
                       NOW + timedelta(minutes=5), earlier=earlier)
    _, expired = run(earlier, AUTO, EARLIER_END)
    assert expired.status.phase is Phase.EXPIRED

    plan, after = run(scheduled, AUTO, EARLIER_END, earlier=expired)

    assert events(plan) == [(Phase.ACTIVE, "Granted")]
    assert after.status.granted_at == EARLIER_END
    assert after.status.expires_at == EARLIER_END + timedelta(hours=1)


@pytest.mark.parametrize(
    ("earlier", "now"),
    [
        pytest.param(
            request("alice-edit", duration="30m", status={
                "phase": "Expired", "policy": "developers-edit",
                "grantedAt": "2026-12-04T08:00:00Z", "expiresAt": "2026-12-04T08:30:00Z",
                "endedAt": "2026-12-04T08:30:00Z",
            }),
            NOW,
            id="ended",
        ),
        pytest.param(active("alice-edit", "30m"), NOW + timedelta(minutes=45),
                     id="past its expiry, not yet marked ended"),
    ],
)
def test_a_follow_up_of_a_request_no_longer_running_counts_from_now(
    earlier: AccessRequest, now: datetime,
) -> None:
    follower = request("alice-more", duration="1h", extends="alice-edit")

    plan, after = run(follower, AUTO, now, earlier=earlier)

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.ACTIVE, "Granted")]
    assert after.status.granted_at == now
    assert after.status.expires_at == now + timedelta(hours=1)


def test_a_follow_up_of_an_ended_request_does_not_claim_to_follow_it() -> None:
    earlier = request("alice-edit", duration="30m", status={
        "phase": "Expired", "policy": "developers-edit", "expiresAt": "2026-12-04T08:30:00Z",
        "endedAt": "2026-12-04T08:30:00Z",
    })

    plan, _ = run(request("alice-more", duration="1h", extends="alice-edit"), AUTO,
                  earlier=earlier)

    assert "follows" not in plan.steps[-1].message


def test_a_follow_up_of_a_request_past_its_expiry_does_not_claim_to_follow_it() -> None:
    plan, _ = run(request("alice-more", duration="1h", extends="alice-edit"), AUTO,
                  NOW + timedelta(minutes=45), earlier=active("alice-edit", "30m"))

    assert "follows" not in plan.steps[-1].message


def test_a_follow_up_scheduled_at_its_own_later_start_does_not_claim_to_start_before() -> None:
    own = NOW + timedelta(hours=2)
    follower = request("alice-more", duration="1h", extends="alice-edit", startAt=own.isoformat())

    _, scheduled = run(follower, AUTO, NOW + timedelta(minutes=1),
                       earlier=active("alice-edit", "30m"))

    assert "just before" not in scheduled.status.message


def test_the_earlier_request_records_its_follow_up_once() -> None:
    earlier = active("alice-edit", "30m")
    asked = NOW + timedelta(minutes=20)
    _, follower = run(request("alice-more", duration="1h", extends="alice-edit"), AUTO, asked,
                      earlier=earlier)
    assert follower.status.phase is Phase.SCHEDULED

    plan = followed_by(earlier, follower, asked)

    assert plan is not None
    assert events(plan) == [(Phase.ACTIVE, "Extended")]
    assert plan.steps[0].actor == "alice"
    assert plan.binding is Binding.PRESENT
    assert plan.wake_at == earlier.status.expires_at
    noted = carried_out(earlier, plan)
    assert noted.status.extended_by == "alice-more"
    assert noted.status.phase is Phase.ACTIVE
    assert noted.status.expires_at == earlier.status.expires_at
    assert noted.status.history[:-1] == earlier.status.history
    last = noted.status.history[-1]
    assert (last.at, last.phase, last.event, last.actor) == (asked, Phase.ACTIVE, "Extended",
                                                             "alice")
    assert last.message == (
        "followed by alice-more: access of alice to ClusterRole/edit in team-a continues"
        " from 2026-12-04T09:29:58Z for 1h"
    )

    assert followed_by(noted, follower, asked + timedelta(seconds=1)) is None
    # Nor again once the follow-up is granted.
    _, granted = run(follower, AUTO, FOLLOW_UP_START, earlier=noted)
    assert granted.status.phase is Phase.ACTIVE
    assert followed_by(noted, granted, FOLLOW_UP_START) is None


def test_an_ended_earlier_request_records_its_follow_up_without_waking_up_again() -> None:
    earlier = request("alice-edit", duration="30m", status={
        "phase": "Expired", "policy": "developers-edit", "expiresAt": "2026-12-04T08:30:00Z",
        "endedAt": "2026-12-04T08:30:00Z",
    })
    _, follower = run(request("alice-more", duration="1h", extends="alice-edit"), AUTO,
                      earlier=earlier)

    plan = followed_by(earlier, follower, NOW)

    assert plan is not None
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at is None
    assert plan.status.phase is Phase.EXPIRED
    assert plan.status.extended_by == "alice-more"
    assert plan.steps[0].message.endswith("continues until 2026-12-04T10:00:00Z")


# A binding created before the operator stopped (G4)


def test_a_grant_found_on_the_binding_is_adopted_not_renewed() -> None:
    # The binding was created at 08:50 for 30m, then the operator stopped before writing status.
    found = GrantTimes(NOW - timedelta(minutes=10), NOW + timedelta(minutes=20))

    plan, after = run(request(duration="30m"), AUTO, NOW, existing=found)

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.ACTIVE, "Granted")]
    assert plan.binding is Binding.PRESENT
    assert plan.wake_at == found.expires_at
    assert after.status.granted_at == found.granted_at
    assert after.status.expires_at == found.expires_at
    assert "from 2026-12-04T08:50:00Z until 2026-12-04T09:20:00Z" in plan.steps[-1].message


def test_an_approved_grant_found_on_the_binding_is_adopted_too() -> None:
    approved = NOW + timedelta(minutes=5)
    req = reviewed(pending(), ("bob", "Approve", "Accepted"), ("erin", "Approve", "Accepted"),
                   at=approved)
    found = GrantTimes(approved, approved + timedelta(minutes=30))

    _, after = run(req, TWO_APPROVALS, approved + timedelta(minutes=3), existing=found)

    assert after.status.phase is Phase.ACTIVE
    assert (after.status.granted_at, after.status.expires_at) == (found.granted_at,
                                                                  found.expires_at)


def test_a_follow_up_grant_found_on_the_binding_is_adopted_not_renewed() -> None:
    # The follow-up's binding was created at its start, then the operator stopped before writing
    # status; it is back after the earlier request ended.
    earlier = active("alice-edit", "30m")
    _, scheduled = run(request("alice-more", duration="1h", extends="alice-edit"), AUTO,
                       NOW + timedelta(minutes=5), earlier=earlier)
    found = GrantTimes(FOLLOW_UP_START, FOLLOW_UP_START + timedelta(hours=1))
    back = NOW + timedelta(minutes=40)
    _, expired = run(earlier, AUTO, back)

    plan, after = run(scheduled, AUTO, back, earlier=expired, existing=found)

    assert events(plan) == [(Phase.ACTIVE, "Granted")]
    assert plan.binding is Binding.PRESENT
    assert plan.wake_at == found.expires_at
    assert (after.status.granted_at, after.status.expires_at) == (found.granted_at,
                                                                  found.expires_at)


def test_a_binding_found_for_a_follow_up_before_its_start_is_not_adopted() -> None:
    # A binding that runs from before the follow-up's start (as the earlier extension made it,
    # to the earlier end plus the duration) is not kept: the follow-up waits for its start.
    earlier = active("alice-edit", "30m")
    found = GrantTimes(NOW + timedelta(minutes=5), NOW + timedelta(minutes=95))
    follower = request("alice-more", duration="1h", extends="alice-edit")

    plan, after = run(follower, AUTO, NOW + timedelta(minutes=6), earlier=earlier, existing=found)

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.SCHEDULED, "Scheduled")]
    assert plan.binding is Binding.ABSENT
    assert after.status.start_at == FOLLOW_UP_START
    assert after.status.granted_at is None and after.status.expires_at is None


def test_a_grant_found_already_past_its_expiry_ends_at_once() -> None:
    found = GrantTimes(NOW - timedelta(hours=2), NOW - timedelta(hours=1, minutes=30))

    plan, after = run(request(duration="30m"), AUTO, NOW, existing=found)

    assert plan.binding is Binding.ABSENT
    assert plan.wake_at is None
    assert after.status.phase is Phase.EXPIRED
    assert after.status.ended_at == NOW
    assert after.status.expires_at == found.expires_at
    assert "1h30m late because the operator was not running" in after.status.message
    # Every transition is recorded three ways (G5): the steps carry the events and audit
    # lines, so they must match the history line for line.
    assert events(plan) == [
        (Phase.PENDING, "Requested"), (Phase.ACTIVE, "Granted"), (Phase.EXPIRED, "Expired"),
    ]
    assert [(entry.phase, entry.event) for entry in after.status.history] == events(plan)

    again, _ = run(after, AUTO, NOW + timedelta(seconds=1))
    assert again.steps == []
