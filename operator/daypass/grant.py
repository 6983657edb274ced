"""The grant: the one RoleBinding that gives an active request its access.

Pure: builds the binding a request should have and tells whether an observed binding still is
that binding. Creating and deleting it is the reconciler's job, never this module's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from daypass.models import API_VERSION, GROUP, AccessRequest

RBAC_GROUP = "rbac.authorization.k8s.io"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "daypass"
REQUEST_LABEL = "daypass.dev/request"
REQUEST_ANNOTATION = "daypass.dev/request"
GRANTED_AT_ANNOTATION = "daypass.dev/granted-at"
EXPIRES_AT_ANNOTATION = "daypass.dev/expires-at"
SELECTOR = f"{MANAGED_BY}={MANAGED_BY_VALUE}"

_NAME_LIMIT = 253
_LABEL_LIMIT = 63


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{text[: limit - 11].rstrip('-.')}-{digest}"


def binding_name(request_name: str) -> str:
    """The binding is named after its request, shortened with a hash when too long."""
    return _shorten(f"daypass-{request_name}", _NAME_LIMIT)


def request_label(request_name: str) -> str:
    # Label values stop at 63 characters; the full name is kept in an annotation.
    return _shorten(request_name, _LABEL_LIMIT)


def timestamp(moment: datetime) -> str:
    return (
        moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if moment.microsecond
        else moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    )


def desired_binding(
    request: AccessRequest,
    granted_at: datetime,
    expires_at: datetime,
) -> dict[str, Any]:
    """The RoleBinding an active request must have, exactly."""
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": binding_name(request.name),
            "namespace": request.namespace,
            "labels": {MANAGED_BY: MANAGED_BY_VALUE, REQUEST_LABEL: request_label(request.name)},
            "annotations": {
                REQUEST_ANNOTATION: request.name,
                GRANTED_AT_ANNOTATION: timestamp(granted_at),
                EXPIRES_AT_ANNOTATION: timestamp(expires_at),
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "AccessRequest",
                    "name": request.name,
                    "uid": request.metadata.uid,
                    "controller": True,
                }
            ],
        },
        "subjects": [
            {"kind": "User", "apiGroup": RBAC_GROUP, "name": request.spec.requester.username}
        ],
        "roleRef": {
            "apiGroup": RBAC_GROUP,
            "kind": request.spec.role.kind.value,
            "name": request.spec.role.name,
        },
    }


def drift(observed: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    """What differs between an observed binding and the desired one; empty when it is intact."""
    differences = []
    if observed.get("roleRef") != desired["roleRef"]:
        differences.append("roleRef")
    subjects = [
        {"kind": s.get("kind"), "apiGroup": s.get("apiGroup") or "", "name": s.get("name")}
        | ({"namespace": s["namespace"]} if s.get("namespace") else {})
        for s in observed.get("subjects") or []
    ]
    if subjects != desired["subjects"]:
        differences.append("subjects")
    labels = (observed.get("metadata") or {}).get("labels") or {}
    for key, value in desired["metadata"]["labels"].items():
        if labels.get(key) != value:
            differences.append(f"label {key}")
    return differences


def request_of(binding: dict[str, Any]) -> str | None:
    """The name of the request a Daypass binding belongs to."""
    metadata = binding.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    if annotations.get(REQUEST_ANNOTATION):
        return str(annotations[REQUEST_ANNOTATION])
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("kind") == "AccessRequest":
            return str(owner.get("name"))
    label = (metadata.get("labels") or {}).get(REQUEST_LABEL)
    return str(label) if label else None


def daypass_binding(body: Mapping[str, Any]) -> bool:
    """Ours by label, or by owner: an edit that strips the label must not hide a binding."""
    metadata = body.get("metadata") or {}
    owners = metadata.get("ownerReferences") or []
    return (metadata.get("labels") or {}).get(MANAGED_BY) == MANAGED_BY_VALUE or any(
        owner.get("kind") == "AccessRequest"
        and str(owner.get("apiVersion", "")).startswith(f"{GROUP}/")
        for owner in owners
    )
