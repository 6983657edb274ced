"""The intake of the request and binding watches: what the store holds, and what is reconciled
when. No cluster and no event loop: the reconciler is a recorder of what it was asked to do."""

from __future__ import annotations

from typing import Any

from daypass.handlers import Intake, daypass_binding
from daypass.store import Store


class Recorder:
    def __init__(self) -> None:
        self.done: list[tuple[str, Any]] = []
        self.own_writes: set[str] = set()

    def spawn_reconcile(self, key: tuple[str, str]) -> None:
        self.done.append(("reconcile", key))

    def spawn(self, work: tuple[str, Any]) -> None:
        self.done.append(work)

    def forget(self, body: dict[str, Any], gone: bool = False) -> tuple[str, Any]:
        return ("forget", body["metadata"]["name"])

    def binding_changed_until_done(self, body: dict[str, Any], deleted: bool) -> tuple[str, Any]:
        return ("binding deleted" if deleted else "binding changed", body["metadata"]["name"])

    def policy_changed(self, body: dict[str, Any], deleted: bool,
                       recheck: bool) -> tuple[str, Any]:
        what = "policy deleted" if deleted else "policy rechecked" if recheck else "policy seen"
        return (what, body["metadata"]["name"])

    def namespace_changed(self, name: str) -> tuple[str, Any]:
        return ("namespace changed", name)

    def echo_of_own_write(self, body: dict[str, Any]) -> bool:
        return str(body["metadata"]["resourceVersion"]) in self.own_writes


def request(name: str, version: int = 1, phase: str | None = None,
            expires: str | None = None) -> dict[str, Any]:
    status = {"phase": phase, "expiresAt": expires} if phase else {}
    return {"metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}",
                         "resourceVersion": str(version)},
            "spec": {"role": {"kind": "ClusterRole", "name": "edit"}}, "status": status}


def binding(name: str, request_name: str, owner_uid: str | None = None,
            labelled: bool = True, version: int = 1) -> dict[str, Any]:
    labels = ({"app.kubernetes.io/managed-by": "daypass", "daypass.dev/request": request_name}
              if labelled else {})
    owners = ([{"apiVersion": "daypass.dev/v1alpha1", "kind": "AccessRequest",
                "name": request_name, "uid": owner_uid}] if owner_uid else [])
    return {"metadata": {"name": name, "namespace": "team-a", "labels": labels,
                         "ownerReferences": owners, "resourceVersion": str(version)},
            "subjects": [{"kind": "User", "name": "alice"}],
            "roleRef": {"kind": "ClusterRole", "name": "edit"}}


def policy(generation: int, version: int, ready: str | None = None) -> dict[str, Any]:
    status = {"conditions": [{"type": "Ready", "status": ready}]} if ready else {}
    return {"metadata": {"name": "developers-edit", "generation": generation,
                         "resourceVersion": str(version)},
            "spec": {"maxDuration": "4h"}, "status": status}


