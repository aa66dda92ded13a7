"""Tables of outbound webhooks: endpoints and their secrets, events, deliveries and attempts."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import JSON, BigId, UTCDateTime, metadata

webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # we_<ulid>
    sa.Column("partner_id", BigId, sa.ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("description", sa.String(200), nullable=True),
    sa.Column("event_types", JSON, nullable=False),  # subscribed types, e.g. ["order.updated"]
    sa.Column("status", sa.String(16), nullable=False, server_default="enabled"),  # enabled | disabled
    sa.Column("disabled_reason", sa.String(200), nullable=True),
    # circuit breaker: nothing is sent before this time; failure rates count only attempts after it
    sa.Column("paused_until", UTCDateTime, nullable=True),
    sa.Column("health_since", UTCDateTime, nullable=True),
    sa.Column("alerted_at", UTCDateTime, nullable=True),
    sa.Column("last_success_at", UTCDateTime, nullable=True),
    sa.Column("last_failure_at", UTCDateTime, nullable=True),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_webhook_endpoints_partner", "partner_id"),
)

# Standard Webhooks keys are per endpoint; several are active during a rotation overlap.
webhook_endpoint_secrets = sa.Table(
    "webhook_endpoint_secrets",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("endpoint_id", sa.String(40), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    sa.Column("secret", sa.String(200), nullable=False),  # HMAC needs the plaintext; never logged
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),  # null while current; set on rotation
    sa.Index("ix_webhook_endpoint_secrets_endpoint", "endpoint_id"),
)

# One row per partner: the last event sequence. Incrementing it locks the row until commit, so a
# partner's events get sequence numbers in commit order and a polling cursor never skips one.
outbound_event_counters = sa.Table(
    "outbound_event_counters",
    metadata,
    sa.Column("partner_id", BigId, sa.ForeignKey("partners.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("last_sequence", sa.BigInteger, nullable=False),
)

outbound_events = sa.Table(
    "outbound_events",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # evt_<ulid>: the webhook-id, stable across retries
    sa.Column("partner_id", BigId, sa.ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False),  # per partner, gap-free, commit order
    sa.Column("order_id", sa.String(40), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the exact JSON text sent and served
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("partner_id", "sequence"),
    sa.Index("ix_outbound_events_order", "order_id"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # whd_<ulid>
    sa.Column("event_id", sa.String(40), sa.ForeignKey("outbound_events.id", ondelete="CASCADE"), nullable=False),
    sa.Column("endpoint_id", sa.String(40), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False),
    sa.Column("partner_id", BigId, nullable=False),
    sa.Column("order_id", sa.String(40), nullable=True),  # deliveries of one (endpoint, order) go in order
    sa.Column("sequence", sa.BigInteger, nullable=False),  # the event's sequence: the sending order
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    # set while an attempt is in flight; a crashed sender's claim simply expires
    sa.Column("claimed_until", UTCDateTime, nullable=True),
    sa.Column("claimed_by", sa.String(64), nullable=True),  # the job holding the claim
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("event_id", "endpoint_id"),
    sa.Index("ix_webhook_deliveries_pair", "endpoint_id", "order_id", "sequence"),
    sa.Index("ix_webhook_deliveries_partner_status", "partner_id", "status", "created_at"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(40), sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("endpoint_id", sa.String(40), nullable=False),
    sa.Column("number", sa.Integer, nullable=False),  # 1 for the first attempt of the delivery
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("address", sa.String(64), nullable=True),  # the checked IP we connected to
    sa.Column("request_headers", JSON, nullable=False),
    sa.Column("response_status", sa.Integer, nullable=True),
    sa.Column("response_headers", JSON, nullable=True),
    sa.Column("response_excerpt", sa.Text, nullable=True),  # at most 1 KiB
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # succeeded | retry | failed | gone
    sa.Column("error", sa.Text, nullable=True),
    sa.Index("ix_webhook_attempts_delivery", "delivery_id", "number"),
    sa.Index("ix_webhook_attempts_endpoint_started", "endpoint_id", "started_at"),
)
