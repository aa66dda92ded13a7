"""Uber Direct webhooks: x-uber-signature verification (and the legacy header), parsing, statuses."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any

import pytest

from orderstream.deliveries.protocol import DeliveryStatus, WebhookRejected
from orderstream.deliveries.providers.uber import IgnoredWebhook, UberDirectProvider, sign_webhook
from tests.providers.uber.uber_helpers import SIGNING_KEY, fake_settings, fixture


def provider() -> UberDirectProvider:
    return UberDirectProvider(fake_settings())


def signed(payload: dict[str, Any], header: str = "x-uber-signature") -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    return body, {
        header: hmac.new(SIGNING_KEY.encode(), body, hashlib.sha256).hexdigest(),
        "content-type": "application/json",
    }


def test_signature_is_hex_hmac_sha256_of_the_raw_body() -> None:
    assert sign_webhook(b'{"a":1}', "key") == hmac.new(b"key", b'{"a":1}', hashlib.sha256).hexdigest()


def test_good_signature_delivery_status_event() -> None:
    body, headers = signed(fixture("webhook_delivery_status.json"))
    update = provider().parse_webhook(body, headers)
    assert update.provider == "uber"
    assert update.event_id == "evt_9qFAnfTgrr3s7eCRcZYx7Q"
    assert update.event_name == "event.delivery_status"
    assert update.snapshot.provider_delivery_id == "del_gDcyfRgyQcyN0obpqqS_1B"
    assert update.snapshot.external_id == "os-ord_01hx0000000000000000000000-1"
    assert update.snapshot.status is DeliveryStatus.ENROUTE_TO_DROPOFF
    assert update.snapshot.courier is not None
    assert update.snapshot.courier.name == "Alex I."
    assert update.occurred_at is not None
    assert update.occurred_at.isoformat() == "2023-05-01T22:18:02.812000+00:00"


def test_courier_update_event_carries_the_location() -> None:
    body, headers = signed(fixture("webhook_courier_update.json"))
    update = provider().parse_webhook(body, headers)
    assert update.event_name == "event.courier_update"
    assert update.snapshot.status is DeliveryStatus.ENROUTE_TO_DROPOFF
    assert update.snapshot.courier is not None
    assert (update.snapshot.courier.latitude, update.snapshot.courier.longitude) == (40.7501, -73.99)


def test_legacy_postmates_header_is_accepted_and_header_names_are_case_insensitive() -> None:
    body, headers = signed(fixture("webhook_delivery_status.json"), header="X-Postmates-Signature")
    assert provider().parse_webhook(body, headers).event_id == "evt_9qFAnfTgrr3s7eCRcZYx7Q"
    body, headers = signed(fixture("webhook_delivery_status.json"), header="X-Uber-Signature")
    assert provider().parse_webhook(body, headers).event_id == "evt_9qFAnfTgrr3s7eCRcZYx7Q"


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda body, headers: (body, {}), "missing_signature"),
        (lambda body, headers: (body, {"x-uber-signature": "0" * 64}), "invalid_signature"),
        (lambda body, headers: (body + b" ", headers), "invalid_signature"),  # one byte more than was signed
        (
            lambda body, headers: (
                body,
                {"x-uber-signature": hmac.new(b"other-key", body, hashlib.sha256).hexdigest()},
            ),
            "invalid_signature",
        ),
        (lambda body, headers: (body, {"x-uber-signature": "not hex ☃"}), "invalid_signature"),
    ],
)
def test_bad_or_missing_signature_is_401(mutate: Any, code: str) -> None:
    body, headers = mutate(*signed(fixture("webhook_delivery_status.json")))
    with pytest.raises(WebhookRejected) as info:
        provider().parse_webhook(body, headers)
    assert (info.value.status, info.value.code) == (401, code)


def test_signed_but_unreadable_body_is_400() -> None:
    body = b"{not json"
    with pytest.raises(WebhookRejected) as info:
        provider().parse_webhook(body, {"x-uber-signature": sign_webhook(body, SIGNING_KEY)})
    assert (info.value.status, info.value.code) == (400, "invalid_payload")


def test_signed_event_without_data_is_400() -> None:
    body, headers = signed({"id": "evt_1", "kind": "event.delivery_status"})
    with pytest.raises(WebhookRejected) as info:
        provider().parse_webhook(body, headers)
    assert info.value.status == 400


def test_other_event_kinds_are_acknowledged_and_ignored() -> None:
    body, headers = signed({"id": "evt_2", "kind": "event.refund_request", "data": {}})
    with pytest.raises(IgnoredWebhook) as info:
        provider().parse_webhook(body, headers)
    assert (info.value.status, info.value.kind) == (200, "event.refund_request")


@pytest.mark.parametrize(
    ("status", "imminent", "expected"),
    [
        ("pending", False, DeliveryStatus.PENDING),
        ("pickup", False, DeliveryStatus.ENROUTE_TO_PICKUP),
        ("pickup", True, DeliveryStatus.ARRIVED_AT_PICKUP),  # courier_imminent at pickup
        ("pickup_complete", False, DeliveryStatus.ENROUTE_TO_DROPOFF),
        ("dropoff", False, DeliveryStatus.ENROUTE_TO_DROPOFF),
        ("dropoff", True, DeliveryStatus.ARRIVED_AT_DROPOFF),  # courier_imminent at drop-off
        ("delivered", False, DeliveryStatus.COMPLETED),
    ],
)
def test_webhook_statuses_including_courier_imminent(status: str, imminent: bool, expected: DeliveryStatus) -> None:
    payload = copy.deepcopy(fixture("webhook_delivery_status.json"))
    payload["status"] = payload["data"]["status"] = status
    payload["data"]["courier_imminent"] = imminent
    body, headers = signed(payload)
    assert provider().parse_webhook(body, headers).snapshot.status is expected
