"""Use cases of the POS webhook: each event is applied in the caller's single write transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from orderstream.db import locked
from orderstream.errors import ApiError
from orderstream.ids import new_id, new_token
from orderstream.jobs.outbox import collect
from orderstream.orders import domain
from orderstream.orders import service as orders_service
from orderstream.orders.events import OrderCreated
from orderstream.orders.handlers import publish
from orderstream.orders.models import orders
from orderstream.pos import mapping, store
from orderstream.pos.credentials import PartnerAuth
from orderstream.pos.models import LOCATION_COLUMNS, inbound_events
from orderstream.pos.schemas import (
    CancelIn,
    Envelope,
    EventType,
    InvalidEvent,
    LocationStatusIn,
    OrderIn,
    Problem,
    StatusUpdateIn,
)
from orderstream.prepared import Row
from orderstream.tenancy.models import locations


@dataclass(frozen=True)
class Delivery:
    """One authenticated webhook request: who sent it, the unwrapped event and the raw body."""

    partner: PartnerAuth
    envelope: Envelope
    raw: str
    webhook_id: str | None
    received_at: datetime


@dataclass(frozen=True)
class KnownLocation:
    """The event's location, read by the caller ahead of the event (row None: the partner has no such location)."""

    row: Row | None


@dataclass(frozen=True)
class Outcome:
    """The answer to the POS."""

    status: int
    body: dict[str, Any]
    intake: str | None = None  # an order.created answer: "accepted" (a new order) or "duplicate"; else None


# Statements of the request path are built once: building one per request costs more than running it.
_LOCATION = sa.select(*LOCATION_COLUMNS).where(
    locations.c.partner_id == sa.bindparam("partner_id"), locations.c.external_id == sa.bindparam("external_id")
)


# --- the inbound event store ---------------------------------------------------------------------


def replayed(conn: Connection, delivery: Delivery) -> Outcome | None:
    """The stored answer to an earlier delivery with the same webhook-id, marked as a duplicate."""
    if delivery.webhook_id is None:
        return None
    row = conn.execute(
        sa.select(inbound_events.c.response_status, inbound_events.c.response_body, inbound_events.c.event_type)
        .where(inbound_events.c.partner_id == delivery.partner.id)
        .where(inbound_events.c.webhook_id == delivery.webhook_id)
    ).first()
    if row is None:
        return None
    intake = "duplicate" if row.event_type == EventType.ORDER_CREATED.value else None
    return Outcome(int(row.response_status or 200), {**(row.response_body or {}), "duplicate": True}, intake)


def _stored_answer(conn: Connection, delivery: Delivery) -> Outcome:
    # the insert met the webhook-id of a committed concurrent delivery: its answer is stored
    earlier = replayed(conn, delivery)
    assert earlier is not None
    return earlier


def _event_values(delivery: Delivery, *, order_id: str | None = None, answer: Outcome | None = None) -> dict[str, Any]:
    """The inbound_events row of a delivery."""
    return {
        "partner_id": delivery.partner.id,
        "webhook_id": delivery.webhook_id,
        "event_type": delivery.envelope.event.value,
        "envelope": delivery.envelope.kind,
        "body": delivery.raw,
        "order_id": order_id,
        "response_status": answer.status if answer else None,
        "response_body": answer.body if answer else None,
        "received_at": delivery.received_at,
    }


def _record_event(conn: Connection, delivery: Delivery, *, order_id: str | None = None) -> int | None:
    """Store the raw event; None when its webhook-id was stored before (a concurrent redelivery)."""
    return store.insert_event(conn, _event_values(delivery, order_id=order_id))


def _answer_event(conn: Connection, event_id: int, answer: Outcome, *, order_id: str | None = None) -> None:
    values: dict[str, Any] = {"response_status": answer.status, "response_body": answer.body}
    if order_id is not None:
        values["order_id"] = order_id
    conn.execute(sa.update(inbound_events).where(inbound_events.c.id == event_id).values(**values))


# --- lookups -------------------------------------------------------------------------------------


def _unknown_location(path: str, external_id: str) -> InvalidEvent:
    return InvalidEvent([Problem(path, "unknown_location", f"no location {external_id!r} for this partner")])


def find_location(conn: Connection, *, partner_id: int, external_id: str | None, path: str) -> Row:
    """The partner's location by its own id (or its only location when none is given), else a 422."""
    if external_id is not None:
        row = conn.execute(_LOCATION, {"partner_id": partner_id, "external_id": external_id}).mappings().first()
        if row is None:
            raise _unknown_location(path, external_id)
        return row
    only = sa.select(*LOCATION_COLUMNS).where(locations.c.partner_id == partner_id).limit(2)
    rows = conn.execute(only).mappings().all()
    if len(rows) != 1:
        raise InvalidEvent([Problem(path, "missing", "location_id is required (the partner has several locations)")])
    return rows[0]


