"""End to end over real HTTP: the adapter against `orderstream simulate uber` running as a separate process."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from orderstream.deliveries.protocol import (
    Address,
    DeliveryRef,
    DeliveryStatus,
    ProviderRejected,
    ProviderUnavailable,
)
from orderstream.deliveries.providers.uber import UberDirectProvider
from orderstream.deliveries.providers.uber.settings import SANDBOX_CUSTOMER_ID, SANDBOX_WEBHOOK_SIGNING_KEY
from tests.factories import random_ref
from tests.providers.uber.uber_helpers import (
    SimulatorProcess,
    WebhookReceiver,
    make_request,
    simulator_process,
    wait_for,
    webhook_receiver,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STEP = "0.2"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as rec:
        yield rec


@pytest.fixture(scope="module")
def sim(receiver: WebhookReceiver) -> Iterator[SimulatorProcess]:
    with simulator_process(
        "--webhook-url", receiver.url, "--step-seconds", STEP, "--webhook-retry-seconds", "0.1"
    ) as proc:
        yield proc


@pytest.fixture
def provider(sim: SimulatorProcess) -> Iterator[UberDirectProvider]:
    prov = UberDirectProvider(sim.settings(webhook_signing_key=SANDBOX_WEBHOOK_SIGNING_KEY))
    yield prov
    prov.close()


def new_request(**overrides: Any) -> Any:
    order_id = random_ref("ord")
    values: dict[str, Any] = {"external_id": f"os-{order_id}-1", "order_id": order_id, **overrides}
    return make_request(**values)


def statuses(provider: UberDirectProvider, receiver: WebhookReceiver, delivery_id: str) -> list[DeliveryStatus]:
    """Canonical statuses of the delivery_status events received for a delivery, deduplicated, in the order
    Uber emitted them (webhooks may arrive in any order; `created` tells the order)."""
    events = {}
    for item in receiver.for_delivery(delivery_id):
        update = provider.parse_webhook(item.body, item.headers)  # raises on a bad signature
        if update.event_name == "event.delivery_status":
            events[update.event_id] = update
    return [
        u.snapshot.status
        for u in sorted(events.values(), key=lambda u: u.occurred_at or datetime.min.replace(tzinfo=UTC))
    ]


def wait_status(
    provider: UberDirectProvider, receiver: WebhookReceiver, delivery_id: str, status: DeliveryStatus
) -> list[DeliveryStatus]:
    return wait_for(
        lambda: (s := statuses(provider, receiver, delivery_id)) and status in s and s,
        timeout=30,
        message=f"{status} webhook for {delivery_id}",
    )


def raw_token(sim: SimulatorProcess) -> str:
    settings = sim.settings()
    response = httpx.post(
        settings.token_url,
        data={
            "client_id": settings.client_id,
            "client_secret": settings.client_secret.get_secret_value(),
            "grant_type": "client_credentials",
            "scope": "eats.deliveries",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "eats.deliveries"
    return str(body["access_token"])


def raw_post(sim: SimulatorProcess, path: str, body: Any, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{sim.base}/v1/customers/{SANDBOX_CUSTOMER_ID}{path}", json=body, headers=headers, timeout=10)


# --- the happy path --------------------------------------------------------------------------------


def test_quote_book_full_lifecycle_with_signed_webhooks_and_proof(
    sim: SimulatorProcess, receiver: WebhookReceiver, provider: UberDirectProvider
) -> None:
    request = new_request()
    quote = provider.quote(request)
    assert quote.quote_id.startswith("dqt_")
    assert quote.expires_at is not None
    assert timedelta(minutes=14) < quote.expires_at - datetime.now(UTC) <= timedelta(minutes=15)
    booked = provider.book(request, quote)
    assert booked.provider_delivery_id.startswith("del_")
    assert booked.raw["quote_id"] == quote.quote_id
    assert booked.fee == quote.fee + request.tip

    seen = wait_status(provider, receiver, booked.provider_delivery_id, DeliveryStatus.COMPLETED)
    assert seen == [
        DeliveryStatus.PENDING,
        DeliveryStatus.ENROUTE_TO_PICKUP,
        DeliveryStatus.ARRIVED_AT_PICKUP,
        DeliveryStatus.ENROUTE_TO_DROPOFF,  # pickup_complete
        DeliveryStatus.ENROUTE_TO_DROPOFF,  # dropoff
        DeliveryStatus.ARRIVED_AT_DROPOFF,
        DeliveryStatus.COMPLETED,
    ]
    kinds = {i.payload["kind"] for i in receiver.for_delivery(booked.provider_delivery_id)}
    assert kinds == {"event.delivery_status", "event.courier_update"}
    for item in receiver.for_delivery(booked.provider_delivery_id):
        assert item.headers["x-uber-signature"]
        assert item.payload["customer_id"] == SANDBOX_CUSTOMER_ID

    final = provider.get(DeliveryRef(request.external_id, booked.provider_delivery_id))
    assert final.status is DeliveryStatus.COMPLETED
    assert final.external_id == request.external_id
    assert final.courier is not None
    assert final.courier.name
    assert final.courier.vehicle_type
    assert final.courier.phone is not None
    assert final.courier.phone.startswith("+1555")
    assert final.proof_of_delivery is not None
    assert "picture" in final.proof_of_delivery
    png = base64.b64decode(provider.proof_of_delivery(DeliveryRef(request.external_id, booked.provider_delivery_id)))
    assert png.startswith(b"\x89PNG")

    mine = [r for r in sim.create_requests() if r.get("external_id") == request.external_id]
    assert len(mine) == 1
    assert mine[0]["idempotency_key"] == request.external_id
    assert mine[0]["quote_id"] == quote.quote_id


def test_scheduled_delivery_keeps_its_window(provider: UberDirectProvider) -> None:
    ready = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    request = new_request(pickup_ready_at=ready)
    booked = provider.book(request, provider.quote(request))
    assert booked.status is DeliveryStatus.PENDING
    assert booked.raw["pickup_ready"].startswith(ready.strftime("%Y-%m-%dT%H:%M:%S"))
    time.sleep(0.6)  # three steps: a scheduled delivery waits for pickup_ready_dt
    assert provider.get(DeliveryRef(request.external_id, booked.provider_delivery_id)).status is DeliveryStatus.PENDING


# --- auth ------------------------------------------------------------------------------------------


def test_missing_invalid_and_expired_tokens_get_401_unauthorized(sim: SimulatorProcess) -> None:
    for token in (None, "not-a-token"):
        response = raw_post(sim, "/delivery_quotes", {"pickup_address": "a", "dropoff_address": "b"}, token)
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"
    sim.control("POST", "/_sim/config", {"token_ttl_seconds": 1.0})
    try:
        token = raw_token(sim)
        assert (
            httpx.get(
                f"{sim.base}/v1/customers/{SANDBOX_CUSTOMER_ID}/deliveries",
                headers={"Authorization": f"Bearer {token}"},
            ).status_code
            == 200
        )
        time.sleep(1.3)
        expired = httpx.get(
            f"{sim.base}/v1/customers/{SANDBOX_CUSTOMER_ID}/deliveries", headers={"Authorization": f"Bearer {token}"}
        )
        assert expired.status_code == 401
        assert expired.json() == {
            "code": "unauthorized",
            "message": "Invalid OAuth 2.0 credentials provided.",
            "kind": "error",
        }
    finally:
        sim.control("POST", "/_sim/config", {"token_ttl_seconds": 2592000})


def test_adapter_renews_a_token_the_simulator_stopped_accepting(
    sim: SimulatorProcess, provider: UberDirectProvider
) -> None:
    request = new_request()
    booked = provider.book(request)
    assert provider.client.token_fetches == 1
    sim.control("POST", "/_sim/tokens/expire")
    assert (
        provider.get(DeliveryRef(request.external_id, booked.provider_delivery_id)).provider_delivery_id
        == booked.provider_delivery_id
    )
    assert provider.client.token_fetches == 2


def test_wrong_client_secret_is_final(sim: SimulatorProcess) -> None:
    bad = UberDirectProvider(sim.settings(client_secret="wrong"))
    with pytest.raises(ProviderRejected) as info:
        bad.quote(new_request())
    assert info.value.code == "invalid_client"


def test_token_endpoint_validates_the_form(sim: SimulatorProcess) -> None:
    response = httpx.post(sim.settings().token_url, data={"client_id": "x", "grant_type": "password"})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


# --- quotes ----------------------------------------------------------------------------------------


def test_expired_quote(sim: SimulatorProcess, provider: UberDirectProvider) -> None:
    sim.control("POST", "/_sim/config", {"quote_ttl_seconds": 0.3})
    try:
        request = new_request()
        quote = provider.quote(request)
        time.sleep(0.5)
        with pytest.raises(ProviderRejected) as info:
            provider.book(request, quote)
        assert info.value.code == "expired_quote"
    finally:
        sim.control("POST", "/_sim/config", {"quote_ttl_seconds": 900})


def test_used_quote(provider: UberDirectProvider) -> None:
    first = new_request()
    quote = provider.quote(first)
    provider.book(first, quote)
    with pytest.raises(ProviderRejected) as info:
        provider.book(new_request(), quote)
    assert info.value.code == "used_quote"


def test_quote_for_other_addresses_is_mismatched(provider: UberDirectProvider) -> None:
    quote = provider.quote(new_request())
    other = new_request(dropoff_address=Address("1 Main St", "New York", "NY", "10001", "US"))
    with pytest.raises(ProviderRejected) as info:
        provider.book(other, quote)
    assert info.value.code == "mismatched_price_quote"


def test_undeliverable_address(provider: UberDirectProvider) -> None:
    request = new_request(dropoff_address=Address("1 Undeliverable Rd", "Nowhere", "NV", "89000", "US"))
    with pytest.raises(ProviderRejected) as info:
        provider.quote(request)
    assert info.value.code == "address_undeliverable"


def _at(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(  # minutes from the moment the test runs, not from when it was collected
    ("offsets", "code"),
    [
        ({"pickup_ready_dt": -30}, "pickup_ready_too_early"),
        ({"pickup_ready_dt": 31 * 24 * 60}, "pickup_ready_too_late"),
        ({"pickup_ready_dt": 60, "pickup_deadline_dt": 65}, "pickup_window_too_small"),
        ({"pickup_ready_dt": 1, "pickup_deadline_dt": 12}, "pickup_deadline_too_early"),
        (
            {"pickup_ready_dt": 60, "pickup_deadline_dt": 80, "dropoff_ready_dt": 90},
            "dropoff_ready_after_pickup_deadline",
        ),
        (
            {
                "pickup_ready_dt": 60,
                "pickup_deadline_dt": 80,
                "dropoff_ready_dt": 70,
                "dropoff_deadline_dt": 85,
            },
            "dropoff_deadline_too_early",
        ),
        (
            {
                "pickup_ready_dt": 60,
                "pickup_deadline_dt": 120,
                "dropoff_ready_dt": 60,
                "dropoff_deadline_dt": 100,
            },
            "dropoff_deadline_before_pickup_deadline",
        ),
    ],
)
def test_window_rules_answer_uber_codes(sim: SimulatorProcess, offsets: dict[str, float], code: str) -> None:
    windows = {name: _at(minutes) for name, minutes in offsets.items()}
    body = {
        "pickup_address": "100 Maiden Ln, New York, NY",
        "dropoff_address": "30 Lincoln Center Plaza, New York, NY",
        **windows,
    }
    response = raw_post(sim, "/delivery_quotes", body, raw_token(sim))
    assert response.status_code == 400
    assert response.json()["code"] == code


def test_invalid_body_is_invalid_params_with_metadata(sim: SimulatorProcess) -> None:
    response = raw_post(sim, "/deliveries", {"pickup_name": "x", "manifest_items": "nope"}, raw_token(sim))
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_params"
    assert "dropoff_address" in body["metadata"]["param_details"]


# --- idempotency -----------------------------------------------------------------------------------


def test_book_retried_returns_the_same_delivery(sim: SimulatorProcess, provider: UberDirectProvider) -> None:
    request = new_request()
    quote = provider.quote(request)
    first = provider.book(request, quote)
    again = provider.book(request, quote)  # e.g. the worker retried after a crash
    assert again.provider_delivery_id == first.provider_delivery_id
    mine = [r for r in sim.create_requests() if r.get("external_id") == request.external_id]
    assert [r["created"] for r in mine] == [True, False]
    assert {r["delivery_id"] for r in mine} == {first.provider_delivery_id}


def test_lost_answer_then_retry_books_exactly_once(sim: SimulatorProcess, provider: UberDirectProvider) -> None:
    request = new_request(dropoff_instructions="Ring twice [sim:lost_response*1]")
    with pytest.raises(ProviderUnavailable):
        provider.book(request)  # Uber created it, but we never saw the answer
    booked = provider.book(request)
    mine = [r for r in sim.create_requests() if r.get("external_id") == request.external_id]
    assert [(r["response_status"], r["created"]) for r in mine] == [(500, True), (200, False)]
    assert {r["delivery_id"] for r in mine} == {booked.provider_delivery_id}


def test_reused_external_id_with_other_content_is_409_and_the_adapter_adopts_the_original(
    sim: SimulatorProcess, provider: UberDirectProvider
) -> None:
    request = new_request()
    original = provider.book(request)
    token = raw_token(sim)
    body = {
        "pickup_name": "Somewhere else",
        "pickup_address": "1 Other St, New York, NY",
        "pickup_phone_number": "+12125550111",
        "dropoff_name": "Someone",
        "dropoff_address": "2 Other St, New York, NY",
        "dropoff_phone_number": "+12125550112",
        "manifest_items": [{"name": "Soup", "quantity": 1}],
        "manifest_reference": request.order_id,
        "external_id": request.external_id,
        "idempotency_key": request.external_id,
    }
    response = raw_post(sim, "/deliveries", body, token)
    assert response.status_code == 409
    assert response.json()["code"] == "duplicate_delivery"
    assert response.json()["metadata"] == {"delivery_id": original.provider_delivery_id}
    # the adapter, asked again for the same attempt with different content, returns the existing one
    adopted = provider.book(new_request(external_id=request.external_id, order_id=request.order_id, tip=999))
    assert adopted.provider_delivery_id == original.provider_delivery_id


# --- faults ----------------------------------------------------------------------------------------


def test_no_courier_found(provider: UberDirectProvider, receiver: WebhookReceiver) -> None:
    booked = provider.book(new_request(dropoff_instructions="[sim:no_courier]"))
    seen = wait_status(provider, receiver, booked.provider_delivery_id, DeliveryStatus.FAILED_TO_ASSIGN_DRIVER)
    assert seen == [DeliveryStatus.PENDING, DeliveryStatus.FAILED_TO_ASSIGN_DRIVER]
    snap = provider.get(DeliveryRef(booked.external_id, booked.provider_delivery_id))
    assert (snap.provider_status, snap.cancellation_reason) == ("canceled", "couriers_busy")


def test_courier_cancels_after_assignment(provider: UberDirectProvider, receiver: WebhookReceiver) -> None:
    booked = provider.book(new_request(dropoff_instructions="[sim:courier_cancels]"))
    seen = wait_status(provider, receiver, booked.provider_delivery_id, DeliveryStatus.FAILED_TO_PICKUP)
    assert seen == [
        DeliveryStatus.PENDING,
        DeliveryStatus.ENROUTE_TO_PICKUP,
        DeliveryStatus.ARRIVED_AT_PICKUP,
        DeliveryStatus.FAILED_TO_PICKUP,
    ]


def test_return_to_store(provider: UberDirectProvider, receiver: WebhookReceiver) -> None:
    booked = provider.book(new_request(dropoff_instructions="[sim:return_to_store]"))
    seen = wait_status(provider, receiver, booked.provider_delivery_id, DeliveryStatus.RETURNED)
    assert seen[-3:] == [DeliveryStatus.ARRIVED_AT_DROPOFF, DeliveryStatus.ENROUTE_TO_RETURN, DeliveryStatus.RETURNED]
    snap = provider.get(DeliveryRef(booked.external_id, booked.provider_delivery_id))
    assert snap.status is DeliveryStatus.RETURNED
    assert snap.raw["undeliverable_action"] == "returned"


@pytest.mark.parametrize(
    ("mode", "operation", "code", "retry_after"),
    [
        ("http_500", "create", "internal_server_error", None),
        ("http_503", "get", "service_unavailable", 2.0),
        ("rate_limit", "quote", "customer_limited", 2.0),
        ("couriers_busy", "quote", "couriers_busy", 2.0),
    ],
)
def test_http_faults_are_retryable_and_clear_after_their_count(
    sim: SimulatorProcess, provider: UberDirectProvider, mode: str, operation: str, code: str, retry_after: float | None
) -> None:
    request = new_request()
    booked = provider.book(request)
    sim.control("POST", "/_sim/faults", {"mode": mode, "operation": operation, "count": 1})
    call = {
        "create": lambda: provider.book(new_request()),
        "get": lambda: provider.get(DeliveryRef(request.external_id, booked.provider_delivery_id)),
        "quote": lambda: provider.quote(new_request()),
    }[operation]
    try:
        with pytest.raises(ProviderUnavailable) as info:
            call()
        assert info.value.code == code
        assert info.value.retry_after == retry_after
        call()  # the fault was used up
    finally:
        sim.control("DELETE", "/_sim/faults")


def test_slow_answer_times_out_as_retryable(sim: SimulatorProcess) -> None:
    impatient = UberDirectProvider(sim.settings(timeout_seconds=0.5))
    sim.control("POST", "/_sim/config", {"slow_seconds": 1.5})
    sim.control("POST", "/_sim/faults", {"mode": "slow", "operation": "quote", "count": 1})
    try:
        with pytest.raises(ProviderUnavailable) as info:
            impatient.quote(new_request())
        assert info.value.code == "timeout"
    finally:
        sim.control("DELETE", "/_sim/faults")


# --- cancel ----------------------------------------------------------------------------------------


def test_cancel_before_pickup_is_free(provider: UberDirectProvider, receiver: WebhookReceiver) -> None:
    booked = provider.book(new_request())
    ref = DeliveryRef(booked.external_id, booked.provider_delivery_id)
    outcome = provider.cancel(ref)
    assert (outcome.canceled, outcome.fee_charged, outcome.reason) == (True, None, None)
    assert provider.get(ref).provider_status == "canceled"
    assert provider.cancel(ref).canceled is True  # a repeated cancel is harmless
    wait_for(
        lambda: any(i.payload["status"] == "canceled" for i in receiver.for_delivery(booked.provider_delivery_id)),
        message="canceled webhook",
    )


def test_cancel_refused_after_pickup(sim: SimulatorProcess, provider: UberDirectProvider) -> None:
    booked = provider.book(new_request())
    sim.control(
        "POST", f"/_sim/deliveries/{booked.provider_delivery_id}/state", {"status": "pickup_complete", "auto": False}
    )
    outcome = provider.cancel(DeliveryRef(booked.external_id, booked.provider_delivery_id))
    assert (outcome.canceled, outcome.reason) == (False, "noncancelable_delivery")
    assert (
        provider.get(DeliveryRef(booked.external_id, booked.provider_delivery_id)).status
        is DeliveryStatus.ENROUTE_TO_DROPOFF
    )


def test_cancel_after_courier_assigned_charges_a_fee(sim: SimulatorProcess, provider: UberDirectProvider) -> None:
    booked = provider.book(new_request(dropoff_instructions="[sim:cancel_fee]"))
    sim.control("POST", f"/_sim/deliveries/{booked.provider_delivery_id}/state", {"status": "pickup", "auto": False})
    outcome = provider.cancel(DeliveryRef(booked.external_id, booked.provider_delivery_id))
    assert (outcome.canceled, outcome.fee_charged) == (True, 700)


def test_noncancelable_fault_refuses_even_before_pickup(provider: UberDirectProvider) -> None:
    booked = provider.book(new_request(dropoff_instructions="[sim:noncancelable]"))
    outcome = provider.cancel(DeliveryRef(booked.external_id, booked.provider_delivery_id))
    assert (outcome.canceled, outcome.reason) == (False, "noncancelable_delivery")


# --- control, update, webhook delivery -------------------------------------------------------------


def test_control_endpoint_pushes_any_state_and_get_tells_the_truth(
    sim: SimulatorProcess, provider: UberDirectProvider, receiver: WebhookReceiver
) -> None:
    booked = provider.book(new_request())
    ref = DeliveryRef(booked.external_id, booked.provider_delivery_id)
    sim.control(
        "POST",
        f"/_sim/deliveries/{booked.provider_delivery_id}/state",
        {"status": "dropoff", "courier_imminent": True, "auto": False},
    )
    assert provider.get(ref).status is DeliveryStatus.ARRIVED_AT_DROPOFF
    wait_status(provider, receiver, booked.provider_delivery_id, DeliveryStatus.ARRIVED_AT_DROPOFF)
    sim.control("POST", f"/_sim/deliveries/{booked.provider_delivery_id}/state", {"status": "delivered"})
    assert provider.get(ref).status is DeliveryStatus.COMPLETED


def test_update_tip(sim: SimulatorProcess, provider: UberDirectProvider) -> None:
    booked = provider.book(new_request(tip=0))
    updated = provider.update(DeliveryRef(booked.external_id, booked.provider_delivery_id), tip=450)
    assert updated.tip == 450
    assert updated.fee == booked.fee + 450


def test_webhooks_are_retried_until_acknowledged(provider: UberDirectProvider, receiver: WebhookReceiver) -> None:
    request = new_request()
    with receiver.lock:
        receiver.fail_external[request.external_id] = 2  # refuse the first two posts about this delivery
    booked = provider.book(request)
    wait_status(provider, receiver, booked.provider_delivery_id, DeliveryStatus.ENROUTE_TO_PICKUP)
    refused = {
        i.payload["id"] for i in receiver.for_delivery(booked.provider_delivery_id, ok_only=False) if i.status == 500
    }
    assert refused, "the receiver refused the first posts"
    wait_for(
        lambda: refused <= {i.payload["id"] for i in receiver.for_delivery(booked.provider_delivery_id)},
        timeout=20,
        message="every refused event sent again and accepted",
    )


def test_duplicate_and_out_of_order_webhooks(receiver: WebhookReceiver) -> None:
    with simulator_process(
        "--webhook-url", receiver.url, "--step-seconds", STEP, "--duplicate-rate", "1", "--out-of-order-rate", "0.5",
        "--no-courier-updates", "--webhook-retry-seconds", "0.1",
    ) as noisy:  # fmt: skip
        provider = UberDirectProvider(noisy.settings())
        ids = [provider.book(new_request()).provider_delivery_id for _ in range(3)]

        def twice_each(delivery_id: str) -> bool:
            counts: dict[str, int] = {}
            for item in receiver.for_delivery(delivery_id):
                counts[item.payload["id"]] = counts.get(item.payload["id"], 0) + 1
            return len(counts) == 7 and min(counts.values()) >= 2

        for delivery_id in ids:
            # all seven status events, each delivered (at least) twice
            wait_for(lambda d=delivery_id: twice_each(d), timeout=30, message="every status event twice")
        disordered = 0
        for delivery_id in ids:
            arrivals = receiver.for_delivery(delivery_id)
            per_event: dict[str, int] = {}
            for item in arrivals:
                per_event[item.payload["id"]] = per_event.get(item.payload["id"], 0) + 1
            assert min(per_event.values()) >= 2  # every event came at least twice
            first_seen: list[str] = []
            for item in arrivals:
                if item.payload["created"] not in first_seen:
                    first_seen.append(item.payload["created"])
            disordered += first_seen != sorted(first_seen)
            assert provider.get(DeliveryRef("", delivery_id)).status is DeliveryStatus.COMPLETED  # GET is the truth
        assert disordered >= 1


def test_simulator_wide_lifecycle_fault(
    sim: SimulatorProcess, provider: UberDirectProvider, receiver: WebhookReceiver
) -> None:
    sim.control("POST", "/_sim/faults", {"mode": "no_courier"})
    try:
        booked = provider.book(new_request())  # no marker: the simulator-wide fault applies
    finally:
        sim.control("DELETE", "/_sim/faults")
    wait_status(provider, receiver, booked.provider_delivery_id, DeliveryStatus.FAILED_TO_ASSIGN_DRIVER)
    after = provider.book(new_request())  # cleared: the next delivery finds a courier
    wait_status(provider, receiver, after.provider_delivery_id, DeliveryStatus.ENROUTE_TO_PICKUP)


def test_cancel_refused_once_a_courier_is_assigned(sim: SimulatorProcess, provider: UberDirectProvider) -> None:
    booked = provider.book(new_request(dropoff_instructions="[sim:cancel_refused]"))
    sim.control(
        "POST", f"/_sim/deliveries/{booked.provider_delivery_id}/state", {"state": "enroute_to_pickup", "auto": False}
    )
    outcome = provider.cancel(DeliveryRef(booked.external_id, booked.provider_delivery_id))
    assert (outcome.canceled, outcome.reason) == (False, "noncancelable_delivery")


def test_hold_waits_for_the_control_endpoint(sim: SimulatorProcess, provider: UberDirectProvider) -> None:
    booked = provider.book(new_request(dropoff_instructions="[sim:hold]"))
    ref = DeliveryRef(booked.external_id, booked.provider_delivery_id)
    time.sleep(0.8)  # four steps
    assert provider.get(ref).status is DeliveryStatus.PENDING
    sim.control(
        "POST", f"/_sim/deliveries/{booked.provider_delivery_id}/state", {"status": "arrived_at_pickup", "resume": True}
    )
    assert provider.get(ref).status is DeliveryStatus.ARRIVED_AT_PICKUP
    wait_for(lambda: provider.get(ref).status is DeliveryStatus.COMPLETED, timeout=30, message="resumed to the door")


def test_per_delivery_duplicates_and_swapped_webhooks(provider: UberDirectProvider, receiver: WebhookReceiver) -> None:
    booked = provider.book(new_request(dropoff_instructions="[sim:duplicates,out_of_order]"))
    delivery_id = booked.provider_delivery_id

    def arrivals() -> list[dict[str, Any]]:
        return [i.payload for i in receiver.for_delivery(delivery_id) if i.payload["kind"] == "event.delivery_status"]

    wait_for(lambda: len(arrivals()) >= 14, timeout=30, message="seven status events, twice each")
    ids_in_arrival_order = list(dict.fromkeys(p["id"] for p in arrivals()))
    by_creation = [p["id"] for p in sorted({p["id"]: p for p in arrivals()}.values(), key=lambda p: p["created"])]
    assert len(ids_in_arrival_order) == 7
    assert ids_in_arrival_order[:2] == [by_creation[1], by_creation[0]]  # pending overtaken by the next event


def test_unserviceable_and_rate_limit_markers(provider: UberDirectProvider) -> None:
    with pytest.raises(ProviderRejected) as rejected:
        provider.book(new_request(dropoff_instructions="[sim:unserviceable]"))
    assert rejected.value.code == "address_undeliverable"
    limited = new_request(dropoff_instructions="[sim:rate_limit*1]")  # an alias of http_429
    with pytest.raises(ProviderUnavailable) as info:
        provider.book(limited)
    assert (info.value.code, info.value.status, info.value.retry_after) == ("customer_limited", 429, 2.0)
    assert provider.book(limited).status is DeliveryStatus.PENDING  # only the first call was limited


def test_book_retried_after_the_idempotency_window_still_books_once(
    sim: SimulatorProcess, provider: UberDirectProvider
) -> None:
    request = new_request()
    quote = provider.quote(request)
    sim.control("POST", "/_sim/config", {"idempotency_window_seconds": 0.2})
    try:
        first = provider.book(request, quote)
        time.sleep(0.4)  # Uber forgets the idempotency key (60 min in real life)
        again = provider.book(request, quote)  # used_quote or 409 duplicate_delivery -> the existing delivery
        without_quote = provider.book(request)  # 409 duplicate_delivery (same manifest_reference + external_id)
    finally:
        sim.control("POST", "/_sim/config", {"idempotency_window_seconds": 3600})
    assert again.provider_delivery_id == first.provider_delivery_id
    assert without_quote.provider_delivery_id == first.provider_delivery_id
    mine = [r for r in sim.create_requests() if r.get("external_id") == request.external_id]
    assert [r["response_status"] for r in mine] == [200, 409, 409]
    assert sum(1 for r in mine if r.get("created")) == 1
