"""Restarts and bursts: access still ends on time, nothing is granted twice."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import wait_until_serving
from .harness import Cluster, Operator, User, eventually, now, parse_time

pytestmark = pytest.mark.e2e


def test_grants_end_on_time_across_an_operator_restart(
    cluster: Cluster, operator: Operator, space: str, alice: User, carol: User
) -> None:
    short = alice.request(space, duration="4s", reason="INC-10")["metadata"]["name"]
    long = carol.request(space, duration="25s", reason="INC-11")["metadata"]["name"]
    short_status = cluster.wait_phase(space, short, "Active")["status"]
    long_status = cluster.wait_phase(space, long, "Active")["status"]

    operator.stop(kill=True)
    short_expiry = parse_time(short_status["expiresAt"])
    eventually(lambda: now() > short_expiry, timeout=10, what="the short grant's expiresAt")
    time.sleep(2)  # the operator stays down past the short grant's expiry
    assert alice.can_list_pods(space), "nobody removes access while the operator is down"

    operator.start()
    restarted = time.monotonic()
    eventually(lambda: not alice.can_list_pods(space), timeout=20, every=0.1,
               what="the grant that expired during the downtime to be removed at once")
    removed_after = time.monotonic() - restarted
    assert carol.can_list_pods(space), "the grant still within its time stays"
    wait_until_serving(cluster, operator, "developers-edit")

    ended = cluster.wait_phase(space, short, "Expired")["status"]
    message = ended["history"][-1]["message"]
    assert "because the operator was not running" in message, message
    assert removed_after < 15

    long_expiry = parse_time(long_status["expiresAt"])
    eventually(lambda: now() >= long_expiry, timeout=30, what="the long grant's expiresAt")
    eventually(lambda: not carol.can_list_pods(space), timeout=1.5, every=0.05,
               what="the long grant to end on time after the restart")
    final = cluster.wait_phase(space, long, "Expired")["status"]
    assert [h["event"] for h in final["history"]] == ["Requested", "Granted", "Expired"]
    assert final["grantedAt"] == long_status["grantedAt"], "the grant was not renewed"
    granted = [line for name in (short, long) for line in operator.transitions(name)
               if line["event"] == "Granted"]
    assert len(granted) == 2, "each request was granted exactly once"


def test_fifty_requests_at_once_are_all_granted_and_all_end_on_time(
    cluster: Cluster, operator: Operator, space: str, alice: User, carol: User
) -> None:
    def ask(index: int) -> str:
        who = alice if index % 2 else carol
        return str(who.request(space, duration="15s", reason=f"INC-{index}")
                   ["metadata"]["name"])

    with ThreadPoolExecutor(max_workers=10) as pool:
        names = list(pool.map(ask, range(50)))

    statuses = {name: cluster.wait_phase(space, name, "Active", timeout=30)["status"]
                for name in names}
    for name, status in statuses.items():
        assert cluster.binding(space, status["binding"]) is not None, name

    latest_expiry = max(parse_time(s["expiresAt"]) for s in statuses.values())
    eventually(lambda: now() >= latest_expiry, timeout=40, what="the last expiresAt")
    time.sleep(1.5)
    for name, status in statuses.items():
        assert cluster.binding(space, status["binding"]) is None, f"{name} still bound"
        ended = cluster.wait_phase(space, name, "Expired", timeout=5)["status"]
        late = parse_time(ended["endedAt"]) - parse_time(status["expiresAt"])
        assert late.total_seconds() < 1.0, f"{name} ended {late} after expiresAt"
        assert [h["event"] for h in ended["history"]] == ["Requested", "Granted", "Expired"]
    assert not alice.can_list_pods(space)
    assert not carol.can_list_pods(space)
