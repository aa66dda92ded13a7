"""End to end over HTTP: a POS order dispatched to the merchant's own drivers, driven to the door by the driver.

Real processes: `orderstream serve` (embedded worker) on a fresh database; the POS webhook, the fleet API,
the driver API and the order API over HTTP. Own drivers are the only provider of the location.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import Launcher
from tests.pos_helpers import legacy_order, post_event

pytestmark = pytest.mark.e2e

ADMIN = "e2e-admin-token"


def post_order(client: httpx.Client, partner: harness.Partner, pos_id: str) -> str:
    """Post the docs' delivery order through the signed POS webhook; the order id."""
    event = legacy_order(pos_id, location_id=partner.location_id)
    resp = post_event(client, partner.slug, partner.secret, event)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["order"]["id"])


def order(client: httpx.Client, partner: harness.Partner, order_id: str) -> dict[str, Any]:
    resp = client.get(f"/v1/orders/{order_id}", headers=partner.auth)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def test_own_driver_takes_an_order_to_the_door(db_url: str, launch: Launcher) -> None:
    partner = harness.create_partner(db_url)
    server = launch.server(
        db_url,
        embedded_worker=True,
        env={
            "ORDERSTREAM_ADMIN_TOKEN": ADMIN,
            "ORDERSTREAM_DISPATCH_SANDBOX": "false",
            "ORDERSTREAM_DISPATCH_PROVIDERS": "own_drivers",
        },
    )
    fleet = f"/v1/locations/{partner.location_id}"
    with server.client() as client:
        added = client.post(
            f"{fleet}/drivers",
            json={"name": "Sam Driver", "phone": "+14155550142", "vehicle": "e-bike", "on_shift": True},
            headers=partner.auth,
        )
        assert added.status_code == 201, added.text
        sam = added.json()
        driver = {"Authorization": f"Bearer {sam['token']}"}

        # automatic assignment: the order is booked with Sam, the attempt and the order show him
        order_id = post_order(client, partner, "e2e-own-1")
        mine = harness.wait_for(
            lambda: client.get("/v1/drivers/me", headers=driver).json()["deliveries"], message="delivery assigned"
        )
        assert [d["order_id"] for d in mine] == [order_id]
        delivery_id = mine[0]["id"]
        shown = harness.wait_for(
            lambda: (o := order(client, partner, order_id))["delivery_status"] == "enroute_to_pickup" and o,
            message="order shows the driver on the way",
        )
        assert shown["status"] not in ("completed", "failed")

        steps: list[dict[str, Any]] = [
            {"status": "at_pickup"},
            {"status": "picked_up", "latitude": 37.77, "longitude": -122.41},
            {"status": "at_dropoff"},
            {"status": "delivered", "proof_of_delivery": {"photo_url": "https://example.com/door.jpg"}},
        ]
        for step in steps:
            resp = client.post(f"/v1/drivers/deliveries/{delivery_id}/status", json=step, headers=driver)
            assert resp.status_code == 200, resp.text
            if step["status"] == "picked_up":
                assert order(client, partner, order_id)["status"] == "out_for_delivery"
        done = order(client, partner, order_id)
        assert (done["status"], done["delivery_status"]) == ("completed", "completed")
        late = client.post(f"/v1/drivers/deliveries/{delivery_id}/status", json={"status": "at_pickup"}, headers=driver)
        assert late.status_code == 409
        assert late.json()["error"]["code"] == "delivery_finished"

        # manual assignment: the next order waits for an operator, who hands it to Sam
        assert client.put(f"{fleet}/fleet", json={"auto_assign": False}, headers=partner.auth).status_code == 200
        second = post_order(client, partner, "e2e-own-2")
        waiting = harness.wait_for(
            lambda: client.get(f"{fleet}/driver-deliveries?status=unassigned", headers=partner.auth).json()["data"],
            message="delivery waiting for an operator",
        )
        assert [d["order_id"] for d in waiting] == [second]
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assigned = client.post(
            f"/admin/partners/{partner.slug}/locations/{partner.location_id}/driver-deliveries/{waiting[0]['id']}/assign",
            json={"driver_id": sam["id"]},
            headers=admin,
        )
        assert assigned.status_code == 200, assigned.text
        assert order(client, partner, second)["delivery_status"] == "enroute_to_pickup"
        assert [d["id"] for d in client.get("/v1/drivers/me", headers=driver).json()["deliveries"]] == [
            waiting[0]["id"]
        ]
    assert "Traceback" not in server.log_text()
