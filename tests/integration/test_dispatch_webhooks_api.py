"""Provider webhooks (401, 404, duplicates, late events), polling quiet deliveries, resumed bookings, operator API."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from orderstream import bootstrap
from orderstream.deliveries import service
from orderstream.deliveries.policy import Strategy, external_id
from orderstream.deliveries.providers.doordash.settings import SANDBOX_WEBHOOK_AUTH
from orderstream.deliveries.registry import ProviderRegistry
from orderstream.jobs.outbox import enqueue
from orderstream.tenancy import service as tenancy
from tests.deliveries_helpers import Stack, admin, dispatch_stack
from tests.factories import make_partner
from tests.jobs_helpers import running_worker

pytestmark = pytest.mark.timeout(120)

AUTH = {"Authorization": SANDBOX_WEBHOOK_AUTH, "Content-Type": "application/json"}


def _held_booking(stack: Stack) -> tuple[str, dict[str, Any]]:
    """An order booked at DoorDash whose simulator does not move on its own; returns the order and sim record."""
    with stack.sim("doordash") as sim:
        sim.post("/_sim/config", json={"faults": ["hold"]}).raise_for_status()
    partner = make_partner(stack.db)
    stack.set_policy(partner, allowed_providers=("doordash",))
    order_id = stack.create_order(partner)
    [attempt] = stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
    with stack.sim("doordash") as sim:
        record = sim.get(f"/_sim/deliveries/{attempt['external_id']}").json()["delivery"]
    return order_id, record


def _post(client: httpx.Client, payload: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/providers/doordash/webhook", content=json.dumps(payload), headers=headers or AUTH)


def _event(record: dict[str, Any], name: str, status: str, at: str) -> dict[str, Any]:
    return {**record, "event_name": name, "delivery_status": status, "created_at": at, "updated_at": at}


def test_webhooks_are_verified_deduplicated_and_monotonic(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack, stack.client() as client:
        order_id, record = _held_booking(stack)
        picked = _event(record, "DASHER_PICKED_UP", "picked_up", "2030-01-01T10:05:00Z")
        bad = _post(client, picked, {"Authorization": "Basic nope", "Content-Type": "application/json"})
        assert bad.status_code == 401
        assert bad.json()["error"]["code"] == "invalid_authorization"
        first = _post(client, picked)
        assert first.json() == {"result": "applied", "delivery_status": "enroute_to_dropoff"}
        assert _post(client, picked).json()["result"] == "duplicate"
        late = _event(record, "DASHER_CONFIRMED", "confirmed", "2030-01-01T10:01:00Z")
        assert _post(client, late).json() == {"result": "stale", "delivery_status": "enroute_to_dropoff"}
        assert stack.order(order_id)["status"] == "out_for_delivery"
        unknown = _event({**record, "external_delivery_id": "os-ord_nothere-1"}, "DASHER_PICKED_UP", "picked_up", "x")
        missing = _post(client, unknown)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_delivery"
        assert client.post("/providers/nosuch/webhook", content=b"{}").status_code == 404
        done = _event(record, "DASHER_DROPPED_OFF", "delivered", "2030-01-01T10:20:00Z")
        assert _post(client, done).json()["delivery_status"] == "completed"
        assert stack.order(order_id)["status"] == "completed"
        after = _event(record, "DASHER_CONFIRMED_DROPOFF_ARRIVAL", "arrived_at_dropoff", "2030-01-01T10:19:00Z")
        assert _post(client, after).json()["result"] in ("stale", "ended")


def test_quiet_delivery_is_reconciled_by_polling(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(
        db_url, monkeypatch, dispatch_reconcile_seconds=0.5, dispatch_quiet_seconds=0.5, step_seconds=0.3
    ) as stack:
        with stack.sim("doordash") as sim:  # webhooks go nowhere: only polling can tell
            sim.post("/_sim/config", json={"webhook_url": "http://127.0.0.1:9/void"}).raise_for_status()
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash",))
        order_id = stack.create_order(partner)
        stack.wait_status(order_id, "completed", timeout=60)
        [attempt] = stack.attempts(order_id)
        assert attempt["outcome"] == "delivered"


def test_unfinished_booking_is_resumed_without_a_second_delivery(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker died after the provider booked but before we recorded it: the next run adopts that booking."""
    with dispatch_stack(db_url, monkeypatch, embedded_worker=False) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash",))
        order_id = stack.create_order(partner)
        registry = ProviderRegistry(stack.settings, stack.db)
        provider = registry.get("doordash")
        with stack.db.write() as conn:
            facts = service.dispatch_facts(conn, order_id, settings=stack.settings)  # as the dispatch job reads
            assert facts is not None
            request = service.delivery_request(
                conn, order=facts.order, location=facts.location, external_id=external_id(order_id, 1),
                pickup_ready_at=None, dropoff_deadline=None,
            )  # fmt: skip
        quote = provider.quote(request)
        with stack.db.write() as conn:
            values = service.attempt_values(
                order_id=order_id, number=1, provider="doordash", quote=quote, request=request, context={}
            )
            service.insert_attempt(conn, values)
        provider.book(request, quote)  # ...and the worker is killed here
        registry.close()
        # a new worker: the original dispatch job is still due
        with running_worker(stack.db, stack.settings, bootstrap.build_registry(stack.settings), services={}):
            [attempt] = stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
        assert attempt["external_id"] == request.external_id
        assert stack.bookings("doordash", request.external_id) == 1


