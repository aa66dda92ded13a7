"""Pure parts of the own-drivers provider: status order and mapping, phone masking, ETAs, least-busy choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orderstream.deliveries.protocol import DeliveryStatus as S
from orderstream.deliveries.providers.own_drivers import mapping, statuses
from orderstream.deliveries.providers.own_drivers.mapping import Candidate
from orderstream.deliveries.providers.own_drivers.statuses import DriverStatus as D
from orderstream.deliveries.providers.own_drivers.statuses import TransitionRefused

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (D.UNASSIGNED, S.PENDING_DRIVER_CONFIRMATION),
        (D.ASSIGNED, S.ENROUTE_TO_PICKUP),
        (D.AT_PICKUP, S.ARRIVED_AT_PICKUP),
        (D.PICKED_UP, S.ENROUTE_TO_DROPOFF),
        (D.AT_DROPOFF, S.ARRIVED_AT_DROPOFF),
        (D.DELIVERED, S.COMPLETED),
    ],
)
def test_canonical_status(status: D, expected: S) -> None:
    assert statuses.canonical(status) is expected


def test_canceled_status_depends_on_who_and_when() -> None:
    assert statuses.canonical(D.CANCELED, canceled_by="merchant") is S.MERCHANT_CANCELED
    assert statuses.canonical(D.CANCELED, canceled_by="merchant", picked_up=True) is S.MERCHANT_CANCELED
    assert statuses.canonical(D.CANCELED, canceled_by="driver") is S.FAILED_TO_PICKUP
    assert statuses.canonical(D.CANCELED, canceled_by="driver", picked_up=True) is S.FAILED_TO_DELIVER


@pytest.mark.parametrize(
    ("current", "reported"),
    [
        (D.ASSIGNED, D.ASSIGNED),  # a location/ETA ping
        (D.ASSIGNED, D.AT_PICKUP),
        (D.ASSIGNED, D.PICKED_UP),  # skipping ahead
        (D.AT_PICKUP, D.CANCELED),
        (D.PICKED_UP, D.AT_DROPOFF),
        (D.AT_DROPOFF, D.DELIVERED),
        (D.AT_DROPOFF, D.CANCELED),
    ],
)
def test_reports_allowed(current: D, reported: D) -> None:
    statuses.check_report(current, reported)


@pytest.mark.parametrize(
    ("current", "reported", "code"),
    [
        (D.PICKED_UP, D.AT_PICKUP, "status_backwards"),
        (D.AT_DROPOFF, D.ASSIGNED, "status_backwards"),
        (D.DELIVERED, D.DELIVERED, "delivery_finished"),
        (D.CANCELED, D.PICKED_UP, "delivery_finished"),
        (D.UNASSIGNED, D.ASSIGNED, "not_assigned"),
    ],
)
def test_reports_refused(current: D, reported: D, code: str) -> None:
    with pytest.raises(TransitionRefused) as caught:
        statuses.check_report(current, reported)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("phone", "masked"),
    [("+14155550100", "+1******0100"), ("+447911123456", "+4*******3456"), ("0100", "****"), (None, None)],
)
def test_mask_phone(phone: str | None, masked: str | None) -> None:
    assert mapping.mask_phone(phone) == masked


def test_etas_from_prep_time_or_later_ready_time() -> None:
    eta = mapping.etas(now=NOW, prep_minutes=15, travel_minutes=20)
    assert (eta.pickup, eta.dropoff) == (NOW + timedelta(minutes=15), NOW + timedelta(minutes=35))
    later = NOW + timedelta(hours=2)
    eta = mapping.etas(now=NOW, prep_minutes=15, travel_minutes=20, pickup_ready_at=later)
    assert (eta.pickup, eta.dropoff) == (later, later + timedelta(minutes=20))
    earlier = NOW + timedelta(minutes=5)  # the kitchen cannot be faster than its prep time
    assert mapping.etas(now=NOW, prep_minutes=15, travel_minutes=0, pickup_ready_at=earlier).pickup == NOW + timedelta(
        minutes=15
    )


def test_least_busy_prefers_fewest_open_then_longest_idle() -> None:
    assert mapping.least_busy([]) is None
    one_hour_ago = NOW - timedelta(hours=1)
    candidates = [
        Candidate("drv_b", 2, one_hour_ago),
        Candidate("drv_a", 1, NOW),
        Candidate("drv_c", 1, one_hour_ago),
    ]
    assert mapping.least_busy(candidates) == "drv_c"
    assert mapping.least_busy([*candidates, Candidate("drv_d", 1, None)]) == "drv_d"  # never assigned yet


def _row(**overrides: Any) -> dict[str, Any]:
    row = {
        "id": "drd_1",
        "external_id": "os-ord_1-1",
        "status": "picked_up",
        "canceled_by": None,
        "cancel_reason": None,
        "picked_up_at": NOW,
        "fee": 300,
        "currency": "usd",
        "tip": 200,
        "pickup_eta": NOW,
        "dropoff_eta": NOW + timedelta(minutes=20),
        "latitude": 37.77,
        "longitude": -122.41,
        "proof_of_delivery": None,
        "updated_at": NOW,
        "driver_id": "drv_1",
        "version": 4,
    }
    return {**row, **overrides}


def test_snapshot_and_update_from_rows() -> None:
    driver = {"name": "Sam", "phone": "+14155550100", "vehicle": "e-bike"}
    update = mapping.update(_row(), driver)
    assert update.provider == "own_drivers"
    assert update.event_id == "drd_1:4"
    assert update.event_name == "driver.picked_up"
    snap = update.snapshot
    assert (snap.status, snap.provider_status, snap.provider_delivery_id) == (
        S.ENROUTE_TO_DROPOFF,
        "picked_up",
        "drd_1",
    )
    assert snap.courier is not None
    assert (snap.courier.name, snap.courier.phone, snap.courier.vehicle_type) == ("Sam", "+1******0100", "e-bike")
    assert (snap.courier.latitude, snap.courier.longitude) == (37.77, -122.41)
    unassigned = mapping.snapshot(_row(status="unassigned", driver_id=None, picked_up_at=None), None)
    assert unassigned.courier is None
    assert unassigned.status is S.PENDING_DRIVER_CONFIRMATION
