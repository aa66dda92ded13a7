"""Use cases of the merchant's fleet: drivers, operator assignment, and status reports from drivers."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import phonenumbers
from sqlalchemy.engine import Connection, RowMapping

from orderstream.db import utcnow
from orderstream.deliveries.protocol import WebhookUpdate
from orderstream.deliveries.providers.own_drivers import mapping, store
from orderstream.deliveries.providers.own_drivers.statuses import (
    CANCELED_BY_DRIVER,
    OPEN,
    REASSIGNABLE,
    REPORTABLE,
    TERMINAL,
    DriverStatus,
    TransitionRefused,
    check_report,
)
from orderstream.ids import new_id
from orderstream.tenancy import service as tenancy

log = logging.getLogger(__name__)

TOKEN_PREFIX = "osd_"

# Applies a canonical update to the matching delivery attempt, in the caller's transaction.
Applier = Callable[[Connection, WebhookUpdate], None]


class DriversError(Exception):
    """A fleet request that cannot be carried out; status and code are what the API answers."""

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path

    def details(self) -> list[dict[str, Any]]:
        """The API error details: the field path, when one field is at fault."""
        return [{"path": self.path, "code": self.code, "message": self.message}] if self.path else []


def hash_token(token: str) -> str:
    """The stored form of a driver token (long random strings: a plain SHA-256 suffices)."""
    return tenancy.hash_api_key(token)


def normalize_phone(phone: str, *, country: str) -> str:
    """The phone in E.164, reading national numbers in the location's country; DriversError otherwise."""
    try:
        parsed = phonenumbers.parse(phone, country.upper())
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not phonenumbers.is_valid_number(parsed):
        raise DriversError(422, "invalid_phone", "not a valid phone number", path="phone")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def driver_dict(row: RowMapping, *, open_deliveries: int | None = None) -> dict[str, Any]:
    """A driver as the API and the CLI show it (operators see the full phone)."""
    out: dict[str, Any] = {
        "id": row["id"],
        "name": row["name"],
        "phone": row["phone"],
        "vehicle": row["vehicle"],
        "active": row["active"],
        "on_shift": row["on_shift"],
        "token_prefix": row["token_prefix"],
        "created_at": row["created_at"].isoformat(),
        "deactivated_at": row["deactivated_at"].isoformat() if row["deactivated_at"] else None,
    }
    if open_deliveries is not None:
        out["open_deliveries"] = open_deliveries
    return out


def delivery_dict(row: RowMapping) -> dict[str, Any]:
    """A driver delivery as the API and the CLI show it."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": row["id"],
        "external_id": row["external_id"],
        "order_id": row["order_id"],
        "driver_id": row["driver_id"],
        "status": row["status"],
        "canceled_by": row["canceled_by"],
        "cancel_reason": row["cancel_reason"],
        "fee": row["fee"],
        "currency": row["currency"],
        "tip": row["tip"],
        "cash_to_collect": row["cash_to_collect"],
        "pickup_eta": iso(row["pickup_eta"]),
        "dropoff_eta": iso(row["dropoff_eta"]),
        "latitude": row["latitude"],
        "longitude": row["longitude"],
        "proof_of_delivery": row["proof_of_delivery"],
        "assigned_at": iso(row["assigned_at"]),
        "picked_up_at": iso(row["picked_up_at"]),
        "ended_at": iso(row["ended_at"]),
        "updated_at": iso(row["updated_at"]),
    }


# --- locations and drivers --------------------------------------------------------------------------


def location(conn: Connection, *, partner_id: int, external_id: str) -> RowMapping:
    """A partner's location by its own id, or DriversError 404."""
    row = tenancy.get_location(conn, partner_id=partner_id, external_id=external_id)
    if row is None:
        raise DriversError(404, "location_not_found", f"no location {external_id!r}")
    return row


def partner_location(conn: Connection, *, partner_slug: str, external_id: str) -> RowMapping:
    """A location by partner slug and the partner's location id (operator tools), or DriversError 404."""
    try:
        return tenancy.require_location(conn, partner_slug=partner_slug, external_id=external_id)
    except tenancy.TenancyError as err:
        raise DriversError(404, err.code, str(err)) from err


