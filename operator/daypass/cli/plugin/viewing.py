"""`list`, `show` and `eligible`: what is asked, what happened to one request, what may be asked.

`show` builds its timeline from the request's history, the durable record, and adds the events
that say more (a rejected review, a usage summary) while the API server still keeps them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daypass.cli.plugin import output
from daypass.cli.plugin.eligibility import awaits_review_by, offers
from daypass.cli.plugin.report import usage_summary
from daypass.cli.plugin.session import Session, parsed
from daypass.lifecycle import when
from daypass.models import AccessRequest, Phase, UserInfo

# The operator cuts long event messages; a history line and its cut event are the same moment.
ELLIPSIS = "…"


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def asked(request: AccessRequest) -> datetime:
    """When a request was made: the operator's record, else its creation, else long ago."""
    return (request.status.requested_at or request.metadata.creation_timestamp
            or datetime.min.replace(tzinfo=UTC))


def who(user: UserInfo) -> str:
    return f"{user.username} (groups: {', '.join(user.groups) or 'none'})"


# list


def list_requests(args: argparse.Namespace) -> int:
    session = Session(args.kubeconfig, args.context, args.namespace)
    # Whose requests, or what waits for whom, is a question about the whole cluster.
    everywhere = args.all_namespaces or (
        (args.mine or args.to_review) and not session.explicit_namespace
    )
    scope = None if everywhere else session.namespace
    items = session.list_requests(scope)
    requests = parsed(AccessRequest, items)
    if args.mine or args.to_review:
        user = session.identity()
        if args.mine:
            requests = [r for r in requests if r.spec.requester.username == user.username]
        if args.to_review:
            policies = {p.metadata.name: p for p in session.policies() or []}
            requests = [r for r in requests if awaits_review_by(r, policies, user)]
    requests.sort(key=lambda r: (r.namespace, asked(r), r.name))

    if args.output != "table":
        raw = {(item["metadata"].get("namespace"), item["metadata"].get("name")): item
               for item in items}
        output.as_list([raw[r.key] for r in requests], args.output)
        return 0
    if not requests:
        where = "in any namespace" if scope is None else f"in namespace {scope}"
        what = "pending requests for your review" if args.to_review else "access requests"
        output.warn(f"No {what} found {where}.")
        return 0
    output.table(*request_rows(requests, with_namespace=scope is None,
                               now=datetime.now(UTC)), flexible={"REASON"})
    return 0


def request_rows(requests: Sequence[AccessRequest], with_namespace: bool, now: datetime,
                 ) -> tuple[list[str], list[list[str]]]:
    headers = ["NAME", "REQUESTER", "ROLE", "PHASE", "POLICY", "AGE", "EXPIRES", "REASON"]
    rows = []
    for request in requests:
        status = request.status
        if status.phase == Phase.ACTIVE:
            expires = output.until(status.expires_at, now)
        elif status.phase == Phase.SCHEDULED:
            expires = f"starts {output.until(status.start_at, now)}"
        else:
            expires = "-"
        created = request.metadata.creation_timestamp or status.requested_at
        row = [
            request.name,
            request.spec.requester.username,
            str(request.spec.role),
            status.phase or "-",
            status.policy or "-",
            output.age(now - created) if created else "-",
            expires,
            request.spec.reason or "",
        ]
        rows.append([request.namespace, *row] if with_namespace else row)
    return (["NAMESPACE", *headers] if with_namespace else headers), rows


# show


@dataclass(frozen=True)
class Moment:
    """One line of a request's timeline: a history entry, or an event the history lacks."""

    at: datetime
    event: str
    phase: str
    actor: str
    message: str


def event_time(event: dict[str, Any]) -> datetime | None:
    series = event.get("series") or {}
    return (_time(event.get("eventTime")) or _time(series.get("lastObservedTime"))
            or _time(event.get("lastTimestamp")) or _time(event.get("firstTimestamp"))
            or _time((event.get("metadata") or {}).get("creationTimestamp")))


def _same(message: str, event_message: str) -> bool:
    return message == event_message or (
        event_message.endswith(ELLIPSIS) and message.startswith(event_message[:-1])
    )


def timeline(request: AccessRequest, events: Sequence[dict[str, Any]]) -> list[Moment]:
    """The request's history and its events in time order, each moment once."""
    moments = [
        Moment(entry.at, entry.event or "-", entry.phase.value, entry.actor or "-",
               entry.message or "")
        for entry in request.status.history
    ]
    unmatched = list(moments)
    for event in events:
        reason, message = event.get("reason") or "-", event.get("message") or ""
        twin = next((m for m in unmatched if m.event == reason and _same(m.message, message)),
                    None)
        if twin is not None:
            unmatched.remove(twin)
            continue
        at = event_time(event)
        if at is None:
            continue
        source = event.get("source") or {}
        actor = event.get("reportingComponent") or source.get("component") or "-"
        moments.append(Moment(at, reason, "-", actor, message))
    # sorted() is stable: moments at the same instant keep the history's order.
    return sorted(moments, key=lambda moment: moment.at)


