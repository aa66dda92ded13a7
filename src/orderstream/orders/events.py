"""Domain events: facts about an order, published inside the transaction that made them true."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# metadata of a field that only travels within the publishing transaction: not part of a serialized event
TRANSIENT_KEY = "transient"
TRANSIENT = {TRANSIENT_KEY: True}


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
    # the order's POS reference as the publisher holds it locked (the columns webhooks_out's _order_ref reads:
    # source_order_id, status, delivery_status, cancel_reason, currency, external_id); None: handlers read it
    order_ref: Mapping[str, Any] | None = field(default=None, compare=False, metadata=TRANSIENT)


Event = OrderCreated | OrderStatusChanged | DeliveryStatusChanged
