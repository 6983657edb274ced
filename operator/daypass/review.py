"""Reviews: whether an AccessReview counts, and what it does to its request.

Pure. Approve and Deny count only from approvers of the request's policy, never from the
requester (G2), and each approver counts once; Revoke counts from an approver or from the
requester giving access back. A review that does not count changes nothing but the record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from daypass.lifecycle import Step, approvals
from daypass.models import (
    AccessPolicy,
    AccessRequest,
    AccessRequestStatus,
    AccessReview,
    Decision,
    HistoryEntry,
    Outcome,
    Phase,
    ReviewRecord,
    UserInfo,
)

# Rejected reviews a request's own status records; later ones are kept on the review itself.
MAX_RECORDED_REJECTIONS = 10


@dataclass(frozen=True)
class Judgement:
    """A review's outcome, and the request's status and transitions once it is recorded."""

    outcome: Outcome
    message: str
    status: AccessRequestStatus | None = None
    steps: tuple[Step, ...] = ()


def is_approver(user: UserInfo, policy: AccessPolicy) -> bool:
    approvers = policy.spec.approval.approvers
    return user.username in approvers.users or bool(set(user.groups) & set(approvers.groups))


def judge(review: AccessReview, request: AccessRequest | None, policies: Iterable[AccessPolicy],
          now: datetime) -> Judgement:
    """Decide whether a review counts; when its request exists, record it there either way."""
    name = review.spec.request
    reviewer = review.spec.reviewer
    decision = review.spec.decision
    namespace = review.metadata.namespace

    if request is None:
        return Judgement(Outcome.REJECTED, f"there is no AccessRequest {name} in {namespace}")
    for record in request.status.reviews:
        if record.review and record.review == review.metadata.name:
            return Judgement(Outcome(record.outcome or "Rejected"), "already recorded")

    status = request.status
    phase = status.phase
    requester = request.spec.requester
    what = f"{request.spec.role} in {request.namespace}"
    policy = next((p for p in policies if p.metadata.name == status.policy), None)
    approver = policy is not None and is_approver(reviewer, policy)
    because = f": {review.spec.reason}" if review.spec.reason else ""

    refusal: str | None = None
    accepted: Step | None = None
    if phase is None:
        refusal = f"request {name} has not been looked at yet; review it again in a moment"
    elif phase.ended:
        refusal = f"request {name} has already ended ({phase.value})"
    elif decision == Decision.REVOKE:
        if reviewer.username == requester.username or approver:
            verb = "gave back" if reviewer.username == requester.username else "revoked"
            if phase in (Phase.PENDING, Phase.SCHEDULED):
                verb = "withdrew" if verb == "gave back" else "revoked"
            accepted = Step(
                Phase.REVOKED, "Revoked", reviewer.username,
                f"{reviewer.username} {verb} {requester.username}'s {what}"
                f" at {now.strftime('%Y-%m-%dT%H:%M:%SZ')}{because}",
                warning=verb == "revoked",
            )
        else:
            refusal = (
                f"{reviewer.username} may not revoke: only the requester"
                f" ({requester.username}) or an approver of policy {status.policy} may"
            )
    elif reviewer.username == requester.username:
        refusal = f"{reviewer.username} asked for this access and cannot review it (G2)"
    elif policy is None:
        refusal = f"policy {status.policy} of request {name} no longer exists"
    elif not approver:
        approvers = policy.spec.approval.approvers
        refusal = (
            f"{reviewer.username} is not an approver of policy {policy.metadata.name}"
            f" (users: {', '.join(approvers.users) or 'none'};"
            f" groups: {', '.join(approvers.groups) or 'none'})"
        )
    elif phase != Phase.PENDING:
        refusal = (
            f"request {name} is {phase.value}; only a Pending request can be approved or denied"
        )
    elif decision == Decision.APPROVE and reviewer.username in approvals(status):
        refusal = f"{reviewer.username} has already approved {name}; each approver counts once"
    elif decision == Decision.APPROVE:
        needed = policy.spec.approval.count
        have = len(approvals(status)) + 1
        accepted = Step(
            Phase.PENDING, "Approved", reviewer.username,
            f"{reviewer.username} approved {requester.username}'s {what}"
            f" ({have} of {needed}){because}",
        )
    else:
        accepted = Step(
            Phase.DENIED, "Denied", reviewer.username,
            f"{reviewer.username} denied {requester.username}'s {what}{because}",
            warning=True,
        )

    recorded_rejections = sum(1 for r in status.reviews if r.outcome == Outcome.REJECTED)
    if refusal is not None and (phase is None or phase.ended
                                or recorded_rejections >= MAX_RECORDED_REJECTIONS):
        # Recorded on the review and in the audit log only: otherwise anyone could grow a
        # request's status without bound by sending it reviews that do not count.
        return Judgement(Outcome.REJECTED, refusal)

    new = status.model_copy(deep=True)
    outcome = Outcome.REJECTED if refusal else Outcome.ACCEPTED
    new.reviews.append(ReviewRecord(
        review=review.metadata.name, reviewer=reviewer.username, decision=decision.value,
        reason=review.spec.reason, at=now, outcome=outcome, policy=status.policy,
    ))
    if refusal is not None:
        step = Step(
            phase or Phase.PENDING, "ReviewRejected", reviewer.username,
            f"{decision.value} by {reviewer.username} rejected: {refusal}", warning=True,
        )
        _append(new, step, now, ends=False, keep_phase=True)
        return Judgement(Outcome.REJECTED, refusal, new, (step,))

    assert accepted is not None
    _append(new, accepted, now, ends=accepted.phase.ended, keep_phase=False)
    return Judgement(Outcome.ACCEPTED, accepted.message, new, (accepted,))


def _append(status: AccessRequestStatus, step: Step, now: datetime, *, ends: bool,
            keep_phase: bool) -> None:
    if not keep_phase:
        status.phase = step.phase
        status.message = step.message
    if ends:
        status.ended_at = now
    status.history.append(HistoryEntry(at=now, phase=status.phase or step.phase, event=step.event,
                                       actor=step.actor, message=step.message))