def test_operator_api_lists_cancels_and_redispatches(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch, step_seconds=5.0) as stack, stack.client() as client:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash", "uber"), strategy=Strategy.PREFERRED)
        order_id = stack.create_order(partner)
        stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
        assert client.get(f"/admin/orders/{order_id}/deliveries").status_code == 401
        listed = client.get(f"/admin/orders/{order_id}/deliveries", headers=admin()).json()
        assert [a["provider"] for a in listed["data"]] == ["doordash"]
        busy = client.post(f"/admin/orders/{order_id}/redispatch", json={}, headers=admin())
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "delivery_active"
        wrong = client.post(
            f"/admin/orders/{order_id}/deliveries/cancel",
            json={"redispatch": True, "provider": "pigeon"},
            headers=admin(),
        )
        assert wrong.status_code == 422
        assert wrong.json()["error"]["details"][0]["path"] == "body.provider"
        moved = client.post(
            f"/admin/orders/{order_id}/deliveries/cancel",
            json={"redispatch": True, "reason": "courier too far"},
            headers=admin(),
        )
        assert moved.status_code == 202
        attempts = stack.wait_attempts(order_id, lambda a: len(a) == 2 and a[1]["state"] == "booked")
        assert attempts[0]["outcome"] == "canceled"
        assert attempts[1]["provider"] == "uber"
        assert attempts[1]["context"]["actor"] == "operator"
        other = make_partner(stack.db)
        hidden = client.get(f"/v1/orders/{order_id}/deliveries", headers={"Authorization": f"Bearer {other.api_key}"})
        assert hidden.status_code == 404
        assert client.get("/admin/orders/ord_missing/deliveries", headers=admin()).status_code == 404


def test_operator_redispatch_during_the_grace_period_saves_the_order(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch, dispatch_failure_grace_seconds=30.0) as stack, stack.client() as client:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash",), max_fee=1)
        order_id = stack.create_order(partner)
        stack.wait_for_history(order_id, "dispatch exhausted")
        with stack.db.write() as conn:
            location = tenancy.get_location(conn, partner_id=partner.partner_id, external_id=partner.location_id)
            assert location is not None
        stack.set_policy(partner, allowed_providers=("doordash",))
        answer = client.post(f"/admin/orders/{order_id}/redispatch", json={"provider": "doordash"}, headers=admin())
        assert answer.status_code == 202
        stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
        with stack.db.write() as conn:  # the grace period ends now: the failure job must see the new attempt
            enqueue(conn, kind=service.FAIL_KIND, payload={"order_id": order_id, "reason": "test", "attempts": 0})
        stack.wait_status(order_id, "completed", timeout=60)
