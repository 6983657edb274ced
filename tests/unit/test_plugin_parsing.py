"""The plugin's command line: kubectl's flags in either place, roles, durations and times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from daypass.cli.kubectl import build_parser
from daypass.cli.plugin.asking import manifest, parse_role, start_time
from daypass.cli.plugin.report import since
from daypass.cli.plugin.session import CommandError
from daypass.models import RoleKind, RoleRef, UserInfo

NOW = datetime(2026, 12, 4, 9, 0, 0, tzinfo=UTC)


def parse(*argv: str) -> dict[str, object]:
    return vars(build_parser().parse_args(argv))


def test_connection_flags_work_before_and_after_the_command() -> None:
    before = parse("--context", "alice", "-n", "team-a", "list")
    after = parse("list", "--context", "alice", "-n", "team-a")
    assert before["context"] == after["context"] == "alice"
    assert before["namespace"] == after["namespace"] == "team-a"


def test_a_flag_after_the_command_wins_and_an_absent_one_does_not_erase() -> None:
    args = parse("-n", "team-a", "--kubeconfig", "/k", "list", "-n", "team-b")
    assert args["namespace"] == "team-b"
    assert args["kubeconfig"] == "/k"
    assert parse("list")["namespace"] is None


def test_request_defaults() -> None:
    args = parse("request", "edit")
    assert args["role"] == "edit"
    assert args["kind"] is None
    assert args["wait"] is False
    assert args["timeout"] == "5m"
    assert args["duration"] is None


def test_kind_is_read_in_any_case() -> None:
    assert parse("request", "debugger", "--kind", "role")["kind"] == "Role"
    assert parse("request", "edit", "--kind", "ClusterRole")["kind"] == "ClusterRole"


def test_an_unknown_kind_is_a_usage_error_naming_the_right_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("request", "edit", "--kind", "Deployment")
    assert exited.value.code == 2
    assert "write ClusterRole or Role" in capsys.readouterr().err


def test_a_bad_duration_is_a_usage_error_saying_what_a_duration_looks_like(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse("request", "edit", "--for", "1 hour")
    assert "write it like 90s, 30m or 1h30m" in capsys.readouterr().err


def test_extend_needs_a_duration() -> None:
    with pytest.raises(SystemExit):
        parse("extend", "alice-edit")
    assert parse("extend", "alice-edit", "--for", "30m")["duration"] == "30m"


def test_output_formats_per_command() -> None:
    assert parse("audit", "-o", "csv")["output"] == "csv"
    assert parse("list", "-o", "yaml")["output"] == "yaml"
    with pytest.raises(SystemExit):
        parse("list", "-o", "csv")


@pytest.mark.parametrize(("written", "kind", "expected"), [
    ("edit", None, (None, "edit")),
    ("edit", "Role", (RoleKind.ROLE, "edit")),
    ("clusterrole/edit", None, (RoleKind.CLUSTER_ROLE, "edit")),
    ("Role/debugger", None, (RoleKind.ROLE, "debugger")),
    ("role/debugger", "Role", (RoleKind.ROLE, "debugger")),
])
def test_roles_are_written_as_kubectl_writes_resources(
    written: str, kind: str | None, expected: tuple[RoleKind | None, str],
) -> None:
    assert parse_role(written, kind) == expected


@pytest.mark.parametrize(("written", "kind", "message"), [
    ("deployment/edit", None, "write ROLE, clusterrole/ROLE or role/ROLE"),
    ("clusterrole/", None, "write clusterrole/edit or role/debugger"),
    ("role/debugger", "ClusterRole", "give the kind once"),
])
def test_a_badly_written_role_says_how_to_write_it(
    written: str, kind: str | None, message: str,
) -> None:
    with pytest.raises(CommandError, match=message):
        parse_role(written, kind)


def test_start_at_takes_a_time_or_a_duration_from_now() -> None:
    assert start_time("2h", NOW) == NOW + timedelta(hours=2)
    assert start_time("2026-12-05T08:00:00Z", NOW) == datetime(2026, 12, 5, 8, tzinfo=UTC)
    assert start_time("2026-12-05T10:00:00+02:00", NOW) == datetime(2026, 12, 5, 8, tzinfo=UTC)
    with pytest.raises(CommandError, match="neither a time"):
        start_time("tomorrow", NOW)


@pytest.mark.parametrize(("written", "ago"), [
    ("7d", timedelta(days=7)),
    ("36h", timedelta(hours=36)),
    ("1d12h", timedelta(days=1, hours=12)),
    ("90m", timedelta(minutes=90)),
])
def test_since_takes_ages_with_days(written: str, ago: timedelta) -> None:
    assert since(written, NOW) == NOW - ago


def test_since_takes_a_time_and_refuses_nonsense() -> None:
    assert since("2026-12-01T00:00:00Z", NOW) == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(CommandError, match="7d, 36h or 1d12h"):
        since("last week", NOW)


def test_a_manifest_leaves_the_requester_to_admission() -> None:
    body = manifest(UserInfo(username="system:serviceaccount:ci:bot"), "team-a",
                    RoleRef(kind=RoleKind.CLUSTER_ROLE, name="edit"), name=None,
                    duration="30m", reason="INC-1", start_at=NOW, extends="earlier")
    assert "requester" not in body["spec"]
    assert body["spec"] == {
        "role": {"kind": "ClusterRole", "name": "edit"}, "duration": "30m", "reason": "INC-1",
        "startAt": "2026-12-04T09:00:00Z", "extends": "earlier",
    }
    assert body["metadata"] == {"generateName": "system-serviceaccount-ci-bot-edit-"}
