"""The request lifecycle: what `decide` does with a request at a given moment.

Every test passes `now` explicitly; nothing sleeps and nothing reads the clock. Carrying a plan
out is simulated the way the reconciler does it: the plan's status is written to the request
and read back through the wire format.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from builders import NOW, policy, request
from daypass.grant import binding_name
from daypass.lifecycle import Binding, Plan, decide
from daypass.models import AccessPolicy, AccessRequest, Phase

ONE_HOUR = timedelta(hours=1)
AUTO = [policy()]
WITH_APPROVAL = [
    policy(
        approval={"required": True, "approvers": {"groups": ["sre-leads"]}, "timeout": "2h"},
    )
]


def carried_out(req: AccessRequest, plan: Plan) -> AccessRequest:
    """The request as it reads back once the plan's status is written."""
    return AccessRequest.model_validate(req.wire() | {"status": plan.status.wire()})


def run(
    req: AccessRequest,
    policies: Sequence[AccessPolicy] = AUTO,
    now: datetime = NOW,
    labels: dict[str, str] | None = None,
) -> tuple[Plan, AccessRequest]:
    plan = decide(req, list(policies), labels, now)
    return plan, carried_out(req, plan)


def events(plan: Plan) -> list[tuple[Phase, str]]:
    return [(step.phase, step.event) for step in plan.steps]


def history(req: AccessRequest) -> list[tuple[Phase, str | None, str | None]]:
    return [(entry.phase, entry.event, entry.actor) for entry in req.status.history]


def active(duration: str = "30m", **spec: Any) -> AccessRequest:
    """An auto-approved request, granted at NOW."""
    _, granted = run(request(duration=duration, **spec))
    assert granted.status.phase is Phase.ACTIVE
    return granted


# A new request


def test_an_auto_approved_request_is_granted_at_once() -> None:
    plan, after = run(request(duration="30m", reason="INC-4211 payments API returns 500"))

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.ACTIVE, "Granted")]
    assert [step.actor for step in plan.steps] == ["alice", "daypass"]
    assert plan.binding is Binding.PRESENT
    assert plan.wake_at == NOW + timedelta(minutes=30)

    status = after.status
    assert status.phase is Phase.ACTIVE
    assert status.policy == "developers-edit"
    assert status.duration == "30m"
    assert status.requested_at == NOW
    assert status.granted_at == NOW
    assert status.expires_at == NOW + timedelta(minutes=30)
    assert status.ended_at is None
    assert status.binding == binding_name("alice-edit")
    assert history(after) == [
        (Phase.PENDING, "Requested", "alice"),
        (Phase.ACTIVE, "Granted", "daypass"),
    ]
    assert all(entry.at == NOW for entry in status.history)
    assert status.message == plan.steps[-1].message


def test_the_requested_message_says_who_asked_for_what_and_why() -> None:
    plan, _ = run(request(duration="30m", reason="INC-4211 payments API returns 500"))

    assert plan.steps[0].message == (
        "alice asked for ClusterRole/edit in team-a for 30m: INC-4211 payments API returns 500"
    )


def test_the_granted_message_names_policy_times_and_binding() -> None:
    plan, _ = run(request(duration="30m"))

    granted = plan.steps[-1].message
    assert "developers-edit" in granted
    assert "2026-12-04T09:00:00Z" in granted and "2026-12-04T09:30:00Z" in granted
    assert "daypass-alice-edit" in granted


def test_without_a_duration_the_policy_default_is_granted() -> None:
    _, after = run(request())

    assert after.status.duration == "1h"
    assert after.status.expires_at == NOW + ONE_HOUR


def test_a_request_no_policy_allows_is_denied_and_ends_at_once() -> None:
    plan, after = run(request(username="dave", groups=[]))

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.DENIED, "Denied")]
    assert plan.steps[-1].warning
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at is None
    assert after.status.phase is Phase.DENIED
    assert after.status.ended_at == NOW
    assert after.status.granted_at is None and after.status.binding is None
    assert "dave is not among the subjects of policy developers-edit" in after.status.message


def test_a_request_longer_than_max_duration_is_denied_with_the_policy_refusal() -> None:
    _, after = run(request(duration="8h"))

    assert after.status.phase is Phase.DENIED
    assert after.status.message == (
        "denied ClusterRole/edit in team-a to alice:"
        " 8h is longer than maxDuration 4h of policy developers-edit"
    )


def test_a_request_needing_approval_waits_until_a_deadline() -> None:
    plan, after = run(request(duration="30m"), WITH_APPROVAL)

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.PENDING, "ApprovalRequired")]
    assert plan.binding is Binding.ABSENT
    assert after.status.phase is Phase.PENDING
    assert after.status.approval_deadline == NOW + timedelta(hours=2)
    assert plan.wake_at == after.status.approval_deadline
    assert after.status.granted_at is None
    assert "needs 1 approval(s) under policy developers-edit by 2026-12-04T11:00:00Z" in (
        plan.steps[-1].message
    )


