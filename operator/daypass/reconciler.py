"""The reconciler: decides with the core, then acts on the cluster and records what happened.

It reads the cluster through live views kept current by the watch (policies, namespaces,
requests, bindings), asks `lifecycle.decide` what to do, carries the plan out in a safe order
(access is removed before the status says so, and the binding carries its own expiry), and
wakes itself at the next moment that matters: an expiry, a scheduled start, a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from daypass.audit import AuditLog, EventPoster
from daypass.durations import format_duration
from daypass.grant import (
    EXPIRES_AT_ANNOTATION,
    GRANTED_AT_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_VALUE,
    binding_name,
    desired_binding,
    drift,
    request_of,
)
from daypass.kube import Conflict, Forbidden, Kube
from daypass.lifecycle import (
    Binding,
    GrantTimes,
    Plan,
    Step,
    binding_restored,
    decide,
    followed_by,
    grant_failed,
    when,
)
from daypass.metrics import (
    ACTIVE_GRANTS,
    AUDIT_EVENTS,
    ERRORS,
    EXPIRY_LATENESS,
    GRANT_LATENCY,
    REVIEWS,
    TRANSITIONS,
)
from daypass.models import (
    AccessPolicy,
    AccessRequest,
    AccessReview,
    Condition,
    Decision,
    Outcome,
    Phase,
    Usage,
)
from daypass.policy import compile_policy
from daypass.review import Judgement, judge
from daypass.store import BINDING_FIELDS, REQUEST_FIELDS, compact, key_of
from daypass.usage import UsageCounter, summary

log = logging.getLogger("daypass")

Key = tuple[str, str]
T = TypeVar("T")


class NotOurs(Exception):
    """The binding a grant needs is someone else's: it is left alone and the grant fails."""


