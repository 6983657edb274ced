"""The request lifecycle: given a request, the policies and the time, what happens next.

`decide` is pure. It returns a Plan: the transitions to record, the status to write, whether
the binding must exist or be gone, and when to look again. It never calls the API and never
reads the clock; the reconciler carries the plan out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from daypass.durations import format_duration, parse_duration
from daypass.grant import binding_name
from daypass.models import (
    AccessPolicy,
    AccessRequest,
    AccessRequestStatus,
    HistoryEntry,
    Phase,
)
from daypass.policy import Ask, Verdict, evaluate

OPERATOR = "daypass"
# Lateness above this is blamed, in the history, on the operator having been away.
LATE_AFTER = timedelta(seconds=1)
# A follow-up's binding exists this long before the earlier one's goes: no gap between them.
FOLLOW_UP_OVERLAP = timedelta(seconds=2)


class Binding(StrEnum):
    """What must be true of the request's binding once the plan is carried out."""

    PRESENT = "present"
    ABSENT = "absent"


@dataclass(frozen=True)
class Step:
    """One transition: recorded as an event, a history line and an audit line."""

    phase: Phase
    event: str
    actor: str
    message: str
    warning: bool = False


@dataclass
class Plan:
    steps: list[Step]
    status: AccessRequestStatus
    binding: Binding
    wake_at: datetime | None = None
    notes: list[str] = field(default_factory=list)