def namespace(labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": "team-a", "labels": labels}}


def intake() -> tuple[Intake, Store, Recorder]:
    store, recorder = Store(), Recorder()
    return Intake(store, recorder), store, recorder  # type: ignore[arg-type]


def test_events_before_policies_are_known_only_fill_the_store() -> None:
    taking, store, recorder = intake()
    taking.request("ADDED", request("alice-edit"))
    taking.binding("ADDED", binding("daypass-alice-edit", "alice-edit", "uid-alice-edit"))

    assert store.request(("team-a", "alice-edit")) is not None
    assert store.binding("team-a", "daypass-alice-edit") is not None
    assert recorder.done == []


def test_at_start_overdue_grants_are_looked_at_first_in_order_of_expiry() -> None:
    taking, _, recorder = intake()
    taking.request("ADDED", request("pending"))
    taking.request("ADDED", request("later", phase="Active", expires="2026-12-04T10:00:00Z"))
    taking.request("ADDED", request("sooner", phase="Active", expires="2026-12-04T09:00:00Z"))
    taking.request("ADDED", request("ended", phase="Expired", expires="2026-12-04T08:00:00Z"))

    taking.start()

    assert [key[1] for _, key in recorder.done] == ["sooner", "later", "pending", "ended"]


def test_at_start_only_bindings_without_their_request_are_checked() -> None:
    taking, _, recorder = intake()
    taking.request("ADDED", request("alice-edit"))
    taking.binding("ADDED", binding("daypass-alice-edit", "alice-edit", "uid-alice-edit"))
    taking.binding("ADDED", binding("daypass-gone", "gone", "uid-gone"))
    taking.binding("ADDED", binding("daypass-old", "alice-edit", "uid-of-an-older-request"))

    taking.start()

    assert ("binding changed", "daypass-gone") in recorder.done
    assert ("binding changed", "daypass-old") in recorder.done
    assert ("binding changed", "daypass-alice-edit") not in recorder.done


def test_the_echo_of_the_operators_own_write_is_not_reconciled() -> None:
    taking, _, recorder = intake()
    taking.start()
    recorder.own_writes.add("7")

    taking.request("MODIFIED", request("alice-edit", version=7, phase="Active"))
    assert recorder.done == []
    taking.request("MODIFIED", request("alice-edit", version=8, phase="Active"))
    assert recorder.done == [("reconcile", ("team-a", "alice-edit"))]


def test_a_deleted_request_leaves_the_store_and_its_access_is_forgotten() -> None:
    taking, store, recorder = intake()
    taking.start()
    taking.request("ADDED", request("alice-edit"))
    taking.request("DELETED", request("alice-edit", version=2))

    assert store.request(("team-a", "alice-edit")) is None
    assert recorder.done[-1] == ("forget", "alice-edit")


def test_a_listing_after_the_watch_fell_behind_deletes_what_is_gone() -> None:
    taking, store, recorder = intake()
    taking.start()
    taking.request("ADDED", request("kept"))
    taking.request("ADDED", request("gone"))
    taking.binding("ADDED", binding("daypass-gone", "gone", "uid-gone"))
    recorder.done.clear()

    taking.request("RELISTED", [request("kept", version=3), request("new", version=4)])
    taking.binding("RELISTED", [binding("someone-elses", "x", labelled=False)])

    assert sorted(key[1] for key in store.request_keys()) == ["kept", "new"]
    assert store.binding_keys() == []
    assert ("forget", "gone") in recorder.done
    assert ("binding deleted", "daypass-gone") in recorder.done
    assert ("reconcile", ("team-a", "new")) in recorder.done


def test_a_binding_no_longer_daypass_s_makes_its_grant_look_again() -> None:
    taking, store, recorder = intake()
    taking.start()
    taking.binding("ADDED", binding("daypass-alice-edit", "alice-edit", "uid-alice-edit"))
    recorder.done.clear()

    taking.binding("MODIFIED", binding("daypass-alice-edit", "alice-edit", labelled=False,
                                       version=2))

    assert store.binding("team-a", "daypass-alice-edit") is None
    assert recorder.done == [("reconcile", ("team-a", "alice-edit"))]


def test_a_binding_is_daypass_s_by_label_or_by_owner() -> None:
    assert daypass_binding(binding("b", "r", labelled=True))
    assert daypass_binding(binding("b", "r", owner_uid="u", labelled=False))
    assert not daypass_binding(binding("b", "r", labelled=False))


def test_at_start_every_policy_reports_whether_it_is_usable() -> None:
    taking, _, recorder = intake()
    taking.policy("ADDED", policy(generation=1, version=1))
    assert recorder.done == []

    taking.start()
    assert recorder.done == [("policy seen", "developers-edit")]


def test_only_a_new_policy_spec_rechecks_the_requests_it_allowed() -> None:
    taking, store, recorder = intake()
    taking.policy("ADDED", policy(generation=1, version=1))
    taking.start()
    recorder.done.clear()

    taking.policy("MODIFIED", policy(generation=1, version=2, ready="True"))  # its status
    taking.policy("MODIFIED", policy(generation=2, version=3, ready="True"))  # its spec
    taking.policy("DELETED", policy(generation=2, version=4, ready="True"))

    assert recorder.done == [("policy seen", "developers-edit"),
                             ("policy rechecked", "developers-edit"),
                             ("policy deleted", "developers-edit")]
    assert store.policies() == []


def test_a_namespace_whose_labels_change_makes_its_requests_look_again() -> None:
    taking, store, recorder = intake()
    taking.namespace("ADDED", namespace({"daypass.dev/eligible": "true"}))
    taking.start()

    taking.namespace("MODIFIED", namespace({"daypass.dev/eligible": "true"}))
    assert recorder.done == []
    taking.namespace("MODIFIED", namespace({}))
    assert recorder.done == [("namespace changed", "team-a")]
    assert store.namespace_labels("team-a") == {}

    taking.namespace("DELETED", namespace({}))
    assert store.namespace_labels("team-a") is None
