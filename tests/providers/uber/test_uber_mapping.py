"""Uber Direct pure mapping: golden request bodies, delivery windows, recorded responses, error classes, statuses."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orderstream.deliveries.protocol import DeliveryStatus, ProviderRejected, ProviderUnavailable
from orderstream.deliveries.providers.uber import mapping
from orderstream.deliveries.providers.uber.openapi import load_spec
from orderstream.deliveries.providers.uber.statuses import canonical_status
from tests.providers.uber.uber_helpers import FIXED_NOW, fixture, make_request

NOW = FIXED_NOW


# --- golden request bodies -----------------------------------------------------------------------


def test_quote_body_matches_golden_file() -> None:
    assert mapping.quote_body(make_request(), now=NOW) == fixture("request_quote_asap.json")


def test_asap_delivery_body_matches_golden_file() -> None:
    body = mapping.delivery_body(make_request(), quote_id="dqt_6gQ2dt31TjiOPfwux-NCXg", now=NOW)
    assert body == fixture("request_delivery_asap.json")
    assert not any(key.endswith("_dt") for key in body)  # ASAP = none of the window fields


def test_scheduled_delivery_body_matches_golden_file() -> None:
    request = make_request(
        pickup_ready_at=NOW + timedelta(hours=2),
        dropoff_deadline=NOW + timedelta(hours=3),
        tip=0,
        items=(),
        external_store_id="store_456",
    )
    assert mapping.delivery_body(request, quote_id=None, now=NOW) == fixture("request_delivery_scheduled.json")


def test_update_body_matches_golden_file() -> None:
    assert mapping.update_body(tip=500) == fixture("request_update_tip.json")


def test_addresses_are_json_encoded_strings() -> None:
    body = mapping.delivery_body(make_request(), quote_id=None, now=NOW)
    dropoff = json.loads(body["dropoff_address"])
    assert dropoff == {
        "street_address": ["30 Lincoln Center Plaza", "Apt 5"],
        "city": "New York",
        "state": "NY",
        "zip_code": "10023",
        "country": "US",
    }


def test_idempotency_key_external_id_and_manifest_reference() -> None:
    request = make_request()
    body = mapping.delivery_body(request, quote_id=None, now=NOW)
    assert body["idempotency_key"] == request.external_id
    assert body["external_id"] == request.external_id
    assert body["manifest_reference"] == request.order_id
    assert "quote_id" not in body


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+12125550100", "US", "+12125550100"),  # already E.164
        ("(212) 555-0199", "US", "+12125550199"),  # national format, country from the address
        ("020 7946 0958", "GB", "+442079460958"),  # another country's national format
        ("+33 1 23 45 67 89", "US", "+33123456789"),  # international with spaces
    ],
)
def test_phone_numbers_become_e164(raw: str, country: str, expected: str) -> None:
    assert mapping.phone_e164(raw, country=country, field="dropoff_phone_number") == expected


def test_unreadable_phone_is_a_final_invalid_params() -> None:
    with pytest.raises(mapping.UberRejected) as info:
        mapping.delivery_body(
            make_request(dropoff_contact=make_request().dropoff_contact.__class__("A", "call me")),
            quote_id=None,
            now=NOW,
        )
    assert info.value.code == "invalid_params"
    assert not info.value.retryable


def test_cash_orders_are_refused_before_calling_uber() -> None:
    with pytest.raises(ProviderRejected) as info:
        mapping.quote_body(make_request(cash_to_collect=2750), now=NOW)
    assert info.value.code == "cash_not_supported"


def test_empty_manifest_gets_one_line_and_long_notes_are_cut() -> None:
    body = mapping.delivery_body(make_request(items=(), dropoff_instructions="x" * 400), quote_id=None, now=NOW)
    assert body["manifest_items"] == [
        {"name": "Order ord_01hx0000000000000000000000", "quantity": 1, "size": "small", "price": 2750}
    ]
    assert len(body["dropoff_notes"]) == 280


def test_zero_tip_is_not_sent() -> None:
    assert "tip" not in mapping.delivery_body(make_request(tip=0), quote_id=None, now=NOW)


# --- delivery windows ----------------------------------------------------------------------------


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _assert_six_rules(fields: dict[str, str], now: datetime) -> None:
    pr, pd = _dt(fields["pickup_ready_dt"]), _dt(fields["pickup_deadline_dt"])
    dr, dd = _dt(fields["dropoff_ready_dt"]), _dt(fields["dropoff_deadline_dt"])
    assert now <= pr < now + timedelta(days=30)  # rule 1
    assert pd >= pr + timedelta(minutes=10)  # rule 2
    assert pd >= now + timedelta(minutes=20)  # rule 3
    assert dr <= pd  # rule 4
    assert dd >= dr + timedelta(minutes=20)  # rule 5
    assert dd >= pd  # rule 6


M = timedelta(minutes=1)


@pytest.mark.parametrize(
    "times",
    [
        {"pickup_ready_at": NOW + 120 * M},  # only a ready time: everything else derived
        {"pickup_ready_at": NOW + 5 * M},  # soon: the pickup deadline must still be >= now + 20 min
        {"pickup_ready_at": NOW - 10 * M},  # already past (a late dispatch): moved to now + 1 min
        {"pickup_ready_at": NOW + 60 * M, "pickup_deadline": NOW + 62 * M},  # window too small: widened
        {"pickup_ready_at": NOW + 60 * M, "dropoff_ready_at": NOW + 200 * M},  # dropoff ready after deadline
        {"pickup_ready_at": NOW + 60 * M, "dropoff_deadline": NOW + 65 * M},  # dropoff deadline too early
        {"dropoff_deadline": NOW + 90 * M},  # only a dropoff deadline
        {"dropoff_ready_at": NOW + 45 * M},  # only a dropoff ready time
        {"pickup_ready_at": NOW + 29 * 24 * 60 * M},  # 29 days ahead: allowed
    ],
)
def test_scheduled_windows_always_satisfy_uber_six_rules(times: dict[str, datetime]) -> None:
    fields = mapping.window_fields(make_request(**times), now=NOW)
    assert set(fields) == {"pickup_ready_dt", "pickup_deadline_dt", "dropoff_ready_dt", "dropoff_deadline_dt"}
    _assert_six_rules(fields, NOW)


def test_windows_are_only_widened_never_moved_earlier() -> None:
    ready = NOW + 60 * M
    fields = mapping.window_fields(make_request(pickup_ready_at=ready, pickup_deadline=ready + 25 * M), now=NOW)
    assert _dt(fields["pickup_ready_dt"]) == ready
    assert _dt(fields["pickup_deadline_dt"]) == ready + 25 * M


def test_asap_sends_no_window_fields() -> None:
    assert mapping.window_fields(make_request(), now=NOW) == {}


def test_pickup_more_than_30_days_ahead_is_final() -> None:
    with pytest.raises(mapping.UberRejected) as info:
        mapping.window_fields(make_request(pickup_ready_at=NOW + timedelta(days=31)), now=NOW)
    assert info.value.code == "pickup_ready_too_late"


def test_times_are_rfc3339_utc() -> None:
    local = datetime(2026, 3, 2, 9, 0, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    fields = mapping.window_fields(make_request(pickup_ready_at=local + timedelta(hours=5)), now=NOW)
    assert fields["pickup_ready_dt"] == "2026-03-02T14:00:00Z"


# --- recorded responses --------------------------------------------------------------------------


def test_quote_response_parses() -> None:
    request = make_request()
    quote = mapping.parse_quote(fixture("response_quote.json"), request)
    assert quote.provider == "uber"
    assert quote.quote_id == "dqt_6gQ2dt31TjiOPfwux-NCXg"
    assert quote.fee == 600
    assert quote.currency == "usd"
    assert quote.external_id == request.external_id
    assert quote.expires_at == datetime(2023, 4, 6, 19, 15, 37, 887000, tzinfo=UTC)
    assert quote.dropoff_eta == datetime(2023, 4, 6, 19, 34, 22, tzinfo=UTC)
    assert quote.pickup_eta == datetime(2023, 4, 6, 19, 24, 37, 887000, tzinfo=UTC)  # created + pickup_duration


def test_pending_delivery_parses() -> None:
    snap = mapping.parse_delivery(fixture("response_delivery_pending.json"))
    assert snap.provider_delivery_id == "del_gDcyfRgyQcyN0obpqqS_1B"
    assert snap.external_id == "os-ord_01hx0000000000000000000000-1"
    assert snap.status is DeliveryStatus.PENDING
    assert snap.provider_status == "pending"
    assert (snap.fee, snap.tip, snap.currency) == (900, 300, "usd")
    assert snap.courier is None
    assert snap.tracking_url == "https://www.ubereats.com/orders/62105936-e413-40d5-aecd-4c335c3cd3c2"
    assert snap.pickup_eta == datetime(2023, 5, 1, 22, 16, 21, 749000, tzinfo=UTC)


def test_courier_details_parse() -> None:
    snap = mapping.parse_delivery(fixture("response_delivery_pickup_imminent.json"))
    assert snap.status is DeliveryStatus.ARRIVED_AT_PICKUP
    assert snap.provider_status == "pickup (imminent)"
    courier = snap.courier
    assert courier is not None
    assert (courier.name, courier.phone, courier.vehicle_type) == ("Alex I.", "+16283337630", "car")
    assert (courier.vehicle_make, courier.vehicle_model, courier.vehicle_color) == ("Toyota", "Prius", "white")
    assert courier.license_plate == "**E54Q"
    assert (courier.latitude, courier.longitude) == (40.7101, -74.0101)


def test_delivered_with_proof_of_delivery() -> None:
    snap = mapping.parse_delivery(fixture("response_delivery_delivered.json"))
    assert snap.status is DeliveryStatus.COMPLETED
    assert snap.proof_of_delivery is not None
    assert snap.proof_of_delivery["picture"]["image_url"].startswith("https://tb-static.uber.com/")


def test_canceled_for_lack_of_couriers() -> None:
    snap = mapping.parse_delivery(fixture("response_delivery_canceled_no_courier.json"))
    assert snap.status is DeliveryStatus.FAILED_TO_ASSIGN_DRIVER
    assert snap.cancellation_reason == "couriers_busy"


def test_returning_delivery() -> None:
    snap = mapping.parse_delivery(fixture("response_delivery_returning.json"))
    assert snap.status is DeliveryStatus.ENROUTE_TO_RETURN
    assert snap.cancellation_reason == "CUSTOMER_UNAVAILABLE"


def test_delivery_without_id_is_a_bad_response() -> None:
    with pytest.raises(ProviderUnavailable) as info:
        mapping.parse_delivery({"status": "pending"})
    assert info.value.code == "bad_response"


# --- statuses (delivery-providers.md §4.2) ---------------------------------------------------------

COURIER: dict[str, Any] = {"name": "Alex I."}


@pytest.mark.parametrize(
    ("delivery", "expected"),
    [
        ({"status": "pending"}, DeliveryStatus.PENDING),
        ({"status": "pickup", "courier_imminent": False}, DeliveryStatus.ENROUTE_TO_PICKUP),
        ({"status": "pickup", "courier_imminent": True}, DeliveryStatus.ARRIVED_AT_PICKUP),
        ({"status": "pickup_complete"}, DeliveryStatus.ENROUTE_TO_DROPOFF),
        ({"status": "dropoff", "courier_imminent": False}, DeliveryStatus.ENROUTE_TO_DROPOFF),
        ({"status": "dropoff", "courier_imminent": True}, DeliveryStatus.ARRIVED_AT_DROPOFF),
        ({"status": "delivered"}, DeliveryStatus.COMPLETED),
        # canceled before any courier: no courier found
        ({"status": "canceled"}, DeliveryStatus.FAILED_TO_ASSIGN_DRIVER),
        # canceled with a couriers-busy reason, even if a courier had been shown
        (
            {"status": "canceled", "courier": COURIER, "undeliverable_reason": "couriers_busy"},
            DeliveryStatus.FAILED_TO_ASSIGN_DRIVER,
        ),
        # courier assigned, canceled before pickup (courier or Uber canceled)
        ({"status": "canceled", "courier": COURIER}, DeliveryStatus.FAILED_TO_PICKUP),
        # canceled after pickup
        (
            {"status": "canceled", "courier": COURIER, "pickup": {"status": "completed"}},
            DeliveryStatus.FAILED_TO_DELIVER,
        ),
        # returned: the return trip is under way, then done
        ({"status": "returned", "return": {}}, DeliveryStatus.ENROUTE_TO_RETURN),
        ({"status": "returned", "return": {"status": "completed"}}, DeliveryStatus.RETURNED),
    ],
)
def test_uber_status_to_canonical(delivery: dict[str, Any], expected: DeliveryStatus) -> None:
    assert canonical_status(delivery) is expected


def test_a_cancel_we_asked_for_is_merchant_canceled() -> None:
    assert (
        canonical_status({"status": "canceled", "courier": COURIER}, canceled_by_us=True)
        is DeliveryStatus.MERCHANT_CANCELED
    )


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown Uber delivery status"):
        canonical_status({"status": "teleported"})


# --- errors ----------------------------------------------------------------------------------------

# Every error example published in the official spec, with the class it must become.
EXPECTED_CLASS = {
    "address_undeliverable": ProviderRejected,
    "unknown_location": ProviderRejected,
    "pickup_window_too_small": ProviderRejected,
    "dropoff_deadline_too_early": ProviderRejected,
    "dropoff_deadline_before_pickup_deadline": ProviderRejected,
    "dropoff_ready_after_pickup_deadline": ProviderRejected,
    "pickup_ready_too_early": ProviderRejected,
    "pickup_deadline_too_early": ProviderRejected,
    "pickup_ready_too_late": ProviderRejected,
    "invalid_params": ProviderRejected,
    "max_tip_exceeded": ProviderRejected,
    "tip_already_recorded_error": ProviderRejected,
    "no_tip": ProviderRejected,
    "invalid_tipping_state": ProviderRejected,
    "customer_not_found": ProviderRejected,
    "request_timeout": ProviderUnavailable,
    "customer_suspended": ProviderRejected,
    "address_undeliverable_limited_couriers": ProviderRejected,
    "expired_quote": ProviderRejected,
    "used_quote": ProviderRejected,
    "missing_payment": ProviderRejected,
    "unauthorized": ProviderRejected,
    "not_allowed": ProviderRejected,
    "mismatched_price_quote": ProviderRejected,
    "customer_blocked": ProviderRejected,
    "duplicate_delivery": ProviderRejected,
    "customer_limited": ProviderUnavailable,
    "internal_server_error": ProviderUnavailable,
    "unknown_error": ProviderUnavailable,
    "couriers_busy": ProviderUnavailable,
    "robo_couriers_busy": ProviderUnavailable,
    "noncancelable_delivery": ProviderRejected,
    "delivery_not_found": ProviderRejected,
    "service_unavailable": ProviderUnavailable,
}


def _status_for(code: str) -> int:
    """The HTTP status the spec documents for an error code."""
    statuses = {
        "unauthorized": 401, "customer_suspended": 402, "customer_blocked": 403, "customer_not_found": 404,
        "delivery_not_found": 404, "request_timeout": 408, "duplicate_delivery": 409, "customer_limited": 429,
        "internal_server_error": 500, "unknown_error": 500, "couriers_busy": 503, "robo_couriers_busy": 503,
        "service_unavailable": 503,
    }  # fmt: skip
    return statuses.get(code, 400)


def _spec_error_examples() -> list[tuple[str, dict[str, Any]]]:
    examples = load_spec()["components"]["examples"]
    return [
        (name, ex["value"])
        for name, ex in examples.items()
        if isinstance(ex.get("value"), dict) and "code" in ex["value"]
    ]


def test_every_published_error_code_is_classified() -> None:
    codes = {value["code"] for _, value in _spec_error_examples()}
    assert codes <= set(EXPECTED_CLASS), f"unclassified codes: {codes - set(EXPECTED_CLASS)}"


@pytest.mark.parametrize(("name", "example"), _spec_error_examples(), ids=[n for n, _ in _spec_error_examples()])
def test_published_error_bodies_become_typed_errors(name: str, example: dict[str, Any]) -> None:
    code = example["code"]
    err = mapping.error_from_response(_status_for(code), json.dumps(example).encode(), {}, now=NOW)
    assert isinstance(err, EXPECTED_CLASS[code]), name
    assert err.code == code
    assert err.message == example["message"]
    assert err.status == _status_for(code)
    assert dict(err.metadata) == dict(example.get("metadata") or {})


def test_duplicate_delivery_keeps_the_existing_delivery_id() -> None:
    body = json.dumps(
        {"code": "duplicate_delivery", "message": "exists", "metadata": {"delivery_id": "del_4y-aAymET6KH9TGTJ-ydxx"}}
    ).encode()
    err = mapping.error_from_response(409, body, {}, now=NOW)
    assert isinstance(err, mapping.UberRejected)
    assert err.metadata["delivery_id"] == "del_4y-aAymET6KH9TGTJ-ydxx"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),  # delta seconds
        ("Mon, 02 Mar 2026 12:00:30 GMT", 30.0),  # HTTP date, 30 s after NOW
        ("soon", None),  # unreadable
    ],
)
def test_rate_limit_with_retry_after(header: str, expected: float | None) -> None:
    body = b'{"code":"customer_limited","message":"limits exceeded","kind":"error"}'
    err = mapping.error_from_response(429, body, {"Retry-After": header}, now=NOW)
    assert isinstance(err, ProviderUnavailable)
    assert err.retry_after == expected


@pytest.mark.parametrize(
    ("status", "body", "retryable", "code"),
    [
        (502, b"<html>bad gateway</html>", True, "http_502"),  # not JSON, 5xx
        (408, b"", True, "http_408"),  # empty timeout answer
        (400, b"not json", False, "http_400"),
        (401, b'{"error":"invalid_client"}', False, "invalid_client"),  # the OAuth endpoint's shape
    ],
)
def test_unusual_error_bodies(status: int, body: bytes, retryable: bool, code: str) -> None:
    err = mapping.error_from_response(status, body, {}, now=NOW)
    assert err.retryable is retryable
    assert err.code == code
