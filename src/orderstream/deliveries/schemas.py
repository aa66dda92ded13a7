"""API shapes of dispatch: delivery attempts, policies, operator requests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from orderstream.deliveries.policy import Strategy
from orderstream.prepared import Row


class Attempt(BaseModel):
    """One try to deliver an order through one provider."""

    id: int
    number: int = Field(description="1 for the first try of the order, then 2, ...")
    provider: str
    active: bool
    state: str = Field(description="booking, booked or ended")
    delivery_status: str = Field(description="Stream's canonical delivery status")
    provider_status: str | None = None
    outcome: str | None = Field(None, description="delivered, canceled, booking_failed, no_courier, ...")
    outcome_reason: str | None = None
    external_id: str
    provider_delivery_id: str | None = None
    quote_id: str | None = None
    fee: int | None = Field(None, description="minor units")
    cancel_fee: int | None = None
    currency: str | None = None
    tip: int | None = None
    pickup_ready_at: datetime | None = None
    dropoff_deadline: datetime | None = None
    pickup_eta: datetime | None = None
    dropoff_eta: datetime | None = None
    accept_deadline: datetime | None = None
    courier: dict[str, Any] | None = Field(None, description="name, masked phone, vehicle, location")
    tracking_url: str | None = None
    proof_of_delivery: dict[str, Any] | None = None
    cancel_requested_at: datetime | None = None
    cancel_refused: str | None = None
    excluded_providers: list[str] = Field(default_factory=list)
    started_by: str | None = None
    booked_at: datetime | None = None
    picked_up_at: datetime | None = None
    ended_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


def attempt_from_row(row: Row) -> Attempt:
    """The API view of an attempt row."""
    context = row["context"] or {}
    return Attempt(
        id=int(row["id"]),
        number=int(row["number"]),
        provider=row["provider"],
        active=row["active_order_id"] is not None,
        state=row["state"],
        delivery_status=row["delivery_status"],
        provider_status=row["provider_status"],
        outcome=row["outcome"],
        outcome_reason=row["outcome_reason"],
        external_id=row["external_id"],
        provider_delivery_id=row["provider_delivery_id"],
        quote_id=row["quote_id"],
        fee=row["fee"],
        cancel_fee=row["cancel_fee"],
        currency=row["currency"],
        tip=row["tip"],
        pickup_ready_at=row["pickup_ready_at"],
        dropoff_deadline=row["dropoff_deadline"],
        pickup_eta=row["pickup_eta"],
        dropoff_eta=row["dropoff_eta"],
        accept_deadline=row["accept_deadline"],
        courier=row["courier"],
        tracking_url=row["tracking_url"],
        proof_of_delivery=row["proof_of_delivery"],
        cancel_requested_at=row["cancel_requested_at"],
        cancel_refused=context.get("cancel_refused"),
        excluded_providers=list(context.get("exclude") or []),
        started_by=context.get("actor"),
        booked_at=row["booked_at"],
        picked_up_at=row["picked_up_at"],
        ended_at=row["ended_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class AttemptList(BaseModel):
    """Every delivery attempt of an order, oldest first."""

    order_id: str
    delivery_status: str | None
    data: list[Attempt]


class Redispatch(BaseModel):
    """Operator: dispatch again (optionally only to one provider, or skipping some)."""

    provider: str | None = Field(None, max_length=40, description="book only this provider")
    exclude: list[str] = Field(default_factory=list, max_length=20, description="skip these providers")
    reason: str | None = Field(None, max_length=500)


class CancelDelivery(BaseModel):
    """Operator: cancel the active delivery (optionally then book another provider)."""

    reason: str | None = Field(None, max_length=500)
    redispatch: bool = Field(False, description="dispatch again once the provider confirmed the cancel")
    provider: str | None = Field(None, max_length=40, description="with redispatch: book only this provider")


class PolicyBody(BaseModel):
    """A location's dispatch policy."""

    allowed_providers: list[str] = Field(min_length=1, max_length=20)
    strategy: Strategy = Strategy.CHEAPEST
    max_fee: int | None = Field(None, ge=0)
    max_pickup_eta_minutes: int | None = Field(None, ge=1)
    acceptance_timeout_seconds: dict[str, float] = Field(default_factory=dict)
    redispatch_window_minutes: float | None = Field(None, ge=0)
