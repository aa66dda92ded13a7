"""Parsing and mapping of POS events (pure): envelopes, timestamps, paths, totals, phones, hashes, cancels."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orderstream.pos import mapping, schemas
from orderstream.pos.ratelimit import RateLimiter, retry_after_header
from orderstream.pos.schemas import EventType, InvalidEvent, OrderIn
from tests.pos_helpers import DOC_ORDER_CANCELED, DOC_ORDER_CREATED, DOC_STATUS_UPDATED, current_order, legacy_order

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def parse(event: dict[str, Any]) -> tuple[schemas.Envelope, OrderIn]:
    envelope = schemas.unwrap(event)
    return envelope, schemas.validate(OrderIn, envelope)


def paths(event: Any, model: type[schemas.BaseModel] = OrderIn) -> dict[str, str]:
    with pytest.raises(InvalidEvent) as err:
        schemas.validate(model, schemas.unwrap(event))
    return {p.path: p.code for p in err.value.problems}


def test_the_three_doc_payloads_unwrap() -> None:
    created = schemas.unwrap(json.loads(DOC_ORDER_CREATED.read_bytes()))
    status = schemas.unwrap(json.loads(DOC_STATUS_UPDATED.read_bytes()))
    canceled = schemas.unwrap(json.loads(DOC_ORDER_CANCELED.read_bytes()))
    assert (created.kind, created.event, created.prefix) == ("legacy", EventType.ORDER_CREATED, "data.order")
    assert schemas.validate(schemas.StatusUpdateIn, status).status == "ready_for_pickup"
    cancel = schemas.validate(schemas.CancelIn, canceled)
    assert (cancel.pos_order_id, cancel.reason) == ("pos_order_123", "Customer requested cancellation")


def test_both_envelopes_map_to_the_same_order() -> None:
    _, legacy = parse(legacy_order("p1"))
    _, current = parse(current_order("p1"))
    assert legacy.pos_order_id == current.pos_order_id == "p1"
    assert legacy.delivery_address == current.delivery_address
    assert legacy.subtotal == 2400
    assert current.subtotal == 2600
    assert legacy.customer is not None
    assert legacy.customer.phone == "+1234567890"
    assert current.customers[0].id == "customer_1"


def test_envelope_kinds_and_event_aliases() -> None:
    assert schemas.unwrap({"type": "order.updated", "object": {}}).event is EventType.ORDER_STATUS_UPDATED
    location = schemas.unwrap({"event": "location.status.updated", "data": {"location": {"location_id": "l"}}})
    assert (location.prefix, location.obj) == ("data.location", {"location_id": "l"})
    with pytest.raises(InvalidEvent) as err:
        schemas.unwrap({"type": "nope", "object": "x"})
    assert [(p.path, p.code) for p in err.value.problems] == [("type", "unknown_event"), ("object", "dict_type")]


def test_problem_paths_follow_the_envelope() -> None:
    legacy = legacy_order()
    legacy["data"]["order"]["line_items"][0]["modifiers"][0]["quantity"] = 0
    del legacy["data"]["order"]["provider_id"]
    assert paths(legacy) == {
        "data.order.provider_id": "missing",
        "data.order.line_items[0].modifiers[0].quantity": "greater_than_equal",
    }
    current = current_order()
    del current["object"]["source_order_id"]
    current["object"]["delivery_address"] = {"zip": "1"}
    assert paths(current) == {
        "object.source_order_id": "missing",
        "object.delivery_address.street": "missing",
        "object.delivery_address.city": "missing",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1699564800000, datetime(2023, 11, 9, 21, 20, tzinfo=UTC)),
        ("2023-11-09T21:20:00Z", datetime(2023, 11, 9, 21, 20, tzinfo=UTC)),
        ("2023-11-09T13:20:00-08:00", datetime(2023, 11, 9, 21, 20, tzinfo=UTC)),
        ("2023-11-09T22:20:00.000+01:00", datetime(2023, 11, 9, 21, 20, tzinfo=UTC)),
    ],
)
def test_timestamps_are_epoch_ms_or_iso_with_offset(value: Any, expected: datetime) -> None:
    assert schemas.parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (1699564800, "invalid_timestamp"),  # seconds, not milliseconds
        ("2023-11-09T21:20:00", "timestamp_without_offset"),
        ("2023-11-09", "timestamp_without_offset"),
        ("noon", "invalid_timestamp"),
        (1.5e12, "invalid_timestamp"),
        (True, "invalid_timestamp"),
        ([], "invalid_timestamp"),
        (-1, "invalid_timestamp"),
    ],
)
def test_other_timestamps_are_refused(value: Any, code: str) -> None:
    assert paths(current_order(placed_at=value)) == {"object.placed_at": code}


def test_subtotal_counts_modifiers_per_unit_and_nested() -> None:
    _, order = parse(
        current_order(
            line_items=[
                {
                    "name": "Burger",
                    "quantity": 2,
                    "price_amount": 1000,
                    "modifiers": [
                        {"name": "Cheese", "quantity": 2, "price_amount": 50},
                        {"name": "Combo", "price_amount": 300, "modifiers": [{"name": "Large", "price_amount": 75}]},
                    ],
                },
                {"name": "Soda", "quantity": 1, "price_amount": 250},
            ],
            currency="usd",
        )
    )
    assert mapping.computed_subtotal(order) == 2 * (1000 + 2 * 50 + (300 + 75)) + 250


def test_totals_that_do_not_add_up_are_warnings() -> None:
    envelope, doc = parse(json.loads(DOC_ORDER_CREATED.read_bytes()))
    [warning] = mapping.total_warnings(doc, envelope.prefix)
    assert warning["code"] == "subtotal_mismatch"
    assert warning["path"] == "data.order.subtotal_amount"
    envelope, order = parse(current_order(total=9999, driver_tip=100))
    [warning] = mapping.total_warnings(order, envelope.prefix)
    assert (warning["code"], warning["expected"], warning["path"]) == (
        "total_mismatch",
        2600 + 208 + 100,
        "object.total",
    )
    _, fine = parse(current_order(total=2600 + 208 + 100 + 50, driver_tip=100, delivery_fee=50))
    assert mapping.total_warnings(fine, "object") == []


def test_phone_numbers_are_normalized_when_valid() -> None:
    assert mapping.normalize_phone("+1 (415) 555-0123", None) == "+14155550123"
    assert mapping.normalize_phone("(415) 555-0123", "US") == "+14155550123"
    assert mapping.normalize_phone("030 901820", "DE") == "+4930901820"
    assert mapping.normalize_phone("+1234567890", "US") is None
    assert mapping.normalize_phone("call me", "US") is None


def test_the_docs_order_drafts_with_both_warnings_and_the_phone_as_given() -> None:
    envelope, order = parse(json.loads(DOC_ORDER_CREATED.read_bytes()))
    draft = mapping.draft_order(order, prefix=envelope.prefix, region="US", prep_time_minutes=20)
    assert [w["code"] for w in draft.warnings] == ["subtotal_mismatch", "invalid_phone"]
    assert draft.values["customer_phone"] == "+1234567890"
    assert draft.values["customer_phone_e164"] is None
    assert draft.values["currency"] == "usd"
    assert draft.values["prep_time_minutes"] == 20
    assert draft.values["status"] == "received"
    assert draft.line_items[0]["modifiers"][0] == {
        "provider_id": "modifier_101",
        "name": "Extra Cheese",
        "quantity": 1,
        "price_amount": 100,
        "price_currency": "usd",
        "modifiers": [],
    }


def test_content_hash_ignores_idempotency_key_and_placed_at_only() -> None:
    _, order = parse(current_order("h1"))
    _, resent = parse(current_order("h1", idempotency_key="other", placed_at=1700000000000))
    _, changed = parse(current_order("h1", special_instructions="Leave at door"))
    _, more = parse(current_order("h1", tax=209))
    assert mapping.content_hash(order) == mapping.content_hash(resent)
    assert mapping.content_hash(order) != mapping.content_hash(changed)
    assert mapping.content_hash(order) != mapping.content_hash(more)


def test_meaning_checks() -> None:
    def problems(**overrides: Any) -> dict[str, str]:
        envelope, order = parse(current_order(**overrides))
        return {p.path: p.code for p in mapping.check_order(order, prefix=envelope.prefix, now=NOW, max_days=30)}

    assert problems() == {}
    assert problems(requested_for=(NOW + timedelta(days=30)).isoformat()) == {}
    assert problems(requested_for=(NOW - timedelta(seconds=30)).isoformat()) == {}  # within the clock slack
    assert problems(requested_for=(NOW - timedelta(minutes=2)).isoformat()) == {
        "object.requested_for": "requested_for_in_past"
    }
    assert problems(requested_for=(NOW + timedelta(days=30, seconds=1)).isoformat()) == {
        "object.requested_for": "requested_for_too_far"
    }
    assert problems(is_future_order=True) == {"object.requested_for": "missing"}
    assert problems(delivery_address=None) == {"object.delivery_address": "delivery_address_required"}
    assert problems(delivery_address=None, fulfillment_type="merchant_managed_delivery") == {
        "object.delivery_address": "delivery_address_required"
    }
    assert problems(delivery_address=None, fulfillment_type="curbside") == {}
    items = [{"name": "x", "quantity": 1, "price_amount": 1}]
    assert problems(line_items=items) == {"object.currency": "missing"}
    assert problems(line_items=items, currency="EUR") == {}


@pytest.mark.parametrize(
    ("text", "reason", "source"),
    [
        ("Customer requested cancellation", "customer_requested", "customer"),
        ("customer no-show", "customer_no_show", "customer"),
        ("Item out of stock", "item_out_of_stock", "restaurant"),
        ("We are closing early", "store_closed", "restaurant"),
        ("kitchen too busy", "kitchen_too_busy", "restaurant"),
        ("No driver available", "driver_unavailable", "driver"),
        ("duplicate_order", "duplicate_order", "restaurant"),
        ("Payment declined", "payment_failed", "restaurant"),
        ("something else entirely", "other", "restaurant"),
        (None, "reason_not_provided", "restaurant"),
        ("   ", "reason_not_provided", "restaurant"),
    ],
)
def test_free_text_cancel_reasons_are_normalized_and_kept(text: str | None, reason: str, source: str) -> None:
    assert mapping.cancellation(reason_text=text, cancel_reason=None, cancel_source=None) == {
        "cancel_reason": reason,
        "cancel_source": source,
        "cancel_note": text,
    }


def test_explicit_cancel_codes_win() -> None:
    stored = mapping.cancellation(reason_text="rain", cancel_reason="weather_conditions", cancel_source="stream")
    assert stored == {"cancel_reason": "weather_conditions", "cancel_source": "stream", "cancel_note": "rain"}


def test_rate_limiter_refills_per_partner() -> None:
    clock = [0.0]
    limiter = RateLimiter(clock=lambda: clock[0])
    assert [limiter.acquire(1, 2) for _ in range(2)] == [None, None]
    wait = limiter.acquire(1, 2)
    assert wait == pytest.approx(30.0)
    assert limiter.acquire(2, 2) is None  # another partner has its own bucket
    clock[0] = 30.0
    assert limiter.acquire(1, 2) is None
    assert limiter.acquire(1, 2) == pytest.approx(30.0)
    assert retry_after_header(0.2) == "1"
    assert retry_after_header(29.1) == "30"