def when(moment: datetime | None) -> str:
    """A time as auditors read it: UTC, to the second."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _what(request: AccessRequest) -> str:
    return f"{request.spec.role} in {request.namespace}"


def ask_of(request: AccessRequest, duration: str | None = None) -> Ask:
    return Ask(
        requester=request.spec.requester,
        role=request.spec.role,
        namespace=request.namespace,
        duration=duration or request.spec.duration,
        reason=request.spec.reason,
        start_at=request.spec.start_at,
    )


@dataclass
class _Draft:
    """The plan being written: the new status and the transitions that led to it."""

    status: AccessRequestStatus
    now: datetime
    steps: list[Step] = field(default_factory=list)
    existing: GrantTimes | None = None
    earlier: AccessRequest | None = None

    def record(self, step: Step, *, ends: bool = False) -> None:
        self.steps.append(step)
        self.status.phase = step.phase
        self.status.message = step.message
        if ends:
            self.status.ended_at = self.now
        self.status.history.append(
            HistoryEntry(
                at=self.now,
                phase=step.phase,
                event=step.event,
                actor=step.actor,
                message=step.message,
            )
        )

    def plan(self, binding: Binding, wake_at: datetime | None = None) -> Plan:
        return Plan(self.steps, self.status, binding, wake_at)


@dataclass(frozen=True)
class GrantTimes:
    """The times on a binding that was created for this request before the operator stopped."""

    granted_at: datetime
    expires_at: datetime


def decide(
    request: AccessRequest,
    policies: Iterable[AccessPolicy],
    namespace_labels: Mapping[str, str] | None,
    now: datetime,
    existing: GrantTimes | None = None,
    earlier: AccessRequest | None = None,
) -> Plan:
    """What to do with a request now. Deciding again once the plan is carried out is a no-op.

    `existing` is the grant found on the request's binding when the binding was created but the
    status not yet written (the operator stopped in between): it is adopted, never renewed, so
    a restart cannot lengthen access.
    """
    policies = list(policies)
    draft = _Draft(request.status.model_copy(deep=True), now, existing=existing, earlier=earlier)
    status = draft.status
    who = request.spec.requester.username
    what = _what(request)

    if status.phase is not None and status.phase.ended:
        return draft.plan(Binding.ABSENT)

    if status.phase is None:
        status.requested_at = request.metadata.creation_timestamp or now
        wanted = request.spec.duration or "the policy's default duration"
        reason = f": {request.spec.reason}" if request.spec.reason else " (no reason given)"
        draft.record(
            Step(Phase.PENDING, "Requested", who, f"{who} asked for {what} for {wanted}{reason}")
        )
        verdict = evaluate(ask_of(request), policies, namespace_labels, now)
        if not verdict.allowed:
            draft.record(
                Step(
                    Phase.DENIED,
                    "Denied",
                    OPERATOR,
                    f"denied {what} to {who}: {verdict.message}",
                    warning=True,
                ),
                ends=True,
            )
            return draft.plan(Binding.ABSENT)
        follows = _follow_up_problem(request, earlier)
        if follows is not None:
            draft.record(
                Step(Phase.DENIED, "Denied", OPERATOR, f"denied {what} to {who}: {follows}",
                     warning=True),
                ends=True,
            )
            return draft.plan(Binding.ABSENT)
        status.policy = verdict.policy
        status.duration = format_duration(verdict.duration or timedelta(hours=1))
        if verdict.approvals_needed:
            return _await_approval(request, draft, verdict)
        return _start_or_schedule(request, draft)

    # A request under way: a changed or deleted policy may no longer allow it.
    verdict = recheck(request, status, policies, namespace_labels, now)
    no_longer = verdict.message

    if status.phase == Phase.PENDING:
        deadline = status.approval_deadline
        if not verdict.allowed:
            draft.record(
                Step(
                    Phase.DENIED,
                    "Denied",
                    OPERATOR,
                    f"denied {what} to {who}: {no_longer}",
                    warning=True,
                ),
                ends=True,
            )
        elif deadline is not None and now >= deadline:
            draft.record(
                Step(
                    Phase.EXPIRED,
                    "Expired",
                    OPERATOR,
                    f"no approval for {who}'s {what} by the deadline {when(deadline)};"
                    " the request has ended",
                    warning=True,
                ),
                ends=True,
            )
        elif len(approvals(status)) >= verdict.approvals_needed:
            return _start_or_schedule(request, draft)
        else:
            return draft.plan(Binding.ABSENT, wake_at=deadline)
        return draft.plan(Binding.ABSENT)

    if status.phase == Phase.SCHEDULED:
        if not verdict.allowed:
            draft.record(
                Step(
                    Phase.REVOKED,
                    "Revoked",
                    OPERATOR,
                    f"scheduled access to {what} for {who} withdrawn: {no_longer}",
                    warning=True,
                ),
                ends=True,
            )
            return draft.plan(Binding.ABSENT)
        return _start_or_schedule(request, draft)

    expires_at = status.expires_at or now
    if now >= expires_at:
        late = now - expires_at
        message = (
            f"access of {who} to {what} ended at {when(expires_at)};"
            f" binding {status.binding} removed at {when(now)}"
        )
        if late > LATE_AFTER:
            message += (
                f", {format_duration(timedelta(seconds=round(late.total_seconds())))} late"
                " because the operator was not running"
            )
        draft.record(Step(Phase.EXPIRED, "Expired", OPERATOR, message), ends=True)
        return draft.plan(Binding.ABSENT)
    if not verdict.allowed:
        draft.record(
            Step(
                Phase.REVOKED,
                "Revoked",
                OPERATOR,
                f"revoked {what} from {who} at {when(now)}: {no_longer}",
                warning=True,
            ),
            ends=True,
        )
        return draft.plan(Binding.ABSENT)
    return draft.plan(Binding.PRESENT, wake_at=expires_at)


def _await_approval(request: AccessRequest, draft: _Draft, verdict: Verdict) -> Plan:
    deadline = draft.now + verdict.approval_timeout
    draft.status.approval_deadline = deadline
    draft.record(
        Step(
            Phase.PENDING,
            "ApprovalRequired",
            OPERATOR,
            f"{_what(request)} for {request.spec.requester.username} needs"
            f" {verdict.approvals_needed} approval(s) under policy {verdict.policy}"
            f" by {when(deadline)}",
        )
    )
    return draft.plan(Binding.ABSENT, wake_at=deadline)


def _start_or_schedule(request: AccessRequest, draft: _Draft) -> Plan:
    status = draft.status
    who, what = request.spec.requester.username, _what(request)
    earlier = draft.earlier
    if earlier is not None and earlier.status.phase == Phase.REVOKED:
        # A follow-up continues a grant; once that grant was revoked there is nothing to
        # continue, whatever approvals the follow-up had.
        draft.record(Step(Phase.REVOKED, "Revoked", OPERATOR,
                          f"{'scheduled ' if status.phase == Phase.SCHEDULED else ''}access"
                          f" to {what} for {who} withdrawn: it follows {earlier.name},"
                          " which was revoked", warning=True), ends=True)
        return draft.plan(Binding.ABSENT)

    start_at = request.spec.start_at
    follows = False
    if status.phase == Phase.SCHEDULED and status.start_at is not None:
        # Once scheduled, the start stays put: the earlier request ending early or going
        # away never brings it forward.
        start_at = status.start_at
    elif (earlier is not None and earlier.status.phase == Phase.ACTIVE
            and earlier.status.expires_at is not None
            and earlier.status.expires_at - FOLLOW_UP_OVERLAP > (start_at or draft.now)):
        # A follow-up starts just before the grant it follows ends, so that access has no gap
        # at the boundary; its own duration counts from there, never longer than allowed.
        start_at = earlier.status.expires_at - FOLLOW_UP_OVERLAP
        follows = True
    if start_at is not None and start_at > draft.now:
        if status.phase != Phase.SCHEDULED:
            status.start_at = start_at
            draft.record(
                Step(
                    Phase.SCHEDULED,
                    "Scheduled",
                    OPERATOR,
                    f"{what} for {who} starts at {when(start_at)} for {status.duration} under"
                    f" policy {status.policy}"
                    + (f", just before {earlier.name} ends" if follows and earlier else ""),
                )
            )
        return draft.plan(Binding.ABSENT, wake_at=start_at)

    duration = parse_duration(status.duration) if status.duration else timedelta(hours=1)
    granted_at, expires_at = draft.now, draft.now + duration
    following = ""
    if (earlier is not None and earlier.status.phase == Phase.ACTIVE
            and earlier.status.expires_at is not None and earlier.status.expires_at > draft.now):
        following = (f"; follows {earlier.name}, which ends at"
                     f" {when(earlier.status.expires_at)}")
    if draft.existing is not None:
        # The binding was created before the operator stopped: keep its times, never renew.
        granted_at, expires_at = draft.existing.granted_at, draft.existing.expires_at
    status.granted_at, status.expires_at = granted_at, expires_at
    status.binding = binding_name(request.name)
    approved = approvals(status)
    by = f", approved by {', '.join(approved)}" if approved else ""
    draft.record(
        Step(
            Phase.ACTIVE,
            "Granted",
            OPERATOR,
            f"granted {_what(request)} to {request.spec.requester.username} under policy"
            f" {status.policy}{by} from {when(granted_at)} until {when(expires_at)}"
            f" ({format_duration(expires_at - granted_at)}); binding {status.binding}{following}",
        )
    )
    if expires_at <= draft.now:
        # An adopted grant already over: it ends now, and the steps that led here are kept so
        # that they too get their events and audit lines (G5).
        ended = decide(request.model_copy(update={"status": status}), [], None, draft.now)
        return Plan(draft.steps + ended.steps, ended.status, ended.binding, ended.wake_at)
    return draft.plan(Binding.PRESENT, wake_at=expires_at)


def grant_failed(plan: Plan, request: AccessRequest, reason: str, now: datetime) -> Plan:
    """The plan once the binding could not be created: the request fails and says why."""
    draft = _Draft(plan.status, now, list(plan.steps))
    # It never had access: no grant times and no binding name to mislead an auditor.
    draft.status.granted_at = draft.status.expires_at = draft.status.binding = None
    draft.record(Step(
        Phase.FAILED,
        "GrantFailed",
        OPERATOR,
        f"could not grant {_what(request)} to {request.spec.requester.username}: {reason}",
        warning=True,
    ), ends=True)
    return draft.plan(Binding.ABSENT)


def binding_restored(plan: Plan, request: AccessRequest, what_happened: str, now: datetime,
                     ) -> Plan:
    """The plan once an active request's binding, deleted or edited by someone, was put back."""
    draft = _Draft(plan.status, now, list(plan.steps))
    draft.record(Step(
        Phase.ACTIVE,
        "BindingRestored",
        OPERATOR,
        f"binding {plan.status.binding} of {request.spec.requester.username}'s {_what(request)}"
        f" {what_happened}; restored as granted, until {when(plan.status.expires_at)}",
        warning=True,
    ))
    return draft.plan(plan.binding, plan.wake_at)


