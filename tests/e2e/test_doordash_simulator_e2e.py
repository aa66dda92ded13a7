"""DoorDash adapter against the simulator as a separate process, over real HTTP, with a webhook receiver."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orderstream.deliveries.protocol import (
    DeliveryRef,
    DeliveryStatus,
    ProviderRejected,
    ProviderUnavailable,
)
from orderstream.deliveries.providers.doordash import DoorDashProvider, DoorDashSettings
from orderstream.deliveries.providers.doordash.client import DoorDashError
from tests.doordash_helpers import WebhookReceiver, doordash_simulator, webhook_receiver
from tests.providers.doordash.helpers import make_request

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIFECYCLE = [
    "DELIVERY_CREATED",
    "DASHER_CONFIRMED",
    "DASHER_ENROUTE_TO_PICKUP",
    "DASHER_CONFIRMED_PICKUP_ARRIVAL",
    "DASHER_PICKED_UP",
    "DASHER_ENROUTE_TO_DROPOFF",
    "DASHER_CONFIRMED_DROPOFF_ARRIVAL",
    "DASHER_DROPPED_OFF",
]


class Sim:
    """A running simulator, its receiver and an adapter pointed at it."""

    def __init__(self, base_url: str, receiver: WebhookReceiver) -> None:
        self.base_url = base_url
        self.receiver = receiver
        self.provider = DoorDashProvider(DoorDashSettings.for_simulator(base_url))

    def bookings(self, external_id: str) -> int:
        data = httpx.get(f"{self.base_url}/_sim/requests", params={"external_delivery_id": external_id}).json()
        return int(data["bookings"])

    def push(self, external_id: str, state: str, **extra: Any) -> None:
        response = httpx.post(f"{self.base_url}/_sim/deliveries/{external_id}/state", json={"state": state, **extra})
        assert response.status_code == 200, response.text

    def fault(self, **body: Any) -> None:
        assert httpx.post(f"{self.base_url}/_sim/faults", json=body).status_code == 200


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    log = tmp_path_factory.mktemp("doordash") / "simulator.log"
    with webhook_receiver() as receiver, doordash_simulator(webhook_url=receiver.url, log_path=log) as base_url:
        receiver.fail = lambda payload, seen: (
            str(payload.get("external_delivery_id", "")).startswith("os-retry-") and (seen == 1)
        )
        yield Sim(base_url, receiver)


@pytest.fixture(scope="module")
def chaotic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """Every webhook duplicated and pairs swapped; quotes live one second; `event_type` as the key."""
    args = ("--fault", "duplicates", "--fault", "out_of_order", "--quote-ttl-seconds", "1", "--event-key", "event_type")
    log = tmp_path_factory.mktemp("doordash") / "chaotic-simulator.log"
    with (
        webhook_receiver() as receiver,
        doordash_simulator(*args, webhook_url=receiver.url, log_path=log) as base_url,
    ):
        yield Sim(base_url, receiver)


def new_id(prefix: str = "os-e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def request_for(external_id: str, instructions: str | None = None) -> Any:
    return make_request(external_id=external_id, dropoff_instructions=instructions)


def test_quote_accept_and_the_full_lifecycle_in_order(sim: Sim) -> None:
    external_id = new_id()
    request = request_for(external_id)
    quote = sim.provider.quote(request)
    assert (quote.fee, quote.currency) == (975, "usd")
    booked = sim.provider.book(request, quote)
    assert booked.status is DeliveryStatus.PENDING_DRIVER_CONFIRMATION
    events = sim.receiver.wait_for(external_id, lambda got: "DASHER_DROPPED_OFF" in got)
    assert events == LIFECYCLE
    updates = [sim.provider.parse_webhook(item.body, item.headers) for item in sim.receiver.for_delivery(external_id)]
    assert [update.snapshot.status for update in updates] == [
        DeliveryStatus.PENDING_DRIVER_CONFIRMATION,
        DeliveryStatus.ENROUTE_TO_PICKUP,
        DeliveryStatus.ENROUTE_TO_PICKUP,
        DeliveryStatus.ARRIVED_AT_PICKUP,
        DeliveryStatus.ENROUTE_TO_DROPOFF,
        DeliveryStatus.ENROUTE_TO_DROPOFF,
        DeliveryStatus.ARRIVED_AT_DROPOFF,
        DeliveryStatus.COMPLETED,
    ]
    assert updates[1].snapshot.courier is not None
    assert updates[1].snapshot.courier.name
    final = sim.provider.get(DeliveryRef(external_id=external_id))
    assert final.status is DeliveryStatus.COMPLETED
    assert final.proof_of_delivery
    assert sim.bookings(external_id) == 1


def test_duplicate_and_out_of_order_webhooks_still_deliver_every_event(chaotic: Sim) -> None:
    external_id = new_id()
    request = request_for(external_id)
    chaotic.provider.book(request, chaotic.provider.quote(request))
    events = chaotic.receiver.wait_for(external_id, lambda got: set(got) >= set(LIFECYCLE) and len(got) >= 16)
    assert set(events) == set(LIFECYCLE)
    assert events != LIFECYCLE  # duplicated and swapped
    updates = [
        chaotic.provider.parse_webhook(item.body, item.headers) for item in chaotic.receiver.for_delivery(external_id)
    ]
    assert len({update.event_id for update in updates}) == len(LIFECYCLE)
    assert any(events.index(name) > events.index(LIFECYCLE[i + 1]) for i, name in enumerate(LIFECYCLE[:-1]))


def test_webhooks_are_retried_until_acknowledged(sim: Sim) -> None:
    external_id = new_id("os-retry")
    sim.provider.book(request_for(external_id))
    events = sim.receiver.wait_for(external_id, lambda got: "DASHER_DROPPED_OFF" in got)
    assert events == LIFECYCLE
    log = httpx.get(f"{sim.base_url}/_sim/webhooks", params={"external_delivery_id": external_id}).json()["webhooks"]
    assert {row["status"] for row in log if row["attempt"] == 1} == {500}
    assert all(row["status"] == 200 for row in log if row["attempt"] == 2)


@pytest.mark.parametrize(
    ("marker", "last_event", "status", "reason"),
    [
        ("no_courier", "DELIVERY_CANCELLED", DeliveryStatus.FAILED_TO_ASSIGN_DRIVER, "no_available_dashers"),
        ("courier_cancels", "DELIVERY_CANCELLED", DeliveryStatus.FAILED_TO_PICKUP, "dasher_cancelled"),
        ("return_to_store", "DELIVERY_RETURNED", DeliveryStatus.RETURNED, None),
    ],
)
def test_lifecycle_fault_modes(
    sim: Sim, marker: str, last_event: str, status: DeliveryStatus, reason: str | None
) -> None:
    external_id = new_id()
    sim.provider.book(request_for(external_id, f"Leave at the door [sim:{marker}]"))
    events = sim.receiver.wait_for(external_id, lambda got: last_event in got)
    final = sim.provider.get(DeliveryRef(external_id=external_id))
    assert final.status is status
    assert final.cancellation_reason == reason
    last = sim.provider.parse_webhook(*_last(sim.receiver, external_id))
    assert last.snapshot.status is status
    if marker == "courier_cancels":
        assert events == ["DELIVERY_CREATED", "DASHER_CONFIRMED", "DASHER_ENROUTE_TO_PICKUP", "DELIVERY_CANCELLED"]
    if marker == "return_to_store":
        assert events[-3:] == ["DELIVERY_RETURN_INITIALIZED", "DASHER_CONFIRMED_RETURN_ARRIVAL", "DELIVERY_RETURNED"]


def _last(receiver: WebhookReceiver, external_id: str) -> tuple[bytes, dict[str, str]]:
    item = receiver.for_delivery(external_id)[-1]
    return item.body, item.headers


def test_5xx_and_429_are_retryable_and_a_retry_books_once(sim: Sim) -> None:
    external_id = new_id()
    request = request_for(external_id, "[sim:hold]")
    sim.fault(mode="http_500", count=1, path="/drive/v2/deliveries")
    with pytest.raises(ProviderUnavailable) as server_error:
        sim.provider.book(request)
    assert server_error.value.status == 500
    sim.fault(mode="http_429", count=1, retry_after=3, path="/drive/v2/deliveries")
    with pytest.raises(ProviderUnavailable) as limited:
        sim.provider.book(request)
    assert limited.value.retry_after == 3.0
    assert sim.provider.book(request).status is DeliveryStatus.PENDING_DRIVER_CONFIRMATION
    assert sim.bookings(external_id) == 1


def test_timeout_is_retryable_and_the_retry_never_books_twice(sim: Sim) -> None:
    external_id = new_id()
    request = request_for(external_id, "[sim:hold]")
    impatient = DoorDashProvider(DoorDashSettings.for_simulator(sim.base_url, read_timeout_seconds=0.5))
    sim.fault(mode="slow", count=1, seconds=1.5, path="/drive/v2/deliveries")
    with pytest.raises(ProviderUnavailable) as timed_out:
        impatient.book(request)
    assert timed_out.value.code == "timeout"
    time.sleep(1.5)  # the slow call lands at DoorDash after we gave up on it
    again = impatient.book(request)
    assert again.external_id == external_id
    assert again.status is DeliveryStatus.PENDING_DRIVER_CONFIRMATION
    assert sim.bookings(external_id) == 1


def test_expired_quote_is_final_and_a_create_books_instead(chaotic: Sim) -> None:
    external_id = new_id()
    request = request_for(external_id, "[sim:hold]")
    quote = chaotic.provider.quote(request)
    time.sleep(1.5)
    with pytest.raises(ProviderRejected) as expired:
        chaotic.provider.book(request, quote)
    assert expired.value.code == "quote_expired"
    assert chaotic.bookings(external_id) == 0
    assert chaotic.provider.book(request).status is DeliveryStatus.PENDING_DRIVER_CONFIRMATION
    assert chaotic.bookings(external_id) == 1


def test_reused_external_id_is_409_and_book_is_idempotent(sim: Sim) -> None:
    external_id = new_id()
    request = request_for(external_id, "[sim:hold]")
    quote = sim.provider.quote(request)
    first = sim.provider.book(request, quote)
    with pytest.raises(DoorDashError) as conflict:
        sim.provider.client.create_delivery({**quote.raw, "external_delivery_id": external_id})
    assert conflict.value.status == 409
    assert sim.provider.book(request, quote).external_id == first.external_id
    assert sim.provider.book(request).external_id == first.external_id
    assert sim.bookings(external_id) == 1


def test_cancel_before_pickup_is_free(sim: Sim) -> None:
    external_id = new_id()
    sim.provider.book(request_for(external_id, "[sim:hold]"))
    outcome = sim.provider.cancel(DeliveryRef(external_id=external_id))
    assert (outcome.canceled, outcome.fee_charged) == (True, 0)
    sim.receiver.wait_for(external_id, lambda got: "DELIVERY_CANCELLED" in got)
    update = sim.provider.parse_webhook(*_last(sim.receiver, external_id))
    assert update.snapshot.status is DeliveryStatus.MERCHANT_CANCELED
    assert sim.provider.cancel(DeliveryRef(external_id=external_id)).canceled is True  # a retried cancel


def test_cancel_is_refused_after_pickup(sim: Sim) -> None:
    external_id = new_id()
    sim.provider.book(request_for(external_id, "[sim:hold]"))
    sim.push(external_id, "picked_up")
    outcome = sim.provider.cancel(DeliveryRef(external_id=external_id))
    assert (outcome.canceled, outcome.reason) == (False, "noncancelable_delivery")
    assert sim.provider.get(DeliveryRef(external_id=external_id)).status is DeliveryStatus.ENROUTE_TO_DROPOFF


def test_cancel_after_assignment_charges_a_fee(sim: Sim) -> None:
    external_id = new_id()
    sim.provider.book(request_for(external_id, "[sim:hold,cancel_fee]"))
    sim.push(external_id, "confirmed")
    outcome = sim.provider.cancel(DeliveryRef(external_id=external_id))
    assert (outcome.canceled, outcome.fee_charged) == (True, 975)


def test_update_tip_over_http(sim: Sim) -> None:
    external_id = new_id()
    sim.provider.book(request_for(external_id, "[sim:hold]"))
    assert sim.provider.update(DeliveryRef(external_id=external_id), tip=1200).tip == 1200


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"dropoff_contact": make_request().dropoff_contact.__class__(name="X", phone="555")}, "validation_error"),
        ({"dropoff_instructions": "[sim:unserviceable]"}, "address_not_serviceable"),
    ],
)
def test_final_errors_over_http(sim: Sim, change: dict[str, Any], code: str) -> None:
    request = make_request(external_id=new_id(), **change)
    with pytest.raises(ProviderRejected) as rejected:
        sim.provider.quote(request)
    assert rejected.value.code == code


def test_wrong_signing_secret_is_a_401(sim: Sim) -> None:
    wrong = DoorDashProvider(
        DoorDashSettings.for_simulator(sim.base_url, signing_secret="d3Jvbmctc2VjcmV0LWZvci10ZXN0cw")
    )
    with pytest.raises(ProviderRejected) as rejected:
        wrong.quote(make_request(external_id=new_id()))
    assert (rejected.value.status, rejected.value.code) == (401, "authentication_error")
