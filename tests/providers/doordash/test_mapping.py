"""Pure DoorDash mapping: golden request bodies, recorded responses and error bodies, status table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orderstream.deliveries.protocol import (
    Address,
    Contact,
    DeliveryStatus,
    ProviderRejected,
    ProviderUnavailable,
)
from orderstream.deliveries.providers.doordash import mapping, statuses
from tests.providers.doordash.helpers import AT, fixture, fixture_bytes, make_request

GOLDEN = {
    "request_asap.json": make_request(),
    "request_pickup_window.json": make_request(pickup_ready_at=AT, pickup_deadline=AT + timedelta(minutes=10)),
    "request_dropoff_time.json": make_request(
        dropoff_deadline=AT + timedelta(minutes=45),
        items=(),
        pickup_instructions=None,
        dropoff_instructions=None,
        tip=0,
    ),
    "request_cash.json": make_request(
        cash_to_collect=4750,
        tip=0,
        external_store_id="store-123",
        dropoff_contact=Contact(name="Cher", phone="+14155550123", business_name="Acme Corp"),
        dropoff_address=Address(
            street="500 Howard St", city="San Francisco", state="CA", postal_code="94105", country="US"
        ),
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_request_body_matches_golden_file(name: str) -> None:
    assert mapping.delivery_body(GOLDEN[name]) == fixture(name)


def test_asap_request_sends_no_time_and_the_exact_doordash_field_names() -> None:
    body = mapping.delivery_body(make_request())
    assert not {"pickup_time", "dropoff_time", "pickup_window", "dropoff_window"} & body.keys()
    assert body["dropoff_contact_given_name"] == "Jane"
    assert body["dropoff_contact_family_name"] == "Q Doe"
    assert "dropoff_cash_on_delivery" not in body


def test_times_are_sent_as_utc_with_z_whatever_the_input_zone() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 12, 1, 10, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    body = mapping.delivery_body(make_request(pickup_ready_at=local))
    assert body["pickup_time"] == "2026-12-01T18:00:00Z"


def test_exactly_one_timing_field_pickup_wins_over_dropoff() -> None:
    request = make_request(pickup_ready_at=AT, dropoff_deadline=AT + timedelta(minutes=40))
    body = mapping.delivery_body(request)
    assert body["pickup_time"] == "2026-12-01T18:00:00Z"
    assert "dropoff_time" not in body
    window = mapping.delivery_body(
        make_request(dropoff_ready_at=AT + timedelta(minutes=30), dropoff_deadline=AT + timedelta(minutes=45))
    )
    assert window["dropoff_window"] == {"start_time": "2026-12-01T18:30:00Z", "end_time": "2026-12-01T18:45:00Z"}


def test_times_already_due_become_asap_and_started_windows_start_now() -> None:
    now = AT
    due = mapping.delivery_body(make_request(pickup_ready_at=AT - timedelta(minutes=2)), now=now)
    assert "pickup_time" not in due
    soon = mapping.delivery_body(make_request(pickup_ready_at=AT + timedelta(seconds=10)), now=now)
    assert "pickup_time" not in soon
    later = mapping.delivery_body(make_request(pickup_ready_at=AT + timedelta(minutes=20)), now=now)
    assert later["pickup_time"] == "2026-12-01T18:20:00Z"
    started = mapping.delivery_body(
        make_request(pickup_ready_at=AT - timedelta(minutes=5), pickup_deadline=AT + timedelta(minutes=10)), now=now
    )
    assert started["pickup_window"] == {"start_time": "2026-12-01T18:00:00Z", "end_time": "2026-12-01T18:10:00Z"}
    over = mapping.delivery_body(
        make_request(dropoff_ready_at=AT - timedelta(minutes=30), dropoff_deadline=AT - timedelta(minutes=1)), now=now
    )
    assert not {"dropoff_window", "dropoff_time", "pickup_time", "pickup_window"} & over.keys()


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        mapping.delivery_body(make_request(pickup_ready_at=datetime(2026, 12, 1, 18, 0)))  # noqa: DTZ001


def test_cash_order_is_rejected_when_cash_on_delivery_is_disabled() -> None:
    with pytest.raises(ProviderRejected) as err:
        mapping.delivery_body(make_request(cash_to_collect=1000), cash_on_delivery=False)
    assert err.value.code == "cash_not_supported"


def test_accept_and_update_bodies() -> None:
    assert mapping.accept_body(make_request(tip=700)) == {"tip": 700}
    assert mapping.update_body(tip=0, pickup_ready_at=AT) == {"tip": 0, "pickup_time": "2026-12-01T18:00:00Z"}
    assert mapping.update_body(dropoff_deadline=AT) == {"dropoff_time": "2026-12-01T18:00:00Z"}
    assert mapping.update_body() == {}


def test_recorded_quote_parses() -> None:
    received = datetime(2026, 12, 1, 17, 41, 2, tzinfo=UTC)
    quote = mapping.quote(fixture("response_quote.json"), received_at=received, validity_seconds=300)
    assert quote.provider == "doordash"
    assert quote.quote_id == quote.external_id == "os-ord_01jd8x3k9m2q7r5t6v8w0y1z2a-1"
    assert quote.fee == 975
    assert quote.currency == "usd"
    assert quote.pickup_eta == datetime(2026, 12, 1, 17, 56, tzinfo=UTC)
    assert quote.dropoff_eta == datetime(2026, 12, 1, 18, 11, tzinfo=UTC)
    assert quote.expires_at == received + timedelta(minutes=5)


def test_recorded_confirmed_delivery_parses_with_the_dasher() -> None:
    snapshot = mapping.delivery_snapshot(fixture("response_delivery_confirmed.json"))
    assert snapshot.status is DeliveryStatus.ENROUTE_TO_PICKUP
    assert snapshot.provider_status == "confirmed"
    assert snapshot.provider_delivery_id == "os-ord_01jd8x3k9m2q7r5t6v8w0y1z2a-1"
    assert snapshot.fee == 975
    assert snapshot.tip == 500
    assert snapshot.currency == "usd"
    assert snapshot.courier is not None
    assert snapshot.courier.name == "Rohan"
    assert snapshot.courier.phone == "+14155550000"
    assert (snapshot.courier.vehicle_make, snapshot.courier.vehicle_model) == ("Honda", "Civic")
    assert (snapshot.courier.latitude, snapshot.courier.longitude) == (37.7813, -122.4115)
    assert snapshot.tracking_url
    assert snapshot.tracking_url.startswith("https://doordash.com/")
    assert snapshot.updated_at == datetime(2026, 12, 1, 17, 43, 12, 100000, tzinfo=UTC)
    assert snapshot.proof_of_delivery is None


def test_recorded_delivered_delivery_has_proof_of_delivery() -> None:
    snapshot = mapping.delivery_snapshot(fixture("response_delivery_delivered.json"))
    assert snapshot.status is DeliveryStatus.COMPLETED
    assert snapshot.proof_of_delivery == {
        "photo_url": "https://doordash-static.s3.amazonaws.com/media/dropoff/abc123.jpg",
        "signature_url": "https://doordash-static.s3.amazonaws.com/media/signature/abc123.png",
    }


def test_unknown_delivery_status_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown delivery_status"):
        mapping.delivery_snapshot({"external_delivery_id": "x", "delivery_status": "teleported"})


ERRORS = [
    ("error_validation.json", 400, ProviderRejected, "validation_error"),
    ("error_duplicate.json", 409, ProviderRejected, "duplicate_delivery_id"),
    ("error_authentication.json", 401, ProviderRejected, "authentication_error"),
    ("error_unserviceable.json", 422, ProviderRejected, "address_not_serviceable"),
    ("error_quote_expired.json", 400, ProviderRejected, "quote_expired"),
    ("error_not_found.json", 404, ProviderRejected, "not_found"),
    ("error_rate_limited.json", 429, ProviderUnavailable, "request_rate_limited"),
    ("error_service_unavailable.json", 503, ProviderUnavailable, "service_unavailable"),
]


@pytest.mark.parametrize(("name", "status", "kind", "code"), ERRORS)
def test_recorded_error_bodies_become_typed_errors(name: str, status: int, kind: type, code: str) -> None:
    error = mapping.provider_error(status, fixture_bytes(name))
    assert type(error) is kind
    assert error.code == code
    assert error.status == status
    assert error.retryable is (kind is ProviderUnavailable)


def test_validation_error_message_names_the_fields() -> None:
    error = mapping.provider_error(400, fixture_bytes("error_validation.json"))
    assert "dropoff_phone_number: Invalid phone number" in error.message


def test_retry_after_in_seconds_or_http_date() -> None:
    now = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
    limited = mapping.provider_error(429, fixture_bytes("error_rate_limited.json"), retry_after="7", now=now)
    assert limited.retry_after == 7.0
    dated = mapping.provider_error(503, b"", retry_after="Tue, 01 Dec 2026 18:00:30 GMT", now=now)
    assert dated.retry_after == 30.0
    assert dated.code == "http_503"
    # DoorDash promises no Retry-After on 429; wait at least the documented second.
    assert mapping.provider_error(429, b"", now=now).retry_after == 1.0
    assert mapping.provider_error(500, b"<html>oops</html>").retry_after is None


def test_bare_409_is_a_duplicate() -> None:
    assert mapping.provider_error(409, b"").code == "duplicate_delivery_id"


CANONICAL = {
    "quote": DeliveryStatus.PENDING,
    "created": DeliveryStatus.PENDING_DRIVER_CONFIRMATION,
    "confirmed": DeliveryStatus.ENROUTE_TO_PICKUP,
    "enroute_to_pickup": DeliveryStatus.ENROUTE_TO_PICKUP,
    "arrived_at_pickup": DeliveryStatus.ARRIVED_AT_PICKUP,
    "picked_up": DeliveryStatus.ENROUTE_TO_DROPOFF,
    "enroute_to_dropoff": DeliveryStatus.ENROUTE_TO_DROPOFF,
    "arrived_at_dropoff": DeliveryStatus.ARRIVED_AT_DROPOFF,
    "delivered": DeliveryStatus.COMPLETED,
    "enroute_to_return": DeliveryStatus.ENROUTE_TO_RETURN,
    "arrived_at_return": DeliveryStatus.ARRIVED_AT_RETURN,
    "returned": DeliveryStatus.RETURNED,
}


@pytest.mark.parametrize(("code", "expected"), sorted(CANONICAL.items()))
def test_delivery_status_table(code: str, expected: DeliveryStatus) -> None:
    assert statuses.delivery_status({"delivery_status": code}) is expected


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"cancellation_reason": "cancelled_by_creator"}, DeliveryStatus.MERCHANT_CANCELED),
        ({"cancellation_reason": "no_available_dashers"}, DeliveryStatus.FAILED_TO_ASSIGN_DRIVER),
        ({"cancellation_reason": "dasher_cancelled", "dasher_id": 1}, DeliveryStatus.FAILED_TO_PICKUP),
        ({"cancellation_reason": "customer_unavailable"}, DeliveryStatus.FAILED_TO_DELIVER),
        ({"cancellation_reason": "failed_to_return"}, DeliveryStatus.FAILED),
        (
            {"cancellation_reason": "something_new", "pickup_time_actual": "2026-12-01T18:00:00Z"},
            DeliveryStatus.FAILED_TO_DELIVER,
        ),
        ({"cancellation_reason": "something_new", "dasher_id": 5}, DeliveryStatus.FAILED_TO_PICKUP),
        ({}, DeliveryStatus.FAILED),
    ],
)
def test_cancelled_maps_by_reason_then_by_progress(payload: dict[str, object], expected: DeliveryStatus) -> None:
    assert statuses.delivery_status({"delivery_status": "cancelled", **payload}) is expected


def test_every_doordash_status_is_mapped() -> None:
    documented = set(CANONICAL) | {"cancelled"}
    assert set(statuses.DELIVERY_STATUSES) | {statuses.CANCELLED} == documented
    assert len(documented) == 13
