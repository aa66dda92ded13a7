"""Mapping our order state to the Stream-shaped event payloads sent to the POS."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from orderstream.webhooks_out.domain import (
    OrderRef,
    delivery_failed_object,
    driver_details,
    event_body,
    order_canceled_object,
    order_updated_object,
    stream_status,
)

AT = datetime(2026, 11, 26, 18, 30, tzinfo=UTC)
ORDER = OrderRef(pos_order_id="pos-order-123", location_id="location-456", status="out_for_delivery")


@pytest.mark.parametrize(
    ("ours", "actor", "stream"),
    [
        ("scheduled", None, "scheduled"),
        ("received", None, "in_progress"),
        ("preparing", None, "in_progress"),
        ("ready_for_pickup", None, "ready_for_pickup"),
        ("out_for_delivery", None, "out_for_delivery"),
        ("completed", None, "completed"),
        ("failed", None, "failed"),
        ("canceled", "operator", "merchant_canceled"),
        ("canceled", "pos", "merchant_canceled"),
        ("canceled", "system", "dsp_canceled"),  # e.g. no courier found
        ("canceled", "courier", "dsp_canceled"),
    ],
)
def test_status_mapping(ours: str, actor: str | None, stream: str) -> None:
    assert stream_status(ours, cancel_actor=actor) == stream


def test_order_updated_matches_streams_shape() -> None:
    courier = {
        "name": "Dana D.",
        "phone": "+15555550123",
        "phone_code": "123",
        "vehicle_make": "Toyota",
        "vehicle_model": "Prius",
        "vehicle_color": "blue",
        "license_plate": "7ABC123",
        "latitude": 37.1,
    }
    obj = order_updated_object(
        ORDER,
        delivery={
            "provider": "doordash",
            "delivery_status": "enroute_to_dropoff",
            "courier": courier,
            "pickup_eta": AT,
            "dropoff_eta": AT,
            "tracking_url": "https://t.example/1",
            "fee": 975,
            "currency": "usd",
        },
        at=AT,
    )
    assert obj == {
        "order_id": "pos-order-123",
        "location_id": "location-456",
        "status": "out_for_delivery",
        "delivery_status": "enroute_to_dropoff",
        "driver_details": {
            "source": "doordash",
            "name": "Dana D.",
            "phone": {"number": "+15555550123", "code": "123"},
            "vehicle_info": {"make": "Toyota", "model": "Prius", "color": "blue", "license_plate": "7ABC123"},
        },
        "pickup_eta": "2026-11-26T18:30:00Z",
        "dropoff_eta": "2026-11-26T18:30:00Z",
        "tracking_url": "https://t.example/1",
        "fee": {"amount": 975, "currency": "USD"},
        "updated_at": "2026-11-26T18:30:00Z",
    }


def test_without_a_courier_there_are_no_driver_details() -> None:
    assert driver_details(None, source="uber") is None
    assert driver_details({"name": "A"}, source="uber") == {
        "source": "uber",
        "name": "A",
        "phone": None,
        "vehicle_info": {"make": None, "model": None, "color": None, "license_plate": None},
    }
    obj = order_updated_object(ORDER, at=AT)
    assert obj["driver_details"] is None
    assert obj["fee"] is None


def test_order_canceled_carries_streams_provider_id() -> None:
    obj = order_canceled_object(ORDER, actor="system", reason="no_courier", at=AT)
    assert obj["provider_id"] == "pos-order-123"
    assert obj["location_id"] == "location-456"
    assert obj["status"] == "dsp_canceled"
    assert obj["cancel_reason"] == "no_courier"


def test_delivery_failed() -> None:
    obj = delivery_failed_object(ORDER, provider="uber", delivery_status="failed_to_assign_driver", reason=None, at=AT)
    assert obj["delivery_status"] == "failed_to_assign_driver"
    assert obj["provider"] == "uber"
    assert obj["order_id"] == "pos-order-123"


def test_event_body_is_compact_json_with_the_stable_id() -> None:
    body = event_body(event_id="evt_1", event_type="order.updated", created_at=AT, obj={"a": "é"})
    assert body == '{"id":"evt_1","type":"order.updated","created_at":"2026-11-26T18:30:00Z","object":{"a":"é"}}'
    assert json.loads(body)["object"] == {"a": "é"}
