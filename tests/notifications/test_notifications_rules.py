"""Unit tests of the pure rules: which kinds an event sends, updates and their throttle, contacts and masking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderstream.notifications import domain
from orderstream.notifications.domain import Kind, Told, UpdateRules

T0 = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
RULES = UpdateRules(eta_change=timedelta(minutes=15), interval=timedelta(minutes=10), max_updates=3)


@pytest.mark.parametrize(
    ("fulfillment", "status", "kinds"),
    [
        ("pickup", "ready_for_pickup", [Kind.READY_FOR_PICKUP]),
        ("curbside", "ready_for_pickup", [Kind.READY_FOR_PICKUP]),
        ("delivery", "ready_for_pickup", []),  # waiting for the courier is not news for the customer
        ("delivery", "out_for_delivery", []),  # dispatched orders speak through courier events (with the ETA)
        ("merchant_managed_delivery", "out_for_delivery", [Kind.OUT_FOR_DELIVERY]),
        ("delivery", "completed", [Kind.DELIVERED]),
        ("pickup", "completed", []),
        ("pickup", "canceled", [Kind.CANCELED]),
        ("delivery", "failed", [Kind.DELIVERY_PROBLEM]),
        ("dine_in", "failed", [Kind.CANCELED]),
        ("delivery", "preparing", []),
    ],
)
def test_order_status_kinds(fulfillment: str, status: str, kinds: list[Kind]) -> None:
    assert domain.kinds_for_order_status(fulfillment, status) == kinds


@pytest.mark.parametrize(
    ("status", "has_courier", "kinds"),
    [
        ("pending_driver_confirmation", False, []),
        ("enroute_to_pickup", False, []),  # no courier named yet: nothing to say
        ("enroute_to_pickup", True, [Kind.COURIER_ASSIGNED]),
        ("arrived_at_pickup", True, [Kind.COURIER_ASSIGNED]),
        ("enroute_to_dropoff", True, [Kind.OUT_FOR_DELIVERY]),
        ("completed", True, [Kind.DELIVERED]),
        ("failed_to_deliver", True, [Kind.DELIVERY_PROBLEM]),
        ("returned", False, [Kind.DELIVERY_PROBLEM]),
        ("failed_to_assign_driver", False, []),  # dispatch tries another provider; the order's failure tells later
    ],
)
def test_delivery_status_kinds(status: str, has_courier: bool, kinds: list[Kind]) -> None:
    assert domain.kinds_for_delivery_status(status, has_courier=has_courier) == kinds


def _told(**kw: object) -> Told:
    values: dict[str, object] = {"dropoff_eta": T0, "attempt_id": 1, "at": None, "updates": 0, "delayed_sent": False}
    values.update(kw)
    return Told(**values)  # type: ignore[arg-type]


def test_small_eta_moves_send_nothing() -> None:
    eta = T0 + timedelta(minutes=14)
    assert domain.decide_update(_told(), dropoff_eta=eta, attempt_id=1, has_courier=True, now=T0, rules=RULES) is None


def test_first_big_slip_is_a_delay_then_updates() -> None:
    later = T0 + timedelta(minutes=20)
    decision = domain.decide_update(_told(), dropoff_eta=later, attempt_id=1, has_courier=True, now=T0, rules=RULES)
    assert decision == (Kind.DELAYED, "eta_later")
    told = _told(dropoff_eta=later, at=T0, updates=1, delayed_sent=True)
    much_later = T0 + timedelta(minutes=40)
    assert (
        domain.decide_update(told, dropoff_eta=much_later, attempt_id=1, has_courier=True, now=T0, rules=RULES) is None
    )
    after = T0 + timedelta(minutes=11)
    decision = domain.decide_update(
        told, dropoff_eta=much_later, attempt_id=1, has_courier=True, now=after, rules=RULES
    )
    assert decision == (Kind.UPDATE, "eta_later")


def test_earlier_eta_is_an_update() -> None:
    sooner = T0 - timedelta(minutes=20)
    decision = domain.decide_update(_told(), dropoff_eta=sooner, attempt_id=1, has_courier=True, now=T0, rules=RULES)
    assert decision == (Kind.UPDATE, "eta_earlier")


def test_redispatch_with_a_new_courier_is_an_update() -> None:
    decision = domain.decide_update(_told(), dropoff_eta=T0, attempt_id=2, has_courier=True, now=T0, rules=RULES)
    assert decision == (Kind.UPDATE, "redispatch")
    assert domain.decide_update(_told(), dropoff_eta=T0, attempt_id=2, has_courier=False, now=T0, rules=RULES) is None


def test_updates_stop_at_the_maximum() -> None:
    told = _told(updates=3, at=T0 - timedelta(hours=1))
    later = T0 + timedelta(hours=1)
    assert domain.decide_update(told, dropoff_eta=later, attempt_id=1, has_courier=True, now=T0, rules=RULES) is None


def test_nothing_told_yet_means_no_update() -> None:
    told = _told(dropoff_eta=None, attempt_id=None)
    later = T0 + timedelta(hours=1)
    assert domain.decide_update(told, dropoff_eta=later, attempt_id=5, has_courier=True, now=T0, rules=RULES) is None


def test_contacts_and_masks() -> None:
    assert domain.sms_recipient("+14155550142", "+14155550142") == ("+14155550142", None)
    assert domain.sms_recipient(None, "555-1234") == (None, "invalid_phone")
    assert domain.sms_recipient(None, None) == (None, "no_phone")
    assert domain.sms_recipient("+1415555", None) == (None, "invalid_phone")
    assert domain.email_recipient("jane@example.com") == ("jane@example.com", None)
    assert domain.email_recipient("jane@localhost") == (None, "invalid_email")
    assert domain.email_recipient(None) == (None, "no_email")
    assert domain.mask_phone("+14155550142") == "+1********42"
    assert domain.mask_email("jane.doe@example.com") == "j***@example.com"
    assert domain.contact_hash("Jane@Example.com ") == domain.contact_hash("jane@example.com")
    assert domain.redact("twilio 400: +14155550142 is bad", "+14155550142") == "twilio 400: [redacted] is bad"


def test_courier_display() -> None:
    courier = {"name": "Dana Driver", "vehicle_make": "Toyota", "vehicle_model": "Prius", "vehicle_color": "blue"}
    assert domain.first_name(courier["name"]) == "Dana"
    assert domain.vehicle_text(courier) == "blue Toyota Prius"
    assert domain.vehicle_text({"vehicle_type": "bicycle"}) == "bicycle"
    assert domain.vehicle_text(None) is None


def test_only_statuses_that_can_tell_something_are_planned() -> None:
    from orderstream.deliveries.protocol import DeliveryStatus

    silent = {s.value for s in DeliveryStatus if not domain.delivery_status_may_notify(s.value)}
    assert silent == {"pending", "pending_driver_confirmation", "failed_to_assign_driver", "merchant_canceled"}
    for status in silent:  # the planner's own rules queue nothing for them, with or without a courier
        assert domain.kinds_for_delivery_status(status, has_courier=True) == []
        assert status not in domain.COURIER_STATES | domain.ON_THE_WAY_STATES
