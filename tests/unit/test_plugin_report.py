"""The audit report, from the durable record only: which requests, and every field of each."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from builders import NOW, request
from daypass.cli.plugin.report import COLUMNS, ending, in_range, report, usage_summary
from daypass.models import Usage

T0 = "2026-12-04T09:00:00Z"
T1 = "2026-12-04T09:00:01Z"
T2 = "2026-12-04T09:30:01Z"


def entry(phase: str, event: str, actor: str, at: str = T0) -> dict[str, Any]:
    return {"at": at, "phase": phase, "event": event, "actor": actor, "message": f"{event}"}


EXPIRED = request("alice-expired", reason="INC-1 payments", duration="30m", status={
    "phase": "Expired", "policy": "developers-edit", "duration": "30m",
    "requestedAt": T0, "grantedAt": T1, "expiresAt": T2, "endedAt": T2,
    "usage": {"collected": True, "requests": 3, "verbs": {"get": 2, "delete": 1}},
    "history": [entry("Pending", "Requested", "alice"), entry("Active", "Granted", "daypass", T1),
                entry("Expired", "Expired", "daypass", T2)],
})
DENIED = request("carol-denied", username="carol", status={
    "phase": "Denied", "requestedAt": T0, "endedAt": T1,
    "reviews": [{"reviewer": "alice", "decision": "Approve", "at": T0, "outcome": "Rejected"},
                {"reviewer": "bob", "decision": "Deny", "at": T1, "outcome": "Accepted",
                 "reason": "not today"}],
    "history": [entry("Pending", "Requested", "carol"), entry("Denied", "Denied", "bob", T1)],
})
REVOKED = request("alice-revoked", status={
    "phase": "Revoked", "policy": "developers-edit", "requestedAt": T1, "grantedAt": T1,
    "endedAt": T2, "usage": {"collected": True, "requests": 0},
    "history": [entry("Pending", "Requested", "alice", T1), entry("Active", "Granted", "daypass",
                T1), entry("Revoked", "Revoked", "alice", T2)],
})
TIMED_OUT = request("alice-unanswered", status={
    "phase": "Expired", "requestedAt": T0, "endedAt": T2,
    "history": [entry("Pending", "Requested", "alice"), entry("Expired", "Expired", "daypass")],
})


def test_a_request_is_in_range_when_asked_active_or_ended_in_it() -> None:
    start, end = NOW + timedelta(minutes=10), NOW + timedelta(hours=1)
    assert in_range(EXPIRED, start, end)          # active across the start, ended in range
    assert not in_range(DENIED, start, end)       # over before the range began
    assert in_range(request("new", status={"phase": "Pending", "requestedAt": T2}), start, end)
    assert not in_range(request("later", status={"requestedAt": "2026-12-04T11:00:00Z"}),
                        start, end)
    # Not yet seen by the operator: its creation counts as the ask.
    assert in_range(request("unseen"), NOW - timedelta(seconds=1), end)


def test_how_a_request_ended_and_who_ended_it() -> None:
    assert ending(EXPIRED) == ("expired", "daypass")
    assert ending(DENIED) == ("denied", "bob")
    assert ending(REVOKED) == ("revoked", "alice")
    assert ending(TIMED_OUT) == ("approval timed out", "daypass")
    assert ending(request("pending", status={"phase": "Pending"})) == ("", "")


def test_usage_says_when_it_is_not_known_and_when_access_was_never_used() -> None:
    assert usage_summary(None, granted=True) == "not collected"
    assert usage_summary(Usage(collected=False), granted=True) == "not collected"
    assert usage_summary(Usage(collected=True, requests=0), granted=True) == "unused"
    assert usage_summary(Usage(collected=True, requests=3, verbs={"get": 2, "delete": 1}),
                         granted=True) == "3 requests (delete 1, get 2)"
    assert usage_summary(None, granted=False) == "never granted"


def test_every_request_in_range_gets_one_row_with_every_field_oldest_first() -> None:
    rows = report([REVOKED, DENIED, EXPIRED, TIMED_OUT], NOW - timedelta(days=7),
                  NOW + timedelta(hours=1))
    # Asked at the same second: name order.
    assert [r.fields["name"] for r in rows] == [
        "alice-expired", "alice-unanswered", "carol-denied", "alice-revoked"]
    expired, _, denied, revoked = rows

    assert {column: expired.text(column) for column in COLUMNS} == {
        "namespace": "team-a", "name": "alice-expired", "requester": "alice",
        "role": "ClusterRole/edit", "reason": "INC-1 payments", "policy": "developers-edit",
        "phase": "Expired", "requestedAt": T0, "grantedAt": T1, "expiresAt": T2,
        "endedAt": T2, "ended": "expired", "endedBy": "daypass", "reviews": "",
        "usage": "3 requests (delete 1, get 2)", "extends": "",
    }
    assert expired.fields["usageRequests"] == 3
    assert denied.text("reviews") == "alice Approve (Rejected); bob Deny"
    assert denied.fields["reviews"][1] == {"reviewer": "bob", "decision": "Deny",
                                           "outcome": "Accepted", "reason": "not today",
                                           "at": T1, "review": None}
    assert denied.fields["grantedAt"] is None and denied.text("grantedAt") == ""
    assert denied.text("usage") == "never granted"
    assert denied.text("how") == "denied by bob"
    assert revoked.text("usage") == "unused"