def add_driver(
    conn: Connection, *, loc: RowMapping, name: str, phone: str, vehicle: str | None = None, on_shift: bool = False
) -> tuple[dict[str, Any], str]:
    """Add a driver to a location; returns the driver and its token (shown only now)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise DriversError(422, "invalid_name", "the name must have 1 to 200 characters", path="name")
    if vehicle is not None and len(vehicle) > 100:
        raise DriversError(422, "invalid_vehicle", "the vehicle must have at most 100 characters", path="vehicle")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    driver_id = new_id("drv")
    store.insert_driver(
        conn,
        id=driver_id,
        partner_id=loc["partner_id"],
        location_id=loc["id"],
        name=name,
        phone=normalize_phone(phone, country=loc["country"]),
        vehicle=(vehicle or None) and vehicle.strip(),
        active=True,
        on_shift=on_shift,
        token_prefix=token[:12],
        token_hash=hash_token(token),
    )
    row = store.get_driver(conn, driver_id=driver_id)
    assert row is not None
    return driver_dict(row, open_deliveries=0), token


def list_drivers(conn: Connection, *, loc: RowMapping, include_inactive: bool = False) -> list[dict[str, Any]]:
    """A location's drivers, with their open deliveries."""
    rows = store.list_drivers(conn, location_id=loc["id"], include_inactive=include_inactive)
    return [driver_dict(r, open_deliveries=int(r["open_deliveries"])) for r in rows]


def _location_driver(conn: Connection, *, loc: RowMapping, driver_id: str) -> RowMapping:
    row = store.get_driver(conn, driver_id=driver_id)
    if row is None or row["location_id"] != loc["id"]:
        raise DriversError(404, "driver_not_found", f"no driver {driver_id!r} at this location", path="driver_id")
    return row


def set_shift(conn: Connection, *, loc: RowMapping, driver_id: str, on_shift: bool) -> dict[str, Any]:
    """Put a driver on or off shift (only on-shift drivers are auto-assigned)."""
    row = _location_driver(conn, loc=loc, driver_id=driver_id)
    if not row["active"]:
        raise DriversError(409, "driver_inactive", "the driver was deactivated")
    store.update_driver(conn, driver_id=driver_id, on_shift=on_shift)
    return driver_dict(_location_driver(conn, loc=loc, driver_id=driver_id))


def set_own_shift(conn: Connection, *, driver: RowMapping, on_shift: bool) -> dict[str, Any]:
    """A driver clocks in or out."""
    store.update_driver(conn, driver_id=driver["id"], on_shift=on_shift)
    row = store.get_driver(conn, driver_id=driver["id"])
    assert row is not None
    return driver_dict(row)


def deactivate_driver(conn: Connection, *, loc: RowMapping, driver_id: str) -> dict[str, Any]:
    """Deactivate a driver: no new deliveries, token refused. Refused while the driver has open deliveries."""
    row = _location_driver(conn, loc=loc, driver_id=driver_id)
    if row["active"]:
        busy = store.list_deliveries(
            conn, driver_id=driver_id, status=[s.value for s in DriverStatus if s not in TERMINAL]
        )
        if busy:
            raise DriversError(
                409, "driver_busy", f"the driver still has open deliveries: {', '.join(r['id'] for r in busy)}"
            )
        store.update_driver(conn, driver_id=driver_id, active=False, on_shift=False, deactivated_at=utcnow())
    return driver_dict(_location_driver(conn, loc=loc, driver_id=driver_id))


def driver_for_token(conn: Connection, *, token: str) -> RowMapping | None:
    """The active driver holding a token, or None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    return store.driver_by_token_hash(conn, token_hash=hash_token(token))


def fleet_dict(conn: Connection, *, loc: RowMapping, default_fee: int, default_auto_assign: bool) -> dict[str, Any]:
    """A location's fleet settings, with the defaults filled in."""
    fee, auto = mapping.fleet_values(
        store.fleet(conn, location_id=loc["id"]), default_fee=default_fee, default_auto_assign=default_auto_assign
    )
    return {"location_id": loc["external_id"], "fee": fee, "auto_assign": auto}


def set_fleet(conn: Connection, *, loc: RowMapping, fee: int | None, auto_assign: bool | None) -> None:
    """Set a location's own-driver delivery fee and whether deliveries are assigned automatically."""
    if fee is not None and fee < 0:
        raise DriversError(422, "invalid_fee", "the fee must be zero or more (minor units)", path="fee")
    current = store.fleet(conn, location_id=loc["id"])
    store.upsert_fleet(
        conn,
        location_id=loc["id"],
        fee=fee if fee is not None else (current["fee"] if current is not None else None),
        auto_assign=auto_assign if auto_assign is not None else (current["auto_assign"] if current else None),
    )


# --- deliveries -------------------------------------------------------------------------------------


def list_deliveries(conn: Connection, *, loc: RowMapping, status: str | None = None) -> list[dict[str, Any]]:
    """A location's driver deliveries, newest first (e.g. status=unassigned: waiting for an operator)."""
    rows = store.list_deliveries(conn, location_id=loc["id"], status=[status] if status else ())
    return [delivery_dict(r) for r in rows]


