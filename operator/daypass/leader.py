"""Leader election on a coordination.k8s.io Lease: of several replicas, exactly one acts.

A replica acts only while it holds the Lease. One that cannot renew in time stops the whole
process at once, before another replica can take over, so two never grant or revoke together.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from daypass.metrics import LEADER

log = logging.getLogger("daypass")


def _micro(moment: datetime) -> str:
    # The API server's MicroTime wants six fractional digits, always.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElection:
    def __init__(
        self,
        client: ApiClient,
        namespace: str,
        name: str = "daypass",
        identity: str | None = None,
        lease_seconds: int = 4,
        renew_every: float = 1.0,
        retry_every: float = 0.5,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # Plain dict bodies: the typed models would format MicroTime in a way it rejects.
        self.api: Any = kubernetes.client.CoordinationV1Api(client)
        self.namespace = namespace
        self.name = name
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.lease_seconds = lease_seconds
        self.renew_every = renew_every
        self.retry_every = retry_every
        self.clock = clock
        self._stop = threading.Event()
        self._renewed = time.monotonic()

    def _body(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro(self.clock())
        spec = dict((previous or {}).get("spec") or {})
        taking_over = spec.get("holderIdentity") != self.identity
        spec.update({
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": now,
        })
        if taking_over:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (
                1 if previous else 0)
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if previous:
            metadata["resourceVersion"] = previous["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": spec}

    def _read(self) -> dict[str, Any] | None:
        try:
            response = self.api.read_namespaced_lease(self.name, self.namespace,
                                                      _preload_content=False)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        lease: dict[str, Any] = json.loads(response.data)
        return lease

    def _held_by_other(self, lease: dict[str, Any]) -> str | None:
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        if not holder or holder == self.identity:
            return None
        renewed = _parse(spec.get("renewTime")) or _parse(spec.get("acquireTime"))
        duration = timedelta(seconds=int(spec.get("leaseDurationSeconds") or self.lease_seconds))
        if renewed is None or renewed + duration < self.clock():
            return None
        return str(holder)

    def try_acquire(self) -> bool:
        """One attempt to take or keep the Lease; True when this replica holds it now."""
        try:
            lease = self._read()
            if lease is None:
                self.api.create_namespaced_lease(self.namespace, self._body(None),
                                                 _preload_content=False)
            elif self._held_by_other(lease):
                return False
            else:
                self.api.replace_namespaced_lease(self.name, self.namespace, self._body(lease),
                                                  _preload_content=False)
        except ApiException as error:
            if error.status in (409, 422):
                return False
            raise
        self._renewed = time.monotonic()
        return True

    def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        waiting_for: str | None = None
        while not self._stop.is_set():
            if self.try_acquire():
                LEADER.set(1)
                log.info("leading as %s (Lease %s/%s)", self.identity, self.namespace, self.name)
                return
            lease = self._read()
            holder = self._held_by_other(lease) if lease else None
            if holder != waiting_for:
                log.info("standing by: Lease %s/%s is held by %s", self.namespace, self.name,
                         holder)
                waiting_for = holder
            self._stop.wait(self.retry_every)

    def keep(self, on_lost: Callable[[], None]) -> threading.Thread:
        """Renew in the background; call `on_lost` if the Lease could not be kept."""
        def renew() -> None:
            while not self._stop.wait(self.renew_every):
                try:
                    held = self.try_acquire()
                except Exception as error:  # noqa: BLE001 - any failure counts as not renewed
                    log.warning("could not renew the Lease: %s", error)
                    held = False
                late = time.monotonic() - self._renewed
                if not held and (late >= self.lease_seconds - self.renew_every
                                 or self._held_by_other(self._read() or {})):
                    LEADER.set(0)
                    log.error("lost the Lease after %.1fs without renewal: stopping", late)
                    on_lost()
                    return

        thread = threading.Thread(target=renew, name="daypass-lease", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        """Give the Lease up on a clean shutdown, so that a standby takes over at once."""
        self._stop.set()
        try:
            lease = self._read()
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                self.api.replace_namespaced_lease(self.name, self.namespace, lease,
                                                  _preload_content=False)
        except ApiException as error:
            log.warning("could not release the Lease: %s", error.reason)
        LEADER.set(0)
