"""The kopf layer: wires watch events to the reconciler and does nothing else.

kopf's indexes hold what the watch has seen of policies, namespaces, requests and Daypass
bindings; handlers run only once every index has its first full listing, so no request is
judged before all policies are known. Each handler reads as: on this event, reconcile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from daypass.audit import EventPoster
from daypass.grant import MANAGED_BY, MANAGED_BY_VALUE, SELECTOR
from daypass.models import GROUP, VERSION
from daypass.reconciler import Key, Reconciler
from daypass.store import Store

log = logging.getLogger("daypass")

RBAC = ("rbac.authorization.k8s.io", "v1", "rolebindings")


def _one(store: Any) -> Any:
    for value in store:
        return value
    return None


class Views:
    """The reconciler's view of the cluster: small kinds from kopf's indexes, which hold every
    handler until their first listing is complete, and requests and bindings from the store."""

    def __init__(self, indices: Mapping[str, kopf.Index[Any, Any]], store: Store) -> None:
        self._policies = indices["policy_index"]
        self._namespaces = indices["namespace_index"]
        self.store = store

    def policies(self) -> Iterable[dict[str, Any]]:
        return [_one(store) for store in self._policies.values()]

    def namespace_labels(self, name: str) -> Mapping[str, str] | None:
        store = self._namespaces.get(name)
        return _one(store) if store is not None else None

    def request(self, key: Key) -> dict[str, Any] | None:
        return self.store.request(key)

    def requests(self) -> Iterable[dict[str, Any]]:
        return self.store.requests()

    def binding(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.binding(namespace, name)


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {key: body.get(key) for key in ("apiVersion", "kind", "metadata", "spec", "status")
            if body.get(key) is not None}


# Indexes: lightweight, run on every watch event before any handler.

@kopf.index(GROUP, VERSION, "accesspolicies")
def policy_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {name: _plain(body)}


@kopf.index("", "v1", "namespaces")
def namespace_index(name: str, labels: kopf.Labels, **_: Any) -> dict[str, Any]:
    return {name: dict(labels)}


# Requests and bindings are not kopf indexes: kopf holds every object's handler until every
# indexed object is listed, which grows with the square of their number. The startup handler
# lists them into the store instead.


# Handlers.

@kopf.on.event(GROUP, VERSION, "accessrequests")
async def request_event(event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo,
                        **_: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    key = (body.metadata.namespace or "", body.metadata.name or "")
    if event.get("type") == "DELETED":
        memo.store.drop_request(key)
        await reconciler.forget(_plain(body))
        return
    memo.store.put_request(body)
    if not (event.get("type") == "MODIFIED" and reconciler.echo_of_own_write(body)):
        await reconciler.reconcile(key)


@kopf.on.event(GROUP, VERSION, "accessreviews")
async def review_event(event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo,
                       **_: Any) -> None:
    if event.get("type") != "DELETED":
        reconciler: Reconciler = memo.reconciler
        await reconciler.review(_plain(body))


def _daypass_binding(body: kopf.Body, **_: Any) -> bool:
    """Ours by label, or by owner: an edit that strips the label must not hide a binding."""
    labels = body.get("metadata", {}).get("labels") or {}
    owners = body.get("metadata", {}).get("ownerReferences") or []
    return labels.get(MANAGED_BY) == MANAGED_BY_VALUE or any(
        owner.get("kind") == "AccessRequest"
        and str(owner.get("apiVersion", "")).startswith(f"{GROUP}/")
        for owner in owners
    )


@kopf.on.event(*RBAC, when=_daypass_binding)
async def binding_event(event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo,
                        **_: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    deleted = event.get("type") == "DELETED"
    if deleted:
        memo.store.drop_binding((body.metadata.namespace or "", body.metadata.name or ""))
    else:
        memo.store.put_binding(body)
    plain = {key: body.get(key) for key in ("metadata", "subjects", "roleRef")}
    await reconciler.binding_changed(plain, deleted=deleted)


@kopf.on.event(GROUP, VERSION, "accesspolicies")
async def policy_event(event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo,
                       **_: Any) -> None:
    reconciler: Reconciler = memo.reconciler
    # The first listing (type None) needs no re-check: every request is reconciled at start.
    await reconciler.policy_changed(_plain(body), deleted=event.get("type") == "DELETED",
                                    recheck=event.get("type") is not None)


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(event: Mapping[str, Any], name: str, memo: kopf.Memo,
                          **_: Any) -> None:
    # Handlers run only once every index holds its first full listing: ready from here on.
    memo.endpoints.ready = True
    if event.get("type") == "MODIFIED":
        reconciler: Reconciler = memo.reconciler
        await reconciler.namespace_changed(name)


# Life of the operator.

@kopf.on.login()
def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf watches with the very credentials the reconciler acts with."""
    configuration = memo.kube.configuration
    keys = configuration.api_key or {}
    header = str(keys.get("BearerToken") or keys.get("authorization") or "")
    token = header.removeprefix("Bearer ").strip() or None
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme="Bearer" if token else None,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        default_namespace="default",
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    settings.posting.enabled = False
    # The CRDs are installed before the operator; watching for new ones would need read access
    # to every CRD in the cluster, which least privilege says the operator does without.
    settings.scanning.disabled = True
    settings.persistence.finalizer = "daypass.dev/finalizer"
    # Events of one object are handled in order; a short batch window keeps grants quick.
    settings.batching.batch_window = 0.01
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    store = Store()
    for request in await memo.kube.list_requests():
        store.put_request(request)
    for binding in await memo.kube.list_bindings(SELECTOR):
        store.put_binding(binding)
    memo.store = store
    events = EventPoster(memo.kube)
    memo.events = events
    reconciler = Reconciler(memo.kube, Views(kwargs, store), events, memo.audit,
                            usage=memo.usage, retention=memo.retention)
    memo.reconciler = reconciler
    memo.endpoints.on_audit_events = reconciler.audit_events
    memo.periodic = asyncio.get_running_loop().create_task(reconciler.run_periodic())
    log.info("daypass started as %s; usage %s", memo.identity,
             "counted from audit events" if memo.usage is not None else "not collected")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    memo.periodic.cancel()
    memo.reconciler.close()
    await memo.events.drain()
    await memo.events.close()
