"""Database reads and writes of own drivers and their deliveries (the provider's 'client': I/O only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from orderstream.db import locked, utcnow
from orderstream.deliveries.providers.own_drivers.mapping import Candidate
from orderstream.deliveries.providers.own_drivers.models import driver_deliveries, driver_fleets, drivers
from orderstream.deliveries.providers.own_drivers.statuses import OPEN
from orderstream.orders.models import orders
from orderstream.tenancy.models import locations

_OPEN = [s.value for s in OPEN]


def get_driver(conn: Connection, *, driver_id: str) -> RowMapping | None:
    """A driver by id."""
    return conn.execute(sa.select(drivers).where(drivers.c.id == driver_id)).mappings().first()


def driver_by_token_hash(conn: Connection, *, token_hash: str) -> RowMapping | None:
    """The active driver holding a token."""
    stmt = sa.select(drivers).where(drivers.c.token_hash == token_hash).where(drivers.c.active.is_(True))
    return conn.execute(stmt).mappings().first()


def insert_driver(conn: Connection, **values: Any) -> None:
    """Store a new driver."""
    now = utcnow()
    conn.execute(sa.insert(drivers).values(created_at=now, updated_at=now, **values))


def update_driver(conn: Connection, *, driver_id: str, **values: Any) -> None:
    """Change some fields of a driver."""
    conn.execute(sa.update(drivers).where(drivers.c.id == driver_id).values(updated_at=utcnow(), **values))


def list_drivers(conn: Connection, *, location_id: int, include_inactive: bool) -> Sequence[RowMapping]:
    """A location's drivers with how many open deliveries each has, oldest first."""
    open_count = (
        sa.select(sa.func.count())
        .select_from(driver_deliveries)
        .where(driver_deliveries.c.driver_id == drivers.c.id)
        .where(driver_deliveries.c.status.in_(_OPEN))
        .scalar_subquery()
    )
    stmt = sa.select(drivers, open_count.label("open_deliveries")).where(drivers.c.location_id == location_id)
    if not include_inactive:
        stmt = stmt.where(drivers.c.active.is_(True))
    return conn.execute(stmt.order_by(drivers.c.created_at, drivers.c.id)).mappings().all()


def count_active_drivers(conn: Connection, *, location_id: int) -> int:
    """How many drivers a location has that are not deactivated (on shift or not)."""
    stmt = (
        sa.select(sa.func.count())
        .select_from(drivers)
        .where(drivers.c.location_id == location_id)
        .where(drivers.c.active.is_(True))
    )
    return int(conn.execute(stmt).scalar_one())


def on_shift_candidates(conn: Connection, *, location_id: int) -> list[Candidate]:
    """Every active, on-shift driver of a location with their load; locks them on PostgreSQL.

    The lock serialises auto-assignment per location, so two bookings at once see each other's load.
    """
    ids = [
        row[0]
        for row in conn.execute(
            locked(
                conn,
                sa.select(drivers.c.id)
                .where(drivers.c.location_id == location_id)
                .where(drivers.c.active.is_(True))
                .where(drivers.c.on_shift.is_(True))
                .order_by(drivers.c.id),
            )
        )
    ]
    if not ids:
        return []
    is_open = sa.case((driver_deliveries.c.status.in_(_OPEN), 1), else_=0)
    loads = {
        row.driver_id: (int(row.open_count or 0), row.last_assigned_at)
        for row in conn.execute(
            sa.select(
                driver_deliveries.c.driver_id,
                sa.func.sum(is_open).label("open_count"),
                sa.func.max(driver_deliveries.c.assigned_at).label("last_assigned_at"),
            )
            .where(driver_deliveries.c.driver_id.in_(ids))
            .group_by(driver_deliveries.c.driver_id)
        )
    }
    out = []
    for driver_id in ids:
        count, last = loads.get(driver_id, (0, None))
        out.append(Candidate(driver_id=driver_id, open_deliveries=count, last_assigned_at=last))
    return out


def fleet(conn: Connection, *, location_id: int) -> RowMapping | None:
    """A location's fleet settings, or None when it never configured them."""
    return conn.execute(sa.select(driver_fleets).where(driver_fleets.c.location_id == location_id)).mappings().first()


def upsert_fleet(conn: Connection, *, location_id: int, fee: int | None, auto_assign: bool | None) -> None:
    """Store a location's fleet settings."""
    now = utcnow()
    if fleet(conn, location_id=location_id) is None:
        conn.execute(
            sa.insert(driver_fleets).values(location_id=location_id, fee=fee, auto_assign=auto_assign, updated_at=now)
        )
    else:
        conn.execute(
            sa.update(driver_fleets)
            .where(driver_fleets.c.location_id == location_id)
            .values(fee=fee, auto_assign=auto_assign, updated_at=now)
        )


def order_and_location(conn: Connection, *, order_id: str) -> RowMapping | None:
    """The order's location id, fulfillment type, its prep time and the location's."""
    stmt = (
        sa.select(
            orders.c.id.label("order_id"),
            orders.c.location_id,
            orders.c.fulfillment_type,
            orders.c.prep_time_minutes.label("order_prep_time_minutes"),
            locations.c.prep_time_minutes.label("location_prep_time_minutes"),
        )
        .join(locations, locations.c.id == orders.c.location_id)
        .where(orders.c.id == order_id)
    )
    return conn.execute(stmt).mappings().first()


def get_delivery(
    conn: Connection, *, delivery_id: str | None = None, external_id: str | None = None, lock: bool = False
) -> RowMapping | None:
    """A driver delivery by its id or by the attempt's external id (locked on PostgreSQL when asked)."""
    stmt = sa.select(driver_deliveries)
    if delivery_id is not None:
        stmt = stmt.where(driver_deliveries.c.id == delivery_id)
    if external_id is not None:
        stmt = stmt.where(driver_deliveries.c.external_id == external_id)
    if lock:
        stmt = locked(conn, stmt)
    return conn.execute(stmt).mappings().first()


def insert_delivery(conn: Connection, **values: Any) -> None:
    """Store a new driver delivery."""
    now = utcnow()
    conn.execute(sa.insert(driver_deliveries).values(created_at=now, updated_at=now, version=1, **values))


def update_delivery(conn: Connection, *, delivery_id: str, **values: Any) -> None:
    """Change a driver delivery and bump its version (each version is one event)."""
    conn.execute(
        sa.update(driver_deliveries)
        .where(driver_deliveries.c.id == delivery_id)
        .values(updated_at=utcnow(), version=driver_deliveries.c.version + 1, **values)
    )


def list_deliveries(
    conn: Connection, *, location_id: int | None = None, driver_id: str | None = None, status: Sequence[str] = ()
) -> Sequence[RowMapping]:
    """Driver deliveries of a location or a driver, newest first."""
    stmt = sa.select(driver_deliveries)
    if location_id is not None:
        stmt = stmt.where(driver_deliveries.c.location_id == location_id)
    if driver_id is not None:
        stmt = stmt.where(driver_deliveries.c.driver_id == driver_id)
    if status:
        stmt = stmt.where(driver_deliveries.c.status.in_(list(status)))
    return conn.execute(stmt.order_by(driver_deliveries.c.created_at.desc()).limit(500)).mappings().all()
