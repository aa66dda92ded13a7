"""The tracking page's data: a per-order projection kept in the event's transaction, and what the page may show."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from orderstream.db import utcnow
from orderstream.notifications import domain
from orderstream.notifications.models import tracking_tokens
from orderstream.notifications.render import display_phone, local_datetime, local_time
from orderstream.orders.models import orders
from orderstream.prepared import Prepared
from orderstream.tenancy.models import locations

ENDED = frozenset({"completed", "canceled", "failed"})
DELIVERY_STEPS = ("Order received", "Preparing", "On the way", "Delivered")
PICKUP_STEPS = ("Order received", "Preparing", "Ready for pickup", "Picked up")


_START_COLUMNS = ["token", "order_id", "created_at", "version", "updated_at"]  # a new row, from its order


def _start_statement(insert: Any) -> Any:
    # one round-trip, compiled once: copy the order's token unless the order has its row already
    at = sa.bindparam("at", type_=tracking_tokens.c.created_at.type)
    source = sa.select(orders.c.tracking_token, orders.c.id, at, sa.literal(1), at).where(
        orders.c.id == sa.bindparam("order_id")
    )
    # RETURNING, not rowcount: psycopg reports -1 for this INSERT ... SELECT, so a miss went unseen on PostgreSQL
    stmt = insert(tracking_tokens).from_select(_START_COLUMNS, source).on_conflict_do_nothing()
    return stmt.returning(tracking_tokens.c.order_id)


_START = {"postgresql": _start_statement(postgresql.insert), "sqlite": _start_statement(sqlite.insert)}


def pg_start_cte(new_order: Any, at: Any) -> Any:
    """A CTE registering the token of the order a CTE `new_order` (id, tracking_token) just inserted, if any."""
    source = sa.select(new_order.c.tracking_token, new_order.c.id, at, sa.literal_column("1"), at)
    return postgresql.insert(tracking_tokens).from_select(_START_COLUMNS, source).cte("new_tracking")


def start(conn: Connection, *, order_id: str, at: datetime) -> None:
    """Register the order's tracking token (the same one the order API's tracking_url shows)."""
    if conn.execute(_START[conn.dialect.name], {"order_id": order_id, "at": at}).first() is not None:
        return
    # nothing inserted: the row exists already, or there is no such order (an error, as before)
    if conn.execute(sa.select(orders.c.id).where(orders.c.id == order_id)).first() is None:
        raise sa.exc.NoResultFound(f"no order {order_id!r}")


def touch(conn: Connection, *, order_id: str, at: datetime, status: str | None = None, delivery: Any = None) -> None:
    """Bump the version (open pages refresh); record the end of the order and the latest delivery facts."""
    update = _TOUCH[(delivery is not None, status in ENDED)]
    params = {"b_order_id": order_id, "b_at": at, "b_delivery": delivery}

    def _touched(count: int, _rows: list[dict[str, Any]]) -> None:
        if not count:  # no token yet (an order from before tracking pages)
            start(conn, order_id=order_id, at=at)
            update.run(conn, params)

    # the row nearly always exists (OrderCreated made it): one statement inside the caller's transaction,
    # or part of its one statement inside prepared.deferred_writes()
    update.defer(conn, params, then=_touched)


def _touch_statement(with_delivery: bool, ended: bool) -> Prepared:
    at = sa.bindparam("b_at", type_=tracking_tokens.c.updated_at.type)
    values: dict[str, Any] = {"version": tracking_tokens.c.version + 1, "updated_at": at}
    if with_delivery:
        values["delivery"] = sa.bindparam("b_delivery", type_=tracking_tokens.c.delivery.type)
    if ended:
        values["ended_at"] = sa.func.coalesce(tracking_tokens.c.ended_at, at)
    order_id = sa.bindparam("b_order_id", type_=tracking_tokens.c.order_id.type)
    return Prepared(sa.update(tracking_tokens).where(tracking_tokens.c.order_id == order_id).values(**values))


# touch()'s four shapes (delivery facts or not, ended or not), built once
_TOUCH = {
    (with_delivery, ended): _touch_statement(with_delivery, ended)
    for with_delivery in (True, False)
    for ended in (True, False)
}


def delivery_facts(event: Any) -> dict[str, Any]:
    """What the page shows of a delivery: no courier phone, no coordinates, first name only."""
    courier = event.courier or None
    return {
        "status": event.to_status,
        "attempt_id": event.attempt_id,
        "courier_first_name": domain.first_name((courier or {}).get("name")),
        "vehicle": domain.vehicle_text(courier),
        "dropoff_eta": event.dropoff_eta.isoformat() if event.dropoff_eta else None,
        "pickup_eta": event.pickup_eta.isoformat() if event.pickup_eta else None,
    }


def _step(fulfillment: str, status: str, delivery_status: str | None) -> int:
    if status == "completed" or (fulfillment in domain.DELIVERY_TYPES and delivery_status == "completed"):
        return 3
    if fulfillment in domain.DELIVERY_TYPES:
        if status == "out_for_delivery" or (delivery_status in domain.ON_THE_WAY_STATES):
            return 2
        return 1 if status in ("preparing", "ready_for_pickup") else 0
    if status == "ready_for_pickup":
        return 2
    return 1 if status == "preparing" else 0


def state(conn: Connection, token: str, *, link_days: int, locale: str, now: datetime | None = None) -> dict[str, Any]:
    """Everything the page shows for a token: {"found": False}, {"expired": True} or the order's public view."""
    now = now or utcnow()
    row = (
        conn.execute(
            sa.select(
                orders.c.source_order_id,
                orders.c.status,
                orders.c.fulfillment_type,
                orders.c.delivery_status,
                orders.c.is_future_order,
                orders.c.requested_for,
                orders.c.fulfillment_instructions,
                orders.c.updated_at,
                locations.c.name,
                locations.c.phone,
                locations.c.country,
                locations.c.street,
                locations.c.city,
                locations.c.timezone,
                tracking_tokens.c.ended_at,
                tracking_tokens.c.delivery,
                tracking_tokens.c.version,
            )
            .join(locations, locations.c.id == orders.c.location_id)
            .outerjoin(tracking_tokens, tracking_tokens.c.order_id == orders.c.id)
            .where(orders.c.tracking_token == token)
        )
        .mappings()
        .first()
    )
    if row is None:
        return {"found": False}
    ended_at = row["ended_at"] or (row["updated_at"] if row["status"] in ENDED else None)
    if ended_at is not None and now >= ended_at + timedelta(days=link_days):
        return {"found": True, "expired": True}
    tz = row["timezone"]
    delivery = row["delivery"] or {}
    eta = delivery.get("dropoff_eta")
    fulfillment = row["fulfillment_type"]
    is_delivery = fulfillment in domain.DELIVERY_TYPES
    show_courier = is_delivery and row["status"] not in ENDED
    return {
        "found": True,
        "expired": False,
        "version": int(row["version"] or 0),
        "order_ref": f"#{row['source_order_id']}",
        "status": row["status"],
        "ended": row["status"] in ENDED or (is_delivery and delivery.get("status") == "completed"),
        "canceled": row["status"] in ("canceled", "failed"),
        "fulfillment_type": fulfillment,
        "steps": list(DELIVERY_STEPS if is_delivery else PICKUP_STEPS),
        "step": _step(fulfillment, row["status"], delivery.get("status") or row["delivery_status"]),
        "scheduled_for": local_datetime(row["requested_for"], tz, locale) if row["is_future_order"] else None,
        "eta": local_time(datetime.fromisoformat(eta), tz, locale) if eta and show_courier else None,
        "courier_first_name": delivery.get("courier_first_name") if show_courier else None,
        "vehicle": delivery.get("vehicle") if show_courier else None,
        "location_name": row["name"],
        "location_phone": display_phone(row["phone"], row["country"]),
        "location_phone_e164": row["phone"],
        "pickup_address": None if is_delivery else f"{row['street']}, {row['city']}",
        "pickup_instructions": None if is_delivery else row["fulfillment_instructions"],
    }
