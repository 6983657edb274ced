"""The operator's store of requests and bindings: newest wins, nothing it never reads is kept."""

from __future__ import annotations

from typing import Any

from daypass.store import Store


def body(version: str, phase: str = "Active") -> dict[str, Any]:
    return {
        "apiVersion": "daypass.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {
            "name": "alice-edit",
            "namespace": "team-a",
            "uid": "u-1",
            "resourceVersion": version,
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{...the whole manifest...}",
                "daypass.dev/request": "alice-edit",
            },
        },
        "spec": {"role": {"kind": "ClusterRole", "name": "edit"}},
        "status": {"phase": phase},
    }


def test_the_store_keeps_what_the_operator_reads_and_drops_the_rest() -> None:
    store = Store()
    store.put_request(body("10"))

    kept = store.request(("team-a", "alice-edit"))
    assert kept is not None
    assert kept["spec"] == {"role": {"kind": "ClusterRole", "name": "edit"}}
    assert kept["status"] == {"phase": "Active"}
    assert kept["metadata"]["uid"] == "u-1" and kept["metadata"]["resourceVersion"] == "10"
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"]["annotations"] == {"daypass.dev/request": "alice-edit"}


def test_an_older_body_never_replaces_a_newer_one() -> None:
    store = Store()
    store.put_request(body("12", "Expired"))
    store.put_request(body("11", "Active"))  # a listing older than the watch's event
    assert store.request(("team-a", "alice-edit"))["status"]["phase"] == "Expired"  # type: ignore[index]

    store.put_request(body("13", "Expired"))
    store.drop_request(("team-a", "alice-edit"))
    assert store.request(("team-a", "alice-edit")) is None
    assert store.requests() == []


def test_bindings_are_kept_by_namespace_and_name() -> None:
    store = Store()
    binding = {"metadata": {"name": "daypass-alice-edit", "namespace": "team-a",
                            "resourceVersion": "5", "labels": {"a": "b"}},
               "subjects": [{"kind": "User", "name": "alice"}],
               "roleRef": {"kind": "ClusterRole", "name": "edit"}}
    store.put_binding(binding)
    kept = store.binding("team-a", "daypass-alice-edit")
    assert kept is not None and kept["subjects"] == binding["subjects"]
    assert kept["metadata"]["labels"] == {"a": "b"}
    store.drop_binding(("team-a", "daypass-alice-edit"))
    assert store.binding("team-a", "daypass-alice-edit") is None