def find_order(conn: Connection, *, partner_id: int, pos_order_id: str, location_id: str | None) -> RowMapping:
    """The partner's order by POS id (and location, when given), locked on PostgreSQL; else 404."""
    stmt = sa.select(orders).where(orders.c.partner_id == partner_id).where(orders.c.source_order_id == pos_order_id)
    if location_id is not None:
        stmt = stmt.join(locations, locations.c.id == orders.c.location_id).where(
            locations.c.external_id == location_id
        )
    rows = conn.execute(locked(conn, stmt, of=orders).limit(2)).mappings().all()
    if not rows:
        raise ApiError(404, "order_not_found", f"no order {pos_order_id!r} for this partner")
    if len(rows) > 1:
        raise ApiError(
            409,
            "ambiguous_order",
            f"order {pos_order_id!r} exists at several locations; send location_id",
            details={"pos_order_id": pos_order_id},
        )
    return rows[0]


def _is_paused(location: Row, now: datetime) -> bool:
    return bool(location["status"] == "paused" and (location["paused_until"] is None or location["paused_until"] > now))


# --- order.created -------------------------------------------------------------------------------


def _created_body(
    row: dict[str, Any] | RowMapping, *, location_id: str, base_url: str, duplicate: bool
) -> dict[str, Any]:
    requested_for = row["requested_for"]
    return {
        "accepted": True,
        "duplicate": duplicate,
        "order": {
            "id": row["id"],
            "pos_order_id": row["source_order_id"],
            "location_id": location_id,
            "status": row["status"],
            "fulfillment_type": row["fulfillment_type"],
            "is_future_order": bool(row["is_future_order"]),
            "requested_for": requested_for.isoformat() if requested_for else None,
            "tracking_url": f"{base_url.rstrip('/')}/t/{row['tracking_token']}",
            "warnings": list(row["warnings"] or []),
        },
    }


def create_order(
    conn: Connection,
    delivery: Delivery,
    order: OrderIn,
    *,
    content_hash: str,
    base_url: str,
    known_location: KnownLocation | None = None,
) -> Outcome:
    """Store a new order with its lines, raw event, first history entry and jobs; or recognise a resend.

    The location is looked up here unless the caller read it already (`known_location`).
    """
    if (earlier := replayed(conn, delivery)) is not None:
        return earlier
    prefix = delivery.envelope.prefix
    partner_id = delivery.partner.id
    path = f"{prefix}.location_id"
    if known_location is None:
        location = find_location(conn, partner_id=partner_id, external_id=order.location_id, path=path)
    elif known_location.row is None:
        raise _unknown_location(path, str(order.location_id))
    else:
        location = known_location.row
    if order.unpaid and order.fulfillment_type in mapping.DELIVERY_TYPES and not location["allow_unpaid_delivery"]:
        raise InvalidEvent(
            [Problem(f"{prefix}.unpaid", "unpaid_delivery_not_allowed", "the location takes no unpaid deliveries")]
        )
    draft = mapping.draft_order(
        order, prefix=prefix, region=location["country"], prep_time_minutes=location["prep_time_minutes"]
    )
    now = delivery.received_at
    if _is_paused(location, now):
        draft.warnings.append(
            {"code": "location_paused", "message": "the location is paused; the order was stored", "path": None}
        )
    row = {
        **draft.values,
        "id": new_id("ord"),
        "partner_id": partner_id,
        "location_id": location["id"],
        "content_hash": content_hash,
        "tracking_token": new_token(),
        "created_at": now,
        "updated_at": now,
    }
    body = _created_body(row, location_id=location["external_id"], base_url=base_url, duplicate=False)
    answer = Outcome(200, body, "accepted")
    history = orders_service.history_entry(
        actor=domain.Actor.POS.value,
        to_status=draft.status.value,
        details={"event": delivery.envelope.event.value, "envelope": delivery.envelope.kind},
    )
    event = _event_values(delivery, order_id=row["id"], answer=answer)
    order_values = {k: v for k, v in row.items() if k not in ("partner_id", "created_at", "updated_at")}
    created = OrderCreated(
        order_id=row["id"],
        partner_id=partner_id,
        location_id=location["id"],
        fulfillment_type=order.fulfillment_type.value,
        status=draft.status.value,
        is_future_order=draft.is_future,
        requested_for=order.requested_for,
        at=now,
    )
    # the handlers of OrderCreated only enqueue: their jobs go into the order's own statement, written
    # only if the order is new (PostgreSQL: one statement for every row of a new order)
    with collect(conn) as jobs:
        publish(conn, created)
    stored = store.store_order(
        conn, event=event, order=order_values, lines=draft.line_items, history=history, jobs=jobs
    )
    if stored.event_id is None:
        return _stored_answer(conn, delivery)
    if not stored.order_is_new:
        return _resent_order(
            conn, location, order, content_hash=content_hash, event_id=stored.event_id, base_url=base_url
        )
    return answer


