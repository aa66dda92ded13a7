"""Tables of the merchant's own drivers: drivers per location, fleet settings, and driver deliveries."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import JSON, BigId, UTCDateTime, metadata

drivers = sa.Table(
    "drivers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # drv_<ulid>
    sa.Column("partner_id", BigId, sa.ForeignKey("partners.id", ondelete="CASCADE"), nullable=False),
    sa.Column("location_id", BigId, sa.ForeignKey("locations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("phone", sa.String(20), nullable=False),  # E.164
    sa.Column("vehicle", sa.String(100), nullable=True),  # free text: "car", "e-bike", "blue Corolla"...
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),  # false once deactivated
    sa.Column("on_shift", sa.Boolean, nullable=False, server_default=sa.false()),
    # the driver's bearer token for the status endpoint; only its SHA-256 is stored
    sa.Column("token_prefix", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("deactivated_at", UTCDateTime, nullable=True),
    sa.Index("ix_drivers_location_active", "location_id", "active"),
)

driver_fleets = sa.Table(
    "driver_fleets",
    metadata,
    sa.Column("location_id", BigId, sa.ForeignKey("locations.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("fee", sa.Integer, nullable=True),  # minor units; null = the settings' default fee
    sa.Column("auto_assign", sa.Boolean, nullable=True),  # null = the settings' default
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

driver_deliveries = sa.Table(
    "driver_deliveries",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),  # drd_<ulid>: the provider_delivery_id
    sa.Column("external_id", sa.String(80), nullable=False, unique=True),  # the attempt's idempotency key
    sa.Column("order_id", sa.String(40), sa.ForeignKey("orders.id", ondelete="CASCADE"), nullable=False),
    sa.Column("location_id", BigId, sa.ForeignKey("locations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("driver_id", sa.String(40), sa.ForeignKey("drivers.id"), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # statuses.DriverStatus
    sa.Column("canceled_by", sa.String(16), nullable=True),  # merchant | driver
    sa.Column("cancel_reason", sa.Text, nullable=True),
    sa.Column("fee", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("tip", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cash_to_collect", sa.Integer, nullable=True),
    sa.Column("pickup_ready_at", UTCDateTime, nullable=True),
    sa.Column("dropoff_deadline", UTCDateTime, nullable=True),
    sa.Column("pickup_eta", UTCDateTime, nullable=True),
    sa.Column("dropoff_eta", UTCDateTime, nullable=True),
    sa.Column("latitude", sa.Float, nullable=True),  # the driver's last reported position
    sa.Column("longitude", sa.Float, nullable=True),
    sa.Column("proof_of_delivery", JSON, nullable=True),  # {"photo_url", "signature_url"}
    # bumped on every change; "<id>:<version>" is the event id of the update it produces
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("assigned_at", UTCDateTime, nullable=True),
    sa.Column("picked_up_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_driver_deliveries_driver_status", "driver_id", "status"),
    sa.Index("ix_driver_deliveries_location_status", "location_id", "status"),
)
