"""Reads and actions of other features (dispatch, notifications), each behind a runtime check.

Every function here goes through the feature's own service module, so the dashboard acts exactly
like the feature's API. While a feature is not installed, reads return None (the page says so) and
actions raise FeatureMissing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.config import Settings
from orderstream.dashboard import features
from orderstream.dashboard.late import COURIER_ASSIGNED
from orderstream.tenancy.models import locations


@dataclass(frozen=True)
class DeliveryInfo:
    """What the board needs from an order's latest delivery attempt."""

    provider: str | None
    courier_assigned: bool
    pickup_eta: datetime | None
    dropoff_eta: datetime | None
    promised_at: datetime | None
    fee: int | None


class FeatureMissing(Exception):
    """An action needs a feature that is not installed here."""

    def __init__(self, feature: features.Feature) -> None:
        super().__init__(features.missing_text(feature))
        self.feature = feature


class BridgeRefused(Exception):
    """The feature refused the action: its own stable code and message, 404, 409 or 422 as it answers."""

    def __init__(self, code: str, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.status = status if status in (404, 409, 422) else 409


def _module(conn: Connection, feature: features.Feature, name: str) -> ModuleType | None:
    if not features.available(conn, feature):
        return None
    return importlib.import_module(name)


def _require(conn: Connection, feature: features.Feature, name: str) -> ModuleType:
    module = _module(conn, feature, name)
    if module is None:
        raise FeatureMissing(feature)
    return module


def _attempts_table(conn: Connection) -> sa.Table | None:
    models = _module(conn, features.DISPATCH, "orderstream.deliveries.models")
    return None if models is None else models.delivery_attempts


# --- dispatch: reads -------------------------------------------------------------------------------


def delivery_info(conn: Connection, order_ids: list[str]) -> dict[str, DeliveryInfo]:
    """The latest delivery attempt of each order that has one (none while dispatch is missing)."""
    table = _attempts_table(conn)
    if table is None or not order_ids:
        return {}
    latest = (
        sa.select(table.c.order_id, sa.func.max(table.c.number).label("number"))
        .where(table.c.order_id.in_(order_ids))
        .group_by(table.c.order_id)
        .subquery()
    )
    rows = conn.execute(
        sa.select(table).join(latest, sa.and_(table.c.order_id == latest.c.order_id, table.c.number == latest.c.number))
    ).mappings()
    return {
        r["order_id"]: DeliveryInfo(
            provider=r["provider"],
            courier_assigned=r["state"] != "ended" and r["delivery_status"] in COURIER_ASSIGNED,
            pickup_eta=r["pickup_eta"],
            dropoff_eta=r["dropoff_eta"],
            promised_at=r["dropoff_deadline"],
            fee=r["fee"],
        )
        for r in rows
    }


def _courier_text(courier: dict[str, Any] | None) -> str | None:
    if not courier:
        return None
    vehicle = " ".join(str(courier[k]) for k in ("vehicle_color", "vehicle_make", "vehicle_model") if courier.get(k))
    parts = [courier.get("name"), courier.get("phone"), vehicle or courier.get("vehicle_type")]
    return " · ".join(str(p) for p in parts if p)


def _proof_url(proof: dict[str, Any] | None) -> str | None:
    if not proof:
        return None
    for key in ("photo_url", "image_url", "url", "signature_image_url", "signature_url"):
        value = proof.get(key)
        if isinstance(value, str) and value.startswith("https://"):
            return value
    return None


def delivery_attempts(conn: Connection, order_id: str) -> list[dict[str, Any]] | None:
    """Every delivery attempt of an order, oldest first; None while dispatch is missing."""
    service = _module(conn, features.DISPATCH, "orderstream.deliveries.service")
    if service is None:
        return None
    out = []
    for row in service.list_attempts(conn, order_id):
        out.append(
            {
                "number": row["number"],
                "provider": row["provider"],
                "state": row["state"],
                "status": row["delivery_status"],
                "outcome": row["outcome"],
                "outcome_reason": row["outcome_reason"],
                "quote_id": row["quote_id"],
                "fee": row["fee"],
                "cancel_fee": row["cancel_fee"],
                "currency": row["currency"],
                "courier": _courier_text(row["courier"]),
                "pickup_eta": row["pickup_eta"],
                "dropoff_eta": row["dropoff_eta"],
                "tracking_url": row["tracking_url"],
                "proof": row["proof_of_delivery"],
                "proof_url": _proof_url(row["proof_of_delivery"]),
                "booked_at": row["booked_at"],
                "ended_at": row["ended_at"],
                "active": row["state"] != "ended",
            }
        )
    return out


def providers(conn: Connection) -> list[str]:
    """Provider names the board can filter by and an operator can choose (none while dispatch is missing)."""
    registry = _module(conn, features.DISPATCH, "orderstream.deliveries.registry")
    table = _attempts_table(conn)
    if registry is None or table is None:
        return []
    used = set(conn.execute(sa.select(table.c.provider).distinct()).scalars())
    return sorted(set(registry.FACTORIES) | used)


def fee_by_provider(conn: Connection, order_ids: list[str]) -> list[tuple[str, float]] | None:
    """Average courier fee (major units) per provider over the orders' booked attempts; None without dispatch."""
    table = _attempts_table(conn)
    if table is None:
        return None
    if not order_ids:
        return []
    rows = conn.execute(
        sa.select(table.c.provider, sa.func.avg(table.c.fee))
        .where(table.c.order_id.in_(order_ids), table.c.fee.is_not(None), table.c.booked_at.is_not(None))
        .group_by(table.c.provider)
        .order_by(table.c.provider)
    ).all()
    return [(str(provider), round(float(avg) / 100, 2)) for provider, avg in rows]


def redispatch_counts(conn: Connection, order_ids: list[str]) -> tuple[int, int] | None:
    """(orders with more than one attempt, orders with any attempt); None while dispatch is missing."""
    table = _attempts_table(conn)
    if table is None:
        return None
    if not order_ids:
        return (0, 0)
    counts = conn.execute(
        sa.select(table.c.order_id, sa.func.max(table.c.number))
        .where(table.c.order_id.in_(order_ids))
        .group_by(table.c.order_id)
    ).all()
    return (sum(1 for _, top in counts if int(top) > 1), len(counts))


# --- dispatch: actions -----------------------------------------------------------------------------


def redispatch(conn: Connection, *, order_id: str, actor_text: str, only: str | None = None) -> None:
    """Find a courier again: cancel the active delivery first (skipping its provider unless one is chosen)."""
    service = _require(conn, features.DISPATCH, "orderstream.deliveries.service")
    try:
        active = service.active_attempt(conn, order_id)
        if active is None:
            service.request_redispatch(conn, order_id=order_id, actor="operator", reason=actor_text, only=only)
            return
        service.request_cancel(
            conn, order_id=order_id, actor="operator", reason=actor_text, then_dispatch=True, only=only
        )
    except service.DispatchError as exc:
        raise BridgeRefused(exc.code, str(exc), exc.status) from exc


def dispatch_policy(conn: Connection, *, location_id: int, settings: Settings) -> dict[str, Any] | None:
    """The location's dispatch policy as a dict (the default when it has none); None without dispatch."""
    service = _module(conn, features.DISPATCH, "orderstream.deliveries.service")
    if service is None:
        return None
    policy: dict[str, Any] = service.get_policy(conn, location_id=location_id, settings=settings).as_dict()
    return policy


def set_dispatch_policy(conn: Connection, *, location_id: int, values: dict[str, Any]) -> None:
    """Replace the location's dispatch policy through dispatch's own service."""
    service = _require(conn, features.DISPATCH, "orderstream.deliveries.service")
    rules = importlib.import_module("orderstream.deliveries.policy")
    try:
        policy = rules.Policy(
            allowed_providers=tuple(values["allowed_providers"]),
            strategy=rules.Strategy(values["strategy"]),
            max_fee=values.get("max_fee"),
            max_pickup_eta_minutes=values.get("max_pickup_eta_minutes"),
            acceptance_timeout_seconds=values.get("acceptance_timeout_seconds") or {},
            redispatch_window_minutes=values.get("redispatch_window_minutes"),
        )
    except ValueError as exc:
        raise BridgeRefused("invalid_policy", str(exc), 422) from exc
    service.set_policy(conn, location_id=location_id, policy=policy)


# --- own drivers ----------------------------------------------------------------------------------


def _own_driver_delivery(conn: Connection, order: Any) -> tuple[ModuleType, Any, Any] | None:
    own = _module(conn, features.OWN_DRIVERS, "orderstream.deliveries.providers.own_drivers.service")
    dispatch = _module(conn, features.DISPATCH, "orderstream.deliveries.service")
    if own is None or dispatch is None:
        return None
    active = dispatch.active_attempt(conn, order["id"])
    if active is None or active["provider"] != "own_drivers" or not active["provider_delivery_id"]:
        return None
    location = conn.execute(sa.select(locations).where(locations.c.id == order["location_id"])).mappings().one()
    return own, active, location


def own_drivers(conn: Connection, order: Any) -> list[dict[str, Any]] | None:
    """The location's active drivers when the order's active delivery is with the merchant's own drivers."""
    found = _own_driver_delivery(conn, order)
    if found is None:
        return None
    own, _active, location = found
    drivers: list[dict[str, Any]] = own.list_drivers(conn, loc=location)
    return drivers


def assign_driver(conn: Connection, *, order: Any, driver_id: str, settings: Settings) -> None:
    """Give the order's own-driver delivery to a driver; dispatch applies the change like a driver's report."""
    if not features.available(conn, features.OWN_DRIVERS):
        raise FeatureMissing(features.OWN_DRIVERS)
    found = _own_driver_delivery(conn, order)
    if found is None:
        raise BridgeRefused(
            "no_own_driver_delivery", "the active delivery is not with your own drivers: choose that provider first"
        )
    own, active, location = found
    dispatch = importlib.import_module("orderstream.deliveries.service")

    def apply(inner: Connection, update: Any) -> None:
        dispatch.apply_update(inner, update, actor="operator", settings=settings)

    try:
        own.assign(conn, loc=location, delivery_id=active["provider_delivery_id"], driver_id=driver_id, apply=apply)
    except own.DriversError as exc:
        raise BridgeRefused(exc.code, str(exc), exc.status) from exc


# --- notifications ---------------------------------------------------------------------------------


def notifications(conn: Connection, order_id: str) -> list[dict[str, Any]] | None:
    """Every notification of an order with its outcome; None while notifications are missing."""
    service = _module(conn, features.NOTIFICATIONS, "orderstream.notifications.service")
    if service is None:
        return None
    rows: list[dict[str, Any]] = service.notifications_of(conn, order_id)
    return rows


def notification_kinds(conn: Connection) -> list[str]:
    """Every notification kind (empty while notifications are missing)."""
    domain = _module(conn, features.NOTIFICATIONS, "orderstream.notifications.domain")
    return [] if domain is None else [k.value for k in domain.Kind]


def resend_notification(conn: Connection, *, order_id: str, notification_id: str, settings: Settings) -> list[str]:
    """Queue the notification's kind again, on every channel of the customer; returns the new ids.

    A new sequence number keeps the once-per-(order, kind, channel) rule of the first send intact;
    the per-customer cap of the notifications feature still applies.
    """
    service = _require(conn, features.NOTIFICATIONS, "orderstream.notifications.service")
    domain = importlib.import_module("orderstream.notifications.domain")
    models = importlib.import_module("orderstream.notifications.models")
    table = models.notifications
    row = (
        conn.execute(sa.select(table).where(table.c.id == notification_id, table.c.order_id == order_id))
        .mappings()
        .first()
    )
    if row is None:
        raise BridgeRefused("notification_not_found", "no such notification for this order", 404)
    top = conn.execute(
        sa.select(sa.func.max(table.c.seq)).where(table.c.order_id == order_id, table.c.kind == row["kind"])
    ).scalar()
    queued: list[str] = service.queue(
        conn,
        settings,
        order_id=order_id,
        kind=domain.Kind(row["kind"]),
        facts=dict(row["facts"] or {}),
        seq=int(top or 0) + 1,
    )
    if not queued:
        raise BridgeRefused(
            "not_queued", "nothing was queued: the customer has no reachable channel, opted out or hit the cap"
        )
    return queued


def notification_settings(conn: Connection, *, location_id: int) -> dict[str, Any] | None:
    """The location's notification settings; None while notifications are missing."""
    service = _module(conn, features.NOTIFICATIONS, "orderstream.notifications.service")
    if service is None:
        return None
    found: dict[str, Any] = service.location_settings(conn, location_id=location_id)
    return found


def set_notification_settings(conn: Connection, *, location_id: int, **changes: Any) -> None:
    """Change the location's notification settings through the feature's own checks."""
    service = _require(conn, features.NOTIFICATIONS, "orderstream.notifications.service")
    try:
        service.update_location_settings(conn, location_id=location_id, **changes)
    except service.SettingsError as exc:
        raise BridgeRefused(exc.code, f"{exc.path}: {exc}") from exc
