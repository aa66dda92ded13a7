"""Domain events: facts about an order, published inside the transaction that made them true."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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


Event = OrderCreated | OrderStatusChanged
