"""Operator actions on an order, through the same service functions as the API and the workers."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.config import Settings
from orderstream.dashboard import audit, bridges
from orderstream.dashboard.users import User
from orderstream.orders import domain
from orderstream.orders import service as order_service
from orderstream.webhooks_out import service as webhooks_service
from orderstream.webhooks_out.models import webhook_deliveries

CANCEL_REASONS = {
    "customer_request": "Customer asked to cancel",
    "out_of_stock": "Items out of stock",
    "store_closed": "Store closed or too busy",
    "no_courier": "No courier available",
    "other": "Other",
}


class ActionRefused(Exception):
    """An action that cannot be carried out now (409), on something missing (404), or with bad input (422)."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def _locked_order(conn: Connection, order_id: str) -> Any:
    row = order_service.get_order_for_update(conn, order_id=order_id)
    if row is None:
        raise ActionRefused("order_not_found", "the order no longer exists")
    return row


def _move(
    conn: Connection,
    *,
    user: User,
    order_id: str,
    target: domain.OrderStatus,
    reason: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    order = _locked_order(conn, order_id)
    try:
        result = order_service.change_status(
            conn, order=order, target=target, actor=domain.Actor.OPERATOR, reason=reason, extra=extra
        )
    except domain.IllegalTransition as exc:
        raise ActionRefused("illegal_transition", str(exc)) from exc
    if not result.changed:
        raise ActionRefused("already_in_status", f"the order is already {target.value}")


def cancel(conn: Connection, *, user: User, order_id: str, reason: str, note: str | None) -> None:
    """Cancel the order; dispatch and notifications react to the status change like for any cancel."""
    if reason not in CANCEL_REASONS:
        raise ActionRefused("invalid_reason", "reason: choose one of the listed reasons", status=422)
    note = (note or "").strip()[:500] or None
    text = f"{CANCEL_REASONS[reason]} (by {user.email})" + (f": {note}" if note else "")
    _move(
        conn,
        user=user,
        order_id=order_id,
        target=domain.OrderStatus.CANCELED,
        reason=text,
        extra={"cancel_reason": reason, "cancel_source": "operator", "cancel_note": note},
    )
    audit.record(conn, user=user, action="cancel", order_id=order_id, details={"reason": reason})


def mark_ready(conn: Connection, *, user: User, order_id: str) -> None:
    """Mark the order ready for pickup (by the customer or the courier)."""
    _move(
        conn,
        user=user,
        order_id=order_id,
        target=domain.OrderStatus.READY_FOR_PICKUP,
        reason=f"marked ready by {user.email}",
    )
    audit.record(conn, user=user, action="mark_ready", order_id=order_id)


def replay_webhook(conn: Connection, *, user: User, order: Any, delivery_id: str) -> None:
    """Send one of the order's webhooks to the POS again (same event, same webhook-id)."""
    try:
        detail = webhooks_service.get_delivery(conn, delivery_id=delivery_id, partner_id=order["partner_id"])
        if _delivery_order(conn, delivery_id) != order["id"]:
            raise ActionRefused("delivery_not_found", "no such webhook for this order", status=404)
        webhooks_service.replay_delivery(conn, delivery_id=delivery_id, partner_id=order["partner_id"])
    except webhooks_service.WebhooksError as exc:
        raise ActionRefused(exc.code, str(exc), exc.status if exc.status in (404, 422) else 409) from exc
    audit.record(
        conn,
        user=user,
        action="replay_webhook",
        order_id=order["id"],
        details={"delivery_id": delivery_id, "event_type": detail["event_type"]},
    )


def _delivery_order(conn: Connection, delivery_id: str) -> str | None:
    return conn.execute(sa.select(webhook_deliveries.c.order_id).where(webhook_deliveries.c.id == delivery_id)).scalar()


def redispatch(conn: Connection, *, user: User, order_id: str, provider: str | None) -> None:
    """Find a courier again (another provider, or the one chosen), through dispatch's own service."""
    what = f"provider {provider} chosen" if provider else "re-dispatch"
    try:
        bridges.redispatch(conn, order_id=order_id, actor_text=f"{what} by {user.email}", only=provider)
    except bridges.BridgeRefused as exc:
        raise ActionRefused(exc.code, str(exc), exc.status) from exc
    audit.record(
        conn,
        user=user,
        action="choose_provider" if provider else "redispatch",
        order_id=order_id,
        details={"provider": provider} if provider else None,
    )


def assign_driver(conn: Connection, *, user: User, order: Any, driver_id: str, settings: Settings) -> None:
    """Give the order's own-driver delivery to one of the location's drivers."""
    try:
        bridges.assign_driver(conn, order=order, driver_id=driver_id, settings=settings)
    except bridges.BridgeRefused as exc:
        raise ActionRefused(exc.code, str(exc), exc.status) from exc
    audit.record(conn, user=user, action="assign_driver", order_id=order["id"], details={"driver_id": driver_id})


def resend_notification(
    conn: Connection, *, user: User, order_id: str, notification_id: str, settings: Settings
) -> None:
    """Send a notification's kind to the customer again, through the notifications feature."""
    try:
        queued = bridges.resend_notification(
            conn, order_id=order_id, notification_id=notification_id, settings=settings
        )
    except bridges.BridgeRefused as exc:
        raise ActionRefused(exc.code, str(exc), exc.status) from exc
    audit.record(
        conn,
        user=user,
        action="resend_notification",
        order_id=order_id,
        details={"notification_id": notification_id, "queued": queued},
    )
