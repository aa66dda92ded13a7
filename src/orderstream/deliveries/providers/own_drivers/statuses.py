"""Own-driver assignment statuses, their order, and their canonical DeliveryStatus (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from orderstream.deliveries.protocol import DeliveryStatus as S


class DriverStatus(StrEnum):
    """Where one own-driver delivery is; `unassigned` waits for an operator to pick a driver."""

    UNASSIGNED = "unassigned"
    ASSIGNED = "assigned"
    AT_PICKUP = "at_pickup"
    PICKED_UP = "picked_up"
    AT_DROPOFF = "at_dropoff"
    DELIVERED = "delivered"
    CANCELED = "canceled"


D = DriverStatus

# Forward order of the lifecycle; a status may skip ahead, never go back.
PROGRESS: Mapping[DriverStatus, int] = {
    D.UNASSIGNED: 0,
    D.ASSIGNED: 1,
    D.AT_PICKUP: 2,
    D.PICKED_UP: 3,
    D.AT_DROPOFF: 4,
    D.DELIVERED: 5,
}
TERMINAL = frozenset({D.DELIVERED, D.CANCELED})
OPEN = frozenset({D.ASSIGNED, D.AT_PICKUP, D.PICKED_UP, D.AT_DROPOFF})  # a driver is busy with it
# The statuses a driver may report through the status endpoint.
REPORTABLE = frozenset({D.ASSIGNED, D.AT_PICKUP, D.PICKED_UP, D.AT_DROPOFF, D.DELIVERED, D.CANCELED})
# Before pickup the merchant can still cancel, and an operator can still hand it to another driver.
BEFORE_PICKUP = frozenset({D.UNASSIGNED, D.ASSIGNED, D.AT_PICKUP})
REASSIGNABLE = frozenset({D.UNASSIGNED, D.ASSIGNED})

CANONICAL: Mapping[DriverStatus, S] = {
    D.UNASSIGNED: S.PENDING_DRIVER_CONFIRMATION,
    D.ASSIGNED: S.ENROUTE_TO_PICKUP,
    D.AT_PICKUP: S.ARRIVED_AT_PICKUP,
    D.PICKED_UP: S.ENROUTE_TO_DROPOFF,
    D.AT_DROPOFF: S.ARRIVED_AT_DROPOFF,
    D.DELIVERED: S.COMPLETED,
}

CANCELED_BY_MERCHANT = "merchant"
CANCELED_BY_DRIVER = "driver"


def canonical(status: DriverStatus, *, canceled_by: str | None = None, picked_up: bool = False) -> S:
    """The canonical status: a merchant cancel is merchant_canceled; a driver gives up before or after pickup."""
    if status is not D.CANCELED:
        return CANONICAL[status]
    if canceled_by == CANCELED_BY_MERCHANT:
        return S.MERCHANT_CANCELED
    return S.FAILED_TO_DELIVER if picked_up else S.FAILED_TO_PICKUP


class TransitionRefused(ValueError):
    """A status change the lifecycle does not allow (backwards, or after the end)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_report(current: DriverStatus, reported: DriverStatus) -> None:
    """Raise TransitionRefused unless a driver may report `reported` while at `current`.

    Repeating the current status is allowed (it carries a new location or ETA).
    """
    if current in TERMINAL:
        raise TransitionRefused("delivery_finished", f"the delivery is already {current.value}")
    if current is D.UNASSIGNED:
        raise TransitionRefused("not_assigned", "the delivery has no driver yet")
    if reported is D.CANCELED:
        return
    if PROGRESS[reported] < PROGRESS[current]:
        raise TransitionRefused("status_backwards", f"cannot go from {current.value} back to {reported.value}")
