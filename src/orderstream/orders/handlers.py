"""Which side effects follow which event: every handler writes jobs in the caller's transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Connection

from orderstream.deliveries import handlers as deliveries
from orderstream.jobs.outbox import enqueue
from orderstream.notifications import handlers as notifications
from orderstream.orders.domain import FulfillmentType, is_dispatched
from orderstream.orders.events import DeliveryStatusChanged, Event, OrderCreated, OrderStatusChanged
from orderstream.webhooks_out import handlers as webhooks_out

Handler = Callable[[Connection, Any], None]

# Until the courier is due, a future order waits; this is how long before requested_for we book.
DEFAULT_PICKUP_LEAD = timedelta(minutes=45)


def enqueue_dispatch(conn: Connection, event: OrderCreated) -> None:
    """A delivery order gets a dispatch job: now, or ahead of requested_for for a future order."""
    if not is_dispatched(FulfillmentType(event.fulfillment_type)):
        return
    run_at = event.at
    if event.is_future_order and event.requested_for is not None:
        run_at = max(event.at, event.requested_for - DEFAULT_PICKUP_LEAD)
    enqueue(conn, kind="dispatch", key=event.order_id, payload={"order_id": event.order_id}, run_at=run_at)


HANDLERS: dict[type, list[Handler]] = {
    OrderCreated: [enqueue_dispatch],
    OrderStatusChanged: [webhooks_out.on_order_status_changed, deliveries.on_order_status_changed],
    DeliveryStatusChanged: [webhooks_out.on_delivery_status_changed],
}
HANDLERS[OrderCreated].append(notifications.on_order_created)
HANDLERS[OrderStatusChanged].append(notifications.on_order_status_changed)
HANDLERS[DeliveryStatusChanged].append(notifications.on_delivery_status_changed)


def publish(conn: Connection, event: Event) -> None:
    """Run every handler of the event, in the caller's transaction."""
    for handler in HANDLERS.get(type(event), []):
        handler(conn, event)
