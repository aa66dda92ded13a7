"""The DoorDash simulator in process: JWT check, DoorDash-style validation, quote expiry, idempotency, control."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from starlette.testclient import TestClient

from orderstream.deliveries.providers.doordash import DoorDashProvider
from orderstream.deliveries.providers.doordash.client import make_jwt
from orderstream.deliveries.providers.doordash.settings import DoorDashSettings, decode_signing_secret
from orderstream.deliveries.providers.doordash.simulator import SimulatorConfig, create_app, markers, start_in_thread
from tests.providers.doordash.helpers import fixture, make_request


class Clock:
    """Real time plus an offset the test can move."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(clock: Clock) -> Iterator[TestClient]:
    app = create_app(SimulatorConfig(step_seconds=3600, quote_ttl_seconds=300), clock=clock)
    with TestClient(app) as test_client:
        yield test_client


def auth(**overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_jwt(DoorDashSettings(**overrides))}"}


def body(external_id: str = "os-sim-1", **changes: Any) -> dict[str, Any]:
    data = {**fixture("request_asap.json"), "external_delivery_id": external_id, **changes}
    return {key: value for key, value in data.items() if value is not None}


def test_sandbox_credentials_of_the_settings_are_accepted(client: TestClient) -> None:
    response = client.post("/drive/v2/quotes", json=body(), headers=auth())
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["delivery_status"] == "quote"
    assert data["fee"] == 975
    assert data["currency"] == "USD"
    assert data["pickup_time_estimated"] < data["dropoff_time_estimated"]