def summary(request: AccessRequest, now: datetime) -> list[tuple[str, str]]:
    spec, status = request.spec, request.status
    fields = [
        ("Name", request.name),
        ("Namespace", request.namespace),
        ("Requester", who(spec.requester)),
        ("Role", str(spec.role)),
        ("Reason", spec.reason or "-"),
        ("Duration", status.duration or spec.duration or "the policy's default"),
        ("Policy", status.policy or "-"),
        ("Phase", f"{status.phase or 'not yet seen by the operator'}"),
        ("Message", status.message or "-"),
        ("Requested", when(status.requested_at or request.metadata.creation_timestamp)),
    ]
    if spec.start_at:
        fields.append(("Starts", when(spec.start_at)))
    if status.approval_deadline and status.phase == Phase.PENDING:
        fields.append(("Approve by", f"{when(status.approval_deadline)}"
                       f" ({output.until(status.approval_deadline, now)})"))
    fields.append(("Granted", when(status.granted_at)))
    expires = when(status.expires_at)
    if status.expires_at and status.phase == Phase.ACTIVE:
        expires += f" ({output.until(status.expires_at, now)})"
    fields += [("Expires", expires), ("Ended", when(status.ended_at))]
    if status.binding:
        fields.append(("Binding", status.binding))
    if spec.extends:
        fields.append(("Extends", spec.extends))
    if status.extended_by:
        fields.append(("Extended by", status.extended_by))
    reviews = [
        f"{r.reviewer} {r.decision}" + (f" ({r.outcome})" if r.outcome else "")
        + f" at {when(r.at)}" + (f": {r.reason}" if r.reason else "")
        for r in status.reviews
    ]
    fields.append(("Reviews", "; ".join(reviews) or "none"))
    usage = usage_summary(status.usage, status.granted_at is not None)
    if status.usage is not None and status.usage.last_activity:
        usage += f", last at {when(status.usage.last_activity)}"
    fields.append(("Usage", usage))
    return fields


def show(args: argparse.Namespace) -> int:
    session = Session(args.kubeconfig, args.context, args.namespace)
    raw = session.get_request(session.namespace, args.name)
    if args.output == "json":
        output.as_json(raw)
        return 0
    if args.output == "yaml":
        output.as_yaml(raw)
        return 0

    request = AccessRequest.model_validate(raw)
    events = session.request_events(session.namespace, args.name)
    now = datetime.now(UTC)
    fields = summary(request, now)
    label_width = max(len(label) for label, _ in fields) + 2
    for label, value in fields:
        print(f"{label + ':':<{label_width}}{value}")
    print()
    print("Timeline:")
    rows = [[when(m.at), m.event, m.phase, m.actor, m.message]
            for m in timeline(request, events or [])]
    output.table(["TIME", "EVENT", "PHASE", "ACTOR", "MESSAGE"], rows, flexible={"MESSAGE"})
    if events is None:
        output.warn(f"(events not shown: you may not list events in {session.namespace}; the"
                    " history above is the durable record)")
    return 0


# eligible


def eligible(args: argparse.Namespace) -> int:
    session = Session(args.kubeconfig, args.context, args.namespace)
    user = session.identity()
    found = offers(session.policies() or [], user)
    usable = [offer for offer in found if offer.problem is None]
    if args.output in ("json", "yaml"):
        document = {"user": user.wire(), "policies": [offer.wire() for offer in found]}
        (output.as_json if args.output == "json" else output.as_yaml)(document)
        return 0

    if not usable:
        print(f"{who(user)} is not a subject of any usable AccessPolicy, so there is nothing you"
              " may ask for: ask your platform team to name you or your group in a policy's"
              " subjects")
    else:
        print(f"{who(user)} may ask for:")
        output.table(
            ["POLICY", "ROLES", "NAMESPACES", "MAX", "DEFAULT", "REASON", "APPROVAL"],
            [[o.policy, ", ".join(o.roles), o.namespaces, o.max_duration, o.default_duration,
              o.reason, o.approval] for o in usable],
            flexible={"NAMESPACES", "REASON", "APPROVAL"},
        )
    for offer in found:
        if offer.problem is not None:
            output.warn(f"policy {offer.policy} names you but cannot be used: {offer.problem}")
    return 0
