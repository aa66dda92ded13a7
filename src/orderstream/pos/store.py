"""Writing a new order's raw event, order row, line items and first history entry: one statement on PostgreSQL.

On PostgreSQL the four inserts are data-modifying CTEs of one statement (one round trip instead of
four; the line items travel as one JSON array); the order goes in only when the event did, its lines
and history entry only when the order did. SQLite runs the same inserts one after the other (it has
no round trips to save).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from orderstream.db import insert_ignoring
from orderstream.orders import service as orders_service
from orderstream.orders.models import order_history, order_line_items, orders
from orderstream.pos.models import inbound_events

ORDER_KEY = ("partner_id", "location_id", "source_order_id")
WEBHOOK_KEY = ("partner_id", "webhook_id")
LINE_COLUMNS = tuple(c.name for c in order_line_items.c if c.name not in ("id", "order_id"))
# the order's columns that come from its event: (order column, event column)
FROM_EVENT = (("partner_id", "partner_id"), ("created_at", "received_at"), ("updated_at", "received_at"))

# psycopg parses a statement once and caches it only up to 4096 characters and 50 parameters (beyond that
# it parses it again on every execution, ~80 us for this one): short parameter names, casts only where needed
PSYCOPG_CACHE_LIMITS = (4096, 50)
_PSYCOPG = postgresql.psycopg.dialect()


@dataclass(frozen=True)
class Stored:
    """What the inserts did: the event's id (None: its webhook-id was stored before) and whether the order is new."""

    event_id: int | None
    order_is_new: bool


def _param(table: sa.Table, column: str, prefix: str) -> Any:
    # in INSERT ... SELECT a parameter (a NULL above all) has no type of its own: the psycopg dialect renders
    # most with a cast (`%(x)s::TYPE`); the others (booleans) get an explicit one
    col_type = table.c[column].type
    bind = sa.bindparam(f"{prefix}_{column}", type_=col_type)
    return bind if "::" in str(bind.compile(dialect=_PSYCOPG)) else sa.cast(bind, col_type)


@functools.cache
def pg_statement(event_cols: tuple[str, ...], order_cols: tuple[str, ...], history_cols: tuple[str, ...]) -> Any:
    """The one statement for these columns (built once per column set)."""
    event = (
        postgresql.insert(inbound_events)
        .values({c: _param(inbound_events, c, "e") for c in event_cols})
        .on_conflict_do_nothing(index_elements=list(WEBHOOK_KEY))
        .returning(*(inbound_events.c[c] for c in dict.fromkeys(["id", *(e for _, e in FROM_EVENT)])))
        .cte("new_event")
    )
    order = (
        postgresql.insert(orders)
        .from_select(
            [*order_cols, *(o for o, _ in FROM_EVENT), "inbound_event_id"],
            sa.select(*(_param(orders, c, "o") for c in order_cols), *(event.c[e] for _, e in FROM_EVENT), event.c.id),
        )
        .on_conflict_do_nothing(index_elements=list(ORDER_KEY))
        .returning(orders.c.id)
        .cte("new_order")
    )
    line = (
        sa.func.jsonb_to_recordset(sa.bindparam("lines", type_=postgresql.JSONB))
        .table_valued(*(sa.column(c, order_line_items.c[c].type) for c in LINE_COLUMNS))
        .render_derived(name="line", with_types=True)
    )
    lines = (
        postgresql.insert(order_line_items)
        .from_select(
            ["order_id", *LINE_COLUMNS],
            sa.select(order.c.id, *(line.c[c] for c in LINE_COLUMNS)).select_from(order).join(line, sa.true()),
        )
        .cte("new_lines")
    )
    history = (
        postgresql.insert(order_history)
        .from_select(
            [*history_cols, "order_id", "inbound_event_id"],
            sa.select(*(_param(order_history, c, "h") for c in history_cols), order.c.id, event.c.id)
            .select_from(order)
            .join(event, sa.true()),
        )
        .cte("new_history")
    )
    return (
        sa.select(event.c.id.label("event_id"), order.c.id.label("order_id"))
        .select_from(event.outerjoin(order, sa.true()))
        .add_cte(lines, history)
    )


_INSERT_EVENT = sa.insert(inbound_events).returning(inbound_events.c.id)
_INSERT_LINES = sa.insert(order_line_items)


@functools.cache
def _insert_ignoring(dialect: str, table: sa.Table, conflict_on: tuple[str, ...], returning: sa.Column[Any]) -> Any:
    """INSERT ... ON CONFLICT (conflict_on) DO NOTHING RETURNING returning, built once per dialect."""
    return insert_ignoring(dialect, table, index_elements=list(conflict_on)).returning(returning)


def insert_event(conn: Connection, event: dict[str, Any]) -> int | None:
    """Store a raw event (an inbound_events row); None when its webhook-id was stored before."""
    if event["webhook_id"] is None:
        return conn.execute(_INSERT_EVENT, event).scalar()
    stmt = _insert_ignoring(conn.dialect.name, inbound_events, WEBHOOK_KEY, inbound_events.c.id)
    return conn.execute(stmt, event).scalar()


def _params(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": v for k, v in values.items()}


def store_order(
    conn: Connection,
    *,
    event: dict[str, Any],
    order: dict[str, Any],
    lines: list[dict[str, Any]],
    history: dict[str, Any],
) -> Stored:
    """Insert the raw event, then (if it went in) the order, then (if the order is new) its lines and history entry.

    `order` leaves out what it takes from the event (`FROM_EVENT`: partner, created and updated at its
    received_at) and `inbound_event_id`; `lines` (`LINE_COLUMNS`, JSON values) and `history` leave out
    `order_id`, `history` also `inbound_event_id`.
    """
    if conn.dialect.name == "postgresql":
        stmt = pg_statement(tuple(event), tuple(order), tuple(history))
        params = {**_params("e", event), **_params("o", order), **_params("h", history), "lines": lines}
        row = conn.execute(stmt, params).first()
        if row is None:
            return Stored(None, False)
        return Stored(int(row.event_id), row.order_id is not None)
    event_id = insert_event(conn, event)
    if event_id is None:
        return Stored(None, False)
    insert_order = _insert_ignoring("sqlite", orders, ORDER_KEY, orders.c.id)
    from_event = {o: event[e] for o, e in FROM_EVENT}
    if conn.execute(insert_order, {**order, **from_event, "inbound_event_id": event_id}).scalar() is None:
        return Stored(int(event_id), False)
    if lines:
        conn.execute(_INSERT_LINES, [{**line, "order_id": order["id"]} for line in lines])
    orders_service.insert_history(conn, history, order_id=order["id"], inbound_event_id=event_id)
    return Stored(int(event_id), True)
