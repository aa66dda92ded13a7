"""Writing a new order: raw event, order row, line items, first history entry, tracking token and jobs.

On PostgreSQL the inserts are data-modifying CTEs of one statement (one round trip instead of six;
the line items and the jobs travel as JSON arrays), with the NOTIFY that wakes the workers; the order
goes in only when the event did, everything else only when the order did. SQLite runs the same
inserts one after the other (it has no round trips to save).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from orderstream.db import insert_ignoring, json_ready, pg_json_rows
from orderstream.jobs import outbox
from orderstream.notifications import tracking
from orderstream.orders import service as orders_service
from orderstream.orders.models import order_history, order_line_items, orders
from orderstream.pos.models import inbound_events
from orderstream.prepared import Prepared

ORDER_KEY = ("partner_id", "location_id", "source_order_id")
WEBHOOK_KEY = ("partner_id", "webhook_id")
LINE_COLUMNS = tuple(c.name for c in order_line_items.c if c.name not in ("id", "order_id"))
# the order's columns that come from its event: (order column, event column)
FROM_EVENT = (("partner_id", "partner_id"), ("created_at", "received_at"), ("updated_at", "received_at"))


@dataclass(frozen=True)
class Stored:
    """What the inserts did: the event's id (None: its webhook-id was stored before) and whether the order is new."""

    event_id: int | None
    order_is_new: bool


@functools.cache
def pg_statement(event_cols: tuple[str, ...], order_cols: tuple[str, ...], history_cols: tuple[str, ...]) -> Prepared:
    """The one statement for these columns (built once per column set).

    Each row travels as one JSON parameter: six parameters instead of some fifty, which the driver and
    SQLAlchemy would otherwise adapt one by one on every execution.
    """
    event_row = pg_json_rows("event", inbound_events, event_cols, "ev", many=False)
    event = (
        postgresql.insert(inbound_events)
        .from_select(list(event_cols), sa.select(*(event_row.c[c] for c in event_cols)))
        .on_conflict_do_nothing(index_elements=list(WEBHOOK_KEY))
        .returning(*(inbound_events.c[c] for c in dict.fromkeys(["id", *(e for _, e in FROM_EVENT)])))
        .cte("new_event")
    )
    order_row = pg_json_rows("order", orders, order_cols, "ord", many=False)
    order = (
        postgresql.insert(orders)
        .from_select(
            [*order_cols, *(o for o, _ in FROM_EVENT), "inbound_event_id"],
            sa.select(*(order_row.c[c] for c in order_cols), *(event.c[e] for _, e in FROM_EVENT), event.c.id)
            .select_from(event)
            .join(order_row, sa.true()),
        )
        .on_conflict_do_nothing(index_elements=list(ORDER_KEY))
        .returning(orders.c.id, orders.c.tracking_token)
        .cte("new_order")
    )
    line = pg_json_rows("lines", order_line_items, LINE_COLUMNS, "line", many=True)
    lines = (
        postgresql.insert(order_line_items)
        .from_select(
            ["order_id", *LINE_COLUMNS],
            sa.select(order.c.id, *(line.c[c] for c in LINE_COLUMNS)).select_from(order).join(line, sa.true()),
        )
        .cte("new_lines")
    )
    history_row = pg_json_rows("history", order_history, history_cols, "hist", many=False)
    history = (
        postgresql.insert(order_history)
        .from_select(
            [*history_cols, "order_id", "inbound_event_id"],
            sa.select(*(history_row.c[c] for c in history_cols), order.c.id, event.c.id)
            .select_from(order)
            .join(event, sa.true())
            .join(history_row, sa.true()),
        )
        .cte("new_history")
    )
    token = tracking.pg_start_cte(order, event.c.received_at)
    jobs = outbox.pg_insert_rows(only_with=order)
    return Prepared(
        sa.select(
            event.c.id.label("event_id"), order.c.id.label("order_id"), outbox.pg_notify_kinds(jobs).label("job_kinds")
        )
        .select_from(event.outerjoin(order, sa.true()))
        .add_cte(lines, history, token)
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


def store_order(
    conn: Connection,
    *,
    event: dict[str, Any],
    order: dict[str, Any],
    lines: list[dict[str, Any]],
    history: dict[str, Any],
    jobs: list[dict[str, Any]],
) -> Stored:
    """Insert the raw event, then (if it went in) the order, then (if the order is new) the rest.

    The rest: its lines, history entry, tracking token and `jobs` (collected by `outbox.collect`).
    `order` leaves out what it takes from the event (`FROM_EVENT`: partner, created and updated at its
    received_at) and `inbound_event_id`; `lines` (`LINE_COLUMNS`, JSON values) and `history` leave out
    `order_id`, `history` also `inbound_event_id`.
    """
    if conn.dialect.name == "postgresql":
        stmt = pg_statement(tuple(event), tuple(order), tuple(history))
        params = {
            "event": json_ready(event),
            "order": json_ready(order),
            "history": json_ready(history),
            "lines": lines,
            "jobs": outbox.json_rows(jobs),
            "channel": outbox.NOTIFY_CHANNEL,
        }
        row = stmt.first(conn, params)
        if row is None:
            return Stored(None, False)
        outbox.note_enqueued(conn, row["job_kinds"] or (), outbox.earliest_due(jobs))
        return Stored(int(row["event_id"]), row["order_id"] is not None)
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
    tracking.start(conn, order_id=order["id"], at=event["received_at"])
    outbox.write(conn, jobs)
    return Stored(int(event_id), True)
