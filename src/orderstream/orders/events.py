"""Domain events: facts about an order, published inside the transaction that made them true."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class OrderCreated:
    """A new order was stored."""

    order_id: str
    partner_id: int
    location_id: int
    fulfillment_type: str
    status: str
    is_future_order: bool
    requested_for: datetime | None
    at: datetime


@dataclass(frozen=True)
class OrderStatusChanged:
    """An order moved from one status to another."""

    order_id: str
    partner_id: int
    from_status: str
    to_status: str
    actor: str
    reason: str | None
    at: datetime


@dataclass(frozen=True)
class DeliveryStatusChanged:
    """The active delivery of an order changed: status, courier, ETA or tracking link."""

    order_id: str
    partner_id: int
    attempt_id: int
    provider: str
    from_status: str | None
    to_status: str
    courier: dict[str, Any] | None  # name, phone (masked), vehicle_type, vehicle_make/model/color, ...
    pickup_eta: datetime | None
    dropoff_eta: datetime | None
    tracking_url: str | None
    at: datetime


Event = OrderCreated | OrderStatusChanged | DeliveryStatusChanged
