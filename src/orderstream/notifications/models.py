"""Tables of customer notifications: messages, opt-outs, per-location settings and tracking links."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import JSON, BigId, UTCDateTime, metadata

# queued -> sending -> sent -> delivered | failed; queued -> skipped (with a reason)
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # ntf_<ulid>: Message-ID and SMS idempotency key
    sa.Column("order_id", sa.String(40), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("partner_id", BigId, nullable=False),
    sa.Column("location_id", BigId, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),  # confirmed, reminder, courier_assigned, ...
    sa.Column("channel", sa.String(8), nullable=False),  # sms | email
    # 0 for once-only kinds; 1, 2, ... for the throttled updates of kind "update"
    sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("recipient_hash", sa.String(64), nullable=True),  # sha256 of the E.164 phone / lower-cased e-mail
    sa.Column("recipient_masked", sa.String(64), nullable=True),  # +1*******23, j***@example.com
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.String(200), nullable=True),  # why skipped or failed
    sa.Column("subject", sa.String(300), nullable=True),
    sa.Column("body_text", sa.Text, nullable=True),
    sa.Column("body_html", sa.Text, nullable=True),
    sa.Column("facts", JSON, nullable=False),  # what the message told (ETA, courier...), to judge later changes
    sa.Column("provider", sa.String(32), nullable=True),
    sa.Column("provider_message_id", sa.String(100), nullable=True),
    sa.Column("provider_status", sa.String(32), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("send_after", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("sending_at", UTCDateTime, nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    sa.Column("delivered_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("order_id", "kind", "channel", "seq"),
    sa.Index("ix_notifications_recipient_created", "recipient_hash", "created_at"),
    sa.Index("ix_notifications_provider_message", "provider_message_id"),
)

notification_opt_outs = sa.Table(
    "notification_opt_outs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(8), nullable=False),  # sms | email
    sa.Column("contact_hash", sa.String(64), nullable=False),  # sha256 of the E.164 phone / lower-cased e-mail
    sa.Column("source", sa.String(32), nullable=False),  # sms_stop, email_link, operator
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("channel", "contact_hash"),
)

notification_settings = sa.Table(
    "notification_settings",
    metadata,
    sa.Column("location_id", BigId, sa.ForeignKey("locations.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("sms_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("email_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("disabled_kinds", JSON, nullable=False),  # e.g. ["reminder"]
    sa.Column("overrides", JSON, nullable=False),  # {kind: {channel: {"subject": ..., "text": ...}}}
    sa.Column("from_email", sa.String(320), nullable=True),
    sa.Column("locale", sa.String(16), nullable=True),  # e.g. en_US, fr_CA; default from settings
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

tracking_tokens = sa.Table(
    "tracking_tokens",
    metadata,
    sa.Column("token", sa.String(64), primary_key=True),  # the order's tracking_token (also in the order API)
    sa.Column("order_id", sa.String(40), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    # when the order reached a final status; the link expires settings.tracking_link_days later
    sa.Column("ended_at", UTCDateTime, nullable=True),
    # what the page shows of the delivery: status, courier first name, vehicle, ETAs (no contact data)
    sa.Column("delivery", JSON, nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),  # +1 on every change (live updates)
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
