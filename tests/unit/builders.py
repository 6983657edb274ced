"""Policies and requests for the unit tests of the pure core, as the API server returns them.

Objects are built from camelCase dicts through the pydantic models, the way the operator reads
them, so the tests exercise the same aliases the wire uses. Time is fixed: nothing reads the clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from daypass.models import AccessPolicy, AccessRequest

NOW = datetime(2026, 12, 4, 9, 0, 0, tzinfo=UTC)

DEVELOPERS_EDIT: dict[str, Any] = {
    "subjects": {"users": ["alice"], "groups": ["developers"]},
    "roles": [{"kind": "ClusterRole", "name": "edit"}, {"kind": "Role", "name": "debugger"}],
    "namespaces": {"names": ["team-a"]},
    "maxDuration": "4h",
    "defaultDuration": "1h",
}


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def policy(name: str = "developers-edit", **spec: Any) -> AccessPolicy:
    """A policy like the SPEC's developers-edit; keyword arguments (camelCase) replace spec fields,
    None removes one."""
    return AccessPolicy.model_validate(
        {
            "apiVersion": "daypass.dev/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1},
            "spec": _merge(DEVELOPERS_EDIT, spec),
        }
    )


def request(
    name: str = "alice-edit",
    *,
    namespace: str = "team-a",
    username: str = "alice",
    groups: list[str] | None = None,
    role: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> AccessRequest:
    """A request by alice for ClusterRole/edit in team-a; keyword arguments (camelCase) add spec
    fields such as duration, reason and startAt."""
    body: dict[str, Any] = {
        "apiVersion": "daypass.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "creationTimestamp": NOW.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "spec": {
            "role": role or {"kind": "ClusterRole", "name": "edit"},
            "requester": {
                "username": username,
                "groups": ["developers", "system:authenticated"] if groups is None else groups,
            },
            **spec,
        },
    }
    if status is not None:
        body["status"] = status
    return AccessRequest.model_validate(body)
