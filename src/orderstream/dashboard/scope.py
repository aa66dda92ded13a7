"""Authorization: what a user may see. A merchant sees only orders of their locations; anything else is 404."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from orderstream.dashboard.users import User
from orderstream.orders.models import orders
from orderstream.tenancy.models import locations, partners


def location_clause(user: User, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """A WHERE clause limiting an internal location id column to the user's locations."""
    if user.location_ids is None:
        return sa.true()
    return column.in_(sorted(user.location_ids)) if user.location_ids else sa.false()


def can_see_location(user: User, location_id: int) -> bool:
    """True when the user may see this location (by internal id)."""
    return user.location_ids is None or location_id in user.location_ids


def visible_locations(conn: Connection, user: User) -> list[RowMapping]:
    """The locations the user may see, with their partner's slug, by partner and name."""
    stmt = (
        sa.select(locations, partners.c.slug.label("partner_slug"), partners.c.name.label("partner_name"))
        .join(partners, partners.c.id == locations.c.partner_id)
        .where(location_clause(user, locations.c.id))
        .order_by(partners.c.slug, locations.c.name, locations.c.external_id)
    )
    return list(conn.execute(stmt).mappings())


def get_location(conn: Connection, user: User, location_id: int) -> RowMapping | None:
    """One location the user may see, or None."""
    if not can_see_location(user, location_id):
        return None
    stmt = (
        sa.select(locations, partners.c.slug.label("partner_slug"))
        .join(partners, partners.c.id == locations.c.partner_id)
        .where(locations.c.id == location_id)
    )
    return conn.execute(stmt).mappings().first()


def orders_select(user: User) -> sa.Select[tuple[object, ...]]:
    """Orders with their location and partner, limited to what the user may see."""
    return (
        sa.select(
            orders,
            locations.c.name.label("location_name"),
            locations.c.external_id.label("location_external_id"),
            locations.c.timezone.label("location_timezone"),
            locations.c.prep_time_minutes.label("location_prep_time_minutes"),
            partners.c.slug.label("partner_slug"),
        )
        .join(locations, sa.and_(locations.c.id == orders.c.location_id, locations.c.partner_id == orders.c.partner_id))
        .join(partners, partners.c.id == orders.c.partner_id)
        .where(location_clause(user, orders.c.location_id))
    )


def get_order(conn: Connection, user: User, order_id: str) -> RowMapping | None:
    """The order if the user may see it, else None (the caller answers 404 either way)."""
    return conn.execute(orders_select(user).where(orders.c.id == order_id)).mappings().first()
