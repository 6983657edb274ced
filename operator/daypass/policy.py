"""Policy matching: does any AccessPolicy allow this ask, which one, and if none, why not.

Pure: takes the ask, the policies and the namespace's labels, and returns a verdict. It never
talks to the cluster and never reads the clock; the caller passes `now` where time matters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import re2

from daypass.durations import DurationError, format_duration, parse_duration
from daypass.labelselector import selector_matches, selector_problem
from daypass.models import AccessPolicy, RoleRef, UserInfo

DEFAULT_APPROVAL_TIMEOUT = timedelta(hours=1)
DEFAULT_MAX_START_DELAY = timedelta(days=30)
# A policy with no defaultDuration grants this long, or its maxDuration when that is shorter.
FALLBACK_DEFAULT_DURATION = timedelta(hours=1)


@dataclass(frozen=True)
class Ask:
    """What a request asks for: the inputs of policy matching."""

    requester: UserInfo
    role: RoleRef
    namespace: str
    duration: str | None = None
    reason: str | None = None
    start_at: datetime | None = None


@dataclass(frozen=True)
class Rules:
    """A usable policy with its durations parsed and its pattern compiled."""

    policy: AccessPolicy
    max_duration: timedelta
    default_duration: timedelta
    max_start_delay: timedelta
    approval_timeout: timedelta
    pattern: Any

    @property
    def name(self) -> str:
        return self.policy.metadata.name

    @property
    def approvals_needed(self) -> int:
        approval = self.policy.spec.approval
        return approval.count if approval.required else 0


@dataclass(frozen=True)
class Verdict:
    """The outcome of matching one ask against every policy."""

    allowed: bool
    message: str
    policy: str | None = None
    duration: timedelta | None = None
    approvals_needed: int = 0
    approval_timeout: timedelta = DEFAULT_APPROVAL_TIMEOUT
    refusals: dict[str, str] = field(default_factory=dict)


def compile_pattern(pattern: str) -> Any:
    """A reason pattern, compiled with RE2: matching takes time linear in the reason, so no
    reason can stall the operator (Python's own engine backtracks, exponentially at worst).
    RE2 is also the syntax of CEL's matches(), the API server's own regular expressions."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile(pattern, options)


def compile_policy(policy: AccessPolicy) -> Rules | str:
    """The policy's parsed rules, or a message saying why the policy cannot be used."""
    spec = policy.spec
    try:
        max_duration = parse_duration(spec.max_duration)
        default_duration = (
            parse_duration(spec.default_duration)
            if spec.default_duration
            else min(FALLBACK_DEFAULT_DURATION, max_duration)
        )
        max_start_delay = (
            parse_duration(spec.max_start_delay)
            if spec.max_start_delay
            else DEFAULT_MAX_START_DELAY
        )
        approval_timeout = (
            parse_duration(spec.approval.timeout)
            if spec.approval.timeout
            else DEFAULT_APPROVAL_TIMEOUT
        )
    except DurationError as error:
        return str(error)
    if default_duration > max_duration:
        return (
            f"defaultDuration {spec.default_duration} is longer than maxDuration"
            f" {spec.max_duration}"
        )

    pattern = None
    if spec.reason.pattern:
        try:
            pattern = compile_pattern(spec.reason.pattern)
        except re2.error as error:
            why = error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else (
                str(error))
            return f"reason.pattern {spec.reason.pattern!r} is not a regular expression: {why}"

    if spec.namespaces.selector is not None:
        problem = selector_problem(spec.namespaces.selector)
        if problem:
            return f"namespaces.{problem}"

    approvers = spec.approval.approvers
    if spec.approval.required and not (approvers.users or approvers.groups):
        return "approval is required but no approvers (users or groups) are named"

    return Rules(
        policy=policy,
        max_duration=max_duration,
        default_duration=default_duration,
        max_start_delay=max_start_delay,
        approval_timeout=approval_timeout,
        pattern=pattern,
    )


def _names(values: Iterable[object]) -> str:
    listed = ", ".join(str(value) for value in values)
    return listed or "none"


def _check(
    rules: Rules,
    ask: Ask,
    labels: Mapping[str, str] | None,
    now: datetime,
) -> tuple[int, str | None, timedelta | None]:
    """How many checks the ask passes under one policy, in order, and the first refusal."""
    spec = rules.policy.spec
    name = rules.name
    who = ask.requester

    if who.username not in spec.subjects.users and not set(who.groups) & set(spec.subjects.groups):
        return (
            0,
            (
                f"{who.username} is not among the subjects of policy {name}"
                f" (users: {_names(spec.subjects.users)}; groups: {_names(spec.subjects.groups)})"
            ),
            None,
        )

    if ask.role not in spec.roles:
        return (
            1,
            (f"{ask.role} is not among the roles of policy {name} ({_names(spec.roles)})"),
            None,
        )

    in_names = ask.namespace in spec.namespaces.names
    selector = spec.namespaces.selector
    in_selector = selector is not None and labels is not None and selector_matches(selector, labels)
    if not (in_names or in_selector):
        where = f"names: {_names(spec.namespaces.names)}"
        if selector is not None:
            where += f"; or labels matching {selector.wire()}"
        return (
            2,
            f"namespace {ask.namespace} is not among the namespaces of policy {name} ({where})",
            None,
        )

    if ask.duration:
        try:
            duration = parse_duration(ask.duration)
        except DurationError as error:
            return 3, str(error), None
    else:
        duration = rules.default_duration
    if duration > rules.max_duration:
        return (
            3,
            (
                f"{format_duration(duration)} is longer than maxDuration {spec.max_duration}"
                f" of policy {name}"
            ),
            None,
        )

    reason = (ask.reason or "").strip()
    if spec.reason.required and not reason:
        return 4, f"a reason is required by policy {name}", duration
    if rules.pattern is not None and not rules.pattern.match(reason):
        return (
            4,
            (
                f"reason {reason!r} does not match the pattern {spec.reason.pattern!r}"
                f" of policy {name}"
            ),
            duration,
        )

    if ask.start_at is not None and ask.start_at - now > rules.max_start_delay:
        return (
            5,
            (
                f"startAt {ask.start_at.isoformat()} is further ahead than maxStartDelay"
                f" {format_duration(rules.max_start_delay)} of policy {name}"
            ),
            duration,
        )

    return 6, None, duration


def evaluate(
    ask: Ask,
    policies: Iterable[AccessPolicy],
    namespace_labels: Mapping[str, str] | None,
    now: datetime,
) -> Verdict:
    """Match an ask against all policies.

    When several allow it, the one needing the fewest approvals wins, ties broken by name.
    When none does, the message is the refusal of the closest policy: the one whose checks
    (subject, role, namespace, duration, reason, start) the ask got furthest through.
    `namespace_labels` is None when the namespace is unknown: only listed names match then.
    """
    allowed: list[tuple[Rules, timedelta]] = []
    refusals: dict[str, str] = {}
    closest: tuple[int, str, str] | None = None
    unusable: list[str] = []

    for policy in sorted(policies, key=lambda p: p.metadata.name):
        rules = compile_policy(policy)
        if isinstance(rules, str):
            unusable.append(f"policy {policy.metadata.name} cannot be used: {rules}")
            continue
        passed, refusal, duration = _check(rules, ask, namespace_labels, now)
        if refusal is None and duration is not None:
            allowed.append((rules, duration))
            continue
        refusals[rules.name] = refusal or "refused"
        if closest is None or passed > closest[0]:
            closest = (passed, rules.name, refusals[rules.name])

    if allowed:
        rules, duration = min(allowed, key=lambda pair: (pair[0].approvals_needed, pair[0].name))
        return Verdict(
            allowed=True,
            message=f"allowed by policy {rules.name}",
            policy=rules.name,
            duration=duration,
            approvals_needed=rules.approvals_needed,
            approval_timeout=rules.approval_timeout,
            refusals=refusals,
        )

    if closest is not None:
        message = closest[2]
        if unusable:
            message += f" (also: {'; '.join(unusable)})"
        return Verdict(allowed=False, message=message, policy=None, refusals=refusals)
    if unusable:
        return Verdict(allowed=False, message="; ".join(unusable), refusals=refusals)
    return Verdict(allowed=False, message="no AccessPolicy exists, so nothing can be granted")
