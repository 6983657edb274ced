"""`kubectl daypass` end to end: the plugin as a real process, run by the SPEC users with their
own kubeconfig contexts, against the real control plane and operator.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from .harness import ROOT, Cluster, Operator, User, eventually, policy, unique

pytestmark = pytest.mark.e2e

TICKET = "INC-4211 payments API returns 500"


def daypass(cluster: Cluster, user: str, *args: str, timeout: float = 90,
            ) -> subprocess.CompletedProcess[str]:
    """Run `kubectl daypass ARGS` as `user`, with that user's own context."""
    return subprocess.run(plugin(cluster, user, *args), capture_output=True, text=True,
                          env=environment(), timeout=timeout, check=False)


def plugin(cluster: Cluster, user: str, *args: str) -> list[str]:
    if cluster.local is None:
        pytest.skip("the plugin tests need one kubeconfig context per user (the local cluster)")
    return [sys.executable, "-m", "daypass.cli.kubectl", "--kubeconfig", str(cluster.kubeconfig),
            "--context", cluster.local.context(user), *args]


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    # The user's own KUBECONFIG must not matter: --kubeconfig names the cluster under test.
    env.pop("KUBECONFIG", None)
    return env


def created(result: subprocess.CompletedProcess[str]) -> str:
    """The name of the request a `request` or `extend` run created."""
    assert result.returncode == 0 or "created" in result.stdout, result.stderr
    found = re.search(r"^accessrequest [^/\s]+/(\S+) created", result.stdout, re.MULTILINE)
    assert found, result.stdout
    return found.group(1)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode != 0, result.stdout
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def names(document: str) -> list[str]:
    return [item["metadata"]["name"] for item in json.loads(document)["items"]]


