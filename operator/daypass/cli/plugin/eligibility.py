"""What a caller may ask for under the policies, and which requests wait for their review.

Pure: takes policies, requests and the caller's identity; never calls the API. `request` checks
an ask here, with the operator's own matching, so that a refusal comes before anything is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from daypass.durations import format_duration
from daypass.models import (
    AccessPolicy,
    AccessRequest,
    Approval,
    Namespaces,
    Outcome,
    Phase,
    RoleKind,
    Subjects,
    UserInfo,
)
from daypass.policy import Ask, Verdict, compile_policy, evaluate


def names(subjects: Subjects, user: UserInfo) -> bool:
    """Whether a user is among subjects, by name or through one of their groups."""
    return user.username in subjects.users or bool(set(user.groups) & set(subjects.groups))


def is_subject(policy: AccessPolicy, user: UserInfo) -> bool:
    return names(policy.spec.subjects, user)


def is_approver(policy: AccessPolicy, user: UserInfo) -> bool:
    approval = policy.spec.approval
    return approval.required and names(approval.approvers, user)


def describe_subjects(subjects: Subjects) -> str:
    parts = []
    if subjects.users:
        parts.append(f"users {', '.join(subjects.users)}")
    if subjects.groups:
        parts.append(f"groups {', '.join(subjects.groups)}")
    return "; ".join(parts) or "nobody"


def describe_namespaces(namespaces: Namespaces) -> str:
    parts = list(namespaces.names)
    selector = namespaces.selector
    if selector is not None:
        terms = [f"{key}={value}" for key, value in selector.match_labels.items()]
        for requirement in selector.match_expressions:
            values = f" ({','.join(requirement.values)})" if requirement.values else ""
            terms.append(f"{requirement.key} {requirement.operator}{values}")
        parts.append(f"labelled {', '.join(terms)}" if terms else "any namespace")
    return ", ".join(parts) or "none"


def describe_approval(approval: Approval) -> str:
    if not approval.required:
        return "no"
    within = f" within {approval.timeout}" if approval.timeout else ""
    return f"{approval.count} from {describe_subjects(approval.approvers)}{within}"


@dataclass(frozen=True)
class Offer:
    """One policy naming the caller: what it lets them ask for, where, how long, approved how."""

    policy: str
    roles: list[str]
    namespaces: str
    max_duration: str
    default_duration: str
    reason: str
    approval: str
    problem: str | None = None

    def wire(self) -> dict[str, Any]:
        return {_camel(key): value for key, value in asdict(self).items() if value is not None}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def offers(policies: Iterable[AccessPolicy], user: UserInfo) -> list[Offer]:
    """The policies naming the user, in name order; an unusable one says why it allows nothing."""
    found = []
    for policy in sorted(policies, key=lambda p: p.metadata.name):
        if not is_subject(policy, user):
            continue
        spec = policy.spec
        rules = compile_policy(policy)
        reason = "required" if spec.reason.required else "optional"
        if spec.reason.pattern:
            reason += f", matching {spec.reason.pattern}"
        found.append(Offer(
            policy=policy.metadata.name,
            roles=[str(role) for role in spec.roles],
            namespaces=describe_namespaces(spec.namespaces),
            max_duration=spec.max_duration,
            default_duration=(
                spec.default_duration
                or (format_duration(rules.default_duration) if not isinstance(rules, str) else "-")
            ),
            reason=reason,
            approval=describe_approval(spec.approval),
            problem=rules if isinstance(rules, str) else None,
        ))
    return found


def infer_kind(role: str, policies: Iterable[AccessPolicy], user: UserInfo) -> RoleKind:
    """The kind of a role written without one: the only kind the user's policies name it with.

    ClusterRole when the policies name it with both kinds or not at all, as it is the usual one.
    """
    kinds = {
        granted.kind
        for policy in policies
        if is_subject(policy, user)
        for granted in policy.spec.roles
        if granted.name == role
    }
    if len(kinds) == 1:
        return kinds.pop()
    return RoleKind.CLUSTER_ROLE


def check(ask: Ask, policies: list[AccessPolicy], labels: Mapping[str, str] | None,
          now: datetime) -> Verdict:
    """The operator's verdict on an ask, as far as the caller can tell it.

    Who may read namespaces is up to the cluster: when the labels are unknown (None), a policy
    choosing namespaces by label is given the benefit of the doubt, and the operator decides.
    """
    if labels is None:
        policies = [_assuming_selector_matches(policy, ask.namespace) for policy in policies]
    return evaluate(ask, policies, labels, now)


def _assuming_selector_matches(policy: AccessPolicy, namespace: str) -> AccessPolicy:
    chosen = policy.spec.namespaces
    if chosen.selector is None or namespace in chosen.names:
        return policy
    widened = chosen.model_copy(update={"names": [*chosen.names, namespace]})
    spec = policy.spec.model_copy(update={"namespaces": widened})
    return policy.model_copy(update={"spec": spec})


def refusal(verdict: Verdict, ask: Ask, policies: Iterable[AccessPolicy]) -> str:
    """Why an ask would be denied, and what would be right instead."""
    message = verdict.message
    closest = next((
        policy for policy in policies
        if verdict.refusals.get(policy.metadata.name) == verdict.message
    ), None)
    if closest is not None and not (ask.reason or "").strip() and closest.spec.reason.required:
        pattern = closest.spec.reason.pattern
        shape = f" matching {pattern!r}" if pattern else ""
        message += f": pass --reason TEXT, a reason{shape}"
    return f"{message}\n(see what you may ask for with `kubectl daypass eligible`)"


def awaits_review_by(request: AccessRequest, policies: Mapping[str, AccessPolicy],
                     user: UserInfo) -> bool:
    """Whether a request is pending under a policy naming the user as approver.

    Never the user's own request (nobody approves their own), nor one they already reviewed.
    """
    if request.status.phase != Phase.PENDING or request.spec.requester.username == user.username:
        return False
    policy = policies.get(request.status.policy or "")
    if policy is None or not is_approver(policy, user):
        return False
    return not any(
        review.reviewer == user.username and review.outcome != Outcome.REJECTED
        for review in request.status.reviews
    )
