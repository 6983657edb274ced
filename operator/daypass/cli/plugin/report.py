"""`audit`: who had what access, when, approved by whom, and what they did with it.

Reads only the durable record, each request's status and history; never events, which the API
server drops after about an hour. One row per request asked, active or ended in the range.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from daypass.cli.plugin import output
from daypass.cli.plugin.session import CommandError, Session, parsed
from daypass.durations import DurationError, parse_duration
from daypass.lifecycle import when
from daypass.models import AccessRequest, Phase, Usage

_DAYS = re.compile(r"([0-9]+)d(.*)")

COLUMNS = ["namespace", "name", "requester", "role", "reason", "policy", "phase", "requestedAt",
           "grantedAt", "expiresAt", "endedAt", "ended", "endedBy", "reviews", "usage",
           "extends"]
TABLE = [("NAMESPACE", "namespace"), ("NAME", "name"), ("REQUESTER", "requester"),
         ("ROLE", "role"), ("PHASE", "phase"), ("REQUESTED", "requestedAt"),
         ("GRANTED", "grantedAt"), ("ENDED", "endedAt"), ("HOW", "how"),
         ("REVIEWS", "reviews"), ("USAGE", "usage"), ("REASON", "reason")]


def since(text: str, now: datetime) -> datetime:
    """--since: an age (7d, 36h, 1d12h: days are allowed here) or a time."""
    written = text.strip()
    try:
        days = _DAYS.fullmatch(written)
        if days:
            rest = parse_duration(days.group(2)) if days.group(2) else timedelta(0)
            return now - timedelta(days=int(days.group(1))) - rest
        return now - parse_duration(written)
    except (DurationError, OverflowError):
        pass
    try:
        moment = datetime.fromisoformat(written.replace("Z", "+00:00"))
    except ValueError as error:
        raise CommandError(
            f"--since {text!r} is neither an age such as 7d, 36h or 1d12h nor a time such as"
            " 2026-12-01T00:00:00Z"
        ) from error
    return (moment if moment.tzinfo else moment.astimezone()).astimezone(UTC)


def in_range(request: AccessRequest, start: datetime, end: datetime) -> bool:
    """Whether the request was asked, active or ended between start and end."""
    asked = request.status.requested_at or request.metadata.creation_timestamp
    ended = request.status.ended_at
    return asked is not None and asked <= end and (ended is None or ended >= start)


def usage_summary(usage: Usage | None, granted: bool) -> str:
    """Usage as an auditor reads it; a grant never used is the cheapest privilege review."""
    if not granted:
        return "never granted"
    if usage is None or not usage.collected:
        return "not collected"
    if usage.requests == 0:
        return "unused"
    verbs = ", ".join(f"{verb} {count}" for verb, count in sorted(usage.verbs.items()))
    return f"{usage.requests} requests" + (f" ({verbs})" if verbs else "")


def ending(request: AccessRequest) -> tuple[str, str]:
    """How an ended request ended (expired, revoked, denied...) and who ended it."""
    phase = request.status.phase
    if phase is None or not phase.ended:
        return "", ""
    last = next((entry for entry in reversed(request.status.history) if entry.phase == phase),
                None)
    by = (last.actor or "") if last else ""
    if phase == Phase.EXPIRED and request.status.granted_at is None:
        return "approval timed out", by
    return phase.value.lower(), by


@dataclass(frozen=True)
class Row:
    """One request in the report, with every field an auditor asks about."""

    fields: dict[str, Any]

    def text(self, column: str) -> str:
        value = self.fields.get(column)
        if column == "reviews":
            return "; ".join(
                f"{r['reviewer']} {r['decision']}"
                + (f" ({r['outcome']})" if r.get("outcome") not in (None, "Accepted") else "")
                for r in value or []
            )
        if column == "how":
            how, by = self.fields["ended"], self.fields["endedBy"]
            return f"{how} by {by}" if how and by else how or "-"
        return "" if value is None else str(value)


def row(request: AccessRequest) -> Row:
    status = request.status
    how, by = ending(request)
    usage = status.usage
    return Row({
        "namespace": request.namespace,
        "name": request.name,
        "requester": request.spec.requester.username,
        "groups": request.spec.requester.groups,
        "role": str(request.spec.role),
        "reason": request.spec.reason,
        "policy": status.policy,
        "phase": status.phase.value if status.phase else None,
        "duration": status.duration or request.spec.duration,
        "requestedAt": _stamp(status.requested_at or request.metadata.creation_timestamp),
        "grantedAt": _stamp(status.granted_at),
        "expiresAt": _stamp(status.expires_at),
        "endedAt": _stamp(status.ended_at),
        "ended": how or None,
        "endedBy": by or None,
        "message": status.message,
        "reviews": [
            {"reviewer": r.reviewer, "decision": r.decision, "outcome": r.outcome,
             "reason": r.reason, "at": _stamp(r.at), "review": r.review}
            for r in status.reviews
        ],
        "usage": usage_summary(usage, status.granted_at is not None),
        "usageRequests": usage.requests if usage is not None and usage.collected else None,
        "usageVerbs": dict(usage.verbs) if usage is not None and usage.collected else None,
        "extends": request.spec.extends,
        "extendedBy": status.extended_by,
    })


def _stamp(moment: datetime | None) -> str | None:
    return when(moment) if moment else None


def report(requests: Sequence[AccessRequest], start: datetime, end: datetime) -> list[Row]:
    """The rows of the report, oldest request first."""
    chosen = [r for r in requests if in_range(r, start, end)]
    chosen.sort(key=lambda r: (r.status.requested_at or r.metadata.creation_timestamp or start,
                               r.namespace, r.name))
    return [row(request) for request in chosen]


def audit(args: argparse.Namespace) -> int:
    session = Session(args.kubeconfig, args.context, args.namespace)
    now = datetime.now(UTC)
    start = since(args.since, now)
    scope = None if args.all_namespaces else session.namespace
    rows = report(parsed(AccessRequest, session.list_requests(scope)), start, now)

    if args.output == "json":
        output.as_json({
            "since": when(start),
            "until": when(now),
            "namespace": scope,
            "requests": [r.fields for r in rows],
        })
        return 0
    if args.output == "csv":
        output.as_csv(COLUMNS, [[r.text(column) for column in COLUMNS] for r in rows])
        return 0
    if not rows:
        where = "in any namespace" if scope is None else f"in namespace {scope}"
        output.warn(f"No access requests asked, active or ended since {when(start)} {where}.")
        return 0
    table = TABLE if scope is None else TABLE[1:]
    output.table([header for header, _ in table],
                 [[r.text(column) or "-" for _, column in table] for r in rows],
                 flexible={"REVIEWS", "REASON", "HOW", "USAGE"})
    return 0