def _resent_order(
    conn: Connection, location: Row, order: OrderIn, *, content_hash: str, event_id: int, base_url: str
) -> Outcome:
    existing = (
        conn.execute(
            sa.select(orders)
            .where(orders.c.partner_id == location["partner_id"])
            .where(orders.c.location_id == location["id"])
            .where(orders.c.source_order_id == order.pos_order_id)
        )
        .mappings()
        .one()
    )
    if existing["content_hash"] != content_hash:
        raise ApiError(
            409,
            "order_conflict",
            f"order {order.pos_order_id!r} was already received with different content",
            details={"order_id": existing["id"], "pos_order_id": order.pos_order_id},
        )
    body = _created_body(existing, location_id=location["external_id"], base_url=base_url, duplicate=True)
    answer = Outcome(200, body, "duplicate")
    _answer_event(conn, event_id, answer, order_id=existing["id"])
    return answer


# --- status changes ------------------------------------------------------------------------------


def _change(
    conn: Connection,
    delivery: Delivery,
    *,
    pos_order_id: str,
    location_id: str | None,
    target: domain.OrderStatus,
    reason: str | None,
    extra: dict[str, Any] | None,
) -> Outcome:
    if (earlier := replayed(conn, delivery)) is not None:
        return earlier
    order = find_order(conn, partner_id=delivery.partner.id, pos_order_id=pos_order_id, location_id=location_id)
    event_id = _record_event(conn, delivery, order_id=order["id"])
    if event_id is None:
        return _stored_answer(conn, delivery)
    try:
        result = orders_service.change_status(
            conn,
            order=order,
            target=target,
            actor=domain.Actor.POS,
            reason=reason,
            extra=extra,
            inbound_event_id=event_id,
        )
    except domain.IllegalTransition as err:
        raise ApiError(
            409,
            "illegal_transition",
            str(err),
            details={"from_status": err.current.value, "to_status": err.target.value},
        ) from err
    answer = Outcome(
        200,
        {
            "accepted": True,
            "duplicate": False,
            "order": {
                "id": order["id"],
                "pos_order_id": order["source_order_id"],
                "status": result.to_status.value,
                "previous_status": result.from_status.value,
                "changed": result.changed,
            },
        },
    )
    _answer_event(conn, event_id, answer)
    return answer


def change_order_status(conn: Connection, delivery: Delivery, event: StatusUpdateIn | CancelIn) -> Outcome:
    """`order.status.updated` or `order.canceled`: move the order on (a repeat changes nothing).

    A cancel stores the normalized reason and source, and the free text as sent.
    """
    if isinstance(event, CancelIn):
        target = domain.OrderStatus.CANCELED
    else:
        target = domain.OrderStatus(event.status)
    extra = None
    if target is domain.OrderStatus.CANCELED:
        extra = mapping.cancellation(
            reason_text=event.reason, cancel_reason=event.cancel_reason, cancel_source=event.cancel_source
        )
    return _change(
        conn,
        delivery,
        pos_order_id=event.pos_order_id,
        location_id=event.location_id,
        target=target,
        reason=event.reason or (extra["cancel_reason"] if extra else None),
        extra=extra,
    )


# --- location.status.updated ---------------------------------------------------------------------


def update_location_status(conn: Connection, delivery: Delivery, update: LocationStatusIn) -> Outcome:
    """`location.status.updated`: `active`/`online` opens the location, anything else pauses it."""
    if (earlier := replayed(conn, delivery)) is not None:
        return earlier
    location = find_location(
        conn,
        partner_id=delivery.partner.id,
        external_id=update.location_id,
        path=f"{delivery.envelope.prefix}.location_id",
    )
    event_id = _record_event(conn, delivery)
    if event_id is None:
        return _stored_answer(conn, delivery)
    status = "active" if update.status in ("active", "online") else "paused"
    paused_until = update.paused_until if status == "paused" else None
    conn.execute(
        sa.update(locations)
        .where(locations.c.id == location["id"])
        .values(status=status, paused_until=paused_until, updated_at=delivery.received_at)
    )
    answer = Outcome(
        200,
        {
            "accepted": True,
            "duplicate": False,
            "location": {
                "id": location["external_id"],
                "status": status,
                "paused_until": paused_until.isoformat() if paused_until else None,
                "previous_status": location["status"],
            },
        },
    )
    _answer_event(conn, event_id, answer)
    return answer
