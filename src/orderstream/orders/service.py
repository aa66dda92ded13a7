"""Use cases on stored orders: status changes with history, reads for the API."""

from __future__ import annotations

from typing import Any, TypedDict, Unpack

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from orderstream.db import LockedSelect, json_ready, pg_insert_json_rows, utcnow
from orderstream.orders import domain
from orderstream.orders.events import OrderStatusChanged
from orderstream.orders.handlers import publish
from orderstream.orders.models import order_history, orders
from orderstream.prepared import Prepared, Row

_INSERT_HISTORY = sa.insert(order_history)
_INSERT_HISTORY_ROWS = sa.insert(order_history).returning(order_history.c.id)
# PostgreSQL: any number of rows as one JSON parameter, one statement compiled once (see pg_json_rows)
HISTORY_COLUMNS = tuple(column.name for column in order_history.c if column.name != "id")
_PG_INSERT_HISTORY_ROWS = Prepared(pg_insert_json_rows(order_history, HISTORY_COLUMNS))
_SELECT_ORDER = sa.select(orders).where(orders.c.id == sa.bindparam("b_order_id", type_=orders.c.id.type))
_SELECT_ORDER_LOCKED = LockedSelect(_SELECT_ORDER)
_LOCK_ORDER = (
    sa.select(orders.c.id).where(orders.c.id == sa.bindparam("b_order_id", type_=orders.c.id.type)).with_for_update()
)


class HistoryFields(TypedDict, total=False):
    """What a history entry may say besides who made it (`kind` defaults to "status")."""

    from_status: str | None
    to_status: str | None
    reason: str | None
    kind: str
    details: dict[str, Any] | None


def history_entry(*, actor: str, **fields: Unpack[HistoryFields]) -> dict[str, Any]:
    """The columns of a new history entry, apart from order_id and inbound_event_id."""
    return {
        "at": utcnow(),
        "kind": fields.get("kind", "status"),
        "from_status": fields.get("from_status"),
        "to_status": fields.get("to_status"),
        "actor": actor,
        "reason": fields.get("reason"),
        "details": fields.get("details"),
    }


def insert_history(conn: Connection, entry: dict[str, Any], *, order_id: str, inbound_event_id: int | None) -> None:
    """Insert a history entry made by history_entry()."""
    # parameters passed apart from the statement: one cached statement instead of one built per call
    conn.execute(_INSERT_HISTORY, {**entry, "order_id": order_id, "inbound_event_id": inbound_event_id})


def insert_histories(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert complete history rows (history_entry() plus order_id and inbound_event_id) in one statement."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _PG_INSERT_HISTORY_ROWS.run(conn, {"rows": [json_ready(row) for row in rows]})
    else:
        # RETURNING makes SQLAlchemy send one multi-row INSERT ("insertmanyvalues") instead of one per row
        conn.execute(_INSERT_HISTORY_ROWS, rows).all()


def record_history(
    conn: Connection,
    *,
    order_id: str,
    actor: str,
    inbound_event_id: int | None = None,
    **fields: Unpack[HistoryFields],
) -> None:
    """Append an entry to the order's history."""
    insert_history(conn, history_entry(actor=actor, **fields), order_id=order_id, inbound_event_id=inbound_event_id)


def get_order_for_update(conn: Connection, *, order_id: str) -> RowMapping | None:
    """The order row, locked for the rest of the transaction on PostgreSQL."""
    return conn.execute(_SELECT_ORDER_LOCKED.on(conn), {"b_order_id": order_id}).mappings().first()


def lock_order(conn: Connection, *, order_id: str) -> None:
    """Lock the order row for the rest of the transaction (PostgreSQL), without reading it: for writers
    that only need the lock order (order, then its attempt); SQLite has one writer anyway."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK_ORDER, {"b_order_id": order_id})


def change_status(
    conn: Connection,
    *,
    order: Row,
    target: domain.OrderStatus,
    actor: domain.Actor,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
    inbound_event_id: int | None = None,
) -> domain.Transition:
    """Move an order to target if the state machine allows it; record history and publish the change.

    Raises domain.IllegalTransition. A repeat of the current status changes nothing.
    """
    current = domain.OrderStatus(order["status"])
    result = domain.transition(domain.FulfillmentType(order["fulfillment_type"]), current, target)
    if not result.changed:
        return result
    now = utcnow()
    conn.execute(
        sa.update(orders)
        .where(orders.c.id == order["id"])
        .values(status=target.value, updated_at=now, version=orders.c.version + 1, **(extra or {}))
    )
    record_history(
        conn,
        order_id=order["id"],
        actor=actor.value,
        from_status=current.value,
        to_status=target.value,
        reason=reason,
        inbound_event_id=inbound_event_id,
    )
    publish(
        conn,
        OrderStatusChanged(
            order_id=order["id"],
            partner_id=order["partner_id"],
            from_status=current.value,
            to_status=target.value,
            actor=actor.value,
            reason=reason,
            at=now,
        ),
    )
    return result
