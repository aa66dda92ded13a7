"""Order events -> the tracking projection and the plan of their messages, in the event's transaction."""

from __future__ import annotations

import logging
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from orderstream.db import utcnow
from orderstream.jobs.outbox import enqueue
from orderstream.jobs.registry import CURRENT_JOB
from orderstream.notifications import domain, tracking
from orderstream.orders.events import TRANSIENT_KEY, DeliveryStatusChanged, Event, OrderCreated, OrderStatusChanged

PLAN_KIND = "notifications.plan"

log = logging.getLogger("orderstream.notifications")


def event_payload(event: Event) -> dict[str, Any]:
    """The event as JSON: its type name and its fields, times in ISO 8601."""
    # a shallow read of the fields (asdict deep-copies every value, only to serialize it right away)
    values = ((f.name, getattr(event, f.name)) for f in fields(event) if not f.metadata.get(TRANSIENT_KEY))
    return {"event": type(event).__name__, **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values}}


def _plan(conn: Connection, event: Event) -> None:
    payload = event_payload(event)
    job = CURRENT_JOB.get()
    if job is not None:
        # raised by a worker job (a booking, a cancel, a poll): plan right here instead of in a job of
        # its own (a claim and two more commits); a planning error must not undo the job's change, so
        # it runs in a savepoint and falls back to the job
        # late: planner -> notifications.service -> orders.service -> orders.handlers -> this module
        from orderstream.notifications import planner

        try:
            with conn.begin_nested():
                planner.plan(conn, job.settings, payload, utcnow())
            return
        except Exception:  # noqa: BLE001 - the plan job below retries it
            log.warning("planning in the job's transaction failed; queued as a job", exc_info=True)
    enqueue(conn, kind=PLAN_KIND, payload=payload, max_attempts=5)


def on_order_created(conn: Connection, event: OrderCreated) -> None:
    """Confirmation (and a reminder for a future order); the order's store registered its tracking link."""
    _plan(conn, event)


def on_order_status_changed(conn: Connection, event: OrderStatusChanged) -> None:
    """Tracking page refresh; ready for pickup, canceled, failed, completed."""
    tracking.touch(conn, order_id=event.order_id, at=event.at, status=event.to_status)
    _plan(conn, event)


def on_delivery_status_changed(conn: Connection, event: DeliveryStatusChanged) -> None:
    """Tracking page refresh; courier assigned, on the way, delivered, problems, ETA changes and re-dispatch."""
    tracking.touch(conn, order_id=event.order_id, at=event.at, delivery=tracking.delivery_facts(event))
    if domain.delivery_status_may_notify(event.to_status):  # no plan (and no job) for a status that tells nothing
        _plan(conn, event)
