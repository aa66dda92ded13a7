"""Which orders are late, and why: pure rules over an order's times and its delivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orderstream.orders.domain import TERMINAL, FulfillmentType, OrderStatus

# delivery statuses in which a courier has accepted the delivery
COURIER_ASSIGNED = frozenset(
    {
        "enroute_to_pickup",
        "arrived_at_pickup",
        "enroute_to_dropoff",
        "arrived_at_dropoff",
        "completed",
        "enroute_to_return",
        "arrived_at_return",
        "returned",
    }
)
PICKED_UP = frozenset({"enroute_to_dropoff", "arrived_at_dropoff", "completed"})
DELIVERY_TYPES = frozenset({FulfillmentType.DELIVERY, FulfillmentType.MERCHANT_MANAGED_DELIVERY})


@dataclass(frozen=True)
class OrderTimes:
    """What the rules look at for one order."""

    fulfillment_type: FulfillmentType
    status: OrderStatus
    delivery_status: str | None
    ready_at: datetime | None  # when the kitchen should be done
    promised_at: datetime | None  # when the customer was promised the food (delivery)
    pickup_eta: datetime | None = None  # the courier's ETA at the restaurant
    courier_assigned: bool | None = None  # from the delivery attempt when known, else from delivery_status


def ready_time(
    *, placed_at: datetime, prep_time_minutes: int, requested_for: datetime | None, is_future: bool
) -> datetime:
    """A future order is due at its requested time; an ASAP order when its prep time has passed."""
    if is_future and requested_for is not None:
        return requested_for
    return placed_at + timedelta(minutes=prep_time_minutes)


def late_reasons(times: OrderTimes, *, now: datetime, courier_lead: timedelta) -> list[str]:
    """Why the order is late (empty when it is not); reason codes are stable for the page and tests."""
    if times.status in TERMINAL:
        return []
    reasons: list[str] = []
    is_delivery = times.fulfillment_type in DELIVERY_TYPES
    assigned = times.courier_assigned
    if assigned is None:
        assigned = times.delivery_status in COURIER_ASSIGNED
    if is_delivery and not assigned and times.ready_at is not None and now >= times.ready_at - courier_lead:
        reasons.append("no_courier")
    picked_up = times.delivery_status in PICKED_UP or times.status == OrderStatus.OUT_FOR_DELIVERY
    if (
        is_delivery
        and not picked_up
        and times.pickup_eta is not None
        and times.ready_at is not None
        and times.pickup_eta > times.ready_at
    ):
        reasons.append("pickup_eta_after_ready")
    if is_delivery and times.promised_at is not None and now > times.promised_at:
        reasons.append("delivery_overdue")
    return reasons


LATE_LABELS = {
    "no_courier": "no courier yet",
    "pickup_eta_after_ready": "courier arrives after the food is ready",
    "delivery_overdue": "past the promised delivery time",
}
