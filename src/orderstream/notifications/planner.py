"""The `notifications.plan` job's decisions: which kinds an order event queues, updates and their throttle."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.config import Settings
from orderstream.notifications import domain
from orderstream.notifications.domain import Kind, Status
from orderstream.notifications.models import notifications
from orderstream.notifications.service import queue
from orderstream.orders.models import orders

# once one of these went out, progress messages are stale
FINAL_KINDS = frozenset({Kind.DELIVERED.value, Kind.CANCELED.value, Kind.DELIVERY_PROBLEM.value})
PROGRESS_KINDS = frozenset({Kind.COURIER_ASSIGNED, Kind.OUT_FOR_DELIVERY, Kind.READY_FOR_PICKUP, Kind.REMINDER})
# a reminder closer than this to the confirmation tells nothing new
REMINDER_MIN_GAP = timedelta(minutes=10)


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _rows(conn: Connection, order_id: str) -> list[dict[str, Any]]:
    stmt = (
        sa.select(
            notifications.c.kind,
            notifications.c.seq,
            notifications.c.status,
            notifications.c.facts,
            notifications.c.created_at,
        )
        .where(notifications.c.order_id == order_id)
        .order_by(notifications.c.created_at, notifications.c.id)
    )
    return [dict(r) for r in conn.execute(stmt).mappings()]


def told(rows: list[dict[str, Any]]) -> domain.Told:
    """What the customer was told so far, from the order's messages that were not skipped."""
    eta: datetime | None = None
    attempt: int | None = None
    updates: set[tuple[str, int]] = set()
    last_update: datetime | None = None
    for row in rows:
        if row["status"] == Status.SKIPPED.value:
            continue
        facts = row["facts"] or {}
        eta = _when(facts.get("dropoff_eta")) or eta
        attempt = facts.get("attempt_id", attempt)
        if row["kind"] in (Kind.DELAYED.value, Kind.UPDATE.value):
            updates.add((row["kind"], row["seq"]))
            last_update = row["created_at"] if last_update is None else max(last_update, row["created_at"])
    return domain.Told(
        dropoff_eta=eta,
        attempt_id=attempt,
        at=last_update,
        updates=len(updates),
        delayed_sent=any(kind == Kind.DELAYED.value for kind, _ in updates),
    )


def _queue_kinds(
    conn: Connection,
    settings: Settings,
    order_id: str,
    kinds: list[Kind],
    facts: dict[str, Any],
    rows: list[dict[str, Any]] | None = None,
) -> list[str]:
    if not kinds:
        return []
    existing = {row["kind"] for row in (_rows(conn, order_id) if rows is None else rows)}
    queued: list[str] = []
    for kind in kinds:
        if kind in PROGRESS_KINDS and existing & FINAL_KINDS:
            continue
        queued += queue(conn, settings, order_id=order_id, kind=kind, facts=facts)
    return queued


def _on_created(conn: Connection, settings: Settings, payload: dict[str, Any], now: datetime) -> None:
    order_id = payload["order_id"]
    queue(conn, settings, order_id=order_id, kind=Kind.CONFIRMED)
    requested_for = _when(payload.get("requested_for"))
    if payload.get("is_future_order") and requested_for is not None:
        remind_at = requested_for - timedelta(minutes=settings.notifications_reminder_minutes)
        if remind_at - now >= REMINDER_MIN_GAP:
            queue(conn, settings, order_id=order_id, kind=Kind.REMINDER, send_after=remind_at)


def _on_status(conn: Connection, settings: Settings, payload: dict[str, Any]) -> None:
    order_id = payload["order_id"]
    fulfillment = conn.execute(sa.select(orders.c.fulfillment_type).where(orders.c.id == order_id)).scalar()
    if fulfillment is None:
        return
    _queue_kinds(conn, settings, order_id, domain.kinds_for_order_status(fulfillment, payload["to_status"]), {})


def _on_delivery(conn: Connection, settings: Settings, payload: dict[str, Any], now: datetime) -> None:
    order_id = payload["order_id"]
    courier = payload.get("courier") or None
    facts = {
        "delivery_status": payload["to_status"],
        "attempt_id": payload["attempt_id"],
        "courier_first_name": domain.first_name((courier or {}).get("name")),
        "vehicle": domain.vehicle_text(courier),
        "dropoff_eta": payload.get("dropoff_eta"),
    }
    has_courier = bool(facts["courier_first_name"])
    kinds = domain.kinds_for_delivery_status(payload["to_status"], has_courier=has_courier)
    # one read: when nothing was queued, a row _queue_kinds added is a skipped progress message (ignored below)
    rows = _rows(conn, order_id)
    if _queue_kinds(conn, settings, order_id, kinds, facts, rows):
        return
    active = payload["to_status"] in domain.COURIER_STATES | domain.ON_THE_WAY_STATES
    if not active or {row["kind"] for row in rows} & FINAL_KINDS:
        return
    rules = domain.UpdateRules(
        eta_change=timedelta(minutes=settings.notifications_eta_change_minutes),
        interval=timedelta(minutes=settings.notifications_update_interval_minutes),
        max_updates=settings.notifications_max_updates,
    )
    decision = domain.decide_update(
        told(rows),
        dropoff_eta=_when(payload.get("dropoff_eta")),
        attempt_id=int(payload["attempt_id"]),
        has_courier=has_courier,
        now=now,
        rules=rules,
    )
    if decision is None:
        return
    kind, why = decision
    seq = 0 if kind is Kind.DELAYED else 1 + max((r["seq"] for r in rows if r["kind"] == Kind.UPDATE.value), default=0)
    queue(conn, settings, order_id=order_id, kind=kind, facts={**facts, "why": why}, seq=seq)


def plan(conn: Connection, settings: Settings, payload: dict[str, Any], now: datetime) -> None:
    """Queue what this order event calls for (idempotent: running it twice queues nothing new).

    An order that does not exist gets nothing: queue() and the status path stop where they find no order.
    """
    event = payload["event"]
    if event == "OrderCreated":
        _on_created(conn, settings, payload, now)
    elif event == "OrderStatusChanged":
        _on_status(conn, settings, payload)
    elif event == "DeliveryStatusChanged":
        _on_delivery(conn, settings, payload, now)