def requests_in(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cluster.admin.custom.list_namespaced_custom_object(
        "daypass.dev", "v1alpha1", namespace, "accessrequests")["items"]
    return found


# Asking


def test_alice_requests_with_wait_lists_it_and_reads_its_timeline(
    cluster: Cluster, operator: Operator, space: str, alice: User,
) -> None:
    asked = daypass(cluster, "alice", "request", "edit", "-n", space, "--for", "10m",
                    "--reason", TICKET, "--wait")
    out = ok(asked)
    name = created(asked)
    assert f"ClusterRole/edit in {space} for 10m under policy developers-edit" in out
    assert re.search(rf"^Active: granted ClusterRole/edit in {space} to alice", out, re.M), out
    assert alice.can_list_pods(space)

    mine = ok(daypass(cluster, "alice", "list", "--mine"))
    header, *rows = mine.splitlines()
    assert header.split()[:6] == ["NAMESPACE", "NAME", "REQUESTER", "ROLE", "PHASE", "POLICY"]
    row = next(line for line in rows if name in line)
    assert row.split()[:6] == [space, name, "alice", "ClusterRole/edit", "Active",
                               "developers-edit"]
    assert TICKET in row
    assert name in names(ok(daypass(cluster, "alice", "list", "--mine", "-o", "json")))
    assert name in ok(daypass(cluster, "alice", "list", "-n", space))
    assert name not in ok(daypass(cluster, "carol", "list", "--mine"))

    shown = ok(daypass(cluster, "alice", "show", name, "-n", space))
    assert "Requester: alice (groups: developers, system:authenticated)" in shown
    assert "Phase:     Active" in shown
    timeline = shown.split("Timeline:")[1].splitlines()[1:]
    assert [line.split()[1:4] for line in timeline[1:]] == [
        ["Requested", "Pending", "alice"], ["Granted", "Active", "daypass"]]
    assert TICKET in timeline[1]

    # The admin may read events too: each moment still appears once.
    as_admin = ok(daypass(cluster, "admin", "show", name, "-n", space))
    assert as_admin.count("   Granted   ") == 1
    document = json.loads(ok(daypass(cluster, "alice", "show", name, "-n", space, "-o", "json")))
    assert document["status"]["phase"] == "Active"


def test_an_unknown_role_or_a_missing_reason_is_refused_saying_what_would_be_right(
    cluster: Cluster, operator: Operator, space: str,
) -> None:
    request = ("request", "-n", space)
    refused(daypass(cluster, "alice", *request, "deployment/edit", "--reason", TICKET),
            "unknown role kind 'deployment'", "clusterrole/ROLE or role/ROLE")
    refused(daypass(cluster, "alice", *request, "admin", "--reason", TICKET),
            "ClusterRole/admin is not among the roles of policy developers-edit",
            "(ClusterRole/edit, Role/debugger)", "kubectl daypass eligible")
    refused(daypass(cluster, "alice", *request, "edit"),
            "a reason is required by policy developers-edit", "--reason",
            "'^[A-Z]+-[0-9]+'")
    refused(daypass(cluster, "alice", *request, "edit", "--reason", "fixing things"),
            "does not match the pattern '^[A-Z]+-[0-9]+'")
    refused(daypass(cluster, "alice", *request, "edit", "--for", "8h", "--reason", TICKET),
            "8h is longer than maxDuration 4h of policy developers-edit")
    assert daypass(cluster, "alice", *request, "edit", "--kind", "Secret").returncode == 2
    assert requests_in(cluster, space) == []

    refused(daypass(cluster, "alice", "show", "nothing-here", "-n", space),
            f"accessrequest 'nothing-here' not found in namespace '{space}'",
            "kubectl daypass list")
    refused(daypass(cluster, "bob", "approve", "nothing-here", "-n", space), "not found")
    wrong = subprocess.run(
        [sys.executable, "-m", "daypass.cli.kubectl", "--kubeconfig", str(cluster.kubeconfig),
         "--context", "nobody", "eligible"],
        capture_output=True, text=True, env=environment(), timeout=60, check=False)
    refused(wrong, "context 'nobody' is not in the kubeconfig", "alice")


def test_eligible_shows_alice_her_policy_and_tells_dave_he_has_none(
    cluster: Cluster, operator: Operator, space: str,
) -> None:
    table = ok(daypass(cluster, "alice", "eligible"))
    assert table.startswith("alice (groups: developers, system:authenticated) may ask for:")
    row = next(line for line in table.splitlines() if line.startswith("developers-edit "))
    for shown in ("ClusterRole/edit, Role/debugger", "team-a, labelled daypass.dev/eligible=true",
                  "   4h   ", "   1h   ", "required, matching ^[A-Z]+-[0-9]+"):
        assert shown in row, row
    offered = json.loads(ok(daypass(cluster, "alice", "eligible", "-o", "json")))
    assert offered["user"]["username"] == "alice"
    standard = next(p for p in offered["policies"] if p["policy"] == "developers-edit")
    assert standard["maxDuration"] == "4h"
    assert standard["approval"] == "no"

    said = ok(daypass(cluster, "dave", "eligible"))
    assert "dave (groups: system:authenticated) is not a subject of any usable AccessPolicy" in said
    assert "nothing you may ask for" in said
    assert json.loads(ok(daypass(cluster, "dave", "eligible", "-o", "json")))["policies"] == []
    refused(daypass(cluster, "dave", "request", "edit", "-n", space, "--reason", TICKET),
            "dave is not among the subjects of policy")


def test_alice_extends_her_access_with_a_linked_follow_up(
    cluster: Cluster, operator: Operator, space: str, alice: User,
) -> None:
    first = created(daypass(cluster, "alice", "request", "edit", "-n", space, "--for", "5m",
                            "--reason", TICKET, "--wait"))
    extended = daypass(cluster, "alice", "extend", first, "-n", space, "--for", "30m", "--wait")
    ok(extended)
    follow_up = created(extended)
    assert f"extending {first}" in extended.stdout
    spec = cluster.get_request(space, follow_up)["spec"]
    assert spec["extends"] == first
    assert spec["duration"] == "30m"
    assert spec["reason"] == TICKET
    assert spec["role"] == {"kind": "ClusterRole", "name": "edit"}

    refused(daypass(cluster, "carol", "extend", first, "-n", space, "--for", "30m"),
            "only its requester can extend it")
    denied = alice.request(space, duration="8h", reason=TICKET)["metadata"]["name"]
    cluster.wait_phase(space, denied, "Denied")
    refused(daypass(cluster, "alice", "extend", denied, "-n", space, "--for", "30m"),
            "has ended (Denied", "kubectl daypass request clusterrole/edit")


# Reviewing


@pytest.fixture
def guarded(cluster: Cluster, operator: Operator) -> Iterator[tuple[str, str]]:
    """A namespace of its own, and a policy there whose grants need one sre-leads approval."""
    namespace, name = unique("guarded"), unique("sre-approved")
    cluster.ensure_namespace(namespace)
    cluster.apply(policy(
        name,
        roles=[{"kind": "ClusterRole", "name": "view"}],
        namespaces={"names": [namespace]},
        maxDuration="1h",
        defaultDuration="10m",
        approval={"required": True, "approvers": {"groups": ["sre-leads"]}, "count": 1,
                  "timeout": "10m"},
    ))
    yield namespace, name
    cluster.delete_policy(name)


def to_review(cluster: Cluster, user: str, namespace: str) -> list[str]:
    listed = json.loads(ok(daypass(cluster, user, "list", "--to-review", "-o", "json")))
    return [item["metadata"]["name"] for item in listed["items"]
            if item["metadata"]["namespace"] == namespace]


def test_bob_approves_what_waits_for_his_review_and_carols_approval_is_rejected(
    cluster: Cluster, operator: Operator, guarded: tuple[str, str], alice: User,
) -> None:
    namespace, policy_name = guarded
    waiting = subprocess.Popen(
        plugin(cluster, "alice", "request", "view", "-n", namespace, "--reason", TICKET,
               "--wait", "--timeout", "90s"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    try:
        pending = eventually(lambda: to_review(cluster, "bob", namespace), timeout=30,
                             every=0.5, what="alice's request to wait for bob's review")
        assert len(pending) == 1
        name = pending[0]
        assert to_review(cluster, "alice", namespace) == []
        assert to_review(cluster, "erin", namespace) == [name]
        table = ok(daypass(cluster, "bob", "list", "--to-review"))
        assert name in table and TICKET in table

        rejected = daypass(cluster, "carol", "approve", name, "-n", namespace)
        refused(rejected, "Rejected:")
        assert cluster.phase(namespace, name) == "Pending"

        accepted = ok(daypass(cluster, "bob", "approve", name, "-n", namespace,
                              "--reason", "checked with on-call"))
        assert accepted.startswith("Accepted:")
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err
    assert f"under policy {policy_name}; approval needed: 1 from groups sre-leads" in out
    assert re.search(r"^Active: ", out, re.M), out
    assert "Pending:" in err
    assert alice.can_list_pods(namespace)
    assert to_review(cluster, "bob", namespace) == []

    report = json.loads(ok(daypass(cluster, "alice", "audit", "-n", namespace, "-o", "json")))
    [row] = report["requests"]
    decisions = {(r["reviewer"], r["decision"], r["outcome"]) for r in row["reviews"]}
    assert ("bob", "Approve", "Accepted") in decisions
    assert ("carol", "Approve", "Rejected") in decisions


def test_bob_denies_alices_request_and_alice_gives_back_her_access(
    cluster: Cluster, operator: Operator, guarded: tuple[str, str], alice: User,
) -> None:
    namespace, _ = guarded
    waiting = subprocess.Popen(
        plugin(cluster, "alice", "request", "view", "-n", namespace, "--reason", TICKET,
               "--wait", "--timeout", "90s"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    try:
        [name] = eventually(lambda: to_review(cluster, "bob", namespace), timeout=30, every=0.5,
                            what="alice's request to wait for bob's review")
        ok(daypass(cluster, "bob", "deny", name, "-n", namespace, "--reason", "not during the"
                   " freeze"))
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 1, out
    assert re.search(r"^Denied: ", err, re.M), err
    assert cluster.phase(namespace, name) == "Denied"

    second = created(daypass(cluster, "alice", "request", "view", "-n", namespace,
                             "--reason", TICKET))
    ok(daypass(cluster, "erin", "approve", second, "-n", namespace))
    cluster.wait_phase(namespace, second, "Active")
    given_back = ok(daypass(cluster, "alice", "revoke", second, "-n", namespace,
                            "--reason", "done early"))
    assert given_back.startswith("Accepted:")
    cluster.wait_phase(namespace, second, "Revoked")
    eventually(lambda: not alice.can_list_pods(namespace), timeout=5,
               what="alice to lose access once she revoked it")

    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(ok(
        daypass(cluster, "bob", "audit", "-n", namespace, "-o", "csv"))))}
    assert rows[name]["ended"] == "denied"
    assert rows[name]["endedBy"] == "bob"
    assert rows[name]["reviews"] == "bob Deny"
    assert rows[second]["ended"] == "revoked"
    assert rows[second]["endedBy"] == "alice"
    assert rows[second]["reviews"] == "erin Approve; alice Revoke"


# Auditing


def without_usage(rows: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without their usage, which audit events still arriving may raise at any time."""
    return [{k: v for k, v in row.items() if not k.startswith("usage")} for row in rows]


def test_audit_reports_every_outcome_from_the_durable_record_after_events_are_gone(
    cluster: Cluster, operator: Operator, space: str, alice: User,
) -> None:
    short = created(daypass(cluster, "alice", "request", "edit", "-n", space, "--for", "2s",
                            "--reason", "INC-1 a quick look", "--wait"))
    too_long = alice.request(space, duration="8h", reason="INC-2 all day")["metadata"]["name"]
    active = created(daypass(cluster, "alice", "request", "edit", "-n", space, "--for", "20m",
                             "--reason", "INC-3 still on it", "--wait"))
    cluster.wait_phase(space, short, "Expired")
    cluster.wait_phase(space, too_long, "Denied")

    # An auditor, not alice: her own calls in the namespace count as the use of her access.
    before_csv = ok(daypass(cluster, "bob", "audit", "--since", "1d", "-n", space, "-o", "csv"))
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(before_csv))}
    assert set(rows) == {short, too_long, active}
    for row in rows.values():
        assert (row["namespace"], row["requester"], row["role"]) == (
            space, "alice", "ClusterRole/edit")
        assert row["requestedAt"].endswith("Z")

    expired = rows[short]
    assert (expired["phase"], expired["ended"], expired["endedBy"]) == (
        "Expired", "expired", "daypass")
    assert expired["policy"] == "developers-edit"
    assert expired["reason"] == "INC-1 a quick look"
    assert expired["grantedAt"] and expired["endedAt"] >= expired["grantedAt"]
    assert expired["usage"] in ("not collected", "unused") or expired["usage"][0].isdigit()

    denied = rows[too_long]
    assert (denied["phase"], denied["ended"], denied["endedBy"]) == ("Denied", "denied", "daypass")
    assert denied["grantedAt"] == ""
    assert denied["endedAt"]
    assert denied["usage"] == "never granted"

    ongoing = rows[active]
    assert (ongoing["phase"], ongoing["ended"], ongoing["endedAt"]) == ("Active", "", "")
    assert ongoing["expiresAt"] > ongoing["grantedAt"]

    before_json = json.loads(ok(daypass(cluster, "bob", "audit", "-n", space, "-o", "json")))
    by_name = {row["name"]: row for row in before_json["requests"]}
    assert set(by_name) == {short, too_long, active}
    assert by_name[too_long]["grantedAt"] is None
    assert by_name[short]["ended"] == "expired"
    assert by_name[short]["groups"] == ["developers", "system:authenticated"]
    assert by_name[short]["duration"] == "2s"
    everywhere = ok(daypass(cluster, "bob", "audit", "-A", "-o", "csv"))
    assert all(name in everywhere for name in (short, too_long, active))

    deleted = cluster.kubectl("delete", "events", "--all", "-n", space)
    assert deleted.returncode == 0, deleted.stderr
    assert cluster.events(space, short) == []
    after_csv = ok(daypass(cluster, "bob", "audit", "--since", "1d", "-n", space, "-o", "csv"))
    assert without_usage(csv.DictReader(io.StringIO(after_csv))) == without_usage(
        csv.DictReader(io.StringIO(before_csv)))
    after_json = json.loads(ok(daypass(cluster, "bob", "audit", "-n", space, "-o", "json")))
    assert without_usage(after_json["requests"]) == without_usage(before_json["requests"])
    table = ok(daypass(cluster, "bob", "audit", "-n", space))
    assert "expired by daypass" in table and "denied by daypass" in table
    shown = ok(daypass(cluster, "admin", "show", short, "-n", space))
    moments = [line.split()[1:4] for line in shown.split("Timeline:")[1].splitlines()[2:]]
    assert moments == [["Requested", "Pending", "alice"], ["Granted", "Active", "daypass"],
                       ["Expired", "Expired", "daypass"]]
