"""Pydantic models of every object shape Daypass reads or writes: the three kinds and their parts.

Field names follow the CRDs in crds/ (camelCase on the wire, snake_case here); a test keeps the
two in agreement. Models only describe shapes: no decision and no API call lives here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "daypass.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class Shape(BaseModel):
    """Base of every model: camelCase on the wire, unknown fields ignored, values validated."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Phase(StrEnum):
    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    ACTIVE = "Active"
    EXPIRED = "Expired"
    DENIED = "Denied"
    REVOKED = "Revoked"
    FAILED = "Failed"

    @property
    def ended(self) -> bool:
        return self in ENDED_PHASES


ENDED_PHASES = frozenset({Phase.EXPIRED, Phase.DENIED, Phase.REVOKED, Phase.FAILED})


class RoleKind(StrEnum):
    CLUSTER_ROLE = "ClusterRole"
    ROLE = "Role"


class RoleRef(Shape):
    kind: RoleKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}/{self.name}"


class ObjectMeta(Shape):
    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Condition(Shape):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


# AccessPolicy


class Subjects(Shape):
    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class LabelSelectorRequirement(Shape):
    key: str
    operator: str
    values: list[str] = Field(default_factory=list)


class LabelSelector(Shape):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class Namespaces(Shape):
    names: list[str] = Field(default_factory=list)
    selector: LabelSelector | None = None


class ReasonRule(Shape):
    required: bool = False
    pattern: str | None = None


class Approval(Shape):
    required: bool = False
    approvers: Subjects = Field(default_factory=Subjects)
    count: int = 1
    timeout: str | None = None


class AccessPolicySpec(Shape):
    subjects: Subjects
    roles: list[RoleRef]
    namespaces: Namespaces
    max_duration: str
    default_duration: str | None = None
    max_start_delay: str | None = None
    reason: ReasonRule = Field(default_factory=ReasonRule)
    approval: Approval = Field(default_factory=Approval)


class AccessPolicyStatus(Shape):
    observed_generation: int | None = None
    active_grants: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class AccessPolicy(Shape):
    api_version: str = API_VERSION
    kind: str = "AccessPolicy"
    metadata: ObjectMeta
    spec: AccessPolicySpec
    status: AccessPolicyStatus = Field(default_factory=AccessPolicyStatus)


# AccessRequest


class UserInfo(Shape):
    username: str
    groups: list[str] = Field(default_factory=list)


class AccessRequestSpec(Shape):
    role: RoleRef
    duration: str | None = None
    reason: str | None = None
    start_at: datetime | None = None
    extends: str | None = None
    requester: UserInfo


class ReviewRecord(Shape):
    review: str | None = None
    reviewer: str
    decision: str
    reason: str | None = None
    at: datetime
    outcome: str | None = None
    policy: str | None = None


class Usage(Shape):
    collected: bool = False
    unused: bool | None = None
    requests: int = 0
    last_activity: datetime | None = None
    verbs: dict[str, int] = Field(default_factory=dict)


class HistoryEntry(Shape):
    at: datetime
    phase: Phase
    event: str | None = None
    actor: str | None = None
    message: str | None = None


class AccessRequestStatus(Shape):
    phase: Phase | None = None
    message: str | None = None
    policy: str | None = None
    duration: str | None = None
    requested_at: datetime | None = None
    approval_deadline: datetime | None = None
    start_at: datetime | None = None
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    binding: str | None = None
    extended_by: str | None = None
    reviews: list[ReviewRecord] = Field(default_factory=list)
    usage: Usage | None = None
    conditions: list[Condition] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)


class AccessRequest(Shape):
    api_version: str = API_VERSION
    kind: str = "AccessRequest"
    metadata: ObjectMeta
    spec: AccessRequestSpec
    status: AccessRequestStatus = Field(default_factory=AccessRequestStatus)

    @property
    def key(self) -> tuple[str, str]:
        return (self.metadata.namespace or "", self.metadata.name)

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""

    @property
    def name(self) -> str:
        return self.metadata.name


# AccessReview


class Decision(StrEnum):
    APPROVE = "Approve"
    DENY = "Deny"
    REVOKE = "Revoke"


class Outcome(StrEnum):
    ACCEPTED = "Accepted"
    REJECTED = "Rejected"


class AccessReviewSpec(Shape):
    request: str
    decision: Decision
    reason: str | None = None
    reviewer: UserInfo


class AccessReviewStatus(Shape):
    outcome: Outcome | None = None
    message: str | None = None
    at: datetime | None = None


class AccessReview(Shape):
    api_version: str = API_VERSION
    kind: str = "AccessReview"
    metadata: ObjectMeta
    spec: AccessReviewSpec
    status: AccessReviewStatus = Field(default_factory=AccessReviewStatus)
