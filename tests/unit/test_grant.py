"""The grant: the one RoleBinding an active request has, and how to tell it was tampered with."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from builders import NOW, request
from daypass.grant import binding_name, desired_binding, drift, request_label, request_of

EXPIRES = NOW + timedelta(minutes=30)
RBAC = "rbac.authorization.k8s.io"


def binding(name: str = "alice-edit", **kwargs: Any) -> dict[str, Any]:
    return desired_binding(request(name, **kwargs), NOW, EXPIRES)


def as_observed(desired: dict[str, Any]) -> dict[str, Any]:
    """The binding as the API server returns it: the desired one plus server-set fields."""
    observed = copy.deepcopy(desired)
    observed["metadata"] |= {"uid": "b-1", "resourceVersion": "7", "creationTimestamp": "x"}
    observed["metadata"]["labels"]["added-by-someone"] = "harmless"
    return observed


def test_the_binding_gives_the_requester_the_requested_role_in_the_request_namespace() -> None:
    rb = binding(role={"kind": "Role", "name": "debugger"}, username="carol")

    assert rb["apiVersion"] == f"{RBAC}/v1"
    assert rb["kind"] == "RoleBinding"
    assert rb["metadata"]["namespace"] == "team-a"
    assert rb["subjects"] == [{"kind": "User", "apiGroup": RBAC, "name": "carol"}]
    assert rb["roleRef"] == {"apiGroup": RBAC, "kind": "Role", "name": "debugger"}


def test_the_binding_is_named_after_the_request_and_labelled_as_daypass() -> None:
    rb = binding("alice-edit")

    assert rb["metadata"]["name"] == "daypass-alice-edit"
    assert rb["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "daypass",
        "daypass.dev/request": "alice-edit",
    }


def test_the_binding_is_annotated_with_its_times_and_request() -> None:
    annotations = binding()["metadata"]["annotations"]

    assert annotations["daypass.dev/request"] == "alice-edit"
    assert annotations["daypass.dev/granted-at"] == "2026-12-04T09:00:00Z"
    assert annotations["daypass.dev/expires-at"] == "2026-12-04T09:30:00Z"


def test_the_binding_is_owned_by_its_request() -> None:
    # Owned, so that deleting the request deletes the binding even when the operator is down.
    (owner,) = binding()["metadata"]["ownerReferences"]

    assert owner == {
        "apiVersion": "daypass.dev/v1alpha1",
        "kind": "AccessRequest",
        "name": "alice-edit",
        "uid": "uid-alice-edit",
        "controller": True,
    }


def long_name(tail: str) -> str:
    # The longest request name Kubernetes accepts is 253 characters.
    return ("a" * 60 + ".") * 3 + "b" * (253 - 3 * 61 - len(tail)) + tail


def test_long_request_names_are_shortened_with_a_hash_and_stay_distinct() -> None:
    first, second = long_name("-1"), long_name("-2")
    assert len(first) == len(second) == 253

    names = {binding_name(first), binding_name(second)}
    labels = {request_label(first), request_label(second)}

    assert len(names) == 2 and len(labels) == 2
    assert all(len(name) <= 253 and name.startswith("daypass-aaaa") for name in names)
    assert all(len(label) <= 63 for label in labels)


def test_shortened_label_values_are_valid_label_values() -> None:
    # A label value must begin and end with a letter or digit; the cut must not leave a dot.
    label = request_label("x" * 51 + ".y" + "z" * 20)

    assert len(label) <= 63
    assert label[0].isalnum() and label[-1].isalnum()
    assert ".-" not in label and "-." not in label


def test_names_that_fit_are_not_shortened() -> None:
    fits = "r" * 63

    assert request_label(fits) == fits
    assert binding_name(fits) == f"daypass-{fits}"


def test_a_long_request_keeps_its_full_name_in_the_annotation() -> None:
    name = long_name("-1")

    rb = binding(name)

    assert rb["metadata"]["annotations"]["daypass.dev/request"] == name
    assert rb["metadata"]["labels"]["daypass.dev/request"] == request_label(name)
    assert request_of(rb) == name


def test_an_intact_binding_has_no_drift() -> None:
    desired = binding()

    assert drift(as_observed(desired), desired) == []


@pytest.mark.parametrize(
    ("tamper", "found"),
    [
        (lambda rb: rb["subjects"][0].update(name="mallory"), ["subjects"]),
        (
            lambda rb: rb["subjects"].append({"kind": "Group", "apiGroup": RBAC, "name": "all"}),
            ["subjects"],
        ),
        (lambda rb: rb.update(subjects=[]), ["subjects"]),
        (
            lambda rb: rb["subjects"].__setitem__(
                0, {"kind": "ServiceAccount", "name": "alice", "namespace": "team-a"}
            ),
            ["subjects"],
        ),
        (lambda rb: rb["roleRef"].update(name="admin"), ["roleRef"]),
        (lambda rb: rb["roleRef"].update(kind="Role"), ["roleRef"]),
        (
            lambda rb: rb["metadata"]["labels"].pop("app.kubernetes.io/managed-by"),
            ["label app.kubernetes.io/managed-by"],
        ),
        (
            lambda rb: rb["metadata"]["labels"].update({"daypass.dev/request": "other"}),
            ["label daypass.dev/request"],
        ),
        (
            lambda rb: rb["metadata"].pop("labels"),
            [
                "label app.kubernetes.io/managed-by",
                "label daypass.dev/request",
            ],
        ),
    ],
    ids=[
        "other user",
        "extra subject",
        "no subjects",
        "service account",
        "other role",
        "other role kind",
        "managed-by label removed",
        "request label changed",
        "all labels removed",
    ],
)
def test_drift_finds_what_was_changed(tamper: Any, found: list[str]) -> None:
    desired = binding()
    observed = as_observed(desired)

    tamper(observed)

    assert drift(observed, desired) == found


def test_request_of_reads_the_annotation_first() -> None:
    assert request_of(binding("alice-edit")) == "alice-edit"


def test_request_of_falls_back_to_the_owner_then_the_label() -> None:
    rb = binding("alice-edit")
    del rb["metadata"]["annotations"]
    assert request_of(rb) == "alice-edit"

    del rb["metadata"]["ownerReferences"]
    assert request_of(rb) == "alice-edit"

    del rb["metadata"]["labels"]
    assert request_of(rb) is None


def test_request_of_ignores_owners_that_are_not_requests() -> None:
    rb = {"metadata": {"ownerReferences": [{"kind": "Deployment", "name": "web"}]}}

    assert request_of(rb) is None
