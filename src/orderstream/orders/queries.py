"""Read side of orders for the partner API: every query is scoped to one partner."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from orderstream.orders.models import order_history, order_line_items, orders
from orderstream.tenancy.models import locations

LOCATION_EXTERNAL_ID = "location_external_id"


@dataclass(frozen=True)
class OrderFilters:
    """What a partner may filter its order list by (all optional, combined with AND)."""

    location_id: str | None = None  # the partner's own location id
    statuses: Sequence[str] = ()
    fulfillment_types: Sequence[str] = ()
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive


def _scoped(partner_id: int) -> sa.Select[tuple[object, ...]]:
    # the join condition repeats the partner: a location of another partner can never match
    return (
        sa.select(orders, locations.c.external_id.label(LOCATION_EXTERNAL_ID))
        .join(locations, sa.and_(locations.c.id == orders.c.location_id, locations.c.partner_id == partner_id))
        .where(orders.c.partner_id == partner_id)
    )


def list_orders(
    conn: Connection, *, partner_id: int, filters: OrderFilters, before_id: str | None, limit: int
) -> tuple[list[RowMapping], bool]:
    """A page of the partner's orders, newest first (by the time-sortable id), and whether more follow."""
    stmt = _scoped(partner_id)
    if filters.location_id is not None:
        stmt = stmt.where(locations.c.external_id == filters.location_id)
    if filters.statuses:
        stmt = stmt.where(orders.c.status.in_(list(filters.statuses)))
    if filters.fulfillment_types:
        stmt = stmt.where(orders.c.fulfillment_type.in_(list(filters.fulfillment_types)))
    if filters.created_after is not None:
        stmt = stmt.where(orders.c.created_at >= filters.created_after)
    if filters.created_before is not None:
        stmt = stmt.where(orders.c.created_at < filters.created_before)
    if before_id is not None:
        stmt = stmt.where(orders.c.id < before_id)
    rows = list(conn.execute(stmt.order_by(orders.c.id.desc()).limit(limit + 1)).mappings())
    return rows[:limit], len(rows) > limit


def get_order(conn: Connection, *, partner_id: int, order_id: str) -> RowMapping | None:
    """The partner's order with this id, or None (also when it belongs to another partner)."""
    return conn.execute(_scoped(partner_id).where(orders.c.id == order_id)).mappings().first()


def get_order_by_pos_id(conn: Connection, *, partner_id: int, location_id: str, pos_order_id: str) -> RowMapping | None:
    """The partner's order by its own location id and POS order id, or None."""
    stmt = (
        _scoped(partner_id)
        .where(locations.c.external_id == location_id)
        .where(orders.c.source_order_id == pos_order_id)
    )
    return conn.execute(stmt).mappings().first()


def line_items_by_order(conn: Connection, *, order_ids: Sequence[str]) -> dict[str, list[RowMapping]]:
    """The line items of several orders (already scoped by the caller), in their original order."""
    out: dict[str, list[RowMapping]] = {order_id: [] for order_id in order_ids}
    if not order_ids:
        return out
    stmt = (
        sa.select(order_line_items)
        .where(order_line_items.c.order_id.in_(list(order_ids)))
        .order_by(order_line_items.c.order_id, order_line_items.c.position, order_line_items.c.id)
    )
    for row in conn.execute(stmt).mappings():
        out[row["order_id"]].append(row)
    return out


def order_history_rows(conn: Connection, *, order_id: str) -> list[RowMapping]:
    """An order's history (already scoped by the caller), oldest first."""
    stmt = sa.select(order_history).where(order_history.c.order_id == order_id).order_by(order_history.c.id)
    return list(conn.execute(stmt).mappings())