def test_the_request_given_to_decide_is_not_changed() -> None:
    req = request(duration="30m")

    decide(req, AUTO, None, NOW)

    assert req.status.phase is None
    assert req.status.history == []


# Pending


def test_pending_before_its_deadline_stays_pending() -> None:
    _, pending = run(request(), WITH_APPROVAL)

    plan, after = run(pending, WITH_APPROVAL, now=NOW + timedelta(hours=1, minutes=59))

    assert plan.steps == []
    assert after.status.phase is Phase.PENDING
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at == NOW + timedelta(hours=2)


def test_pending_past_its_deadline_expires() -> None:
    _, pending = run(request(), WITH_APPROVAL)
    later = NOW + timedelta(hours=2)

    plan, after = run(pending, WITH_APPROVAL, now=later)

    assert events(plan) == [(Phase.EXPIRED, "Expired")]
    assert plan.binding is Binding.ABSENT
    assert after.status.phase is Phase.EXPIRED
    assert after.status.ended_at == later
    assert after.status.granted_at is None
    assert "no approval" in after.status.message and "2026-12-04T11:00:00Z" in after.status.message
    assert [entry.at for entry in after.status.history] == [NOW, NOW, later]


def test_pending_whose_policy_is_deleted_is_denied() -> None:
    _, pending = run(request(), WITH_APPROVAL)

    plan, after = run(pending, [], now=NOW + timedelta(minutes=5))

    assert events(plan) == [(Phase.DENIED, "Denied")]
    assert after.status.phase is Phase.DENIED
    assert "no policy allows it any more" in after.status.message


# Scheduled


def test_a_future_start_is_scheduled_then_granted_from_the_start() -> None:
    start = NOW + timedelta(hours=3)
    req = request(duration="30m", startAt=start.isoformat())

    plan, scheduled = run(req)

    assert events(plan) == [(Phase.PENDING, "Requested"), (Phase.SCHEDULED, "Scheduled")]
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at == start
    assert scheduled.status.phase is Phase.SCHEDULED
    assert scheduled.status.start_at == start
    assert scheduled.status.granted_at is None

    plan, waiting = run(scheduled, now=start - timedelta(seconds=1))
    assert plan.steps == [] and waiting.status.phase is Phase.SCHEDULED
    assert plan.wake_at == start

    plan, granted = run(scheduled, now=start)

    assert events(plan) == [(Phase.ACTIVE, "Granted")]
    assert plan.binding is Binding.PRESENT
    assert granted.status.granted_at == start
    assert granted.status.expires_at == start + timedelta(minutes=30)
    assert [entry.phase for entry in granted.status.history] == [
        Phase.PENDING,
        Phase.SCHEDULED,
        Phase.ACTIVE,
    ]


def test_a_scheduled_grant_started_late_still_lasts_its_full_duration() -> None:
    # The clock starts when access starts (SPEC: expiresAt is grantedAt + duration).
    start = NOW + timedelta(hours=3)
    _, scheduled = run(request(duration="30m", startAt=start.isoformat()))
    late_start = start + timedelta(minutes=2)

    _, granted = run(scheduled, now=late_start)

    assert granted.status.granted_at == late_start
    assert granted.status.expires_at == late_start + timedelta(minutes=30)


def test_a_scheduled_request_whose_policy_is_deleted_is_revoked_before_it_starts() -> None:
    start = NOW + timedelta(hours=3)
    _, scheduled = run(request(startAt=start.isoformat()))

    plan, after = run(scheduled, [], now=start)

    assert events(plan) == [(Phase.REVOKED, "Revoked")]
    assert plan.binding is Binding.ABSENT
    assert after.status.granted_at is None
    assert after.status.ended_at == start


# Active


def test_active_before_expiry_keeps_its_binding() -> None:
    granted = active("30m")

    plan, after = run(granted, now=NOW + timedelta(minutes=29))

    assert plan.steps == []
    assert plan.binding is Binding.PRESENT
    assert plan.wake_at == NOW + timedelta(minutes=30)
    assert after.status == granted.status


def test_active_at_expiry_expires_on_time_without_blame() -> None:
    granted = active("30m")
    expires = NOW + timedelta(minutes=30)

    plan, after = run(granted, now=expires + timedelta(milliseconds=500))

    assert events(plan) == [(Phase.EXPIRED, "Expired")]
    assert not plan.steps[0].warning
    assert plan.binding is Binding.ABSENT
    assert after.status.phase is Phase.EXPIRED
    assert after.status.ended_at == expires + timedelta(milliseconds=500)
    assert "ended at 2026-12-04T09:30:00Z" in after.status.message
    assert "late" not in after.status.message


