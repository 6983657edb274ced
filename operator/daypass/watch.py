"""Watches of what the operator reads: policies, namespaces, requests and RoleBindings.

kopf gives every object a worker of its own and runs each event through its handler machinery;
at ten thousand grants, or thousands of namespaces, that made a start take minutes and most of
the operator's memory. Each kind is listed once and then watched from the listing's
resourceVersion, on a thread of its own that hands every event to the event loop, in order.
Nothing here decides anything or writes to the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from daypass.kube import Kube
from daypass.metrics import ERRORS

log = logging.getLogger("daypass")

# The API server ends a watch after this long; a read that waits longer has lost its server.
SERVER_TIMEOUT = 290
READ_TIMEOUT = 330
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str


POLICIES = Kind("daypass.dev", "v1alpha1", "accesspolicies")
REQUESTS = Kind("daypass.dev", "v1alpha1", "accessrequests")
ROLEBINDINGS = Kind("rbac.authorization.k8s.io", "v1", "rolebindings")
NAMESPACES = Kind("", "v1", "namespaces")


@dataclass
class Listing:
    items: list[dict[str, Any]]
    resource_version: str


# What a watch hands over: ("ADDED" | "MODIFIED" | "DELETED", body), or ("RELISTED", items)
# after the API server said the watch's place was too old and the kind was listed again.
Deliver = Callable[[str, Any], None]


@dataclass
class Watch:
    """One kind, watched from a listing's resourceVersion on a thread of its own."""

    kube: Kube
    kind: Kind
    resource_version: str
    deliver: Deliver
    loop: asyncio.AbstractEventLoop
    _stopped: threading.Event = field(default_factory=threading.Event)
    _response: Any = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"daypass-watch-{self.kind.plural}")
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        response = self._response
        if response is not None:
            # Already closed is as good as closed.
            with contextlib.suppress(Exception):
                response.shutdown()

    def _hand_over(self, kind: str, payload: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.deliver, kind, payload)
        except RuntimeError:  # the loop is closed: the operator is stopping
            self._stopped.set()

    def _run(self) -> None:
        failures = 0
        while not self._stopped.is_set():
            try:
                if not self.resource_version:
                    listing = list_all(self.kube, self.kind)
                    self.resource_version = listing.resource_version
                    self._hand_over("RELISTED", listing.items)
                self._follow()
                failures = 0
            except Gone:
                log.info("watch of %s fell behind the API server; listing again",
                         self.kind.plural)
                self.resource_version = ""
            except Exception as error:  # noqa: BLE001 - a broken watch is opened again
                if self._stopped.is_set():
                    return
                ERRORS.labels("watch").inc()
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                log.warning("watch of %s failed (%s); again in %.1fs", self.kind.plural,
                            error, delay)
                self._stopped.wait(delay)

    def _follow(self) -> None:
        """One watch request, until the API server ends it; its events handed over in order."""
        self._response = open_watch(self.kube, self.kind, self.resource_version)
        try:
            for line in iter_resp_lines(self._response):  # type: ignore[no-untyped-call]
                if self._stopped.is_set():
                    return
                if not line or line.isspace():
                    continue
                event = json.loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise Gone()
                    raise ApiException(status=body.get("code"), reason=body.get("message"))
                version = (body.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.resource_version = version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._hand_over(kind, body)
        finally:
            response, self._response = self._response, None
            response.release_conn()


class Gone(Exception):
    """The watch's resourceVersion is older than the API server keeps: list again."""


def _get(kube: Kube, kind: Kind, **query: Any) -> Any:
    """A GET of the kind's collection, its body left unread: listings and watches are big."""
    if kind == NAMESPACES:
        return kube.core.list_namespace(_preload_content=False, **query)
    return kube.custom.list_cluster_custom_object(kind.group, kind.version, kind.plural,
                                                  _preload_content=False, **query)


def list_all(kube: Kube, kind: Kind, keep: Callable[[dict[str, Any]], None] | None = None,
             page_size: int = 500) -> Listing:
    """Every object of a kind in every namespace, page by page, and the listing's version.

    With `keep`, each object is handed to it as its page arrives and none is returned: only
    one page of whole objects is ever held, which at ten thousand grants is most of the memory
    a start would otherwise take.
    """
    kube.count("list", kind.plural)
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        response = _get(kube, kind, limit=page_size, _continue=token, _request_timeout=60)
        page = json.loads(response.data)
        for item in page.get("items") or []:
            if keep is None:
                items.append(item)
            else:
                keep(item)
        metadata = page.get("metadata") or {}
        token = metadata.get("continue")
        if not token:
            return Listing(items, str(metadata.get("resourceVersion") or ""))


def open_watch(kube: Kube, kind: Kind, resource_version: str) -> Any:
    kube.count("watch", kind.plural)
    try:
        return _get(kube, kind, watch=True, resource_version=resource_version,
                    allow_watch_bookmarks=True, timeout_seconds=SERVER_TIMEOUT,
                    _request_timeout=(10, READ_TIMEOUT))
    except ApiException as error:
        if error.status == 410:
            raise Gone() from error
        raise
