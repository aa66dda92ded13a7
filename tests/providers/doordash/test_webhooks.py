"""DoorDash webhooks: the configured Authorization value is checked in constant time, then events are mapped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from orderstream.deliveries.protocol import DeliveryStatus, WebhookRejected
from orderstream.deliveries.providers.doordash import DoorDashProvider
from tests.providers.doordash.helpers import WEBHOOK_AUTH, fixture, settings

EVENTS = {
    "DELIVERY_CREATED": ("created", DeliveryStatus.PENDING_DRIVER_CONFIRMATION),
    "DASHER_CONFIRMED": ("confirmed", DeliveryStatus.ENROUTE_TO_PICKUP),
    "DASHER_ENROUTE_TO_PICKUP": ("enroute_to_pickup", DeliveryStatus.ENROUTE_TO_PICKUP),
    "DASHER_CONFIRMED_PICKUP_ARRIVAL": ("arrived_at_pickup", DeliveryStatus.ARRIVED_AT_PICKUP),
    "DASHER_PICKED_UP": ("picked_up", DeliveryStatus.ENROUTE_TO_DROPOFF),
    "DASHER_ENROUTE_TO_DROPOFF": ("enroute_to_dropoff", DeliveryStatus.ENROUTE_TO_DROPOFF),
    "DASHER_CONFIRMED_DROPOFF_ARRIVAL": ("arrived_at_dropoff", DeliveryStatus.ARRIVED_AT_DROPOFF),
    "DASHER_DROPPED_OFF": ("delivered", DeliveryStatus.COMPLETED),
    "DELIVERY_RETURN_INITIALIZED": ("enroute_to_return", DeliveryStatus.ENROUTE_TO_RETURN),
    "DASHER_ENROUTE_TO_RETURN": ("enroute_to_return", DeliveryStatus.ENROUTE_TO_RETURN),
    "DASHER_CONFIRMED_RETURN_ARRIVAL": ("arrived_at_return", DeliveryStatus.ARRIVED_AT_RETURN),
    "DELIVERY_RETURNED": ("returned", DeliveryStatus.RETURNED),
}


def provider(**overrides: Any) -> DoorDashProvider:
    return DoorDashProvider(settings(**overrides))


def body(**changes: Any) -> bytes:
    payload = {**fixture("webhook_dasher_confirmed.json"), **changes}
    return json.dumps({key: value for key, value in payload.items() if value is not None}).encode()


HEADERS = {"Authorization": WEBHOOK_AUTH, "Content-Type": "application/json"}


def test_recorded_webhook_maps_to_an_update() -> None:
    update = provider().parse_webhook(body(), HEADERS)
    assert update.provider == "doordash"
    assert update.event_name == "DASHER_CONFIRMED"
    assert update.snapshot.status is DeliveryStatus.ENROUTE_TO_PICKUP
    assert update.snapshot.external_id == "os-ord_01jd8x3k9m2q7r5t6v8w0y1z2a-1"
    assert update.snapshot.courier is not None
    assert update.snapshot.courier.name == "Rohan"
    assert update.occurred_at == datetime(2026, 12, 1, 17, 43, 12, 100000, tzinfo=UTC)


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_each_event_name_maps_to_its_canonical_status(name: str) -> None:
    provider_status, expected = EVENTS[name]
    update = provider().parse_webhook(body(event_name=name, delivery_status=provider_status), HEADERS)
    assert update.snapshot.status is expected
    assert update.event_name == name


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("cancelled_by_creator", DeliveryStatus.MERCHANT_CANCELED),
        ("no_available_dashers", DeliveryStatus.FAILED_TO_ASSIGN_DRIVER),
        ("dasher_cancelled", DeliveryStatus.FAILED_TO_PICKUP),
        ("failed_to_return", DeliveryStatus.FAILED),
    ],
)
def test_delivery_cancelled_maps_by_reason(reason: str, expected: DeliveryStatus) -> None:
    update = provider().parse_webhook(
        body(event_name="DELIVERY_CANCELLED", delivery_status="cancelled", cancellation_reason=reason), HEADERS
    )
    assert update.snapshot.status is expected
    assert update.snapshot.cancellation_reason == reason


def test_event_type_key_is_accepted_too() -> None:
    raw = body(event_name=None, event_type="DASHER_PICKED_UP", delivery_status="picked_up")
    assert provider().parse_webhook(raw, HEADERS).snapshot.status is DeliveryStatus.ENROUTE_TO_DROPOFF


def test_informational_event_takes_the_status_from_the_snapshot() -> None:
    raw = body(event_name="DELIVERY_BATCHED", delivery_status="arrived_at_pickup", force_batch_id="b-1")
    update = provider().parse_webhook(raw, HEADERS)
    assert update.snapshot.status is DeliveryStatus.ARRIVED_AT_PICKUP
    assert update.event_name == "DELIVERY_BATCHED"


def test_a_redelivered_webhook_has_the_same_event_id_and_the_next_one_another() -> None:
    first = provider().parse_webhook(body(), HEADERS)
    again = provider().parse_webhook(body(), HEADERS)
    later = provider().parse_webhook(
        body(event_name="DASHER_PICKED_UP", created_at="2026-12-01T17:58:02.000000Z"), HEADERS
    )
    assert first.event_id == again.event_id
    assert later.event_id != first.event_id


def test_header_name_is_case_insensitive() -> None:
    assert provider().parse_webhook(body(), {"authorization": WEBHOOK_AUTH}).event_name == "DASHER_CONFIRMED"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": WEBHOOK_AUTH + "x"},
        {"Authorization": WEBHOOK_AUTH.lower()},
        {"Authorization": "Bearer " + WEBHOOK_AUTH},
    ],
)
def test_wrong_or_missing_authorization_is_401(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookRejected) as caught:
        provider().parse_webhook(body(), headers)
    assert caught.value.status == 401


def test_without_a_configured_value_every_webhook_is_refused() -> None:
    with pytest.raises(WebhookRejected) as caught:
        provider(webhook_authorization=None).parse_webhook(body(), HEADERS)
    assert (caught.value.status, caught.value.code) == (401, "webhook_auth_not_configured")


def test_authorization_is_checked_before_the_body_is_read() -> None:
    with pytest.raises(WebhookRejected) as caught:
        provider().parse_webhook(b"{not json", {"Authorization": "nope"})
    assert caught.value.status == 401


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (json.dumps({"external_delivery_id": "x"}).encode(), "missing_event_name"),
        (json.dumps({"event_name": "DASHER_CONFIRMED"}).encode(), "missing_external_delivery_id"),
        (json.dumps({"event_name": "SOMETHING_NEW", "external_delivery_id": "x"}).encode(), "unknown_event"),
    ],
)
def test_unreadable_bodies_are_400(raw: bytes, code: str) -> None:
    with pytest.raises(WebhookRejected) as caught:
        provider().parse_webhook(raw, HEADERS)
    assert (caught.value.status, caught.value.code) == (400, code)
