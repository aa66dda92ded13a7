"""Every (fulfillment type, from, to) triple of the order state machine, checked against the rules."""

from __future__ import annotations

import itertools

import pytest

from orderstream.orders.domain import (
    STATES_BY_FULFILLMENT,
    FulfillmentType,
    IllegalTransition,
    OrderStatus,
    can_transition,
    initial_status,
    is_dispatched,
    transition,
)

S = OrderStatus
PROGRESS = [S.SCHEDULED, S.RECEIVED, S.PREPARING, S.READY_FOR_PICKUP, S.OUT_FOR_DELIVERY, S.COMPLETED]
FINAL = {S.COMPLETED, S.CANCELED, S.FAILED}
DELIVERY_TYPES = {FulfillmentType.DELIVERY, FulfillmentType.MERCHANT_MANAGED_DELIVERY}


def expected(ft: FulfillmentType, current: OrderStatus, target: OrderStatus) -> bool:
    """The rules in words: forward only (skips allowed), cancel/fail from any open state, finals are final."""
    if ft not in DELIVERY_TYPES and (S.OUT_FOR_DELIVERY in (current, target) or S.FAILED in (current, target)):
        return False
    if current in FINAL or current == target:
        return False
    if target in (S.CANCELED, S.FAILED):
        return True
    return PROGRESS.index(target) > PROGRESS.index(current)


TRIPLES = list(itertools.product(FulfillmentType, OrderStatus, OrderStatus))


@pytest.mark.parametrize(("ft", "current", "target"), TRIPLES, ids=[f"{f}:{c}->{t}" for f, c, t in TRIPLES])
def test_every_pair_follows_the_rules(ft: FulfillmentType, current: OrderStatus, target: OrderStatus) -> None:
    assert can_transition(ft, current, target) is expected(ft, current, target)
    if current == target and current in STATES_BY_FULFILLMENT[ft]:
        assert not transition(ft, current, target).changed  # a repeat is a no-op, never an error
    elif expected(ft, current, target):
        assert transition(ft, current, target).changed
    else:
        with pytest.raises(IllegalTransition) as err:
            transition(ft, current, target)
        assert str(current) in str(err.value)
        assert str(target) in str(err.value)


def test_pickup_orders_have_no_delivery_states() -> None:
    assert S.OUT_FOR_DELIVERY not in STATES_BY_FULFILLMENT[FulfillmentType.PICKUP]
    assert S.OUT_FOR_DELIVERY in STATES_BY_FULFILLMENT[FulfillmentType.DELIVERY]


def test_future_orders_start_scheduled() -> None:
    assert initial_status(is_future=True) is S.SCHEDULED
    assert initial_status(is_future=False) is S.RECEIVED


def test_only_delivery_orders_are_dispatched() -> None:
    # merchant_managed_delivery goes to the location's own drivers only (deliveries.policy.for_fulfillment)
    dispatched = [ft for ft in FulfillmentType if is_dispatched(ft)]
    assert dispatched == [FulfillmentType.DELIVERY, FulfillmentType.MERCHANT_MANAGED_DELIVERY]


def test_illegal_transition_says_why() -> None:
    with pytest.raises(IllegalTransition, match="completed is final"):
        transition(FulfillmentType.DELIVERY, S.COMPLETED, S.PREPARING)
    with pytest.raises(IllegalTransition, match="backwards"):
        transition(FulfillmentType.DELIVERY, S.READY_FOR_PICKUP, S.PREPARING)
