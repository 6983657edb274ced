"""The lifecycle after a request is looked at: approvals, follow-ups and grants found after a crash.

Every test passes `now`; nothing sleeps. Reviews are written into the status the way `judge`
records them, and each plan's status is read back through the wire format, as the reconciler
writes and reads it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import NOW, policy, request
from daypass.lifecycle import Binding, GrantTimes, Plan, approvals, decide, followed_by
from daypass.models import AccessPolicy, AccessRequest, Phase

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


def reviewed(req: AccessRequest, *reviews: tuple[str, str, str], at: datetime) -> AccessRequest:
    """The request with (reviewer, decision, outcome) records added to its status."""
    records = [
        {"review": f"{req.name}-{i}", "reviewer": who, "decision": decision, "outcome": outcome,
         "at": at.strftime(STAMP)}
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


def test_a_follow_up_granted_while_the_earlier_runs_adds_its_duration_to_the_earlier_end() -> None:
    earlier = active("alice-edit", "30m")
    asked = NOW + timedelta(minutes=20)
    follower = request("alice-more", duration="1h", extends="alice-edit")

    plan, after = run(follower, AUTO, asked, earlier=earlier)

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.ACTIVE, "Granted")]
    assert after.status.granted_at == asked
    assert after.status.expires_at == NOW + timedelta(minutes=30) + timedelta(hours=1)
    assert plan.wake_at == after.status.expires_at
    assert plan.steps[-1].message.endswith(
        "; follows alice-edit, which ends at 2026-12-04T09:30:00Z, and adds 1h"
    )


def test_a_follow_up_needing_approval_counts_from_the_earlier_end_when_granted() -> None:
    earlier = active("alice-edit", "30m")
    _, follower = run(request("alice-more", duration="30m", extends="alice-edit"),
                      TWO_APPROVALS, earlier=earlier)
    assert follower.status.phase is Phase.PENDING
    approved = NOW + timedelta(minutes=10)
    follower = reviewed(follower, ("bob", "Approve", "Accepted"),
                        ("erin", "Approve", "Accepted"), at=approved)

    _, after = run(follower, TWO_APPROVALS, approved, earlier=earlier)

    assert after.status.phase is Phase.ACTIVE
    assert after.status.expires_at == NOW + timedelta(minutes=30) + timedelta(minutes=30)


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

    assert after.status.phase is Phase.ACTIVE
    assert after.status.granted_at == now
    assert after.status.expires_at == now + timedelta(hours=1)
    assert "follows" not in plan.steps[-1].message


def test_the_earlier_request_records_its_follow_up_once() -> None:
    earlier = active("alice-edit", "30m")
    asked = NOW + timedelta(minutes=20)
    _, follower = run(request("alice-more", duration="1h", extends="alice-edit"), AUTO, asked,
                      earlier=earlier)

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
        " until 2026-12-04T10:30:00Z"
    )

    assert followed_by(noted, follower, asked + timedelta(seconds=1)) is None


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


def test_an_adopted_grant_beats_a_follow_up_extension() -> None:
    earlier = active("alice-edit", "30m")
    found = GrantTimes(NOW + timedelta(minutes=5), NOW + timedelta(minutes=95))
    follower = request("alice-more", duration="1h", extends="alice-edit")

    _, after = run(follower, AUTO, NOW + timedelta(minutes=6), earlier=earlier, existing=found)

    assert after.status.expires_at == found.expires_at


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
