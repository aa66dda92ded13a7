"""Pure translations between own-driver rows and the DeliveryProvider values (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from orderstream.deliveries.protocol import Courier, DeliveryRequest, DeliverySnapshot, Quote, WebhookUpdate
from orderstream.deliveries.providers.own_drivers import statuses
from orderstream.deliveries.providers.own_drivers.statuses import DriverStatus

PROVIDER = "own_drivers"

# a database row (RowMapping) or a plain dict in tests
Row = Mapping[Any, Any]


def mask_phone(phone: str | None) -> str | None:
    """A phone shown to others: country code and last four digits only (``+1******0100``)."""
    if not phone:
        return None
    digits = phone.lstrip("+")
    if len(digits) <= 4:
        return "*" * len(digits)
    head = "+" + digits[0] if phone.startswith("+") else ""
    hidden = len(digits) - 4 - (1 if head else 0)
    return head + "*" * hidden + digits[-4:]


def courier(driver: Row | None, delivery: Row) -> Courier | None:
    """The courier of a delivery: the driver's name, masked phone and vehicle, and the last reported position."""
    if driver is None:
        return None
    return Courier(
        name=driver["name"],
        phone=mask_phone(driver["phone"]),
        vehicle_type=driver["vehicle"],
        latitude=delivery["latitude"],
        longitude=delivery["longitude"],
    )


def snapshot(delivery: Row, driver: Row | None) -> DeliverySnapshot:
    """A driver delivery row (and its driver row) as the provider's truth."""
    status = DriverStatus(delivery["status"])
    return DeliverySnapshot(
        provider=PROVIDER,
        external_id=delivery["external_id"],
        provider_delivery_id=delivery["id"],
        status=statuses.canonical(
            status, canceled_by=delivery["canceled_by"], picked_up=delivery["picked_up_at"] is not None
        ),
        provider_status=status.value,
        fee=delivery["fee"],
        currency=delivery["currency"],
        tip=delivery["tip"],
        pickup_eta=delivery["pickup_eta"],
        dropoff_eta=delivery["dropoff_eta"],
        courier=courier(driver, delivery),
        proof_of_delivery=delivery["proof_of_delivery"],
        cancellation_reason=delivery["cancel_reason"],
        updated_at=delivery["updated_at"],
        raw={"driver_id": delivery["driver_id"], "version": delivery["version"]},
    )


def update(delivery: Row, driver: Row | None) -> WebhookUpdate:
    """The change just made to a delivery, in the shape provider webhooks take; the version makes the event id."""
    snap = snapshot(delivery, driver)
    return WebhookUpdate(
        provider=PROVIDER,
        event_id=f"{delivery['id']}:{delivery['version']}",
        event_name=f"driver.{snap.provider_status}",
        snapshot=snap,
        occurred_at=delivery["updated_at"],
    )


@dataclass(frozen=True)
class Etas:
    """When the driver should leave the store and reach the customer."""

    pickup: datetime
    dropoff: datetime


def etas(*, now: datetime, prep_minutes: int, travel_minutes: int, pickup_ready_at: datetime | None = None) -> Etas:
    """Pickup when the kitchen is done (prep time from now) or at the requested ready time if later."""
    pickup = now + timedelta(minutes=prep_minutes)
    if pickup_ready_at is not None and pickup_ready_at > pickup:
        pickup = pickup_ready_at
    return Etas(pickup=pickup.astimezone(UTC), dropoff=(pickup + timedelta(minutes=travel_minutes)).astimezone(UTC))


def quote(request: DeliveryRequest, *, fee: int, eta: Etas, now: datetime, validity_seconds: int) -> Quote:
    """A quote for the location's fleet: the configured fee, and ETAs from the prep time."""
    return Quote(
        provider=PROVIDER,
        external_id=request.external_id,
        quote_id=request.external_id,
        fee=fee,
        currency=request.currency,
        pickup_eta=eta.pickup,
        dropoff_eta=eta.dropoff,
        expires_at=now + timedelta(seconds=validity_seconds),
        raw={"fee": fee},
    )


def fleet_values(fleet: Row | None, *, default_fee: int, default_auto_assign: bool) -> tuple[int, bool]:
    """A location's fee and automatic assignment: its own settings where set, else the defaults."""
    fee = fleet["fee"] if fleet is not None and fleet["fee"] is not None else default_fee
    auto = fleet["auto_assign"] if fleet is not None and fleet["auto_assign"] is not None else default_auto_assign
    return int(fee), bool(auto)


@dataclass(frozen=True)
class Candidate:
    """An on-shift driver and how busy they are."""

    driver_id: str
    open_deliveries: int
    last_assigned_at: datetime | None


def least_busy(candidates: Sequence[Candidate]) -> str | None:
    """The driver with the fewest open deliveries; ties go to whoever waited longest since an assignment."""
    if not candidates:
        return None
    never = datetime.min.replace(tzinfo=UTC)
    best = min(candidates, key=lambda c: (c.open_deliveries, c.last_assigned_at or never, c.driver_id))
    return best.driver_id
