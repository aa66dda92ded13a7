"""Recovery paths against the simulators, on SQLite and PostgreSQL: re-dispatch, fallback, failure, cancels."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orderstream.deliveries.policy import Strategy
from orderstream.jobs.models import jobs
from orderstream.orders import domain
from orderstream.orders.service import change_status, get_order_for_update
from tests.deliveries_helpers import Stack, dispatch_stack, future
from tests.factories import make_partner

pytestmark = pytest.mark.timeout(120)


def _cancel_order(stack: Stack, order_id: str) -> None:
    with stack.db.write() as conn:
        order = get_order_for_update(conn, order_id=order_id)
        assert order is not None
        change_status(conn, order=order, target=domain.OrderStatus.CANCELED, actor=domain.Actor.POS, reason="customer")


def test_courier_cancels_before_pickup_redispatches_to_another_provider(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        with stack.sim("doordash") as sim:
            sim.post("/_sim/config", json={"faults": ["courier_cancels"]}).raise_for_status()
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash", "uber"), strategy=Strategy.PREFERRED)
        order_id = stack.create_order(partner)
        stack.wait_status(order_id, "completed", timeout=60)
        first, second = stack.attempts(order_id)
        assert first["provider"] == "doordash"
        assert first["outcome"] == "courier_canceled"
        assert first["delivery_status"] == "failed_to_pickup"
        assert second["provider"] == "uber"
        assert second["outcome"] == "delivered"
        assert second["context"]["exclude"] == ["doordash"]
        assert any("automatic re-dispatch" in (h["reason"] or "") for h in stack.history(order_id))


def test_no_courier_within_acceptance_timeout_falls_back_then_fails(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        for provider in ("doordash", "uber"):
            with stack.sim(provider) as sim:
                sim.post("/_sim/config", json={"faults": ["hold"]}).raise_for_status()
        partner = make_partner(stack.db)
        stack.set_policy(
            partner,
            allowed_providers=("doordash", "uber"),
            strategy=Strategy.PREFERRED,
            acceptance_timeout_seconds={"doordash": 1.0, "uber": 1.0},
        )
        order_id = stack.create_order(partner)
        order = stack.wait_status(order_id, "failed", timeout=60)
        attempts = stack.attempts(order_id)
        assert [(a["provider"], a["outcome"]) for a in attempts] == [("doordash", "no_courier"), ("uber", "no_courier")]
        assert all(a["active_order_id"] is None for a in attempts)
        reasons = [a["outcome_reason"] for a in attempts]
        assert all("no courier accepted within" in r for r in reasons), reasons
        assert order["delivery_status"] == "failed_to_assign_driver"
        assert any("no courier" in (h["reason"] or "") for h in stack.history(order_id) if h["to_status"] == "failed")


def test_provider_reports_no_courier_then_the_next_provider_delivers(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        with stack.sim("uber") as sim:
            sim.post("/_sim/config", json={"faults": ["no_courier"]}).raise_for_status()
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("uber", "doordash"), strategy=Strategy.PREFERRED)
        order_id = stack.create_order(partner)
        stack.wait_status(order_id, "completed", timeout=60)
        assert [(a["provider"], a["outcome"]) for a in stack.attempts(order_id)] == [
            ("uber", "no_courier"),
            ("doordash", "delivered"),
        ]


def test_booking_refused_falls_back_to_the_next_quote(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("uber", "doordash"), strategy=Strategy.PREFERRED)
        with stack.sim("uber") as sim:
            sim.post("/_sim/faults", json={"mode": "unserviceable", "operation": "create"}).raise_for_status()
        order_id = stack.create_order(partner)
        attempts = stack.wait_attempts(order_id, lambda a: len(a) == 2 and a[1]["state"] == "booked")
        assert attempts[0]["outcome"] == "booking_failed"
        assert "address_undeliverable" in attempts[0]["outcome_reason"]
        assert attempts[1]["provider"] == "doordash"
        assert stack.bookings("uber", attempts[0]["external_id"]) == 0


def test_retryable_errors_are_retried_with_the_same_external_id(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash",))
        with stack.sim("doordash") as sim:
            sim.post("/_sim/faults", json={"mode": "http_429", "count": 1, "retry_after": 1, "path": "/accept"})
        order_id = stack.create_order(partner)
        [attempt] = stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
        assert stack.bookings("doordash", attempt["external_id"]) == 1
        with stack.sim("doordash") as sim:
            calls = sim.get("/_sim/requests", params={"external_delivery_id": attempt["external_id"]}).json()
        accepts = [r for r in calls["requests"] if r["kind"] == "accept"]
        assert len(accepts) == 2  # the 429, then the retry


def test_cancel_before_pickup_cancels_with_the_provider(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch, step_seconds=2.0) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash",))
        order_id = stack.create_order(partner)
        stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
        _cancel_order(stack, order_id)
        [attempt] = stack.wait_attempts(order_id, lambda a: a[0]["state"] == "ended")
        assert attempt["outcome"] == "canceled"
        assert attempt["delivery_status"] == "merchant_canceled"
        with stack.sim("doordash") as sim:
            state = sim.get(f"/_sim/deliveries/{attempt['external_id']}").json()
        assert state["delivery"]["delivery_status"] == "cancelled"
        assert stack.order(order_id)["status"] == "canceled"


def test_cancel_after_pickup_is_refused_and_recorded(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch, step_seconds=30.0) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash",))
        order_id = stack.create_order(partner)
        [attempt] = stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
        with stack.sim("doordash") as sim:
            sim.post(f"/_sim/deliveries/{attempt['external_id']}/state", json={"state": "picked_up"})
        stack.wait_status(order_id, "out_for_delivery")
        _cancel_order(stack, order_id)
        [attempt] = stack.wait_attempts(order_id, lambda a: a[0]["context"].get("cancel_refused"))
        assert attempt["state"] == "booked"
        assert "cancel refused" in attempt["outcome_reason"]
        assert any("cancel refused" in (h["reason"] or "") for h in stack.history(order_id))


def test_canceled_future_order_never_dispatches(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        order_id = stack.create_order(
            partner, status="scheduled", is_future_order=True, requested_for=future(30 + 0.05), prep_time_minutes=15
        )
        _cancel_order(stack, order_id)
        time.sleep(5)
        assert stack.attempts(order_id) == []


def test_future_order_is_booked_at_its_lead_with_pickup_times(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash",))
        requested_for = future(30 + 0.05)  # lead: 15 min prep + 15 min travel; due in 3 s
        order_id = stack.create_order(
            partner, status="scheduled", is_future_order=True, requested_for=requested_for, prep_time_minutes=15
        )
        [attempt] = stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked", timeout=30)
        lead = requested_for - attempt["created_at"]
        assert timedelta(minutes=29, seconds=50) <= lead <= timedelta(minutes=30, seconds=2)
        assert attempt["pickup_ready_at"] == requested_for - timedelta(minutes=15)
        assert attempt["dropoff_deadline"] == requested_for + timedelta(minutes=15)


def test_non_delivery_orders_never_dispatch(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        ids = [stack.create_order(partner, fulfillment_type=kind) for kind in ("pickup", "curbside", "dine_in")]
        with stack.db.read() as conn:
            found = conn.execute(sa.select(jobs.c.id).where(jobs.c.kind == "dispatch", jobs.c.key.in_(ids))).all()
        assert found == []
