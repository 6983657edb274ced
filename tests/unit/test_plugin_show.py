"""`show`'s timeline, and the plugin's tables and ages as kubectl prints them."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from builders import NOW, request
from daypass.cli.plugin.output import age, table, until
from daypass.cli.plugin.viewing import request_rows, summary, timeline

T0, T1, T2 = "2026-12-04T09:00:00Z", "2026-12-04T09:00:01Z", "2026-12-04T09:30:01Z"
GRANTED = "granted ClusterRole/edit in team-a to alice until 09:30"
ACTIVE = request("alice-edit", reason="INC-1 payments", status={
    "phase": "Active", "policy": "developers-edit", "duration": "30m", "requestedAt": T0,
    "grantedAt": T1, "expiresAt": T2, "binding": "daypass-alice-edit",
    "history": [
        {"at": T0, "phase": "Pending", "event": "Requested", "actor": "alice",
         "message": "alice asked"},
        {"at": T1, "phase": "Active", "event": "Granted", "actor": "daypass",
         "message": GRANTED},
    ],
})


def event(reason: str, message: str, at: str, **more: Any) -> dict[str, Any]:
    return {"reason": reason, "message": message, "eventTime": at,
            "reportingComponent": "daypass", **more}


def test_the_timeline_merges_history_and_events_in_time_order_each_moment_once() -> None:
    events = [
        event("Granted", GRANTED, T1),
        event("ReviewRejected", "carol may not approve", "2026-12-04T09:00:00.500000Z"),
        event("Requested", "alice asked", T0),
    ]
    moments = timeline(ACTIVE, events)
    assert [(m.event, m.phase, m.actor) for m in moments] == [
        ("Requested", "Pending", "alice"),
        ("ReviewRejected", "-", "daypass"),
        ("Granted", "Active", "daypass"),
    ]


def test_a_cut_event_message_is_the_same_moment_as_its_history_line() -> None:
    cut = event("Granted", GRANTED[:20] + "…", T1)
    assert len(timeline(ACTIVE, [cut])) == 2


def test_an_old_style_event_is_placed_by_its_timestamps() -> None:
    old = {"reason": "UsageSummary", "message": "3 requests", "lastTimestamp": T2,
           "source": {"component": "daypass"}}
    assert [m.event for m in timeline(ACTIVE, [old])] == ["Requested", "Granted", "UsageSummary"]


def test_without_events_the_history_alone_is_the_timeline() -> None:
    assert [m.message for m in timeline(ACTIVE, [])] == ["alice asked", GRANTED]


def test_the_summary_names_every_fact_of_the_request() -> None:
    fields = dict(summary(ACTIVE, NOW + timedelta(minutes=10)))
    assert fields["Requester"] == "alice (groups: developers, system:authenticated)"
    assert fields["Role"] == "ClusterRole/edit"
    assert fields["Expires"] == "2026-12-04T09:30:01Z (in 20m)"
    assert fields["Binding"] == "daypass-alice-edit"
    assert fields["Reviews"] == "none"
    assert fields["Usage"] == "not collected"


def test_list_rows_say_when_access_expires() -> None:
    headers, rows = request_rows([ACTIVE], with_namespace=True, now=NOW + timedelta(minutes=10))
    assert headers[:2] == ["NAMESPACE", "NAME"]
    assert rows == [["team-a", "alice-edit", "alice", "ClusterRole/edit", "Active",
                     "developers-edit", "10m", "in 20m", "INC-1 payments"]]


@pytest.mark.parametrize(("seconds", "written"), [
    (45, "45s"), (119, "119s"), (330, "5m30s"), (600, "10m"), (3 * 3600 + 300, "3h5m"),
    (30 * 3600, "30h"), (3 * 86400 + 4 * 3600, "3d4h"), (12 * 86400, "12d"),
])
def test_ages_are_written_as_kubectl_writes_them(seconds: int, written: str) -> None:
    assert age(timedelta(seconds=seconds)) == written


def test_until_says_ahead_or_behind() -> None:
    assert until(NOW + timedelta(minutes=5), NOW) == "in 5m"
    assert until(NOW - timedelta(minutes=5), NOW) == "5m ago"
    assert until(None, NOW) == "-"


ROWS = [["alice-edit", "INC-4211 payments API returns 500 since the deploy", "Active"]]


def test_a_table_in_a_pipe_is_never_cut() -> None:
    out = io.StringIO()
    table(["NAME", "REASON", "PHASE"], ROWS, flexible={"REASON"}, stream=out)
    assert out.getvalue().splitlines() == [
        "NAME         REASON                                               PHASE",
        "alice-edit   INC-4211 payments API returns 500 since the deploy   Active",
    ]


def test_a_table_fits_a_narrow_terminal_by_cutting_free_text_only() -> None:
    out = io.StringIO()
    table(["NAME", "REASON", "PHASE"], ROWS, flexible={"REASON"}, stream=out, columns=48)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 48 for line in lines)
    assert lines[1].startswith("alice-edit   INC-4211")
    assert lines[1].endswith("…   Active")


def test_a_terminal_too_narrow_for_the_table_never_loses_a_column() -> None:
    out = io.StringIO()
    table(["NAME", "REASON", "PHASE"], ROWS, flexible={"REASON"}, stream=out, columns=20)
    header, row = out.getvalue().splitlines()
    assert header.split() == ["NAME", "REASON", "PHASE"]
    assert row.startswith("alice-edit   INC-4211") and row.endswith("Active")
