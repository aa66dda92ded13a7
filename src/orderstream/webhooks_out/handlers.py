"""Turning order events into outbound events: run by orders.handlers inside the transaction of the change."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.orders.events import DeliveryStatusChanged, OrderStatusChanged
from orderstream.orders.models import orders
from orderstream.prepared import Row
from orderstream.tenancy.models import locations
from orderstream.webhooks_out.domain import (
    DELIVERY_FAILURE_STATUSES,
    EventType,
    OrderRef,
    delivery_failed_object,
    order_canceled_object,
    order_updated_object,
)
from orderstream.webhooks_out.models import outbound_events
from orderstream.webhooks_out.service import record_event

# Delivery facts carried over from the last order.updated into a status-only update, so that a
# receiver that keeps the latest object never sees the driver vanish when the order moves on.
# prebuilt, the order id passed apart: one cached statement instead of one built per event
_SELECT_ORDER_REF = (
    sa.select(
        orders.c.source_order_id,
        orders.c.status,
        orders.c.delivery_status,
        orders.c.cancel_reason,
        orders.c.currency,
        locations.c.external_id,
    )
    .join(locations, locations.c.id == orders.c.location_id)
    .where(orders.c.id == sa.bindparam("b_order_id", type_=orders.c.id.type))
)
_CARRIED = ("delivery_status", "driver_details", "pickup_eta", "dropoff_eta", "tracking_url", "fee")


def _order_ref(
    conn: Connection, order_id: str, *, status: str | None = None, held: Row | None = None
) -> tuple[OrderRef, Row]:
    """The order's POS reference: from `held` (_SELECT_ORDER_REF's columns, as a publisher has them), else read."""
    row: Row
    if held is not None:
        row = held
    else:
        row = conn.execute(_SELECT_ORDER_REF, {"b_order_id": order_id}).mappings().one()
    ref = OrderRef(
        pos_order_id=row["source_order_id"],
        location_id=row["external_id"],
        status=status or row["status"],
        delivery_status=row["delivery_status"],
    )
    return ref, row


def _last_delivery_facts(conn: Connection, order_id: str) -> dict[str, Any]:
    body = conn.execute(
        sa.select(outbound_events.c.body)
        .where(outbound_events.c.order_id == order_id)
        .where(outbound_events.c.type == EventType.ORDER_UPDATED.value)
        .order_by(outbound_events.c.sequence.desc())
        .limit(1)
    ).scalar()
    if body is None:
        return {}
    obj = json.loads(body).get("object", {})
    return {key: obj.get(key) for key in _CARRIED}


def _emit(
    conn: Connection, event: OrderStatusChanged | DeliveryStatusChanged, event_type: EventType, obj: dict[str, Any]
) -> None:
    record_event(
        conn, partner_id=event.partner_id, order_id=event.order_id, event_type=event_type, obj=obj, at=event.at
    )


def on_order_status_changed(conn: Connection, event: OrderStatusChanged) -> None:
    """order.updated for a status change we made, order.canceled when we canceled; nothing for the POS's own changes."""
    if event.actor == "pos":
        return  # the POS made this change itself; echoing it back tells it nothing
    ref, row = _order_ref(conn, event.order_id, status=event.to_status)
    if event.to_status == "canceled":
        obj = order_canceled_object(ref, actor=event.actor, reason=event.reason or row["cancel_reason"], at=event.at)
        _emit(conn, event, EventType.ORDER_CANCELED, obj)
        return
    obj = order_updated_object(ref, at=event.at)
    last = _last_delivery_facts(conn, event.order_id)
    if obj["delivery_status"] is None:
        obj["delivery_status"] = last.pop("delivery_status", None)
    last.pop("delivery_status", None)
    obj.update(last)
    _emit(conn, event, EventType.ORDER_UPDATED, obj)


def on_delivery_status_changed(conn: Connection, event: DeliveryStatusChanged) -> None:
    """order.updated with the courier, ETAs and tracking link; plus order.delivery_failed when the delivery failed."""
    ref, row = _order_ref(conn, event.order_id, held=event.order_ref)
    delivery = {
        "provider": event.provider,
        "delivery_status": event.to_status,
        "courier": event.courier,
        "pickup_eta": event.pickup_eta,
        "dropoff_eta": event.dropoff_eta,
        "tracking_url": event.tracking_url,
        # the fee is not part of DeliveryStatusChanged yet; take it when the publisher adds it
        "fee": getattr(event, "fee", None),
        "currency": getattr(event, "currency", None) or row["currency"],
    }
    obj = order_updated_object(ref, delivery=delivery, at=event.at)
    _emit(conn, event, EventType.ORDER_UPDATED, obj)
    if event.to_status in DELIVERY_FAILURE_STATUSES and event.from_status not in DELIVERY_FAILURE_STATUSES:
        failed = delivery_failed_object(
            ref,
            provider=event.provider,
            delivery_status=event.to_status,
            reason=getattr(event, "reason", None),
            at=event.at,
        )
        _emit(conn, event, EventType.ORDER_DELIVERY_FAILED, failed)
