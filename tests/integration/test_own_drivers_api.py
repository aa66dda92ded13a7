"""The own-drivers API on SQLite and PostgreSQL: fleet routes for partners and operators, the driver token."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from orderstream.app import create_app
from orderstream.config import Settings
from orderstream.db import Database
from tests.factories import PartnerFixture, make_partner

ADMIN = "admin-token-for-tests"


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"admin_token": SecretStr(ADMIN)}), db=db)
    with TestClient(app) as c:
        yield c


def auth(partner: PartnerFixture) -> dict[str, str]:
    return {"Authorization": f"Bearer {partner.api_key}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def add(client: TestClient, partner: PartnerFixture, **body: Any) -> dict[str, Any]:
    resp = client.post(
        f"/v1/locations/{partner.location_id}/drivers",
        json={"name": "Sam", "phone": "+14155550142", **body},
        headers=auth(partner),
    )
    assert resp.status_code == 201, resp.text
    out: dict[str, Any] = resp.json()
    return out


def test_partner_manages_drivers_of_its_location(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    sam = add(client, partner, vehicle="e-bike", on_shift=True)
    assert sam["token"].startswith("osd_")
    assert (sam["phone"], sam["vehicle"], sam["on_shift"], sam["active"]) == ("+14155550142", "e-bike", True, True)

    base = f"/v1/locations/{partner.location_id}"
    listed = client.get(f"{base}/drivers", headers=auth(partner)).json()["data"]
    assert [(d["id"], d["open_deliveries"]) for d in listed] == [(sam["id"], 0)]
    assert "token" not in listed[0]

    off = client.patch(f"{base}/drivers/{sam['id']}", json={"on_shift": False}, headers=auth(partner))
    assert off.status_code == 200
    assert off.json()["on_shift"] is False

    fleet = client.put(f"{base}/fleet", json={"fee": 399}, headers=auth(partner)).json()
    assert fleet == {"location_id": partner.location_id, "fee": 399, "auto_assign": True}
    fleet = client.put(f"{base}/fleet", json={"auto_assign": False}, headers=auth(partner)).json()
    assert fleet == {"location_id": partner.location_id, "fee": 399, "auto_assign": False}
    assert client.get(f"{base}/fleet", headers=auth(partner)).json() == fleet

    me = client.get("/v1/drivers/me", headers=bearer(sam["token"]))
    assert me.status_code == 200
    assert (me.json()["driver"]["id"], me.json()["deliveries"]) == (sam["id"], [])
    shift = client.post("/v1/drivers/me/shift", json={"on_shift": True}, headers=bearer(sam["token"]))
    assert shift.json()["on_shift"] is True

    gone = client.post(f"{base}/drivers/{sam['id']}/deactivate", headers=auth(partner))
    assert gone.status_code == 200
    assert (gone.json()["active"], gone.json()["on_shift"]) == (False, False)
    assert client.get(f"{base}/drivers", headers=auth(partner)).json()["data"] == []
    assert len(client.get(f"{base}/drivers?include_inactive=true", headers=auth(partner)).json()["data"]) == 1
    refused = client.get("/v1/drivers/me", headers=bearer(sam["token"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_driver_token"


def test_bad_input_gets_a_code_and_the_field_path(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    base = f"/v1/locations/{partner.location_id}"
    bad_phone = client.post(f"{base}/drivers", json={"name": "Sam", "phone": "12345"}, headers=auth(partner))
    assert bad_phone.status_code == 422
    assert bad_phone.json()["error"]["code"] == "invalid_phone"
    assert bad_phone.json()["error"]["details"][0]["path"] == "phone"

    missing = client.post(f"{base}/drivers", json={"phone": "+14155550142", "extra": 1}, headers=auth(partner))
    assert missing.status_code == 422
    assert {d["path"] for d in missing.json()["error"]["details"]} == {"body.name", "body.extra"}

    negative = client.put(f"{base}/fleet", json={"fee": -1}, headers=auth(partner))
    assert negative.status_code == 422
    assert negative.json()["error"]["details"][0]["path"] == "body.fee"

    sam = add(client, partner)
    headers = bearer(sam["token"])
    unknown = client.post("/v1/drivers/deliveries/drd_nope/status", json={"status": "at_pickup"}, headers=headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "delivery_not_found"
    half = client.post(
        "/v1/drivers/deliveries/drd_nope/status", json={"status": "at_pickup", "latitude": 1.0}, headers=headers
    )
    assert half.status_code == 422
    flying = client.post("/v1/drivers/deliveries/drd_nope/status", json={"status": "flying"}, headers=headers)
    assert flying.status_code == 422
    assert flying.json()["error"]["details"][0]["path"] == "body.status"
    no_token = client.post("/v1/drivers/deliveries/drd_nope/status", json={"status": "at_pickup"})
    assert no_token.status_code == 401


def test_partners_and_operators_reach_only_what_they_may(client: TestClient, db: Database) -> None:
    partner, other = make_partner(db), make_partner(db)
    sam = add(client, partner)
    theirs = f"/v1/locations/{partner.location_id}"
    # the other partner has a location with the same id, but never sees this one's drivers
    assert client.get(f"{theirs}/drivers", headers=auth(other)).json()["data"] == []
    moved = client.post(f"{theirs}/drivers/{sam['id']}/deactivate", headers=auth(other))
    assert moved.status_code == 404
    assert moved.json()["error"]["code"] == "driver_not_found"
    nowhere = client.get("/v1/locations/no_such_place/drivers", headers=auth(partner))
    assert nowhere.status_code == 404
    assert nowhere.json()["error"]["code"] == "location_not_found"
    assert client.get(f"{theirs}/drivers").status_code == 401

    admin = f"/admin/partners/{partner.slug}/locations/{partner.location_id}"
    assert client.get(f"{admin}/drivers", headers=bearer("wrong")).status_code == 401
    assert client.get(f"{admin}/drivers", headers=bearer(sam["token"])).status_code == 401
    listed = client.get(f"{admin}/drivers", headers=bearer(ADMIN))
    assert [d["id"] for d in listed.json()["data"]] == [sam["id"]]
    kim = client.post(f"{admin}/drivers", json={"name": "Kim", "phone": "4155550143"}, headers=bearer(ADMIN))
    assert kim.status_code == 201
    assert kim.json()["phone"] == "+14155550143"
    unknown = client.get(f"/admin/partners/nobody/locations/{partner.location_id}/drivers", headers=bearer(ADMIN))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "partner_not_found"
