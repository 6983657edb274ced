"""Prometheus metrics: what a platform team watches on a dashboard and alerts on.

Only definitions and small recording helpers live here; the reconciler calls them. Metric
names follow Prometheus conventions (base units, _total for counters).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30)

GRANT_LATENCY = Histogram(
    "daypass_grant_latency_seconds",
    "From the moment a request could be granted (created, approved or its startAt) to its"
    " RoleBinding existing",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
EXPIRY_LATENESS = Histogram(
    "daypass_expiry_lateness_seconds",
    "From a grant's expiresAt to its RoleBinding being deleted",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
ACTIVE_GRANTS = Gauge(
    "daypass_active_grants", "AccessRequests currently Active", registry=REGISTRY
)
TRANSITIONS = Counter(
    "daypass_transitions_total",
    "Request transitions by event reason (Granted, Denied, Expired, Revoked, ...)",
    ["event"],
    registry=REGISTRY,
)
REVIEWS = Counter(
    "daypass_reviews_total", "AccessReviews judged, by decision and outcome",
    ["decision", "outcome"], registry=REGISTRY,
)
ERRORS = Counter(
    "daypass_errors_total", "Errors while reconciling, by where they happened", ["where"],
    registry=REGISTRY,
)
API_CALLS = Counter(
    "daypass_api_calls_total", "Kubernetes API calls the operator made, by verb and resource",
    ["verb", "resource"], registry=REGISTRY,
)
AUDIT_EVENTS = Counter(
    "daypass_audit_events_total", "API server audit events received, and how many were counted"
    " as usage of a grant", ["counted"], registry=REGISTRY,
)
LEADER = Gauge(
    "daypass_leader", "1 when this replica is the active one", registry=REGISTRY
)
