"""Tables for partners, partner signing secrets, API keys and locations."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import JSON, BigId, UTCDateTime, metadata

partners = sa.Table(
    "partners",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("slug", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=False),
    # when true, every webhook must carry valid Standard Webhooks headers (replay protection)
    sa.Column("require_standard_webhooks", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rate_limit_per_minute", sa.Integer, nullable=True),
    sa.Column("settings", JSON, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

partner_secrets = sa.Table(
    "partner_secrets",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("partner_id", BigId, sa.ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    # HMAC needs the plaintext; it never leaves the database except when first created
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # null while current; set on rotation to the end of the overlap window
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Index("ix_partner_secrets_partner", "partner_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("partner_id", BigId, sa.ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False, server_default="default"),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

locations = sa.Table(
    "locations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("partner_id", BigId, sa.ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    # the partner's own location id, as sent in webhooks
    sa.Column("external_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("street", sa.String(200), nullable=False),
    sa.Column("city", sa.String(100), nullable=False),
    sa.Column("state", sa.String(100), nullable=False),
    sa.Column("postal_code", sa.String(20), nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("phone", sa.String(32), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("prep_time_minutes", sa.Integer, nullable=False, server_default="15"),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("paused_until", UTCDateTime, nullable=True),
    sa.Column("allow_unpaid_delivery", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("settings", JSON, nullable=False, server_default=sa.text("'{}'")),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("partner_id", "external_id"),
)
