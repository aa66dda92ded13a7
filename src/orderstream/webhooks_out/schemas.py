"""Pydantic input and output models of the webhooks API."""

from __future__ import annotations

from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from orderstream.webhooks_out.domain import EVENT_TYPES

EventTypeList = list[str]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointCreate(_In):
    """A new webhook endpoint."""

    url: str = Field(max_length=2048, description="http(s) URL; private and internal addresses are refused")
    event_types: EventTypeList = Field(min_length=1, max_length=len(EVENT_TYPES), examples=[list(EVENT_TYPES)])
    description: str | None = Field(default=None, max_length=200)


class EndpointUpdate(_In):
    """Changes to an endpoint; `enabled: true` re-enables a disabled one."""

    url: str | None = Field(default=None, max_length=2048)
    event_types: EventTypeList | None = Field(default=None, min_length=1, max_length=len(EVENT_TYPES))
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = None


class RotateSecret(_In):
    """How long the previous secrets keep signing (hours, at most 7 days; 0 revokes them now)."""

    overlap_hours: float = Field(default=24.0, ge=0, le=168)


class Endpoint(BaseModel):
    """A webhook endpoint (its secrets are shown only when created or rotated)."""

    id: str
    url: str
    description: str | None
    event_types: list[str]
    status: str = Field(description="enabled, paused (circuit breaker cool-down) or disabled")
    disabled_reason: str | None
    paused_until: str | None
    last_success_at: str | None
    last_failure_at: str | None
    consecutive_failures: int
    created_at: str


class EndpointWithSecret(Endpoint):
    """A new endpoint with the only copy of its signing secret."""

    secret: str


class SecretRotation(BaseModel):
    """A new signing secret; the previous ones keep signing until the overlap ends."""

    endpoint_id: str
    secret: str
    previous_secrets_valid_until: str


class Attempt(BaseModel):
    """One HTTP attempt of a delivery."""

    number: int
    started_at: str
    url: str
    address: str | None
    request_headers: dict[str, Any]
    response_status: int | None
    response_headers: dict[str, Any] | None
    response_excerpt: str | None
    duration_ms: int
    outcome: str
    error: str | None


class Delivery(BaseModel):
    """One event to one endpoint."""

    id: str
    event_id: str
    event_type: str | None
    endpoint_id: str
    status: str = Field(description="pending, succeeded or failed")
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    completed_at: str | None


class DeliveryDetail(Delivery):
    """A delivery with every attempt."""

    attempt_log: list[Attempt]


class DeliveryList(BaseModel):
    """Deliveries, newest first."""

    data: list[Delivery]


class EventPage(BaseModel):
    """Events in order; pass next_cursor as `after` to continue."""

    data: list[dict[str, Any]]
    next_cursor: str
    has_more: bool


class BulkReplay(_In):
    """Replay every failed delivery of a partner created in [since, until)."""

    partner: str = Field(description="partner slug")
    since: AwareDatetime
    until: AwareDatetime
    endpoint_id: str | None = None


class BulkReplayResult(BaseModel):
    """What a bulk replay did."""

    replayed: int
    skipped_superseded: int
    skipped_endpoint_disabled: int
    delivery_ids: list[str]
