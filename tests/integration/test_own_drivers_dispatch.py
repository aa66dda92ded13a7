"""Own drivers inside the real dispatch stack (app, embedded worker, DoorDash simulator) on both databases."""

from __future__ import annotations

import pytest

from orderstream.db import Database
from orderstream.deliveries.policy import Strategy
from orderstream.deliveries.service import DispatchError, request_cancel
from orderstream.orders.domain import Actor, OrderStatus
from orderstream.orders.service import change_status, get_order_for_update
from tests.deliveries_helpers import ADMIN_TOKEN, dispatch_stack
from tests.factories import make_partner
from tests.own_drivers_helpers import add_driver


def test_dispatch_books_own_drivers_and_the_driver_completes_the_order(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("own_drivers", "doordash"))  # cheapest: own drivers are free
        _, token = add_driver(stack.db, partner, "Sam")
        order_id = stack.create_order(partner, unpaid=True)  # drivers collect cash
        attempts = stack.wait_attempts(order_id, lambda a: a[-1]["delivery_status"] == "enroute_to_pickup")
        assert [(a["provider"], a["fee"]) for a in attempts] == [("own_drivers", 0)]
        assert attempts[0]["courier"]["name"] == "Sam"

        driver = {"Authorization": f"Bearer {token}"}
        with stack.client() as client:
            delivery_id = client.get("/v1/drivers/me", headers=driver).json()["deliveries"][0]["id"]
            for status in ("at_pickup", "picked_up"):
                resp = client.post(
                    f"/v1/drivers/deliveries/{delivery_id}/status", json={"status": status}, headers=driver
                )
                assert resp.status_code == 200, resp.text
            assert stack.order(order_id)["status"] == "out_for_delivery"
            resp = client.post(
                f"/v1/drivers/deliveries/{delivery_id}/status",
                json={"status": "delivered", "proof_of_delivery": {"signature_url": "https://example.com/s.png"}},
                headers=driver,
            )
            assert resp.status_code == 200, resp.text
        done = stack.order(order_id)
        assert (done["status"], done["delivery_status"]) == ("completed", "completed")
        attempt = stack.attempts(order_id)[-1]
        assert attempt["proof_of_delivery"] == {"signature_url": "https://example.com/s.png"}


def test_a_driver_who_gives_up_before_pickup_is_replaced_by_the_next_provider(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch, step_seconds=30) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("own_drivers", "doordash"), strategy=Strategy.PREFERRED)
        _, token = add_driver(stack.db, partner, "Sam")
        order_id = stack.create_order(partner)
        stack.wait_attempts(order_id, lambda a: a[-1]["delivery_status"] == "enroute_to_pickup")
        driver = {"Authorization": f"Bearer {token}"}
        with stack.client() as client:
            delivery_id = client.get("/v1/drivers/me", headers=driver).json()["deliveries"][0]["id"]
            resp = client.post(
                f"/v1/drivers/deliveries/{delivery_id}/status",
                json={"status": "canceled", "reason": "flat tire"},
                headers=driver,
            )
            assert resp.status_code == 200, resp.text
        attempts = stack.wait_attempts(order_id, lambda a: len(a) == 2 and a[-1]["provider_delivery_id"] is not None)
        assert [(a["provider"], a["delivery_status"]) for a in attempts][0] == ("own_drivers", "failed_to_pickup")
        assert attempts[1]["provider"] == "doordash"


def test_a_canceled_order_takes_the_delivery_off_the_drivers_list(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("own_drivers",))
        _, token = add_driver(stack.db, partner, "Sam")
        order_id = stack.create_order(partner)
        stack.wait_attempts(order_id, lambda a: a[-1]["delivery_status"] == "enroute_to_pickup")
        with stack.db.write() as conn:
            order = get_order_for_update(conn, order_id=order_id)
            assert order is not None
            change_status(conn, order=order, target=OrderStatus.CANCELED, actor=Actor.POS, reason="customer")
        attempts = stack.wait_attempts(
            order_id, lambda a: a[-1]["cancel_requested_at"] is not None and a[-1]["ended_at"]
        )
        assert attempts[-1]["delivery_status"] == "merchant_canceled"
        with stack.client() as client:
            assert client.get("/v1/drivers/me", headers={"Authorization": f"Bearer {token}"}).json()["deliveries"] == []


def test_a_merchant_managed_order_goes_to_the_locations_own_drivers_only(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        stack.set_policy(partner, allowed_providers=("doordash", "uber"), max_fee=1)  # couriers only, a tiny cap
        add_driver(stack.db, partner, "Sam")
        order_id = stack.create_order(partner, fulfillment_type="merchant_managed_delivery")
        attempts = stack.wait_attempts(order_id, lambda a: a[-1]["delivery_status"] == "enroute_to_pickup")
        assert [a["provider"] for a in attempts] == ["own_drivers"]
        assert attempts[0]["courier"]["name"] == "Sam"
        assert attempts[0]["courier"]["phone"] == "+1******0142"  # the provider masked it; not masked twice
        assert attempts[0]["accept_deadline"] is None  # nobody to fall back to: no acceptance timeout
        with stack.db.write() as conn, pytest.raises(DispatchError) as caught:
            request_cancel(conn, order_id=order_id, actor="operator", reason=None, then_dispatch=True, only="uber")
        assert caught.value.code == "provider_not_allowed"


def test_a_merchant_managed_order_without_drivers_waits_unassigned_for_an_operator(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dispatch_stack(db_url, monkeypatch) as stack:
        partner = make_partner(stack.db)
        order_id = stack.create_order(partner, fulfillment_type="merchant_managed_delivery")
        attempts = stack.wait_attempts(order_id, lambda a: a and a[-1]["state"] == "booked")
        assert [(a["provider"], a["delivery_status"]) for a in attempts] == [
            ("own_drivers", "pending_driver_confirmation")
        ]
        assert stack.order(order_id)["status"] not in ("failed", "canceled")
        driver_id, _ = add_driver(stack.db, partner, "Sam")
        admin = f"/admin/partners/{partner.slug}/locations/{partner.location_id}"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with stack.client() as client:
            waiting = client.get(f"{admin}/driver-deliveries", params={"status": "unassigned"}, headers=headers)
            assert waiting.status_code == 200, waiting.text
            [delivery] = waiting.json()["data"]
            resp = client.post(
                f"{admin}/driver-deliveries/{delivery['id']}/assign", json={"driver_id": driver_id}, headers=headers
            )
            assert resp.status_code == 200, resp.text
        attempts = stack.attempts(order_id)
        assert [(a["provider"], a["delivery_status"]) for a in attempts] == [("own_drivers", "enroute_to_pickup")]
        assert attempts[0]["courier"]["name"] == "Sam"
