"""The kopf layer: wires watch events to the reconciler and does nothing else.

kopf watches the few policies, namespaces and reviews; requests and Daypass bindings, of which
there are thousands, come from the operator's own watches into a store. kopf runs handlers only
once every index has its first full listing, and the intake acts only from then on, so no
request is judged before all policies are known. Each handler reads as: on this event,
reconcile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import kopf

from daypass.audit import EventPoster
from daypass.grant import MANAGED_BY, MANAGED_BY_VALUE, request_of
from daypass.models import GROUP, VERSION
from daypass.reconciler import Key, Reconciler
from daypass.store import Store
from daypass.watch import REQUESTS, ROLEBINDINGS, Watch, list_all

log = logging.getLogger("daypass")

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


# Requests and bindings are neither kopf indexes nor kopf handlers: there are thousands of
# them, and kopf's per-object machinery made a restart take minutes. They come from the
# operator's own watches (watch.py) through the intake below.


class Intake:
    """Watch events of requests and bindings: the store kept current, the reconciler told.

    Until kopf has listed every policy and namespace, events only fill the store; then every
    known request is reconciled once, the most overdue first, and events are acted on as they
    come.
    """

    def __init__(self, store: Store, reconciler: Reconciler) -> None:
        self.store = store
        self.reconciler = reconciler
        self.open = False

    def start(self) -> None:
        """Everything is listed: look at every request and binding once, then follow events."""
        if self.open:
            return
        self.open = True
        requests = sorted(self.store.requests(), key=_urgency)
        for body in requests:
            self.reconciler.spawn_reconcile(_key(body))
        log.info("daypass is looking at %d requests and %d bindings", len(requests),
                 self.store.binding_count())
        for binding in self.store.bindings():
            request = self.store.request((_key(binding)[0], request_of(binding) or ""))
            owners = {o.get("uid") for o in binding["metadata"].get("ownerReferences") or []}
            if request is None or request["metadata"].get("uid") not in owners:
                self.reconciler.spawn(self.reconciler.binding_changed(binding, deleted=False))

    def request(self, kind: str, payload: Any) -> None:
        if kind == "RELISTED":
            listed = {_key(body): body for body in payload}
            for key in [key for key in self.store.request_keys() if key not in listed]:
                self.request("DELETED", self.store.request(key))
            for body in listed.values():
                self.request("MODIFIED", body)
            return
        key = _key(payload)
        if kind == "DELETED":
            self.store.drop_request(key)
            if self.open:
                self.reconciler.spawn(self.reconciler.forget(payload))
            return
        self.store.put_request(payload)
        if self.open and not (kind == "MODIFIED"
                              and self.reconciler.echo_of_own_write(payload)):
            self.reconciler.spawn_reconcile(key)

    def binding(self, kind: str, payload: Any) -> None:
        if kind == "RELISTED":
            listed = {_key(body): body for body in payload if daypass_binding(body)}
            for key in [key for key in self.store.binding_keys() if key not in listed]:
                self.binding("DELETED", self.store.binding(*key))
            for body in listed.values():
                self.binding("MODIFIED", body)
            return
        key = _key(payload)
        if not daypass_binding(payload):
            # Not Daypass's, or no longer: a grant whose binding was taken over must learn it.
            known = self.store.binding(*key)
            if known is not None:
                self.store.drop_binding(key)
                if self.open:
                    self.reconciler.spawn_reconcile((key[0], request_of(known) or ""))
            return
        deleted = kind == "DELETED"
        if deleted:
            self.store.drop_binding(key)
        else:
            self.store.put_binding(payload)
        if self.open:
            plain = {field: payload.get(field) for field in ("metadata", "subjects", "roleRef")}
            self.reconciler.spawn(self.reconciler.binding_changed(plain, deleted=deleted))


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _urgency(body: Mapping[str, Any]) -> tuple[int, str]:
    """Grants that should already have ended first, in order of expiry; then everything else."""
    status = body.get("status") or {}
    expires = status.get("expiresAt")
    return (0, str(expires)) if status.get("phase") == "Active" and expires else (1, "")


def daypass_binding(body: Mapping[str, Any]) -> bool:
    """Ours by label, or by owner: an edit that strips the label must not hide a binding."""
    labels = body.get("metadata", {}).get("labels") or {}
    owners = body.get("metadata", {}).get("ownerReferences") or []
    return labels.get(MANAGED_BY) == MANAGED_BY_VALUE or any(
        owner.get("kind") == "AccessRequest"
        and str(owner.get("apiVersion", "")).startswith(f"{GROUP}/")
        for owner in owners
    )


# Handlers.

@kopf.on.event(GROUP, VERSION, "accessreviews")
async def review_event(event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo,
                       **_: Any) -> None:
    if event.get("type") != "DELETED":
        reconciler: Reconciler = memo.reconciler
        await reconciler.review(_plain(body))


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
    # Handlers run only once every index holds its first full listing: policies are known.
    if not memo.intake.open:
        memo.intake.start()
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
    requests, bindings = await asyncio.gather(
        asyncio.to_thread(list_all, memo.kube, REQUESTS),
        asyncio.to_thread(list_all, memo.kube, ROLEBINDINGS))
    for request in requests.items:
        store.put_request(request)
    for binding in bindings.items:
        if daypass_binding(binding):
            store.put_binding(binding)
    memo.store = store
    events = EventPoster(memo.kube)
    memo.events = events
    reconciler = Reconciler(memo.kube, Views(kwargs, store), events, memo.audit,
                            usage=memo.usage, retention=memo.retention)
    memo.reconciler = reconciler
    memo.intake = intake = Intake(store, reconciler)
    loop = asyncio.get_running_loop()
    memo.watches = [Watch(memo.kube, REQUESTS, requests.resource_version, intake.request, loop),
                    Watch(memo.kube, ROLEBINDINGS, bindings.resource_version, intake.binding,
                          loop)]
    for watch in memo.watches:
        watch.start()
    memo.endpoints.on_audit_events = reconciler.audit_events
    memo.periodic = asyncio.get_running_loop().create_task(reconciler.run_periodic())
    log.info("daypass started as %s; usage %s", memo.identity,
             "counted from audit events" if memo.usage is not None else "not collected")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for watch in memo.watches:
        watch.stop()
    memo.periodic.cancel()
    memo.reconciler.close()
    await memo.events.drain()
    await memo.events.close()
