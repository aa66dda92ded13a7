"""Pure dispatch rules: ranking quotes within caps, monotonic statuses, what the order follows, timings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderstream.deliveries import policy as rules
from orderstream.deliveries.protocol import DeliveryStatus as DS
from orderstream.deliveries.protocol import Quote
from orderstream.orders.domain import FulfillmentType, OrderStatus

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def quote(provider: str, fee: int, pickup_minutes: float | None) -> Quote:
    eta = NOW + timedelta(minutes=pickup_minutes) if pickup_minutes is not None else None
    return Quote(provider, "x", "q", fee, "usd", eta, None, None)


QUOTES = [quote("a", 900, 20), quote("b", 700, 35), quote("c", 800, 10)]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (rules.Strategy.CHEAPEST, ["b", "c", "a"]),
        (rules.Strategy.FASTEST, ["c", "a", "b"]),
        (rules.Strategy.PREFERRED, ["a", "b", "c"]),
    ],
)
def test_rank_by_strategy(strategy: rules.Strategy, expected: list[str]) -> None:
    ranked, rejected = rules.rank_quotes(QUOTES, rules.Policy(("a", "b", "c"), strategy), now=NOW)
    assert [q.provider for q in ranked] == expected
    assert rejected == []


def test_caps_leave_quotes_out_with_a_reason() -> None:
    policy = rules.Policy(("a", "b", "c"), rules.Strategy.CHEAPEST, max_fee=850, max_pickup_eta_minutes=30)
    ranked, rejected = rules.rank_quotes(QUOTES, policy, now=NOW)
    assert [q.provider for q in ranked] == ["c"]
    assert [(r.provider, "fee" in r.reason) for r in rejected] == [("a", True), ("b", False)]


def test_ties_follow_the_preference_order_and_unknown_etas_rank_last() -> None:
    tied = [quote("b", 500, None), quote("a", 500, 5)]
    cheapest, _ = rules.rank_quotes(tied, rules.Policy(("a", "b")), now=NOW)
    assert [q.provider for q in cheapest] == ["a", "b"]
    fastest, _ = rules.rank_quotes(tied, rules.Policy(("b", "a"), rules.Strategy.FASTEST), now=NOW)
    assert [q.provider for q in fastest] == ["a", "b"]


def test_statuses_only_move_forward_and_finals_stay() -> None:
    assert rules.moves_forward(DS.PENDING, DS.ENROUTE_TO_PICKUP)
    assert not rules.moves_forward(DS.ENROUTE_TO_DROPOFF, DS.ARRIVED_AT_PICKUP)
    assert not rules.moves_forward(DS.ARRIVED_AT_PICKUP, DS.ARRIVED_AT_PICKUP)
    assert rules.moves_forward(DS.ARRIVED_AT_DROPOFF, DS.COMPLETED)
    assert rules.moves_forward(DS.ENROUTE_TO_PICKUP, DS.FAILED_TO_PICKUP)
    assert not rules.moves_forward(DS.COMPLETED, DS.RETURNED)
    assert not rules.moves_forward(DS.MERCHANT_CANCELED, DS.ENROUTE_TO_PICKUP)
    assert len({rules.rank(s) for s in DS if s not in rules.FINAL_STATUSES}) == 8


def test_the_order_follows_pickup_and_delivery() -> None:
    assert rules.order_status_for(DS.ENROUTE_TO_DROPOFF) is OrderStatus.OUT_FOR_DELIVERY
    assert rules.order_status_for(DS.COMPLETED) is OrderStatus.COMPLETED
    assert rules.order_status_for(DS.ARRIVED_AT_PICKUP) is None


@pytest.mark.parametrize(
    ("status", "by_us", "ending"),
    [
        (DS.COMPLETED, False, rules.Ending.DELIVERED),
        (DS.MERCHANT_CANCELED, False, rules.Ending.CANCELED),
        (DS.FAILED_TO_PICKUP, True, rules.Ending.CANCELED),
        (DS.FAILED_TO_ASSIGN_DRIVER, False, rules.Ending.NO_COURIER),
        (DS.FAILED_TO_PICKUP, False, rules.Ending.COURIER_CANCELED),
        (DS.FAILED_TO_DELIVER, False, rules.Ending.FAILED_AFTER_PICKUP),
        (DS.RETURNED, False, rules.Ending.RETURNED),
        (DS.ENROUTE_TO_PICKUP, False, None),
    ],
)
def test_endings(status: DS, by_us: bool, ending: rules.Ending | None) -> None:
    assert rules.ending_for(status, canceled_by_us=by_us) == ending


def test_future_timings() -> None:
    requested = NOW + timedelta(hours=2)
    assert rules.dispatch_at(requested, prep_minutes=20, travel_minutes=15) == requested - timedelta(minutes=35)
    assert rules.future_times(requested, travel_minutes=15) == (
        requested - timedelta(minutes=15),
        requested + timedelta(minutes=15),
    )


def test_phones_are_masked_and_ids_are_stable() -> None:
    assert rules.mask_phone("+16505550100") == "+*******0100"
    assert rules.mask_phone("123") == "***"
    assert rules.mask_phone(None) is None
    assert rules.mask_phone("+*******0100") == "+*******0100"  # masking twice keeps the last four digits
    assert rules.external_id("ord_1", 2) == "os-ord_1-2"


def test_a_merchant_managed_order_goes_to_own_drivers_only_and_waits_for_them() -> None:
    location = rules.Policy(
        allowed_providers=("doordash", "uber"), max_fee=500, max_pickup_eta_minutes=10,
        acceptance_timeout_seconds={"own_drivers": 30.0},
    )  # fmt: skip
    assert rules.for_fulfillment(location, FulfillmentType.DELIVERY) is location
    mine = rules.for_fulfillment(location, FulfillmentType.MERCHANT_MANAGED_DELIVERY)
    assert (mine.allowed_providers, mine.max_fee, mine.max_pickup_eta_minutes) == (("own_drivers",), None, None)
    # an operator's choice or a driver who gave up does not send it elsewhere; nobody times it out
    assert mine.candidates(only="doordash", exclude=["own_drivers"]) == ["own_drivers"]
    assert mine.acceptance_timeout("own_drivers", 300.0) is None
    assert location.candidates(only=None, exclude=["doordash"]) == ["uber"]
    assert location.candidates(only="own_drivers", exclude=[]) == ["own_drivers"]
    assert location.acceptance_timeout("own_drivers", 300.0) == 30.0
