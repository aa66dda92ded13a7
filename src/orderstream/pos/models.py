"""The raw inbound event store: every accepted POS webhook, kept as received."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import JSON, BigId, UTCDateTime, metadata
from orderstream.tenancy.models import locations

inbound_events = sa.Table(
    "inbound_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("partner_id", BigId, sa.ForeignKey("partners.id"), nullable=False),
    # Standard Webhooks message id; unique per partner forever (permanent replay dedupe)
    sa.Column("webhook_id", sa.String(255), nullable=True),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("envelope", sa.String(16), nullable=False),  # legacy | current
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("order_id", sa.String(40), nullable=True),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("response_body", JSON, nullable=True),
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("partner_id", "webhook_id"),
    sa.Index("ix_inbound_events_order", "order_id"),
)

# the columns of a location the webhook reads: fewer columns, less work per row for the driver and SQLAlchemy
LOCATION_COLUMNS = tuple(
    locations.c[name]
    for name in (
        "id",
        "partner_id",
        "external_id",
        "country",
        "prep_time_minutes",
        "status",
        "paused_until",
        "allow_unpaid_delivery",
    )
)
