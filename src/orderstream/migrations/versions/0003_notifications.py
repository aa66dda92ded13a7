"""notifications: messages, opt-outs, location settings, tracking tokens

Revision ID: 0003_notifications
Revises: 0001_intake
Create Date: 2026-11-27 00:00:38.229691
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import orderstream.db

revision = "0003_notifications"
down_revision = "0001_intake"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_opt_outs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("contact_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_opt_outs")),
        sa.UniqueConstraint("channel", "contact_hash", name=op.f("uq_notification_opt_outs_channel_contact_hash")),
    )
    op.create_table(
        "notification_settings",
        sa.Column("location_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sms_enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("email_enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("disabled_kinds", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("overrides", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("from_email", sa.String(length=320), nullable=True),
        sa.Column("locale", sa.String(length=16), nullable=True),
        sa.Column("updated_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.id"],
            name=op.f("fk_notification_settings_location_id_locations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("location_id", name=op.f("pk_notification_settings")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("location_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("seq", sa.Integer(), server_default="0", nullable=False),
        sa.Column("recipient_hash", sa.String(length=64), nullable=True),
        sa.Column("recipient_masked", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("subject", sa.String(length=300), nullable=True),
        sa.Column("body_text", sa.Text(), nullable=True),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("facts", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=True),
        sa.Column("provider_message_id", sa.String(length=100), nullable=True),
        sa.Column("provider_status", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("send_after", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sending_at", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_notifications_order_id_orders"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint(
            "order_id", "kind", "channel", "seq", name=op.f("uq_notifications_order_id_kind_channel_seq")
        ),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index("ix_notifications_provider_message", ["provider_message_id"], unique=False)
        batch_op.create_index("ix_notifications_recipient_created", ["recipient_hash", "created_at"], unique=False)

    op.create_table(
        "tracking_tokens",
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivery", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("updated_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_tracking_tokens_order_id_orders"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_tracking_tokens")),
        sa.UniqueConstraint("order_id", name=op.f("uq_tracking_tokens_order_id")),
    )


def downgrade() -> None:
    op.drop_table("tracking_tokens")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_recipient_created")
        batch_op.drop_index("ix_notifications_provider_message")

    op.drop_table("notifications")
    op.drop_table("notification_settings")
    op.drop_table("notification_opt_outs")
