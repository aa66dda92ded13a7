"""Order events -> the tracking projection and a `notifications.plan` job, in the event's transaction."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from orderstream.jobs.outbox import enqueue
from orderstream.notifications import tracking
from orderstream.orders.events import DeliveryStatusChanged, Event, OrderCreated, OrderStatusChanged

PLAN_KIND = "notifications.plan"


def event_payload(event: Event) -> dict[str, Any]:
    """The event as JSON: its type name and its fields, times in ISO 8601."""
    # a shallow read of the fields (asdict deep-copies every value, only to serialize it right away)
    values = ((f.name, getattr(event, f.name)) for f in fields(event))
    return {"event": type(event).__name__, **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values}}


def _plan(conn: Connection, event: Event) -> None:
    enqueue(conn, kind=PLAN_KIND, payload=event_payload(event), max_attempts=5)


def on_order_created(conn: Connection, event: OrderCreated) -> None:
    """Tracking link; confirmation (and a reminder for a future order)."""
    tracking.start(conn, order_id=event.order_id, at=event.at)
    _plan(conn, event)


def on_order_status_changed(conn: Connection, event: OrderStatusChanged) -> None:
    """Tracking page refresh; ready for pickup, canceled, failed, completed."""
    tracking.touch(conn, order_id=event.order_id, at=event.at, status=event.to_status)
    _plan(conn, event)


def on_delivery_status_changed(conn: Connection, event: DeliveryStatusChanged) -> None:
    """Tracking page refresh; courier assigned, on the way, delivered, problems, ETA changes and re-dispatch."""
    tracking.touch(conn, order_id=event.order_id, at=event.at, delivery=tracking.delivery_facts(event))
    _plan(conn, event)
