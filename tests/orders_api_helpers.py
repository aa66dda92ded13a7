"""Seed stored orders directly with SQLAlchemy Core, for tests of the read side (no webhook involved)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from orderstream.db import Database, utcnow
from orderstream.ids import new_id
from orderstream.orders.models import order_history, order_line_items, orders
from orderstream.tenancy import service as tenancy
from tests.factories import PartnerFixture, random_ref


def seed_order(
    db: Database,
    partner: PartnerFixture,
    *,
    location_id: str | None = None,
    pos_order_id: str | None = None,
    fulfillment_type: str = "delivery",
    status: str = "received",
    created_at: datetime | None = None,
    customer_phone: str = "+14155550123",
    customer_email: str = "jane.doe@example.com",
    street: str = "123 Main St",
    **overrides: Any,
) -> str:
    """Store one order of the partner (docs-example shape, with nested modifiers) and its first history entry."""
    order_id = new_id("ord")
    now = created_at or utcnow()
    pos_order_id = pos_order_id or random_ref("pos_order")
    with db.write() as conn:
        location = tenancy.get_location(
            conn, partner_id=partner.partner_id, external_id=location_id or partner.location_id
        )
        assert location is not None, "seed_order needs an existing location"
        values: dict[str, Any] = {
            "id": order_id,
            "partner_id": partner.partner_id,
            "location_id": location["id"],
            "source_order_id": pos_order_id,
            "idempotency_key": f"{pos_order_id}_1699564800",
            "content_hash": secrets.token_hex(32),
            "fulfillment_type": fulfillment_type,
            "status": status,
            "delivery_status": None,
            "source": "your_pos_name",
            "brand": "your_brand_name",
            "customer_name": "Jane Doe",
            "customer_phone": customer_phone,
            "customer_phone_e164": customer_phone,
            "customer_email": customer_email,
            "customers": [{"id": "customer_1", "name": "Jane Doe", "phone": customer_phone, "email": customer_email}],
            "delivery_address": (
                {"street": street, "city": "Anytown", "state": "CA", "postal_code": "12345", "country": "US"}
                if fulfillment_type in ("delivery", "merchant_managed_delivery")
                else None
            ),
            "currency": "usd",
            "subtotal_amount": 2600,
            "tax_amount": 208,
            "total_amount": 2808,
            "amounts": {"tip_amount": 300, "tax_withheld_by_dsp": 0},
            "notes": "Extra crispy fries please",
            "special_instructions": None,
            "fulfillment_instructions": None,
            "should_include_utensils": True,
            "unpaid": False,
            "is_future_order": status == "scheduled",
            "requested_for": now + timedelta(hours=2) if status == "scheduled" else None,
            "placed_at": now,
            "prep_time_minutes": 15,
            "warnings": [{"code": "invalid_phone", "message": "not a valid phone number", "path": "customer.phone"}],
            "tracking_token": secrets.token_urlsafe(24),
            "created_at": now,
            "updated_at": now,
        }
        values.update(overrides)
        conn.execute(sa.insert(orders).values(**values))
        conn.execute(
            sa.insert(order_line_items).values(
                order_id=order_id,
                position=0,
                provider_id="item_789",
                name="Cheeseburger",
                quantity=2,
                price_amount=1200,
                price_currency="usd",
                customer_ref="customer_1",
                special_instructions=None,
                modifiers=[
                    {
                        "provider_id": "modifier_101",
                        "name": "Extra Cheese",
                        "quantity": 1,
                        "price_amount": 100,
                        "price_currency": "usd",
                        "modifiers": [
                            {
                                "provider_id": "modifier_102",
                                "name": "Cheddar",
                                "quantity": 1,
                                "price_amount": 0,
                                "price_currency": "usd",
                                "modifiers": [],
                            }
                        ],
                    }
                ],
            )
        )
        conn.execute(
            sa.insert(order_line_items).values(
                order_id=order_id,
                position=1,
                provider_id="item_790",
                name="Fries",
                quantity=1,
                price_amount=200,
                price_currency="usd",
                modifiers=[],
            )
        )
        conn.execute(
            sa.insert(order_history).values(
                order_id=order_id,
                at=now,
                kind="status",
                from_status=None,
                to_status=status,
                actor="pos",
                reason="order.created",
            )
        )
    return order_id


def add_location(db: Database, partner: PartnerFixture, location_id: str) -> None:
    """Give the partner another location."""
    with db.write() as conn:
        tenancy.add_location(
            conn,
            partner_slug=partner.slug,
            external_id=location_id,
            name="Second Street Burgers",
            street="2 Second St",
            city="Anytown",
            state="CA",
            postal_code="12345",
            country="US",
            phone="+14155550101",
            timezone="America/Los_Angeles",
        )
