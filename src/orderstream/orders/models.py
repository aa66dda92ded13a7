"""Tables for orders, their line items and their status history."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import JSON, BigId, UTCDateTime, metadata

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # ord_<ulid>
    sa.Column("partner_id", BigId, sa.ForeignKey("partners.id"), nullable=False),
    sa.Column("location_id", BigId, sa.ForeignKey("locations.id"), nullable=False),
    sa.Column("source_order_id", sa.String(128), nullable=False),  # provider_id / source_order_id
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    # sha256 of the canonical order content: same id + same hash = duplicate, else conflict
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("fulfillment_type", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("delivery_status", sa.String(40), nullable=True),
    sa.Column("source", sa.String(100), nullable=True),
    sa.Column("brand", sa.String(200), nullable=True),
    sa.Column("customer_name", sa.String(200), nullable=True),
    sa.Column("customer_phone", sa.String(64), nullable=True),  # as given
    sa.Column("customer_phone_e164", sa.String(20), nullable=True),  # when valid
    sa.Column("customer_email", sa.String(320), nullable=True),
    sa.Column("customers", JSON, nullable=False),  # every customer as sent
    sa.Column("delivery_address", JSON, nullable=True),  # normalized: street, city, state, postal_code, ...
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("subtotal_amount", sa.BigInteger, nullable=True),
    sa.Column("tax_amount", sa.BigInteger, nullable=True),
    sa.Column("total_amount", sa.BigInteger, nullable=True),
    sa.Column("amounts", JSON, nullable=False),  # tips, fees, tax withheld, service charge, discounts
    sa.Column("notes", sa.Text, nullable=True),
    sa.Column("special_instructions", sa.Text, nullable=True),
    sa.Column("fulfillment_instructions", sa.Text, nullable=True),
    sa.Column("should_include_utensils", sa.Boolean, nullable=True),
    sa.Column("unpaid", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("is_future_order", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("requested_for", UTCDateTime, nullable=True),
    sa.Column("placed_at", UTCDateTime, nullable=True),
    sa.Column("prep_time_minutes", sa.Integer, nullable=True),
    sa.Column("cancel_reason", sa.String(64), nullable=True),
    sa.Column("cancel_source", sa.String(32), nullable=True),
    sa.Column("cancel_note", sa.Text, nullable=True),
    sa.Column("warnings", JSON, nullable=False),
    sa.Column("tracking_token", sa.String(64), nullable=False, unique=True),
    sa.Column("inbound_event_id", BigId, nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("partner_id", "location_id", "source_order_id"),
    sa.Index("ix_orders_partner_source", "partner_id", "source_order_id"),
    sa.Index("ix_orders_partner_created", "partner_id", "created_at"),
    sa.Index("ix_orders_location_status", "location_id", "status"),
)

order_line_items = sa.Table(
    "order_line_items",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(40), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("provider_id", sa.String(128), nullable=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("price_amount", sa.BigInteger, nullable=False),  # unit price, minor units
    sa.Column("price_currency", sa.String(3), nullable=False),
    sa.Column("customer_ref", sa.String(128), nullable=True),
    sa.Column("special_instructions", sa.Text, nullable=True),
    sa.Column("modifiers", JSON, nullable=False),  # nested: [{provider_id,name,quantity,price_amount,...,modifiers}]
    sa.Index("ix_order_line_items_order", "order_id"),
)

order_history = sa.Table(
    "order_history",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(40), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False, server_default="status"),  # status, delivery, note...
    sa.Column("from_status", sa.String(40), nullable=True),
    sa.Column("to_status", sa.String(40), nullable=True),
    sa.Column("actor", sa.String(16), nullable=False),  # pos, courier, operator, system
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("details", JSON, nullable=True),
    sa.Column("inbound_event_id", BigId, nullable=True),
    sa.Index("ix_order_history_order", "order_id", "id"),
)
