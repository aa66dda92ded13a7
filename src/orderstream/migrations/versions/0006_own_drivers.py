"""own_drivers: drivers per location, fleet settings, driver deliveries

Revision ID: 0006_own_drivers
Revises: 0001_intake
Create Date: 2026-11-27 00:03:31.382642
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import orderstream.db

revision = "0006_own_drivers"
down_revision = "0001_intake"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "driver_fleets",
        sa.Column("location_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("fee", sa.Integer(), nullable=True),
        sa.Column("auto_assign", sa.Boolean(), nullable=True),
        sa.Column("updated_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_driver_fleets_location_id_locations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("location_id", name=op.f("pk_driver_fleets")),
    )
    op.create_table(
        "drivers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("location_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("vehicle", sa.String(length=100), nullable=True),
        sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("on_shift", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deactivated_at", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["location_id"], ["locations.id"], name=op.f("fk_drivers_location_id_locations"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["partners.id"], name=op.f("fk_drivers_partner_id_partners"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drivers")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_drivers_token_hash")),
    )
    with op.batch_alter_table("drivers", schema=None) as batch_op:
        batch_op.create_index("ix_drivers_location_active", ["location_id", "active"], unique=False)

    op.create_table(
        "driver_deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("external_id", sa.String(length=80), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("location_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("driver_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("canceled_by", sa.String(length=16), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("fee", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("tip", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cash_to_collect", sa.Integer(), nullable=True),
        sa.Column("pickup_ready_at", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("dropoff_deadline", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("pickup_eta", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("dropoff_eta", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column(
            "proof_of_delivery",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("assigned_at", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("picked_up_at", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", orderstream.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", orderstream.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["driver_id"], ["drivers.id"], name=op.f("fk_driver_deliveries_driver_id_drivers")),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.id"],
            name=op.f("fk_driver_deliveries_location_id_locations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.id"], name=op.f("fk_driver_deliveries_order_id_orders"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_driver_deliveries")),
        sa.UniqueConstraint("external_id", name=op.f("uq_driver_deliveries_external_id")),
    )
    with op.batch_alter_table("driver_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_driver_deliveries_driver_status", ["driver_id", "status"], unique=False)
        batch_op.create_index("ix_driver_deliveries_location_status", ["location_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("driver_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_driver_deliveries_location_status")
        batch_op.drop_index("ix_driver_deliveries_driver_status")

    op.drop_table("driver_deliveries")
    with op.batch_alter_table("drivers", schema=None) as batch_op:
        batch_op.drop_index("ix_drivers_location_active")

    op.drop_table("drivers")
    op.drop_table("driver_fleets")