def _token(claims: dict[str, Any], headers: dict[str, Any] | None = None, secret: bytes | None = None) -> str:
    settings = DoorDashSettings()
    key = secret or decode_signing_secret(settings.signing_secret.get_secret_value())
    now = int(time.time())
    base = {"aud": "doordash", "iss": settings.developer_id, "kid": settings.key_id, "iat": now, "exp": now + 60}
    return jwt.encode(
        {**base, **claims}, key, algorithm="HS256", headers={"dd-ver": "DD-JWT-V1"} if headers is None else headers
    )


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic abc",
        "Bearer not-a-jwt",
        "Bearer " + _token({}, headers={}),  # no dd-ver
        "Bearer " + _token({}, secret=b"wrong secret"),
        "Bearer " + _token({"exp": int(time.time()) - 120, "iat": int(time.time()) - 180}),
        "Bearer " + _token({"aud": "uber"}),
        "Bearer " + _token({"iss": "someone-else"}),
        "Bearer " + _token({"kid": "old-key"}),
        "Bearer " + _token({"exp": int(time.time()) + 3600}),  # longer than 30 minutes
    ],
)
def test_bad_or_expired_jwt_is_a_doordash_401(client: TestClient, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = client.post("/drive/v2/quotes", json=body(), headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_error"
    assert response.json()["message"]


def test_undecoded_secret_signature_is_rejected(client: TestClient) -> None:
    settings = DoorDashSettings()
    token = _token({}, secret=settings.signing_secret.get_secret_value().encode())
    response = client.get("/drive/v2/deliveries/x", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_validation_errors_name_each_field(client: TestClient) -> None:
    bad = body(
        dropoff_phone_number="555-0199",
        order_value=-1,
        pickup_address=None,
        pickup_time="2020-01-01T00:00:00Z",
        dropoff_time="2030-01-01T00:00:00Z",
    )
    response = client.post("/drive/v2/deliveries", json=bad, headers=auth())
    assert response.status_code == 400
    data = response.json()
    assert data["code"] == "validation_error"
    fields = {item["field"] for item in data["field_errors"]}
    assert {"dropoff_phone_number", "order_value", "pickup_address", "pickup_time", "dropoff_time"} <= fields


def test_window_must_end_after_it_starts(client: TestClient) -> None:
    window = {"start_time": "2030-01-01T10:00:00Z", "end_time": "2030-01-01T09:00:00Z"}
    response = client.post("/drive/v2/quotes", json=body(pickup_window=window), headers=auth())
    assert response.status_code == 400
    assert response.json()["field_errors"][0]["field"] == "pickup_window"


def test_non_json_body_is_a_validation_error(client: TestClient) -> None:
    response = client.post("/drive/v2/quotes", content=b"{oops", headers=auth())
    assert response.status_code == 400
    assert response.json()["field_errors"] == [{"field": "body", "error": "invalid JSON"}]


def test_quote_expires_after_its_lifetime(client: TestClient, clock: Clock) -> None:
    client.post("/drive/v2/quotes", json=body("os-exp-1"), headers=auth())
    clock.offset = 301
    response = client.post("/drive/v2/quotes/os-exp-1/accept", json={}, headers=auth())
    assert response.status_code == 400
    assert "expired" in response.json()["message"].lower()
    assert client.get("/drive/v2/deliveries/os-exp-1", headers=auth()).json()["delivery_status"] == "quote"


def test_accept_books_once_and_a_reused_external_id_is_409(client: TestClient) -> None:
    client.post("/drive/v2/quotes", json=body("os-dup-1"), headers=auth())
    accepted = client.post("/drive/v2/quotes/os-dup-1/accept", json={"tip": 700}, headers=auth())
    assert accepted.status_code == 200
    assert accepted.json()["delivery_status"] == "created"
    assert accepted.json()["tip"] == 700
    again = client.post("/drive/v2/quotes/os-dup-1/accept", json={}, headers=auth())
    assert (again.status_code, again.json()["code"]) == (409, "duplicate_delivery_id")
    create = client.post("/drive/v2/deliveries", json=body("os-dup-1"), headers=auth())
    assert (create.status_code, create.json()["code"]) == (409, "duplicate_delivery_id")
    requote = client.post("/drive/v2/quotes", json=body("os-dup-1"), headers=auth())
    assert requote.status_code == 409
    counted = client.get("/_sim/requests", params={"external_delivery_id": "os-dup-1"}).json()
    assert counted["bookings"] == 1
    assert [row["kind"] for row in counted["requests"]] == ["quote", "accept", "accept", "create", "quote"]


def test_accept_of_unknown_quote_is_404(client: TestClient) -> None:
    response = client.post("/drive/v2/quotes/nope/accept", json={}, headers=auth())
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_cancel_rules(client: TestClient) -> None:
    for external_id, marker in (("os-c-free", ""), ("os-c-fee", " [sim:cancel_fee]"), ("os-c-late", "")):
        instructions = "Ring twice [sim:hold]" + marker
        response = client.post(
            "/drive/v2/deliveries", json=body(external_id, dropoff_instructions=instructions), headers=auth()
        )
        assert response.status_code == 200
    free = client.put("/drive/v2/deliveries/os-c-free/cancel", headers=auth())
    assert free.json()["delivery_status"] == "cancelled"
    assert free.json()["fee"] == 0
    client.post("/_sim/deliveries/os-c-fee/state", json={"state": "confirmed"})
    fee = client.put("/drive/v2/deliveries/os-c-fee/cancel", headers=auth())
    assert fee.json()["fee"] == 975
    client.post("/_sim/deliveries/os-c-late/state", json={"state": "picked_up"})
    late = client.put("/drive/v2/deliveries/os-c-late/cancel", headers=auth())
    assert late.status_code == 409
    assert client.get("/drive/v2/deliveries/os-c-late", headers=auth()).json()["delivery_status"] == "picked_up"
    twice = client.put("/drive/v2/deliveries/os-c-free/cancel", headers=auth())
    assert twice.status_code == 409


def test_push_fills_in_the_dasher_and_get_tells_the_truth(client: TestClient) -> None:
    client.post("/drive/v2/deliveries", json=body("os-push", dropoff_instructions="[sim:hold]"), headers=auth())
    pushed = client.post("/_sim/deliveries/os-push/state", json={"state": "arrived_at_dropoff"}).json()
    assert pushed["delivery_status"] == "arrived_at_dropoff"
    truth = client.get("/drive/v2/deliveries/os-push", headers=auth()).json()
    assert truth["delivery_status"] == "arrived_at_dropoff"
    assert truth["dasher_name"].startswith("Sim Dasher")
    assert truth["pickup_time_actual"]
    bad = client.post("/_sim/deliveries/os-push/state", json={"state": "teleported"})
    assert bad.status_code == 400


def test_one_shot_faults_hit_the_next_calls_only(client: TestClient) -> None:
    assert client.post("/_sim/faults", json={"mode": "http_429", "count": 1, "retry_after": 4}).status_code == 200
    limited = client.post("/drive/v2/quotes", json=body("os-f-1"), headers=auth())
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "4"
    assert client.post("/drive/v2/quotes", json=body("os-f-1"), headers=auth()).status_code == 200
    client.post("/_sim/faults", json={"mode": "http_500", "count": 2, "path": "/deliveries"})
    assert client.post("/drive/v2/quotes", json=body("os-f-2"), headers=auth()).status_code == 200
    assert client.post("/drive/v2/deliveries", json=body("os-f-3"), headers=auth()).status_code == 500
    assert client.get("/drive/v2/deliveries/os-f-1", headers=auth()).status_code == 500
    assert client.post("/drive/v2/deliveries", json=body("os-f-3"), headers=auth()).status_code == 200
    assert client.post("/_sim/faults", json={"mode": "explode"}).status_code == 400


def test_request_fault_markers_fire_once_per_delivery(client: TestClient) -> None:
    marked = body("os-m-1", dropoff_instructions="[sim:http_503]")
    first = client.post("/drive/v2/deliveries", json=marked, headers=auth())
    assert first.status_code == 503
    assert first.headers["Retry-After"]
    assert client.post("/drive/v2/deliveries", json=marked, headers=auth()).status_code == 200
    unserviceable = client.post(
        "/drive/v2/quotes", json=body("os-m-2", dropoff_instructions="[sim:unserviceable]"), headers=auth()
    )
    assert unserviceable.status_code == 422
    assert unserviceable.json()["field_errors"][0]["field"] == "dropoff_address"


def test_update_changes_tip_and_times(client: TestClient) -> None:
    client.post("/drive/v2/deliveries", json=body("os-u", dropoff_instructions="[sim:hold]"), headers=auth())
    response = client.patch(
        "/drive/v2/deliveries/os-u", json={"tip": 900, "pickup_time": "2030-01-01T10:00:00Z"}, headers=auth()
    )
    assert response.status_code == 200
    assert response.json()["tip"] == 900
    assert response.json()["pickup_time_estimated"].startswith("2030-01-01T10:00:00")
    assert client.patch("/drive/v2/deliveries/os-u", json={"tip": -1}, headers=auth()).status_code == 400
    assert client.patch("/drive/v2/deliveries/nope", json={"tip": 1}, headers=auth()).status_code == 404


def test_runtime_config(client: TestClient) -> None:
    response = client.post("/_sim/config", json={"faults": ["duplicates"], "step_seconds": 1})
    assert response.json()["faults"] == ["duplicates"]
    assert client.post("/_sim/config", json={"faults": ["nope"]}).status_code == 400


def test_marker_parsing() -> None:
    assert markers("Ring [sim:no_courier, duplicates] then [sim:hold]") == {"no_courier", "duplicates", "hold"}
    assert markers("[sim:not_a_mode]") == set()
    assert markers(None) == set()


def test_unknown_simulator_wide_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        create_app(SimulatorConfig(faults=frozenset({"meteor"})))


def test_scheduled_delivery_waits_so_the_dasher_arrives_at_pickup_time(clock: Clock) -> None:
    app = create_app(SimulatorConfig(step_seconds=0.1), clock=clock)
    pickup = datetime.fromtimestamp(time.time() + 1.5, UTC).isoformat().replace("+00:00", "Z")
    with TestClient(app) as test_client:
        created = test_client.post("/drive/v2/deliveries", json=body("os-later", pickup_time=pickup), headers=auth())
        assert created.status_code == 200
        assert created.json()["pickup_time_estimated"] >= pickup[:19]
        time.sleep(0.6)
        early = test_client.get("/drive/v2/deliveries/os-later", headers=auth()).json()["delivery_status"]
        assert early == "created"
        deadline = time.monotonic() + 20
        status = early
        while status != "delivered" and time.monotonic() < deadline:
            time.sleep(0.1)
            status = test_client.get("/drive/v2/deliveries/os-later", headers=auth()).json()["delivery_status"]
        assert status == "delivered"


def test_start_in_thread_serves_on_a_free_port_for_the_sandbox() -> None:
    running = start_in_thread(SimulatorConfig(step_seconds=3600))
    try:
        provider = DoorDashProvider(DoorDashSettings.for_simulator(running.base_url))
        request = make_request(external_id="os-thread-1")
        snapshot = provider.book(request, provider.quote(request))
        assert snapshot.provider_status == "created"
        provider.close()
    finally:
        running.stop()
    assert not running.thread.is_alive()