def test_expiry_exactly_one_second_late_is_not_blamed_on_the_operator() -> None:
    granted = active("30m")

    _, after = run(granted, now=NOW + timedelta(minutes=30, seconds=1))

    assert "late" not in after.status.message


def test_expiry_long_after_expires_at_says_how_late_and_why() -> None:
    granted = active("30m")

    _, after = run(granted, now=NOW + timedelta(minutes=40))

    assert after.status.phase is Phase.EXPIRED
    assert "10m late because the operator was not running" in after.status.message


def test_active_whose_policy_is_deleted_is_revoked() -> None:
    granted = active("30m")
    later = NOW + timedelta(minutes=5)

    plan, after = run(granted, [], now=later)

    assert events(plan) == [(Phase.REVOKED, "Revoked")]
    assert plan.steps[0].warning
    assert plan.binding is Binding.ABSENT
    assert after.status.ended_at == later
    assert "no policy allows it any more" in after.status.message


def test_active_whose_policy_no_longer_allows_it_is_revoked() -> None:
    granted = active("2h")
    tightened = [policy(maxDuration="1h", defaultDuration="30m")]

    plan, after = run(granted, tightened, now=NOW + timedelta(minutes=5))

    assert events(plan) == [(Phase.REVOKED, "Revoked")]
    assert "2h is longer than maxDuration 1h of policy developers-edit" in after.status.message


def test_active_whose_policy_dropped_the_role_is_revoked() -> None:
    granted = active("30m")
    without_edit = [policy(roles=[{"kind": "Role", "name": "debugger"}])]

    _, after = run(granted, without_edit, now=NOW + timedelta(minutes=5))

    assert after.status.phase is Phase.REVOKED


def test_active_still_allowed_by_another_policy_stays_active_and_names_it() -> None:
    granted = active("30m")

    plan, after = run(granted, [policy("platform-edit")], now=NOW + timedelta(minutes=5))

    assert plan.steps == []
    assert plan.binding is Binding.PRESENT
    assert after.status.phase is Phase.ACTIVE
    assert after.status.policy == "platform-edit"


def test_expiry_takes_precedence_over_revocation() -> None:
    granted = active("30m")

    _, after = run(granted, [], now=NOW + timedelta(minutes=31))

    assert after.status.phase is Phase.EXPIRED


# Ended requests


@pytest.mark.parametrize("phase", [Phase.EXPIRED, Phase.DENIED, Phase.REVOKED, Phase.FAILED])
def test_an_ended_request_never_changes_and_needs_no_binding(phase: Phase) -> None:
    ended = request(
        duration="30m",
        status={
            "phase": phase.value,
            "policy": "developers-edit",
            "endedAt": "2026-12-04T08:00:00Z",
            "history": [{"at": "2026-12-04T08:00:00Z", "phase": phase.value}],
        },
    )

    # Policies allow it and time has passed: it is still never granted again.
    plan, after = run(ended, AUTO, now=NOW + timedelta(days=1))

    assert plan.steps == []
    assert plan.binding is Binding.ABSENT
    assert plan.wake_at is None
    assert after.status == ended.status


# Idempotence


SCHEDULED_START = (NOW + timedelta(hours=3)).isoformat()


@pytest.mark.parametrize(
    ("req", "policies"),
    [
        pytest.param(request(duration="30m"), AUTO, id="granted"),
        pytest.param(request(duration="8h"), AUTO, id="denied"),
        pytest.param(request(), WITH_APPROVAL, id="awaiting approval"),
        pytest.param(request(startAt=SCHEDULED_START), AUTO, id="scheduled"),
    ],
)
def test_deciding_again_on_a_carried_out_plan_changes_nothing(
    req: AccessRequest, policies: list[AccessPolicy]
) -> None:
    first, after = run(req, policies)
    assert first.steps

    again, after_again = run(after, policies)

    assert again.steps == []
    assert after_again.status == after.status
    assert again.binding is first.binding
    assert again.wake_at == first.wake_at


def test_each_transition_is_recorded_once_across_a_whole_life() -> None:
    start = NOW + timedelta(hours=1)
    req = request(duration="30m", startAt=start.isoformat())
    moments = [NOW, NOW, start, start, start + timedelta(minutes=30), start + timedelta(hours=5)]

    for moment in moments:
        _, req = run(req, now=moment)

    assert [entry.event for entry in req.status.history] == [
        "Requested",
        "Scheduled",
        "Granted",
        "Expired",
    ]