def open_deliveries(conn: Connection, *, driver: RowMapping) -> list[dict[str, Any]]:
    """The deliveries a driver still has to finish, newest first."""
    rows = store.list_deliveries(conn, driver_id=driver["id"], status=[s.value for s in OPEN])
    return [delivery_dict(r) for r in rows]


def _changed(conn: Connection, *, delivery_id: str, apply: Applier) -> dict[str, Any]:
    """Re-read a delivery just changed and hand the change to dispatch (same transaction)."""
    row = store.get_delivery(conn, delivery_id=delivery_id)
    assert row is not None
    driver = store.get_driver(conn, driver_id=row["driver_id"]) if row["driver_id"] else None
    apply(conn, mapping.update(row, driver))
    return delivery_dict(row)


def assign(conn: Connection, *, loc: RowMapping, delivery_id: str, driver_id: str, apply: Applier) -> dict[str, Any]:
    """An operator gives a delivery (waiting, or not yet at the store) to an active driver of its location."""
    row = store.get_delivery(conn, delivery_id=delivery_id, lock=True)
    if row is None or row["location_id"] != loc["id"]:
        raise DriversError(404, "delivery_not_found", f"no driver delivery {delivery_id!r} at this location")
    driver = _location_driver(conn, loc=loc, driver_id=driver_id)
    if not driver["active"]:
        raise DriversError(409, "driver_inactive", "the driver was deactivated", path="driver_id")
    status = DriverStatus(row["status"])
    if status not in REASSIGNABLE:
        raise DriversError(409, "not_reassignable", f"the delivery is {status.value}; it can no longer be assigned")
    if row["driver_id"] == driver_id:
        return delivery_dict(row)
    store.update_delivery(
        conn, delivery_id=delivery_id, driver_id=driver_id, status=DriverStatus.ASSIGNED.value, assigned_at=utcnow()
    )
    log.info("own-driver delivery assigned", extra={"delivery_id": delivery_id, "driver_id": driver_id})
    return _changed(conn, delivery_id=delivery_id, apply=apply)


def report_status(
    conn: Connection,
    *,
    driver: RowMapping,
    delivery_id: str,
    status: str,
    apply: Applier,
    latitude: float | None = None,
    longitude: float | None = None,
    eta: datetime | None = None,
    proof_of_delivery: dict[str, str] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """A driver reports progress on one of their deliveries; the change reaches the delivery attempt.

    `eta` is the next stop's: the pickup ETA before pickup, the drop-off ETA after.
    """
    try:
        reported = DriverStatus(status)
    except ValueError:
        reported = None
    if reported is None or reported not in REPORTABLE:
        allowed = ", ".join(s.value for s in DriverStatus if s in REPORTABLE)
        raise DriversError(422, "invalid_status", f"status must be one of {allowed}", path="status")
    row = store.get_delivery(conn, delivery_id=delivery_id, lock=True)
    if row is None or row["driver_id"] != driver["id"]:
        raise DriversError(404, "delivery_not_found", f"no delivery {delivery_id!r} assigned to you")
    current = DriverStatus(row["status"])
    try:
        check_report(current, reported)
    except TransitionRefused as err:
        raise DriversError(409, err.code, str(err), path="status") from err
    now = utcnow()
    values: dict[str, Any] = {"status": reported.value}
    if latitude is not None and longitude is not None:
        values.update(latitude=latitude, longitude=longitude)
    if eta is not None:
        picked = reported in (DriverStatus.PICKED_UP, DriverStatus.AT_DROPOFF) or row["picked_up_at"] is not None
        values["dropoff_eta" if picked else "pickup_eta"] = eta
    if (
        reported in (DriverStatus.PICKED_UP, DriverStatus.AT_DROPOFF, DriverStatus.DELIVERED)
        and not row["picked_up_at"]
    ):
        values["picked_up_at"] = now
    if reported is DriverStatus.DELIVERED:
        values["ended_at"] = now
        if proof_of_delivery:
            values["proof_of_delivery"] = proof_of_delivery
    if reported is DriverStatus.CANCELED:
        values.update(canceled_by=CANCELED_BY_DRIVER, cancel_reason=reason or "driver_canceled", ended_at=now)
    store.update_delivery(conn, delivery_id=delivery_id, **values)
    log.info(
        "own-driver status",
        extra={"delivery_id": delivery_id, "driver_id": driver["id"], "from": current.value, "to": reported.value},
    )
    return _changed(conn, delivery_id=delivery_id, apply=apply)
