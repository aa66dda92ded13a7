"""Tables of dispatch: the policy per location, delivery attempts, and provider webhooks already applied."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import JSON, BigId, UTCDateTime, metadata

dispatch_policies = sa.Table(
    "dispatch_policies",
    metadata,
    sa.Column("location_id", BigId, sa.ForeignKey("locations.id", ondelete="CASCADE"), primary_key=True),
    # provider names in preference order (the order matters for the `preferred` strategy)
    sa.Column("allowed_providers", JSON, nullable=False),
    sa.Column("strategy", sa.String(16), nullable=False, server_default="cheapest"),  # cheapest|fastest|preferred
    sa.Column("max_fee", sa.Integer, nullable=True),  # minor units
    sa.Column("max_pickup_eta_minutes", sa.Integer, nullable=True),
    sa.Column("acceptance_timeout_seconds", JSON, nullable=False),  # {"doordash": 300, ...}; missing = default
    sa.Column("redispatch_window_minutes", sa.Integer, nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(40), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),  # 1, 2, ... per order
    # equals order_id while the attempt is active, NULL once it ended: the unique constraint makes
    # "at most one active attempt per order" a database fact on SQLite and PostgreSQL alike
    sa.Column("active_order_id", sa.String(40), nullable=True, unique=True),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("external_id", sa.String(80), nullable=False, unique=True),  # our idempotency key at the provider
    sa.Column("provider_delivery_id", sa.String(128), nullable=True),
    sa.Column("state", sa.String(16), nullable=False),  # booking | booked | ended
    sa.Column("delivery_status", sa.String(40), nullable=False),  # canonical (Stream's 15 values)
    sa.Column("provider_status", sa.String(64), nullable=True),
    sa.Column("outcome", sa.String(40), nullable=True),  # delivered, canceled, booking_failed, no_courier, ...
    sa.Column("outcome_reason", sa.Text, nullable=True),
    sa.Column("cancel_requested_at", UTCDateTime, nullable=True),
    sa.Column("cancel_fee", sa.Integer, nullable=True),
    sa.Column("quote_id", sa.String(128), nullable=True),
    sa.Column("quote_expires_at", UTCDateTime, nullable=True),
    sa.Column("fee", sa.Integer, nullable=True),
    sa.Column("currency", sa.String(3), nullable=True),
    sa.Column("tip", sa.Integer, nullable=True),
    sa.Column("pickup_ready_at", UTCDateTime, nullable=True),  # sent to the provider (None = ASAP)
    sa.Column("dropoff_deadline", UTCDateTime, nullable=True),
    sa.Column("pickup_eta", UTCDateTime, nullable=True),
    sa.Column("dropoff_eta", UTCDateTime, nullable=True),
    sa.Column("accept_deadline", UTCDateTime, nullable=True),  # no courier by then: fall back
    sa.Column("courier", JSON, nullable=True),  # name, masked phone, vehicle, location
    sa.Column("tracking_url", sa.String(2048), nullable=True),
    sa.Column("proof_of_delivery", JSON, nullable=True),
    sa.Column("context", JSON, nullable=False),  # why it exists: actor, excluded providers, strategy, quotes
    sa.Column("provider_updated_at", UTCDateTime, nullable=True),  # the newest provider truth applied
    sa.Column("last_event_at", UTCDateTime, nullable=True),  # last webhook or poll that reached us
    sa.Column("booked_at", UTCDateTime, nullable=True),
    sa.Column("picked_up_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("order_id", "number"),
    sa.Index("ix_delivery_attempts_provider_delivery", "provider", "provider_delivery_id"),
)

provider_webhook_events = sa.Table(
    "provider_webhook_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String(40), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("attempt_id", BigId, sa.ForeignKey("delivery_attempts.id", ondelete="CASCADE"), nullable=True),
    sa.Column("result", sa.String(32), nullable=False),  # applied | stale | ended
    sa.Column("received_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("provider", "event_id"),
)