def approvals(status: AccessRequestStatus) -> list[str]:
    """The distinct approvers whose approval counts under the request's current policy."""
    seen: list[str] = []
    for record in status.reviews:
        if (record.decision == "Approve" and record.outcome == "Accepted"
                and record.policy == status.policy and record.reviewer not in seen):
            seen.append(record.reviewer)
    return seen


def recheck(request: AccessRequest, status: AccessRequestStatus, policies: list[AccessPolicy],
            namespace_labels: Mapping[str, str] | None, now: datetime) -> Verdict:
    """Whether a request under way is still allowed, and under which policy.

    Its own policy first. Only when that one no longer allows it may another take its place,
    and only on that policy's own terms (G2): an active or scheduled grant moves only to a
    policy needing no approval; a pending one moves with its approvals started afresh, since
    approvals count for the policy they were given under. Otherwise the verdict refuses, in
    the words of the request's own policy. Updates status.policy when it moves.
    """
    ask = ask_of(request, status.duration)
    ask = Ask(ask.requester, ask.role, ask.namespace, ask.duration, ask.reason, None)
    own = next((p for p in policies if p.metadata.name == status.policy), None)
    if own is not None:
        mine = evaluate(ask, [own], namespace_labels, now)
        if mine.allowed:
            return mine
        reason = mine.message
    else:
        reason = f"policy {status.policy} was deleted"

    other = evaluate(ask, policies, namespace_labels, now)
    if other.allowed and (status.phase == Phase.PENDING or other.approvals_needed == 0):
        status.policy = other.policy
        return other
    if other.allowed:
        reason += (f"; policy {other.policy} would allow it only with"
                   f" {other.approvals_needed} approval(s) of its own")
    return Verdict(allowed=False, message=f"no policy allows it any more: {reason}")


