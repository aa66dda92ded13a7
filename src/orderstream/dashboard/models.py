"""Tables for dashboard users, their locations, server-side sessions, sign-in attempts and the audit log."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import JSON, BigId, UTCDateTime, metadata

dashboard_users = sa.Table(
    "dashboard_users",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),  # stored lower-cased
    sa.Column("password_hash", sa.String(255), nullable=False),  # argon2id, PHC string
    sa.Column("role", sa.String(16), nullable=False),  # admin | merchant
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("disabled_at", UTCDateTime, nullable=True),
)

dashboard_user_locations = sa.Table(
    "dashboard_user_locations",
    metadata,
    sa.Column("user_id", BigId, sa.ForeignKey("dashboard_users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("location_id", BigId, sa.ForeignKey("locations.id", ondelete="CASCADE"), primary_key=True),
)

dashboard_sessions = sa.Table(
    "dashboard_sessions",
    metadata,
    # sha256 of the cookie value: a leaked table does not give working cookies
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", BigId, sa.ForeignKey("dashboard_users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Index("ix_dashboard_sessions_user", "user_id"),
)

dashboard_signin_attempts = sa.Table(
    "dashboard_signin_attempts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("succeeded", sa.Boolean, nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Index("ix_dashboard_signin_attempts_key", "ip", "email", "at"),
)

dashboard_audit = sa.Table(
    "dashboard_audit",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("user_id", BigId, sa.ForeignKey("dashboard_users.id", ondelete="SET NULL"), nullable=True),
    sa.Column("user_email", sa.String(320), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),  # reveal_customer, cancel, mark_ready, ...
    sa.Column("order_id", sa.String(40), nullable=True),
    sa.Column("details", JSON, nullable=True),
    sa.Index("ix_dashboard_audit_order", "order_id"),
)
