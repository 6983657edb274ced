"""The audit trail outside the request's own history: Kubernetes events and JSON audit lines.

Every transition is written as one JSON line to the audit log and posted as an event on the
object it concerns. Events are best effort (the API server drops them after about an hour);
the audit line and the request's status.history are the durable record. Never log a secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from daypass.kube import Kube

COMPONENT = "daypass"
_MESSAGE_LIMIT = 1024

log = logging.getLogger("daypass")


def _micro(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _second(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AuditLog:
    """One JSON object per line, one line per transition, flushed at once."""

    def __init__(self, stream: IO[str] | None = None, clock: Callable[[], datetime] | None = None,
                 ) -> None:
        self.stream = stream or sys.stdout
        self.clock = clock or (lambda: datetime.now(UTC))

    def write(self, record: dict[str, Any]) -> None:
        line = {"time": _micro(self.clock()), "kind": "daypass.audit", **record}
        self.stream.write(json.dumps(line, default=str, separators=(",", ":")) + "\n")
        self.stream.flush()


def object_reference(body: dict[str, Any]) -> dict[str, Any]:
    metadata = body.get("metadata") or {}
    reference = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "name": metadata.get("name"),
        "uid": metadata.get("uid"),
        "resourceVersion": metadata.get("resourceVersion"),
    }
    if metadata.get("namespace"):
        reference["namespace"] = metadata["namespace"]
    return {key: value for key, value in reference.items() if value}


class EventPoster:
    """Posts Kubernetes events in the background, in order, so a transition never waits on them."""

    def __init__(self, kube: Kube, default_namespace: str = "default", workers: int = 4) -> None:
        self.kube = kube
        self.default_namespace = default_namespace
        self.queue: asyncio.Queue[list[tuple[dict[str, Any], str, str, str, datetime]]] = (
            asyncio.Queue()
        )
        self.tasks = [asyncio.create_task(self._work()) for _ in range(workers)]

    def post(self, body: dict[str, Any], reason: str, message: str, *, warning: bool = False,
             at: datetime | None = None) -> None:
        self.post_all(body, [(reason, message, warning)], at)

    def post_all(self, body: dict[str, Any], events: list[tuple[str, str, bool]],
                 at: datetime | None = None) -> None:
        """Post several events on one object; they are posted one after another, in order."""
        moment = at or datetime.now(UTC)
        # One microsecond apart, so that sorting by eventTime keeps the order of transitions.
        self.queue.put_nowait([
            (body, "Warning" if warning else "Normal", reason, message,
             moment + timedelta(microseconds=index))
            for index, (reason, message, warning) in enumerate(events)
        ])

    async def drain(self) -> None:
        await self.queue.join()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _work(self) -> None:
        while True:
            batch = await self.queue.get()
            try:
                for body, kind, reason, message, moment in batch:
                    try:
                        await self._post(body, kind, reason, message, moment)
                    except Exception as error:  # noqa: BLE001 - an event never stops the operator
                        log.warning("could not post event %s: %s", reason, error)
            finally:
                self.queue.task_done()

    async def _post(self, body: dict[str, Any], kind: str, reason: str, message: str,
                    moment: datetime) -> None:
        reference = object_reference(body)
        namespace = reference.get("namespace") or self.default_namespace
        if len(message) > _MESSAGE_LIMIT:
            message = message[: _MESSAGE_LIMIT - 3] + "..."
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{reference.get('name', 'daypass')}.{secrets.token_hex(8)}",
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": COMPONENT},
            },
            "involvedObject": reference,
            "type": kind,
            "reason": reason,
            "message": message,
            "action": reason,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": _second(moment),
            "lastTimestamp": _second(moment),
            "eventTime": _micro(moment),
            "count": 1,
        }
        await self.kube.create_event(namespace, event)
