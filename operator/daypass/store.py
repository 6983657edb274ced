"""What the operator knows of the cluster: the latest body of each policy, request and Daypass
binding, and every namespace's labels.

Filled by one listing at start and kept current by the watches. Bodies are kept without what
the operator never reads (managedFields, kubectl's last-applied annotation), which would
otherwise be much of its memory at ten thousand grants. Never an API call here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from daypass.grant import daypass_binding

Key = tuple[str, str]


def _rv(body: Mapping[str, Any]) -> int:
    try:
        return int((body.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def key_of(body: Mapping[str, Any]) -> Key:
    """(namespace, name); a cluster-scoped object's namespace is empty."""
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
             "deletionTimestamp", "labels", "ownerReferences")


def compact(body: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """The parts the operator reads. A status write sends metadata back, but the API server
    keeps only the status of it, so nothing dropped here can be lost."""
    kept = {field: body[field] for field in fields if body.get(field) is not None}
    metadata = body.get("metadata") or {}
    small = {key: metadata[key] for key in _METADATA if metadata.get(key) is not None}
    annotations = {key: value for key, value in (metadata.get("annotations") or {}).items()
                   if key.startswith("daypass.dev/")}
    if annotations:
        small["annotations"] = annotations
    kept["metadata"] = small
    return kept


REQUEST_FIELDS = ("apiVersion", "kind", "spec", "status")
POLICY_FIELDS = REQUEST_FIELDS
BINDING_FIELDS = ("subjects", "roleRef")


class Store:
    def __init__(self) -> None:
        self._requests: dict[Key, dict[str, Any]] = {}
        self._bindings: dict[Key, dict[str, Any]] = {}
        self._policies: dict[Key, dict[str, Any]] = {}
        self._namespaces: dict[str, dict[str, str]] = {}

    @staticmethod
    def _put(table: dict[Key, dict[str, Any]], body: Mapping[str, Any],
             fields: Iterable[str]) -> None:
        key = key_of(body)
        known = table.get(key)
        # The first listing may be older than the watch's first events: keep the newest.
        if known is not None and _rv(body) < _rv(known):
            return
        table[key] = compact(body, fields)

    def put_request(self, body: Mapping[str, Any]) -> None:
        self._put(self._requests, body, REQUEST_FIELDS)

    def drop_request(self, key: Key) -> None:
        self._requests.pop(key, None)

    def request(self, key: Key) -> dict[str, Any] | None:
        return self._requests.get(key)

    def requests(self) -> list[dict[str, Any]]:
        return list(self._requests.values())

    def request_keys(self) -> list[Key]:
        return list(self._requests)

    def put_binding(self, body: Mapping[str, Any]) -> None:
        self._put(self._bindings, body, BINDING_FIELDS)

    def put_daypass_binding(self, body: Mapping[str, Any]) -> None:
        """Keep a binding only when it is Daypass's: by its label, or by its owner."""
        if daypass_binding(body):
            self.put_binding(body)

    def drop_binding(self, key: Key) -> None:
        self._bindings.pop(key, None)

    def binding(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._bindings.get((namespace, name))

    def bindings(self) -> list[dict[str, Any]]:
        return list(self._bindings.values())

    def binding_keys(self) -> list[Key]:
        return list(self._bindings)

    def put_policy(self, body: Mapping[str, Any]) -> None:
        self._put(self._policies, body, POLICY_FIELDS)

    def drop_policy(self, name: str) -> None:
        self._policies.pop(("", name), None)

    def policy(self, name: str) -> dict[str, Any] | None:
        return self._policies.get(("", name))

    def policies(self) -> list[dict[str, Any]]:
        return list(self._policies.values())

    def policy_names(self) -> list[str]:
        return [name for _, name in self._policies]

    def put_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        self._namespaces[name] = dict(labels)

    def put_namespace_body(self, body: Mapping[str, Any]) -> None:
        metadata = body.get("metadata") or {}
        self.put_namespace(str(metadata.get("name")), metadata.get("labels") or {})

    def drop_namespace(self, name: str) -> None:
        self._namespaces.pop(name, None)

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        return self._namespaces.get(name)

    def namespace_names(self) -> list[str]:
        return list(self._namespaces)
