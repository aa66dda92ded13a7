"""The dashboard's audit log: who revealed a customer's contact details or acted on an order, and when."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.dashboard.models import dashboard_audit
from orderstream.dashboard.users import User
from orderstream.db import utcnow

log = logging.getLogger(__name__)


def record(
    conn: Connection, *, user: User, action: str, order_id: str | None = None, details: dict[str, Any] | None = None
) -> None:
    """Append an entry (in the caller's transaction) and log it without any customer data."""
    conn.execute(
        sa.insert(dashboard_audit).values(
            at=utcnow(), user_id=user.id, user_email=user.email, action=action, order_id=order_id, details=details
        )
    )
    log.info("dashboard action", extra={"user_id": user.id, "action": action, "order_id": order_id})


def for_order(conn: Connection, *, order_id: str) -> list[dict[str, Any]]:
    """An order's audit entries, oldest first."""
    rows = conn.execute(
        sa.select(dashboard_audit).where(dashboard_audit.c.order_id == order_id).order_by(dashboard_audit.c.id)
    ).mappings()
    return [dict(r) for r in rows]
