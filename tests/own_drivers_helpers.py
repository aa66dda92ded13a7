"""Helpers for own-drivers tests: a partner with drivers, orders and the DeliveryRequest dispatch would send."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from orderstream.db import Database
from orderstream.deliveries.protocol import Address, Contact, DeliveryRequest, WebhookUpdate
from orderstream.deliveries.providers.own_drivers import service
from tests.factories import PartnerFixture
from tests.orders_api_helpers import seed_order


def add_driver(
    db: Database, partner: PartnerFixture, name: str, *, on_shift: bool = True, phone: str = "(415) 555-0142"
) -> tuple[str, str]:
    """Add a driver to the partner's location; (driver id, token)."""
    with db.write() as conn:
        loc = service.location(conn, partner_id=partner.partner_id, external_id=partner.location_id)
        driver, token = service.add_driver(conn, loc=loc, name=name, phone=phone, vehicle="car", on_shift=on_shift)
    return str(driver["id"]), token


def delivery_request(order_id: str, *, attempt: int = 1, **overrides: Any) -> DeliveryRequest:
    """The request dispatch builds for one attempt of an order."""
    values: dict[str, Any] = {
        "external_id": f"os-{order_id}-{attempt}",
        "order_id": order_id,
        "pickup_address": Address("1 Main St", "Anytown", "CA", "12345", "US"),
        "pickup_contact": Contact("Main Street Burgers", "+14155550100"),
        "dropoff_address": Address("123 Main St", "Anytown", "CA", "12345", "US"),
        "dropoff_contact": Contact("Jane Doe", "+14155550123"),
        "order_value": 2808,
        "currency": "usd",
        "tip": 300,
    }
    values.update(overrides)
    return DeliveryRequest(**values)


def new_order(db: Database, partner: PartnerFixture, **overrides: Any) -> str:
    """A stored merchant-managed delivery order."""
    return seed_order(db, partner, fulfillment_type="merchant_managed_delivery", **overrides)


@dataclass
class Updates:
    """Collects the updates the fleet hands to dispatch, checking they arrive inside the write transaction."""

    seen: list[WebhookUpdate] = field(default_factory=list)

    def __call__(self, conn: Connection, update: WebhookUpdate) -> None:
        assert conn.in_transaction()
        self.seen.append(update)
