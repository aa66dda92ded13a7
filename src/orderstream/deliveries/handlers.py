"""Dispatch's reactions to order events: each writes jobs in the caller's transaction."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from orderstream.orders.events import OrderStatusChanged


def on_order_status_changed(conn: Connection, event: OrderStatusChanged) -> None:
    """A canceled order cancels its active delivery with the provider (through a job)."""
    if event.to_status != "canceled":
        return
    # imported here: deliveries.service uses orders.service, which imports the handler table
    from orderstream.deliveries import service

    service.on_order_status_changed(conn, event)
