"""DoorDash Drive v2 delivery_status values, webhook event names and cancel reasons -> DeliveryStatus."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orderstream.deliveries.protocol import DeliveryStatus as S

# The 13 values of `delivery_status` (delivery-providers.md section 4.2); `cancelled` depends on the reason.
DELIVERY_STATUSES: Mapping[str, S] = {
    "quote": S.PENDING,
    "created": S.PENDING_DRIVER_CONFIRMATION,
    "confirmed": S.ENROUTE_TO_PICKUP,
    "enroute_to_pickup": S.ENROUTE_TO_PICKUP,
    "arrived_at_pickup": S.ARRIVED_AT_PICKUP,
    "picked_up": S.ENROUTE_TO_DROPOFF,
    "enroute_to_dropoff": S.ENROUTE_TO_DROPOFF,
    "arrived_at_dropoff": S.ARRIVED_AT_DROPOFF,
    "delivered": S.COMPLETED,
    "enroute_to_return": S.ENROUTE_TO_RETURN,
    "arrived_at_return": S.ARRIVED_AT_RETURN,
    "returned": S.RETURNED,
}
CANCELLED = "cancelled"

# Webhook event names of Drive v2 (not the lowercase Drive classic ones). DELIVERY_CANCELLED and
# informational events (DELIVERY_BATCHED, location pings) take their status from the payload.
EVENTS: Mapping[str, S] = {
    "DELIVERY_CREATED": S.PENDING_DRIVER_CONFIRMATION,
    "DASHER_CONFIRMED": S.ENROUTE_TO_PICKUP,
    "DASHER_ENROUTE_TO_PICKUP": S.ENROUTE_TO_PICKUP,
    "DASHER_CONFIRMED_PICKUP_ARRIVAL": S.ARRIVED_AT_PICKUP,
    "DASHER_PICKED_UP": S.ENROUTE_TO_DROPOFF,
    "DASHER_ENROUTE_TO_DROPOFF": S.ENROUTE_TO_DROPOFF,
    "DASHER_CONFIRMED_DROPOFF_ARRIVAL": S.ARRIVED_AT_DROPOFF,
    "DASHER_DROPPED_OFF": S.COMPLETED,
    "DELIVERY_RETURN_INITIALIZED": S.ENROUTE_TO_RETURN,
    "DASHER_ENROUTE_TO_RETURN": S.ENROUTE_TO_RETURN,
    "DASHER_CONFIRMED_RETURN_ARRIVAL": S.ARRIVED_AT_RETURN,
    "DELIVERY_RETURNED": S.RETURNED,
}
CANCEL_EVENT = "DELIVERY_CANCELLED"

# `cancellation_reason` values the adapter understands (the simulator emits exactly these). DoorDash
# publishes no closed list, so an unknown reason falls back on how far the delivery had got.
CANCELLATION_REASONS: Mapping[str, S] = {
    "cancelled_by_creator": S.MERCHANT_CANCELED,
    "cancelled_by_merchant": S.MERCHANT_CANCELED,
    "no_available_dashers": S.FAILED_TO_ASSIGN_DRIVER,
    "dasher_not_found": S.FAILED_TO_ASSIGN_DRIVER,
    "dasher_cancelled": S.FAILED_TO_PICKUP,
    "dasher_unassigned": S.FAILED_TO_PICKUP,
    "items_unavailable": S.FAILED_TO_PICKUP,
    "store_closed": S.FAILED_TO_PICKUP,
    "customer_unavailable": S.FAILED_TO_DELIVER,
    "undeliverable": S.FAILED_TO_DELIVER,
    "package_lost": S.FAILED_TO_DELIVER,
    "failed_to_return": S.FAILED,
}

TERMINAL = frozenset({"delivered", "returned", CANCELLED})


def cancelled_status(payload: Mapping[str, Any]) -> S:
    """The canonical status of a cancelled delivery, from its reason or else from how far it got."""
    reason = str(payload.get("cancellation_reason") or "").lower()
    if reason in CANCELLATION_REASONS:
        return CANCELLATION_REASONS[reason]
    if payload.get("pickup_time_actual"):
        return S.FAILED_TO_DELIVER
    if payload.get("dasher_id") is not None or payload.get("dasher_name"):
        return S.FAILED_TO_PICKUP
    return S.FAILED


def delivery_status(payload: Mapping[str, Any]) -> S | None:
    """The canonical status of a delivery object, or None for an unknown `delivery_status`."""
    code = str(payload.get("delivery_status") or "").lower()
    if code == CANCELLED:
        return cancelled_status(payload)
    return DELIVERY_STATUSES.get(code)


def event_status(event_name: str, payload: Mapping[str, Any]) -> S | None:
    """The canonical status a webhook event reports, or None when neither event nor payload is known."""
    name = event_name.upper()
    if name == CANCEL_EVENT:
        return cancelled_status(payload)
    if name in EVENTS:
        return EVENTS[name]
    return delivery_status(payload)
