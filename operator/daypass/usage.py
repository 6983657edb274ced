"""Usage: what a grant's holder did with it, counted from the API server's audit events.

Pure bookkeeping: a grant is a window (holder, namespace, from, until); an audit event counts
for every window it falls in. It never calls the API and never reads the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daypass.models import Usage

Key = tuple[str, str]


@dataclass
class Window:
    holder: str
    namespace: str
    start: datetime
    end: datetime
    usage: Usage


def _time(event: Mapping[str, Any]) -> datetime | None:
    text = event.get("requestReceivedTimestamp") or event.get("stageTimestamp")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class UsageCounter:
    def __init__(self) -> None:
        self._windows: dict[Key, Window] = {}
        self._by_holder: dict[tuple[str, str], set[Key]] = {}

    def track(self, key: Key, holder: str, namespace: str, start: datetime, end: datetime,
              usage: Usage | None = None) -> None:
        """Count for this grant from now on, continuing from what its status already says."""
        current = self._windows.get(key)
        counted = current.usage if current else (usage or Usage()).model_copy(deep=True)
        counted.collected = True
        self._windows[key] = Window(holder, namespace, start, end, counted)
        self._by_holder.setdefault((holder, namespace), set()).add(key)

    def untrack(self, key: Key) -> Usage | None:
        window = self._windows.pop(key, None)
        if window is None:
            return None
        keys = self._by_holder.get((window.holder, window.namespace))
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_holder[(window.holder, window.namespace)]
        return window.usage

    def usage(self, key: Key) -> Usage | None:
        window = self._windows.get(key)
        return window.usage.model_copy(deep=True) if window else None

    def observe(self, events: Iterable[Mapping[str, Any]]) -> tuple[int, set[Key]]:
        """Count audit events; returns how many counted and which grants changed."""
        counted, changed = 0, set()
        for event in events:
            if event.get("stage") != "ResponseComplete":
                continue
            user = (event.get("user") or {}).get("username")
            namespace = (event.get("objectRef") or {}).get("namespace")
            keys = self._by_holder.get((user, namespace)) if user and namespace else None
            moment = _time(event)
            if not keys or moment is None:
                continue
            verb = str(event.get("verb") or "unknown")
            for key in keys:
                window = self._windows[key]
                if not window.start <= moment <= window.end:
                    continue
                window.usage.requests += 1
                window.usage.verbs[verb] = window.usage.verbs.get(verb, 0) + 1
                if window.usage.last_activity is None or moment > window.usage.last_activity:
                    window.usage.last_activity = moment
                changed.add(key)
                counted += 1
        return counted, changed


def summary(holder: str, what: str, usage: Usage | None) -> str:
    """The UsageSummary message an auditor reads when a grant ends."""
    if usage is None or not usage.collected:
        return (f"usage of {what} by {holder} was not collected: the API server does not send"
                " its audit events to the operator")
    if usage.requests == 0:
        return f"{holder} never used {what}: the grant was not needed"
    verbs = ", ".join(f"{verb} {count}" for verb, count in sorted(usage.verbs.items()))
    last = usage.last_activity.strftime("%Y-%m-%dT%H:%M:%SZ") if usage.last_activity else "-"
    return f"{holder} made {usage.requests} requests with {what} ({verbs}); last at {last}"
