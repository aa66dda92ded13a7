"""Pure dashboard rules: late orders, masks, day bounds, password hashing and token comparison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderstream.dashboard import board, late, masking, security
from orderstream.orders.domain import FulfillmentType, OrderStatus

NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
LEAD = timedelta(minutes=10)


def times(**kw: object) -> late.OrderTimes:
    base: dict[str, object] = {
        "fulfillment_type": FulfillmentType.DELIVERY,
        "status": OrderStatus.PREPARING,
        "delivery_status": None,
        "ready_at": NOW + timedelta(minutes=30),
        "promised_at": None,
    }
    base.update(kw)
    return late.OrderTimes(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ready_in", "delivery_status", "expected"),
    [
        (30, None, []),  # plenty of time
        (11, None, []),  # just outside the lead
        (10, None, ["no_courier"]),  # exactly the lead
        (-5, "pending_driver_confirmation", ["no_courier"]),  # still searching
        (5, "enroute_to_pickup", []),  # a courier is on the way
    ],
)
def test_no_courier_n_minutes_before_pickup(ready_in: int, delivery_status: str | None, expected: list[str]) -> None:
    t = times(ready_at=NOW + timedelta(minutes=ready_in), delivery_status=delivery_status)
    assert late.late_reasons(t, now=NOW, courier_lead=LEAD) == expected


def test_courier_assignment_from_the_attempt_wins_over_the_order_column() -> None:
    t = times(ready_at=NOW, delivery_status=None, courier_assigned=True)
    assert late.late_reasons(t, now=NOW, courier_lead=LEAD) == []


def test_pickup_eta_after_ready_time_until_picked_up() -> None:
    eta_late = times(
        ready_at=NOW + timedelta(minutes=20),
        pickup_eta=NOW + timedelta(minutes=25),
        delivery_status="enroute_to_pickup",
    )
    picked = times(ready_at=NOW - timedelta(minutes=20), pickup_eta=NOW, delivery_status="enroute_to_dropoff")
    assert late.late_reasons(eta_late, now=NOW, courier_lead=LEAD) == ["pickup_eta_after_ready"]
    assert late.late_reasons(picked, now=NOW, courier_lead=LEAD) == []


def test_delivery_past_promised_time() -> None:
    t = times(
        status=OrderStatus.OUT_FOR_DELIVERY,
        delivery_status="enroute_to_dropoff",
        ready_at=NOW - timedelta(minutes=40),
        promised_at=NOW - timedelta(minutes=1),
    )
    assert late.late_reasons(t, now=NOW, courier_lead=LEAD) == ["delivery_overdue"]


def test_final_orders_and_pickup_orders_without_couriers_are_never_late_for_a_courier() -> None:
    done = times(status=OrderStatus.COMPLETED, ready_at=NOW - timedelta(hours=1), promised_at=NOW - timedelta(hours=1))
    pickup = times(fulfillment_type=FulfillmentType.PICKUP, ready_at=NOW - timedelta(minutes=5))
    assert late.late_reasons(done, now=NOW, courier_lead=LEAD) == []
    assert late.late_reasons(pickup, now=NOW, courier_lead=LEAD) == []


def test_ready_time_of_asap_and_future_orders() -> None:
    assert late.ready_time(placed_at=NOW, prep_time_minutes=15, requested_for=None, is_future=False) == NOW + timedelta(
        minutes=15
    )
    later = NOW + timedelta(hours=3)
    assert late.ready_time(placed_at=NOW, prep_time_minutes=15, requested_for=later, is_future=True) == later


def test_local_day_bounds_follow_the_location_time_zone() -> None:
    # 18:00 UTC on Nov 27 is 10:00 in Los Angeles (PST, UTC-8) and 03:00 on Nov 28 in Tokyo
    la_start, la_end = board.local_day_bounds("America/Los_Angeles", NOW)
    tokyo_start, _ = board.local_day_bounds("Asia/Tokyo", NOW)
    assert la_start == datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
    assert la_end - la_start == timedelta(hours=24)
    assert tokyo_start == datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def test_a_day_with_a_clock_change_has_its_real_length() -> None:
    start, end = board.local_day_bounds("America/Los_Angeles", datetime(2026, 11, 1, 20, 0, tzinfo=UTC))
    assert end - start == timedelta(hours=25)


@pytest.mark.parametrize(
    ("raw", "masked"),
    [("+14155550123", "•••• ••23"), ("12", "••••"), (None, "—")],
)
def test_phone_mask(raw: str | None, masked: str) -> None:
    assert masking.mask_phone(raw) == masked


def test_email_and_address_masks_hide_what_identifies() -> None:
    assert masking.mask_email("jane.doe@example.com") == "j•••@•••.com"
    assert masking.mask_address({"street": "123 Main St", "city": "Anytown"}) == "••• Anytown"
    assert "123 Main" not in masking.mask_address({"street": "123 Main St", "city": "Anytown"})


def test_short_name_on_cards() -> None:
    assert board.short_name("Jane van Doe") == "Jane D."
    assert board.short_name("Cher") == "Cher"
    assert board.short_name(None) == "guest"


def test_passwords_hash_with_argon2_and_verify() -> None:
    hashed = security.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert security.verify_password(hashed, "correct horse battery")
    assert not security.verify_password(hashed, "correct horse batterY")
    assert not security.verify_password(None, "correct horse battery")
    assert not security.verify_password("not a hash", "x")


def test_token_comparison_never_matches_missing_values() -> None:
    assert security.tokens_equal("abc", "abc")
    assert not security.tokens_equal("abc", "abd")
    assert not security.tokens_equal("", "")
    assert not security.tokens_equal(None, None)