class Views(Protocol):
    """What the watch knows of the cluster, kept current by the kopf layer."""

    def policies(self) -> Iterable[dict[str, Any]]: ...

    def namespace_labels(self, name: str) -> Mapping[str, str] | None: ...

    def request(self, key: Key) -> dict[str, Any] | None: ...

    def requests(self) -> Iterable[dict[str, Any]]: ...

    def binding(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def _rv(body: Mapping[str, Any] | None) -> int:
    try:
        return int(((body or {}).get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _gives_this_access(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether a binding binds the grant's role to the grant's requester, among others maybe."""
    subject = desired["subjects"][0]
    return observed.get("roleRef") == desired["roleRef"] and any(
        s.get("kind") == subject["kind"] and s.get("name") == subject["name"]
        for s in observed.get("subjects") or [])


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class _Parsed:
    resource_version: str | None
    policy: AccessPolicy | str


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        views: Views,
        events: EventPoster,
        audit: AuditLog,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        usage: UsageCounter | None = None,
        retention: timedelta = timedelta(days=90),
    ) -> None:
        self.kube = kube
        self.views = views
        self.events = events
        self.audit = audit
        self.clock = clock
        # None when the API server sends no audit events: usage is then "not collected".
        self.usage = usage
        self.retention = retention
        self._dirty_usage: set[Key] = set()
        self._active: set[Key] = set()
        self._bindable: dict[tuple[str, str], tuple[bool, float]] = {}
        # One lock per request while someone holds it; gone with the last holder.
        self._locks: weakref.WeakValueDictionary[Key, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Bodies this operator wrote, newer than the watch has delivered yet.
        self._written: dict[Key, dict[str, Any]] = {}
        self._seen_bindings: dict[tuple[str, str], dict[str, Any]] = {}
        self._policies: dict[str, _Parsed] = {}
        # Requests being deleted whose deletion is recorded, until they are gone: a deletion
        # held by a finalizer is seen again with every change.
        self._forgotten: set[str] = set()

    # What is known

    def latest(self, key: Key) -> dict[str, Any] | None:
        watched = self.views.request(key)
        written = self._written.get(key)
        if written is None:
            return watched
        if watched is not None and _rv(watched) >= _rv(written):
            del self._written[key]
            return watched
        if watched is None:
            return None
        return written

    def policies(self) -> list[AccessPolicy]:
        usable = []
        for body in self.views.policies():
            parsed = self.parse_policy(body)
            if isinstance(parsed, AccessPolicy):
                usable.append(parsed)
        return usable

    def parse_policy(self, body: Mapping[str, Any]) -> AccessPolicy | str:
        """A policy's model, or why its shape is unusable; cached by resourceVersion."""
        metadata = body.get("metadata") or {}
        name, version = str(metadata.get("name")), metadata.get("resourceVersion")
        cached = self._policies.get(name)
        if cached is not None and cached.resource_version == version and version is not None:
            return cached.policy
        try:
            parsed: AccessPolicy | str = AccessPolicy.model_validate(body)
        except ValidationError as error:
            parsed = f"the policy's fields cannot be read: {error.errors()[0]['msg']}"
        self._policies[name] = _Parsed(version, parsed)
        return parsed

    def _binding(self, namespace: str, name: str) -> dict[str, Any] | None:
        seen = self._seen_bindings.get((namespace, name))
        watched = self.views.binding(namespace, name)
        if seen is not None and _rv(seen) > _rv(watched):
            return seen
        self._seen_bindings.pop((namespace, name), None)
        return watched

    # Requests

    def echo_of_own_write(self, body: Mapping[str, Any]) -> bool:
        """Whether a watch event only brings back what this operator wrote itself.

        Such an event needs no decision: the plan that wrote it already decided, and its timer
        is set. Skipping it halves the work of every transition.
        """
        key = key_of(body)
        written = self._written.get(key)
        if written is None or _rv(body) == 0 or _rv(body) > _rv(written):
            return False
        if _rv(body) == _rv(written):
            del self._written[key]
        return True

    async def reconcile(self, key: Key) -> None:
        """Bring one request and its binding to where the lifecycle says they should be."""
        body = self.latest(key)
        if body is not None and (body.get("metadata") or {}).get("deletionTimestamp"):
            # Deleted, waiting on a finalizer or a foreground deletion: access ends now.
            await self.forget(body)
            return
        async with self._locks.setdefault(key, asyncio.Lock()):
            for _ in range(8):
                body = self.latest(key)
                if body is None:
                    return
                try:
                    if await self._reconcile_once(key, body):
                        return
                except Conflict:
                    fresh = await self.kube.get_request(*key)
                    if fresh is None:
                        return
                    self._written[key] = compact(fresh, REQUEST_FIELDS)
            log.warning("%s/%s: gave up after repeated conflicts; will retry", *key)
            self.wake(key, self.clock())

    async def _reconcile_once(self, key: Key, body: dict[str, Any],
                              review: AccessReview | None = None) -> bool:
        try:
            request = AccessRequest.model_validate(body)
        except ValidationError as error:
            log.warning("%s/%s: cannot read the request: %s", *key, error.errors()[0]["msg"])
            # Nothing is granted on a request that cannot be read, and nothing kept.
            if await self.kube.delete_binding(key[0], binding_name(key[1])):
                log.warning("%s/%s: removed its binding", *key)
            if review is not None:
                await self._answer(review, Outcome.REJECTED, "the request cannot be read")
            return True

        now = self.clock()
        policies = self.policies()
        judged = request
        judgement: Judgement | None = None
        if review is not None:
            judgement = judge(review, request, policies, now)
            if judgement.status is not None:
                judged = request.model_copy(update={"status": judgement.status})
        earlier = self._earlier(request)
        labels = self.views.namespace_labels(request.namespace)
        if labels is None:
            # A namespace created a moment ago may not have reached the watch yet: ask, rather
            # than judge a selector against no labels at all.
            labels = await self.kube.namespace_labels(request.namespace)
        plan = decide(judged, policies, labels, now, self._existing_grant(request), earlier)
        if judgement is not None:
            plan.steps[:0] = judgement.steps
        was_active = request.status.phase == Phase.ACTIVE

        if plan.binding is Binding.PRESENT:
            try:
                what_happened = await self._ensure_binding(request, plan, restoring=was_active)
            except NotOurs as error:
                plan = grant_failed(plan, request, str(error), self.clock())
            except Forbidden as error:
                plan = grant_failed(plan, request, str(error), self.clock())
                await self._remove_binding(request, force=True)
            else:
                if what_happened and was_active:
                    plan = binding_restored(plan, request, what_happened, self.clock())
        else:
            await self._remove_binding(request, force=bool(plan.steps))
        # When access was given or taken away: what the latency metrics measure.
        acted_at = self.clock()

        granted = any(step.event == "Granted" for step in plan.steps)
        if granted and plan.status.usage is None:
            plan.status.usage = Usage(collected=self.usage is not None)

        first_seq = len(plan.status.history) - len(plan.steps)
        self._audit(request, plan.steps, first_seq)
        if plan.status != request.status:
            written = await self.kube.replace_request_status({**body,
                                                              "status": plan.status.wire()})
            self._written[key] = compact(written, REQUEST_FIELDS)
        self._announce(body, request, plan.steps)
        self._observe(key, request, plan, acted_at)
        if review is not None and judgement is not None:
            await self._answer(review, judgement.outcome, judgement.message)
        if plan.status.extended_by and any(step.phase.ended for step in plan.steps):
            # A follow-up waiting to start must learn that the request it follows ended.
            self.wake((request.namespace, plan.status.extended_by), self.clock())
        if earlier is not None and any(step.event in ("Granted", "Scheduled")
                                       for step in plan.steps):
            follower = request.model_copy(update={"status": plan.status})
            self.spawn(self._note_follow_up(earlier.key, follower))
        self.wake(key, plan.wake_at)
        return True

    def _earlier(self, request: AccessRequest) -> AccessRequest | None:
        if not request.spec.extends:
            return None
        body = self.latest((request.namespace, request.spec.extends))
        if body is None:
            return None
        try:
            return AccessRequest.model_validate(body)
        except ValidationError:
            return None

    async def _note_follow_up(self, key: Key, follower: AccessRequest) -> None:
        """Record on the earlier request that a follow-up continues its access."""
        async with self._locks.setdefault(key, asyncio.Lock()):
            body = self.latest(key)
            if body is None:
                return
            earlier = AccessRequest.model_validate(body)
            plan = followed_by(earlier, follower, self.clock())
            if plan is None:
                return
            try:
                written = await self.kube.replace_request_status({**body,
                                                                  "status": plan.status.wire()})
            except Conflict:
                self.wake(key, self.clock())
                return
            self._written[key] = compact(written, REQUEST_FIELDS)
            self._record(body, earlier, plan.steps)

    # Reviews

    async def review(self, body: dict[str, Any]) -> None:
        """Judge a new AccessReview and record it on its request, under the request's lock."""
        if (body.get("status") or {}).get("outcome"):
            return
        try:
            review = AccessReview.model_validate(body)
        except ValidationError as error:
            log.warning("review %s cannot be read: %s", key_of(body), error.errors()[0]["msg"])
            return
        key = (review.metadata.namespace or "", review.spec.request)
        async with self._locks.setdefault(key, asyncio.Lock()):
            for _ in range(8):
                request_body = self.latest(key)
                if request_body is not None and not (request_body.get("status") or {}).get(
                        "phase"):
                    # A review may arrive before its request was looked at: look first.
                    await self._reconcile_once(key, request_body)
                    request_body = self.latest(key)
                if request_body is None:
                    judgement = judge(review, None, [], self.clock())
                    await self._answer(review, judgement.outcome, judgement.message)
                    return
                try:
                    await self._reconcile_once(key, request_body, review)
                    return
                except Conflict:
                    fresh = await self.kube.get_request(*key)
                    if fresh is not None:
                        self._written[key] = compact(fresh, REQUEST_FIELDS)

    async def _answer(self, review: AccessReview, outcome: Outcome, message: str) -> None:
        if message == "already recorded" and review.status.outcome:
            return
        await self.kube.patch_review_status(
            review.metadata.namespace or "", review.metadata.name,
            {"outcome": outcome.value, "message": message, "at": self.clock().isoformat()},
        )
        reason = {Decision.APPROVE: "Approved", Decision.DENY: "Denied",
                  Decision.REVOKE: "Revoked"}[review.spec.decision]
        if outcome == Outcome.REJECTED:
            reason = "ReviewRejected"
        REVIEWS.labels(review.spec.decision.value, outcome.value).inc()
        log.info("review %s/%s by %s: %s %s", review.metadata.namespace, review.metadata.name,
                 review.spec.reviewer.username, outcome.value, message)
        self.audit.write({
            "event": reason, "namespace": review.metadata.namespace,
            "review": review.metadata.name, "request": review.spec.request,
            "reviewer": review.spec.reviewer.username, "decision": review.spec.decision.value,
            "outcome": outcome.value, "message": message,
        })
        self.events.post(review.wire(), reason, f"{review.spec.decision.value} by"
                         f" {review.spec.reviewer.username}: {outcome.value}: {message}",
                         warning=outcome == Outcome.REJECTED)

    def spawn(self, coroutine: Any) -> None:
        """Run work in the background; its failure is logged and counted, never lost."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            ERRORS.labels("background").inc()
            log.error("background work failed", exc_info=task.exception())

    def spawn_reconcile(self, key: Key) -> None:
        self.spawn(self._safely(key))

    def _observe(self, key: Key, request: AccessRequest, plan: Plan, now: datetime) -> None:
        """Metrics and usage windows, once a plan is carried out; `now` is when it acted."""
        status = plan.status
        for step in plan.steps:
            TRANSITIONS.labels(step.event).inc()
            if step.event == "Granted" and status.granted_at is not None:
                could_start = max(
                    [request.metadata.creation_timestamp or status.granted_at,
                     request.spec.start_at or status.granted_at]
                    + [r.at for r in status.reviews if r.outcome == "Accepted"]
                )
                if status.granted_at >= could_start:
                    GRANT_LATENCY.observe((now - could_start).total_seconds())
            if (step.event == "Expired" and request.status.phase == Phase.ACTIVE
                    and status.expires_at is not None):
                late = max(0.0, (now - status.expires_at).total_seconds())
                EXPIRY_LATENESS.observe(late)
                if late > LATE_WARNING:
                    log.warning("%s/%s: access ended %.1fs after its expiry", *key, late)

        if status.phase == Phase.ACTIVE:
            self._active.add(key)
            if (self.usage is not None and status.granted_at is not None
                    and status.expires_at is not None):
                self.usage.track(key, request.spec.requester.username, request.namespace,
                                 status.granted_at, status.expires_at, status.usage)
        else:
            self._active.discard(key)
            if request.status.phase == Phase.ACTIVE and status.phase is not None and (
                    status.phase.ended):
                self.spawn(self._summarize(key))
        ACTIVE_GRANTS.set(len(self._active))

    async def _summarize(self, key: Key) -> None:
        """After a grant ends: its final usage in the status, and a UsageSummary event."""
        if self.usage is not None:
            # Audit events arrive in batches; wait for the last of the grant's window.
            await asyncio.sleep(USAGE_GRACE.total_seconds())
        async with self._locks.setdefault(key, asyncio.Lock()):
            usage = self.usage.untrack(key) if self.usage is not None else None
            self._dirty_usage.discard(key)
            body = self.latest(key)
            if body is None:
                return
            request = AccessRequest.model_validate(body)
            final = usage or request.status.usage or Usage(collected=False)
            if final.collected:
                final.unused = final.requests == 0
            what = f"{request.spec.role} in {request.namespace}"
            message = summary(request.spec.requester.username, what, final)
            if final != request.status.usage:
                status = request.status.model_copy(update={"usage": final})
                try:
                    self._written[key] = await self._write_status(
                        {**body, "status": status.wire()})
                except Conflict:
                    log.warning("%s/%s: usage not written (the request changed)", *key)
            self.audit.write({"event": "UsageSummary", "namespace": request.namespace,
                              "request": request.name, "requester":
                              request.spec.requester.username, "role": str(request.spec.role),
                              "usage": final.wire(), "message": message})
            self.events.post(body, "UsageSummary", message)

    async def audit_events(self, events: list[dict[str, Any]]) -> None:
        """Audit events from the API server: count each against the grants it falls in."""
        if self.usage is None:
            return
        counted, changed = self.usage.observe(events)
        AUDIT_EVENTS.labels("yes").inc(counted)
        AUDIT_EVENTS.labels("no").inc(max(0, len(events) - counted))
        self._dirty_usage |= changed

    async def flush_usage(self) -> None:
        """Write the usage counted so far into the status of the grants it changed."""
        if self.usage is None:
            return
        dirty, self._dirty_usage = self._dirty_usage, set()
        for key in dirty:
            async with self._locks.setdefault(key, asyncio.Lock()):
                usage = self.usage.usage(key)
                body = self.latest(key)
                if usage is None or body is None:
                    continue
                status = dict(body.get("status") or {})
                status["usage"] = usage.wire()
                try:
                    self._written[key] = await self._write_status(
                        {**body, "status": status})
                except Conflict:
                    self._dirty_usage.add(key)

    async def sweep(self) -> int:
        """Delete ended requests older than the retention period, each with a final audit line."""
        now = self.clock()
        deleted = 0
        for body in list(self.views.requests()):
            status = body.get("status") or {}
            ended_at = _parse_time(status.get("endedAt"))
            if status.get("phase") not in _ENDED or ended_at is None:
                continue
            if ended_at + self.retention > now:
                continue
            namespace, name = key_of(body)
            self.audit.write({
                "event": "Deleted", "namespace": namespace, "request": name,
                "requester": ((body.get("spec") or {}).get("requester") or {}).get("username"),
                "phase": status.get("phase"), "endedAt": status.get("endedAt"),
                "message": f"deleted {namespace}/{name}, ended {status.get('endedAt')}, after"
                           f" the retention period of {format_duration(self.retention)}",
                "record": status,
            })
            if await self.kube.delete_request(namespace, name):
                deleted += 1
                log.info("%s/%s: deleted after the retention period", namespace, name)
        return deleted

    async def run_periodic(self) -> None:
        """Background work: usage flushes every few seconds, retention sweeps."""
        sweep_every = min(60.0, max(1.0, self.retention.total_seconds() / 2))
        loop = asyncio.get_running_loop()
        last_sweep = 0.0
        last_policy_check = loop.time()
        while True:
            await asyncio.sleep(min(USAGE_FLUSH.total_seconds(), sweep_every))
            try:
                await self.flush_usage()
                if loop.time() - last_sweep >= sweep_every:
                    last_sweep = loop.time()
                    await self.sweep()
                if loop.time() - last_policy_check >= POLICY_RECHECK:
                    # Which roles the operator may bind changes with its RBAC, not its
                    # policies: look again now and then.
                    last_policy_check = loop.time()
                    for body in list(self.views.policies()):
                        await self._report_policy(body)
            except Exception:  # noqa: BLE001 - periodic work retries on its next round
                ERRORS.labels("periodic").inc()
                log.exception("periodic work failed; retrying")

    async def _write_status(self, body: dict[str, Any]) -> dict[str, Any]:
        return compact(await self.kube.replace_request_status(body), REQUEST_FIELDS)

    def _existing_grant(self, request: AccessRequest) -> GrantTimes | None:
        if request.status.phase not in (None, Phase.PENDING, Phase.SCHEDULED):
            return None
        binding = self._binding(request.namespace, binding_name(request.name))
        if binding is None:
            return None
        metadata = binding.get("metadata") or {}
        owners = [o.get("uid") for o in metadata.get("ownerReferences") or []]
        annotations = metadata.get("annotations") or {}
        granted = _parse_time(annotations.get(GRANTED_AT_ANNOTATION))
        expires = _parse_time(annotations.get(EXPIRES_AT_ANNOTATION))
        if request.metadata.uid not in owners or granted is None or expires is None:
            return None
        return GrantTimes(granted, expires)

    async def _ensure_binding(self, request: AccessRequest, plan: Plan, restoring: bool,
                              ) -> str | None:
        """Make the binding exactly as granted; say what was wrong with it, if anything was."""
        assert plan.status.granted_at is not None and plan.status.expires_at is not None
        desired = desired_binding(request, plan.status.granted_at, plan.status.expires_at)
        namespace, name = request.namespace, desired["metadata"]["name"]
        observed = self._binding(namespace, name)

        if observed is None and restoring:
            # Restoring is rare; first make sure the request still exists, so that a request
            # deleted while the operator was starting is never given its access back.
            current = await self.kube.get_request(namespace, request.name)
            if current is None or (current.get("metadata") or {}).get("uid") != (
                    request.metadata.uid):
                raise Conflict(f"{namespace}/{request.name} is gone")
        if observed is None:
            created = await self.kube.create_binding(desired)
            if created is not None:
                self._seen_bindings[(namespace, name)] = compact(created, BINDING_FIELDS)
                return "was deleted"
            observed = await self.kube.get_binding(namespace, name)
            if observed is None:
                return None

        metadata = observed.get("metadata") or {}
        owners = [o.get("uid") for o in metadata.get("ownerReferences") or []]
        labelled = (metadata.get("labels") or {}).get(MANAGED_BY) == MANAGED_BY_VALUE
        ours = request.metadata.uid in owners or (
            labelled and request_of(observed) == request.name)
        if not ours and restoring and _gives_this_access(observed, desired):
            # The active grant's own binding, stripped of its label and owner: still the
            # access this grant gave, and it must end with the grant.
            ours = True
        if not ours:
            # Someone else's binding has the name this grant needs: never take it over.
            raise NotOurs(f"a RoleBinding named {name} that Daypass does not own already"
                          f" exists in {namespace}; rename or delete it, then ask again")
        differences = drift(observed, desired)
        if not differences:
            return None
        await self.kube.replace_binding(desired, observed)
        self._seen_bindings.pop((namespace, name), None)
        return f"was changed ({', '.join(differences)})"

    async def _remove_binding(self, request: AccessRequest, *, force: bool) -> None:
        name = binding_name(request.name)
        if force or self._binding(request.namespace, name) is not None:
            await self.kube.delete_binding(request.namespace, name)
            self._seen_bindings.pop((request.namespace, name), None)

    def _audit(self, request: AccessRequest, steps: list[Step], first_seq: int | None) -> None:
        """One JSON line per transition, written before the status that records it.

        Written first so that a crash between the two never loses a line: at worst a line is
        written twice, and `seq` (the transition's place in status.history) tells the copies
        apart from distinct transitions.
        """
        for index, step in enumerate(steps):
            self.audit.write({
                "event": step.event,
                "phase": step.phase.value,
                "namespace": request.namespace,
                "request": request.name,
                "uid": request.metadata.uid,
                "seq": None if first_seq is None else first_seq + index,
                "requester": request.spec.requester.username,
                "role": str(request.spec.role),
                "actor": step.actor,
                "message": step.message,
            })

    def _announce(self, body: dict[str, Any], request: AccessRequest, steps: list[Step]) -> None:
        """The log line and the event of each transition, once its status is written."""
        if not steps:
            return
        for step in steps:
            log.info(
                "%s/%s %s: %s", request.namespace, request.name, step.event, step.message,
                extra={"request": f"{request.namespace}/{request.name}", "event": step.event,
                       "phase": step.phase.value, "actor": step.actor},
            )
        self.events.post_all(body, [(s.event, s.message, s.warning) for s in steps])

    def _record(self, body: dict[str, Any], request: AccessRequest, steps: list[Step],
                first_seq: int | None = None) -> None:
        self._audit(request, steps, first_seq)
        self._announce(body, request, steps)

    async def forget(self, body: dict[str, Any], gone: bool = False) -> None:
        """A request was deleted (`gone`), or is being deleted: its access ends now, whatever
        its phase said, and the binding delete is tried until it succeeds."""
        key = key_of(body)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._written.pop(key, None)
        async with self._locks.setdefault(key, asyncio.Lock()):
            name = binding_name(key[1])
            removed = await self._until_done(
                f"{key[0]}/{key[1]}: deleting its binding",
                lambda: self.kube.delete_binding(key[0], name))
        self._active.discard(key)
        ACTIVE_GRANTS.set(len(self._active))
        if self.usage is not None:
            self.usage.untrack(key)
        try:
            request = AccessRequest.model_validate(body)
        except ValidationError:
            return
        uid = request.metadata.uid or ""
        recorded = uid in self._forgotten
        if gone:
            self._forgotten.discard(uid)
        else:
            self._forgotten.add(uid)
        if recorded:
            return
        if request.status.phase == Phase.ACTIVE or removed:
            step = Step(Phase.REVOKED, "Revoked", "daypass",
                        f"request deleted: access of {request.spec.requester.username} to"
                        f" {request.spec.role} in {request.namespace} ended at"
                        f" {when(self.clock())}")
            self._record(body, request, [step])

    async def _until_done(self, what: str, work: Callable[[], Awaitable[T]]) -> T:
        """Work that ends someone's access: tried again, with growing pauses, until it is done."""
        pause = 0.5
        while True:
            try:
                return await work()
            except Exception as error:  # noqa: BLE001 - access must end: never give up
                ERRORS.labels("retry").inc()
                log.warning("%s failed (%s); again in %.1fs", what, error, pause)
                await asyncio.sleep(pause)
                pause = min(10.0, pause * 2)

    async def binding_changed_until_done(self, body: dict[str, Any], deleted: bool) -> None:
        namespace, name = key_of(body)
        await self._until_done(f"binding {namespace}/{name}",
                               lambda: self.binding_changed(body, deleted))

    # Time

    def wake(self, key: Key, at: datetime | None) -> None:
        """Look at this request again at `at` (now, if that is past); one timer per request."""
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        if at is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, (at - self.clock()).total_seconds())
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.spawn_reconcile(key)

    async def _safely(self, key: Key) -> None:
        try:
            await self.reconcile(key)
        except Exception:  # noqa: BLE001 - one request's failure never stops the others
            ERRORS.labels("reconcile").inc()
            log.exception("%s/%s: reconcile failed; retrying in 5s", *key)
            self.wake(key, self.clock() + _RETRY)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    # Bindings

    async def binding_changed(self, body: dict[str, Any], deleted: bool) -> None:
        """A Daypass binding changed: restore it, or delete it when no active request owns it."""
        namespace, binding = key_of(body)
        seen = self._seen_bindings.get((namespace, binding))
        if not deleted and seen is not None and 0 < _rv(body) <= _rv(seen):
            # The binding as this operator just created it: nothing to check.
            if _rv(body) == _rv(seen):
                del self._seen_bindings[(namespace, binding)]
            return
        request_name = request_of(body)
        request_body = self.latest((namespace, request_name)) if request_name else None
        owners = {o.get("uid") for o in (body.get("metadata") or {}).get("ownerReferences") or []}
        if request_body is None and request_name and not deleted:
            # Not known yet, or gone: only the API server can tell, and a wrong guess here
            # would delete someone's access.
            request_body = await self.kube.get_request(namespace, request_name)
            if request_body is not None:
                return
        owner_gone = request_body is None or (
            (request_body.get("metadata") or {}).get("uid") not in owners
        ) or bool((request_body.get("metadata") or {}).get("deletionTimestamp"))
        if owner_gone:
            if not deleted and await self.kube.delete_binding(namespace, binding):
                log.warning("%s/%s: deleted a Daypass binding whose request is gone", namespace,
                            binding)
                self.audit.write({"event": "StrayBindingDeleted", "namespace": namespace,
                                  "binding": binding, "request": request_name})
            return
        await self.reconcile((namespace, str(request_name)))

    # Policies

    async def policy_changed(self, body: dict[str, Any], deleted: bool, recheck: bool = True,
                             ) -> None:
        """A policy changed or went away: report whether it is usable, re-check its requests."""
        name = str((body.get("metadata") or {}).get("name"))
        if not deleted:
            await self._report_policy(body)
        else:
            self._policies.pop(name, None)
        if not recheck:
            return
        now = self.clock()
        for request in list(self.views.requests()):
            status = request.get("status") or {}
            if status.get("policy") == name and status.get("phase") not in _ENDED:
                self.wake(key_of(request), now)

    async def _report_policy(self, body: dict[str, Any]) -> None:
        parsed = self.parse_policy(body)
        problem = parsed if isinstance(parsed, str) else None
        if isinstance(parsed, AccessPolicy):
            compiled = compile_policy(parsed)
            problem = compiled if isinstance(compiled, str) else None
        unbindable = await self._unbindable(parsed) if isinstance(parsed, AccessPolicy) else []
        bindable = Condition(
            type="RolesBindable",
            status="False" if unbindable else "True",
            reason="OperatorMayNotBind" if unbindable else "AllBindable",
            message=(
                f"the operator may not bind {', '.join(unbindable)}: requests for"
                f" {'it' if len(unbindable) == 1 else 'them'} fail; allow it in the operator's"
                " ClusterRole (Helm value bindableRoles)" if unbindable
                else "the operator may bind every role this policy names"
            ),
            last_transition_time=self.clock(),
            observed_generation=(body.get("metadata") or {}).get("generation"),
        )
        ready = Condition(
            type="Ready",
            status="False" if problem else "True",
            reason="Invalid" if problem else "Valid",
            message=problem or "the policy is in force",
            last_transition_time=self.clock(),
            observed_generation=(body.get("metadata") or {}).get("generation"),
        )
        conditions = (body.get("status") or {}).get("conditions") or []
        changed = False
        for condition in (ready, bindable):
            current: dict[str, Any] = next(
                (c for c in conditions if c.get("type") == condition.type), {})
            if (current.get("status"), current.get("message"),
                    current.get("observedGeneration")) != (
                    condition.status, condition.message, condition.observed_generation):
                changed = True
            if current.get("status") == condition.status:
                condition.last_transition_time = _parse_time(
                    current.get("lastTransitionTime")) or condition.last_transition_time
        if not changed:
            return
        await self.kube.patch_policy_status(str(body["metadata"]["name"]), {
            "observedGeneration": ready.observed_generation,
            "conditions": [ready.wire(), bindable.wire()],
        })
        name = body["metadata"]["name"]
        if unbindable:
            log.warning("policy %s names roles the operator may not bind: %s", name,
                        ", ".join(unbindable))
            self.events.post(body, "RoleNotBindable", f"policy {name}: {bindable.message}",
                             warning=True)
        if problem:
            log.warning("policy %s cannot be used: %s", name, problem)
            self.events.post(body, "PolicyInvalid", f"policy {name} allows nothing: {problem}",
                             warning=True)
        else:
            log.info("policy %s is in force", name)
            self.events.post(body, "PolicyReady", f"policy {name} is in force")

    async def _unbindable(self, policy: AccessPolicy) -> list[str]:
        """The roles of a policy the operator may not bind, asked of the API server (cached)."""
        found = []
        loop = asyncio.get_running_loop()
        for role in policy.spec.roles:
            cached = self._bindable.get((role.kind.value, role.name))
            if cached is None or loop.time() - cached[1] > BINDABLE_CACHE:
                try:
                    allowed = await self.kube.can_bind(role.kind.value, role.name)
                except Exception as error:  # noqa: BLE001 - unknown is reported, not fatal
                    log.warning("could not check whether %s is bindable: %s", role, error)
                    continue
                cached = (allowed, loop.time())
                self._bindable[(role.kind.value, role.name)] = cached
            if not cached[0]:
                found.append(str(role))
        return found

    async def namespace_changed(self, name: str) -> None:
        """A namespace's labels changed: selectors may match it no longer."""
        now = self.clock()
        for request in list(self.views.requests()):
            key = key_of(request)
            if key[0] == name and (request.get("status") or {}).get("phase") not in _ENDED:
                self.wake(key, now)


_ENDED = {phase.value for phase in Phase if phase.ended}
_RETRY = timedelta(seconds=5)
USAGE_GRACE = timedelta(seconds=2)
USAGE_FLUSH = timedelta(seconds=5)
BINDABLE_CACHE = 30.0
LATE_WARNING = 1.0
POLICY_RECHECK = 60.0
