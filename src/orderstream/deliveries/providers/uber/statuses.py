"""Uber Direct delivery statuses (plus courier_imminent) mapped to our canonical DeliveryStatus."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

from orderstream.deliveries.protocol import DeliveryStatus

# Cancel reasons (in `undeliverable_reason`) that mean "no courier could be found".
NO_COURIER_REASONS = frozenset({"couriers_busy", "robo_couriers_busy", "address_undeliverable_limited_couriers"})


class UberStatus(Enum):
    """Member name = our canonical status; value = the Uber (status, courier_imminent) pairs that map to it.

    `None` as courier_imminent means "either". `canceled` and `returned` need more than the status
    (see `canonical_status`), so they are listed for completeness only.
    """

    PENDING = (("pending", None),)
    ENROUTE_TO_PICKUP = (("pickup", False),)
    ARRIVED_AT_PICKUP = (("pickup", True),)
    ENROUTE_TO_DROPOFF = (("pickup_complete", None), ("dropoff", False))
    ARRIVED_AT_DROPOFF = (("dropoff", True),)
    COMPLETED = (("delivered", None),)


UBER_STATUSES = ("pending", "pickup", "pickup_complete", "dropoff", "delivered", "canceled", "returned")

_BY_PAIR: dict[tuple[str, bool | None], DeliveryStatus] = {
    pair: DeliveryStatus[member.name] for member in UberStatus for pair in member.value
}


def _waypoint_done(delivery: Mapping[str, Any], name: str) -> bool:
    waypoint = delivery.get(name)
    return isinstance(waypoint, Mapping) and waypoint.get("status") == "completed"


def canonical_status(delivery: Mapping[str, Any], *, canceled_by_us: bool = False) -> DeliveryStatus:
    """Our status for an Uber delivery object (GET / create / cancel response or webhook `data`).

    Uber does not say who canceled a delivery, so `canceled` is read from what had happened:
    no courier ever assigned (or a couriers-busy reason) -> failed_to_assign_driver; courier
    assigned but nothing picked up -> failed_to_pickup; after pickup -> failed_to_deliver.
    A cancel we asked for (canceled_by_us) is merchant_canceled. `returned` is the forward leg
    ending in a return trip: enroute_to_return until the return waypoint is completed.
    """
    status = str(delivery.get("status") or "")
    imminent = bool(delivery.get("courier_imminent"))
    if status == "canceled":
        if canceled_by_us:
            return DeliveryStatus.MERCHANT_CANCELED
        reason = str(delivery.get("undeliverable_reason") or "").lower()
        if _waypoint_done(delivery, "pickup"):
            return DeliveryStatus.FAILED_TO_DELIVER
        if reason in NO_COURIER_REASONS or not delivery.get("courier"):
            return DeliveryStatus.FAILED_TO_ASSIGN_DRIVER
        return DeliveryStatus.FAILED_TO_PICKUP
    if status == "returned":
        return DeliveryStatus.RETURNED if _waypoint_done(delivery, "return") else DeliveryStatus.ENROUTE_TO_RETURN
    found = _BY_PAIR.get((status, imminent)) or _BY_PAIR.get((status, None))
    if found is None:
        raise ValueError(f"unknown Uber delivery status {status!r}")
    return found
