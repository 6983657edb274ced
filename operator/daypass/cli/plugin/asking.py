"""`request` and `extend`: ask for a role, check the ask first, and wait for the answer.

An ask that no policy allows is refused here, with the operator's own matching, before anything
is created. The operator still decides; `--wait` reports its decision. Never sets the requester:
the API server's admission writes who is asking.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from daypass.cli.kubectl import ROLE_KINDS
from daypass.cli.plugin.eligibility import check, describe_approval, infer_kind, refusal
from daypass.cli.plugin.output import warn
from daypass.cli.plugin.session import CommandError, Session
from daypass.durations import DurationError, format_duration, parse_duration
from daypass.lifecycle import when
from daypass.models import (
    API_VERSION,
    AccessPolicy,
    AccessRequest,
    Phase,
    RoleKind,
    RoleRef,
    UserInfo,
)
from daypass.policy import Ask

# The operator answers within milliseconds; a person waiting notices a quarter of a second.
POLL = 0.25
# A generated name is the prefix and five random characters, within the 253 of a DNS subdomain.
PREFIX_LIMIT = 253 - 6


def parse_role(text: str, kind: str | None) -> tuple[RoleKind | None, str]:
    """ROLE as written on the command line: `edit`, `clusterrole/edit` or `role/debugger`."""
    if "/" not in text:
        return (RoleKind(kind) if kind else None), text
    prefix, _, name = text.partition("/")
    written = ROLE_KINDS.get(prefix.lower())
    if written is None:
        raise CommandError(
            f"unknown role kind {prefix!r} in {text!r}: write ROLE, clusterrole/ROLE or role/ROLE"
        )
    if not name or "/" in name:
        raise CommandError(f"{text!r} names no role: write clusterrole/edit or role/debugger")
    if kind is not None and kind != written:
        raise CommandError(f"{text!r} is a {written} but --kind says {kind}: give the kind once")
    return RoleKind(written), name


def start_time(text: str, now: datetime) -> datetime:
    """--start-at: a time (local when it has no zone), or a duration from now."""
    try:
        return now + parse_duration(text)
    except DurationError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as error:
        raise CommandError(
            f"--start-at {text!r} is neither a time such as 2026-12-04T09:00:00Z nor a duration"
            " from now such as 2h"
        ) from error
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(UTC)


def manifest(user: UserInfo, namespace: str, role: RoleRef, *, name: str | None,
             duration: str | None, reason: str | None, start_at: datetime | None,
             extends: str | None = None) -> dict[str, Any]:
    """The AccessRequest to create, without a requester: admission writes it."""
    spec: dict[str, Any] = {"role": role.wire()}
    if duration:
        spec["duration"] = duration
    if reason:
        spec["reason"] = reason
    if start_at is not None:
        spec["startAt"] = when(start_at)
    if extends:
        spec["extends"] = extends
    prefix = f"{user.username}-{role.name}".lower()
    # Names must be DNS subdomains: a username such as system:serviceaccount:x:y is not one.
    prefix = "".join(c if c.isalnum() or c in "-." else "-" for c in prefix).strip("-.")
    metadata = {"name": name} if name else {"generateName": f"{prefix[:PREFIX_LIMIT]}-"}
    return {"apiVersion": API_VERSION, "kind": "AccessRequest", "metadata": metadata,
            "spec": spec}


def checked(session: Session, ask: Ask, policies: list[AccessPolicy] | None,
            now: datetime) -> str:
    """What the operator will say, as far as can be told: refuses what no policy allows."""
    if policies is None:
        return "the operator will decide (you may not read the policies)"
    verdict = check(ask, policies, session.namespace_labels(ask.namespace), now)
    if not verdict.allowed:
        raise CommandError(refusal(verdict, ask, policies))
    policy = next(p for p in policies if p.metadata.name == verdict.policy)
    wanted = format_duration(verdict.duration) if verdict.duration else "its default duration"
    said = f"{ask.role} in {ask.namespace} for {wanted} under policy {verdict.policy}"
    if verdict.approvals_needed:
        said += f"; approval needed: {describe_approval(policy.spec.approval)}"
    return said


def request(args: argparse.Namespace) -> int:
    session = Session(args.kubeconfig, args.context, args.namespace)
    now = datetime.now(UTC)
    kind, name = parse_role(args.role, args.kind)
    start_at = start_time(args.start_at, now) if args.start_at else None
    user = session.identity()
    policies = session.policies(required=False)
    role = RoleRef(kind=kind or infer_kind(name, policies or [], user), name=name)
    ask = Ask(requester=user, role=role, namespace=session.namespace, duration=args.duration,
              reason=args.reason, start_at=start_at)
    said = checked(session, ask, policies, now)

    body = manifest(user, session.namespace, role, name=args.name, duration=args.duration,
                    reason=args.reason, start_at=start_at)
    created = session.create_request(session.namespace, body)
    created_name = created["metadata"]["name"]
    starts = f", starting at {when(start_at)}" if start_at else ""
    print(f"accessrequest {session.namespace}/{created_name} created: {said}{starts}")
    if not args.wait:
        return 0
    return wait(session, session.namespace, created_name, args.timeout)


def extend(args: argparse.Namespace) -> int:
    session = Session(args.kubeconfig, args.context, args.namespace)
    now = datetime.now(UTC)
    namespace = session.namespace
    original = AccessRequest.model_validate(session.get_request(namespace, args.name))
    user = session.identity()
    phase = original.status.phase
    role = original.spec.role
    if original.spec.requester.username != user.username:
        raise CommandError(
            f"accessrequest {namespace}/{args.name} is {original.spec.requester.username}'s:"
            f" only its requester can extend it; ask for your own access with"
            f" `kubectl daypass request {role.kind.lower()}/{role.name} -n {namespace}`"
        )
    if phase is not None and phase.ended:
        raise CommandError(
            f"accessrequest {namespace}/{args.name} has ended ({phase.value} at"
            f" {when(original.status.ended_at)}), so there is nothing to extend: ask anew with"
            f" `kubectl daypass request {role.kind.lower()}/{role.name} -n {namespace}"
            " --for DURATION --reason TEXT`"
        )

    reason = args.reason or original.spec.reason
    ask = Ask(requester=user, role=role, namespace=namespace, duration=args.duration,
              reason=reason)
    said = checked(session, ask, session.policies(required=False), now)
    body = manifest(user, namespace, role, name=None, duration=args.duration, reason=reason,
                    start_at=None, extends=args.name)
    created = session.create_request(namespace, body)
    created_name = created["metadata"]["name"]
    print(f"accessrequest {namespace}/{created_name} created, extending {args.name}: {said}")
    if not args.wait:
        return 0
    # A follow-up may be scheduled to start when the access it extends ends: that is its answer.
    return wait(session, namespace, created_name, args.timeout,
                settled={Phase.ACTIVE, Phase.SCHEDULED})


def wait(session: Session, namespace: str, name: str, timeout: str,
         settled: Collection[Phase] = (Phase.ACTIVE,)) -> int:
    """Wait until the request is Active (or another settled phase) or has ended, and say which.

    Progress goes to stderr, the answer to stdout; an end without access is a failure (exit 1).
    """
    deadline = time.monotonic() + parse_duration(timeout).total_seconds()
    told = None
    while True:
        request = AccessRequest.model_validate(session.get_request(namespace, name))
        status = request.status
        if status.phase in settled:
            print(f"{status.phase}: {status.message}")
            return 0
        if status.phase is not None and status.phase.ended:
            print(f"{status.phase}: {status.message}", file=sys.stderr)
            return 1
        if status.phase is not None and status.message != told:
            told = status.message
            warn(f"{status.phase}: {status.message}")
        if time.monotonic() >= deadline:
            break
        time.sleep(POLL)

    if status.phase is None:
        warn(f"the operator has not answered accessrequest {namespace}/{name} within {timeout}:"
             " is it running? The request stays; follow it with"
             f" `kubectl daypass show {name} -n {namespace}`")
    else:
        warn(f"accessrequest {namespace}/{name} is still {status.phase} after {timeout}; it"
             f" stays so. Follow it with `kubectl daypass show {name} -n {namespace}`, or wait"
             " longer with --timeout")
    return 1
