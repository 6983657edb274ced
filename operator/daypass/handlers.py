"""The kopf layer: wires watch events to the reconciler and does nothing else.

kopf runs the operator's life (login, startup, cleanup) and watches reviews. Policies,
namespaces, requests and bindings come from the operator's own watches into a store (kopf's
per-object machinery cost some 10 ms an object, minutes at a restart with thousands of
grants or namespaces): all four are listed before the intake acts on anything, so no request
is judged before every policy is known. Each handler reads as: on this event, reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf

from daypass.audit import EventPoster
from daypass.grant import daypass_binding, request_of
from daypass.models import GROUP, VERSION
from daypass.reconciler import Reconciler
from daypass.store import Store, key_of
from daypass.watch import NAMESPACES, POLICIES, REQUESTS, ROLEBINDINGS, Watch, list_all

log = logging.getLogger("daypass")

# Seconds the events still queued get at shutdown.
DRAIN_AT_EXIT = 5.0


def _plain(body: kopf.Body) -> dict[str, Any]:
    return {key: body.get(key) for key in ("apiVersion", "kind", "metadata", "spec", "status")
            if body.get(key) is not None}


class Intake:
    """Watch events: the store kept current, the reconciler told.

    Until every kind is listed, events only fill the store; then every known request is
    reconciled once, the most overdue first, and events are acted on as they come.
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
        for policy in self.store.policies():
            self.reconciler.spawn(self.reconciler.policy_changed(policy, deleted=False,
                                                                 recheck=False))
        requests = sorted(self.store.requests(), key=_urgency)
        for body in requests:
            self.reconciler.spawn_reconcile(key_of(body))
        bindings = self.store.bindings()
        log.info("daypass is looking at %d requests and %d bindings", len(requests),
                 len(bindings))
        for binding in bindings:
            request = self.store.request((key_of(binding)[0], request_of(binding) or ""))
            owners = {o.get("uid") for o in binding["metadata"].get("ownerReferences") or []}
            if request is None or request["metadata"].get("uid") not in owners:
                self.reconciler.spawn(self.reconciler.binding_changed_until_done(binding, False))

    def request(self, kind: str, payload: Any) -> None:
        if kind == "RELISTED":
            _replay(self.request, {key_of(body): body for body in payload},
                    self.store.request_keys(), self.store.request)
            return
        key = key_of(payload)
        if kind == "DELETED":
            self.store.drop_request(key)
            if self.open:
                self.reconciler.spawn(self.reconciler.forget(payload, gone=True))
            return
        self.store.put_request(payload)
        if self.open and not (kind == "MODIFIED"
                              and self.reconciler.echo_of_own_write(payload)):
            self.reconciler.spawn_reconcile(key)

    def binding(self, kind: str, payload: Any) -> None:
        if kind == "RELISTED":
            _replay(self.binding, {key_of(body): body for body in payload if daypass_binding(body)},
                    self.store.binding_keys(), lambda key: self.store.binding(*key))
            return
        key = key_of(payload)
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
            self.reconciler.spawn(self.reconciler.binding_changed_until_done(plain, deleted))

    def policy(self, kind: str, payload: Any) -> None:
        if kind == "RELISTED":
            _replay(self.policy, {body["metadata"]["name"]: body for body in payload},
                    self.store.policy_names(), self.store.policy)
            return
        name = payload["metadata"]["name"]
        known = self.store.policy(name)
        deleted = kind == "DELETED"
        if deleted:
            self.store.drop_policy(name)
        else:
            self.store.put_policy(payload)
        if self.open:
            # Only a new spec can change what a policy allows; its status is the operator's.
            recheck = deleted or known is None or (
                known["metadata"].get("generation") != payload["metadata"].get("generation"))
            self.reconciler.spawn(self.reconciler.policy_changed(
                self.store.policy(name) or payload, deleted=deleted, recheck=recheck))

    def namespace(self, kind: str, payload: Any) -> None:
        if kind == "RELISTED":
            _replay(self.namespace, {body["metadata"]["name"]: body for body in payload},
                    self.store.namespace_names(), lambda name: {"metadata": {"name": name}})
            return
        name = payload["metadata"]["name"]
        if kind == "DELETED":
            self.store.drop_namespace(name)
            return
        known = self.store.namespace_labels(name)
        labels = dict(payload["metadata"].get("labels") or {})
        self.store.put_namespace(name, labels)
        if self.open and known is not None and known != labels:
            self.reconciler.spawn(self.reconciler.namespace_changed(name))


def _replay(handle: Callable[[str, Any], None], listed: Mapping[Any, Any], known: Iterable[Any],
            body_of: Callable[[Any], Any]) -> None:
    """A fresh listing after the watch fell behind, as the events it stands for: what is gone
    from it deleted, everything in it modified."""
    for key in [key for key in known if key not in listed]:
        handle("DELETED", body_of(key))
    for body in listed.values():
        handle("MODIFIED", body)


def _urgency(body: Mapping[str, Any]) -> tuple[int, str]:
    """Grants that should already have ended first, in order of expiry; then everything else."""
    status = body.get("status") or {}
    expires = status.get("expiresAt")
    return (0, str(expires)) if status.get("phase") == "Active" and expires else (1, "")


# Handlers.

@kopf.on.event(GROUP, VERSION, "accessreviews")
async def review_event(event: Mapping[str, Any], body: kopf.Body, memo: kopf.Memo,
                       **_: Any) -> None:
    if event.get("type") != "DELETED":
        reconciler: Reconciler = memo.reconciler
        await reconciler.review(_plain(body))


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
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    # The store is filled on the listing threads, before anything on the loop reads it.
    # Known shortcoming: every RoleBinding in the cluster is listed (a label selector would
    # miss ours stripped of their label) before overdue grants are ended.
    store = Store()
    kinds = {POLICIES: store.put_policy, NAMESPACES: store.put_namespace_body,
             REQUESTS: store.put_request, ROLEBINDINGS: store.put_daypass_binding}
    listings = await asyncio.gather(*(asyncio.to_thread(list_all, memo.kube, kind, keep)
                                      for kind, keep in kinds.items()))
    memo.store = store
    events = EventPoster(memo.kube)
    memo.events = events
    reconciler = Reconciler(memo.kube, store, events, memo.audit, usage=memo.usage,
                            retention=memo.retention)
    memo.reconciler = reconciler
    memo.endpoints.on_audit_events = reconciler.audit_events
    memo.intake = intake = Intake(store, reconciler)
    loop = asyncio.get_running_loop()
    deliver = {POLICIES: intake.policy, NAMESPACES: intake.namespace,
               REQUESTS: intake.request, ROLEBINDINGS: intake.binding}
    memo.watches = [Watch(memo.kube, kind, listing.resource_version, deliver[kind], loop)
                    for kind, listing in zip(kinds, listings, strict=True)]
    for watch in memo.watches:
        watch.start()
    # Everything is listed: policies are known before any request is judged.
    intake.start()
    memo.endpoints.ready = True
    memo.periodic = loop.create_task(reconciler.run_periodic())
    log.info("daypass started as %s; usage %s", memo.identity,
             "counted from audit events" if memo.usage is not None else "not collected")


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for watch in memo.watches:
        watch.stop()
    memo.periodic.cancel()
    memo.reconciler.close()
    # Bounded: the Lease is held until the operator exits, and a standby waits for it.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(memo.events.drain(), DRAIN_AT_EXIT)
    await memo.events.close()
    await memo.kube.close_sessions()