def _follow_up_problem(request: AccessRequest, earlier: AccessRequest | None) -> str | None:
    """Why a request cannot follow the one it names in spec.extends, or None when it can."""
    name = request.spec.extends
    if not name:
        return None
    if earlier is None:
        return f"it extends {name}, but there is no request {name} in {request.namespace}"
    if (earlier.spec.requester.username != request.spec.requester.username
            or earlier.spec.role != request.spec.role):
        return (
            f"it extends {name}, which is {earlier.spec.requester.username}'s request for"
            f" {earlier.spec.role}: a follow-up must be the same requester's, for the same role"
        )
    return None


def followed_by(earlier: AccessRequest, follower: AccessRequest, now: datetime) -> Plan | None:
    """The earlier request's record that a follow-up now continues its access."""
    if earlier.status.extended_by == follower.name:
        return None
    draft = _Draft(earlier.status.model_copy(deep=True), now)
    draft.status.extended_by = follower.name
    phase = draft.status.phase or Phase.PENDING
    if follower.status.expires_at is not None:
        continues = f"continues until {when(follower.status.expires_at)}"
    else:
        continues = (f"continues from {when(follower.status.start_at)} for"
                     f" {follower.status.duration}")
    message = (
        f"followed by {follower.name}: access of {earlier.spec.requester.username} to"
        f" {_what(earlier)} {continues}"
    )
    draft.steps.append(Step(phase, "Extended", follower.spec.requester.username, message))
    draft.status.history.append(HistoryEntry(at=now, phase=phase, event="Extended",
                                             actor=follower.spec.requester.username,
                                             message=message))
    binding = Binding.PRESENT if phase == Phase.ACTIVE else Binding.ABSENT
    return draft.plan(binding,
                      wake_at=earlier.status.expires_at if binding is Binding.PRESENT else None)
