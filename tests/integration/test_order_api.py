"""The partner order API on SQLite and PostgreSQL: representation, lookups, tenancy, pagination, filters, errors."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orderstream.app import create_app
from orderstream.config import Settings
from orderstream.db import Database
from tests.factories import PartnerFixture, make_partner
from tests.orders_api_helpers import add_location, seed_order


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"public_base_url": "https://orders.example.test/"}), db=db)
    with TestClient(app) as c:
        yield c


def auth(partner: PartnerFixture) -> dict[str, str]:
    return {"Authorization": f"Bearer {partner.api_key}"}


def all_pages(client: TestClient, partner: PartnerFixture, **params: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        resp = client.get("/v1/orders", params=query, headers=auth(partner))
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages.append([o["id"] for o in body["data"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"


def test_an_order_is_shown_with_every_field(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    order_id = seed_order(db, partner, pos_order_id="pos_order_123")

    resp = client.get(f"/v1/orders/{order_id}", headers=auth(partner))

    assert resp.status_code == 200
    order = resp.json()
    assert order["id"] == order_id
    assert order["pos_order_id"] == "pos_order_123"
    assert order["location_id"] == partner.location_id
    assert order["fulfillment_type"] == "delivery"
    assert order["status"] == "received"
    assert order["delivery_status"] is None
    assert order["customer"] == {
        "id": "customer_1",
        "name": "Jane Doe",
        "phone": "+14155550123",
        "phone_e164": "+14155550123",
        "email": "jane.doe@example.com",
    }
    assert [c["id"] for c in order["customers"]] == ["customer_1"]
    assert order["delivery_address"] == {
        "street": "123 Main St",
        "city": "Anytown",
        "state": "CA",
        "postal_code": "12345",
        "country": "US",
    }
    burger, fries = order["line_items"]
    assert (burger["name"], burger["quantity"], burger["price_amount"], burger["price_currency"]) == (
        "Cheeseburger",
        2,
        1200,
        "usd",
    )
    assert burger["provider_id"] == "item_789"
    assert burger["customer_id"] == "customer_1"
    assert burger["modifiers"][0]["name"] == "Extra Cheese"
    assert burger["modifiers"][0]["modifiers"][0]["name"] == "Cheddar"
    assert fries["modifiers"] == []
    assert (order["subtotal_amount"], order["tax_amount"], order["total_amount"]) == (2600, 208, 2808)
    assert order["amounts"] == {"tip_amount": 300, "tax_withheld_by_dsp": 0}
    assert order["currency"] == "usd"
    assert order["notes"] == "Extra crispy fries please"
    assert order["is_future_order"] is False
    assert order["requested_for"] is None
    assert order["placed_at"] is not None
    assert order["warnings"] == [
        {"code": "invalid_phone", "message": "not a valid phone number", "path": "customer.phone"}
    ]
    assert order["tracking_url"].startswith("https://orders.example.test/t/")
    assert len(order["tracking_url"]) > len("https://orders.example.test/t/") + 20
    created = datetime.fromisoformat(order["created_at"])
    assert created.tzinfo is not None
    assert order["updated_at"] == order["created_at"]


def test_a_scheduled_order_shows_its_requested_time(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    order_id = seed_order(db, partner, status="scheduled", fulfillment_type="pickup")
    order = client.get(f"/v1/orders/{order_id}", headers=auth(partner)).json()
    assert order["status"] == "scheduled"
    assert order["is_future_order"] is True
    assert datetime.fromisoformat(order["requested_for"]) > datetime.fromisoformat(order["created_at"])
    assert order["delivery_address"] is None


def test_lookup_by_location_and_pos_order_id(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    add_location(db, partner, "location_789")
    first = seed_order(db, partner, pos_order_id="pos_order_123")
    # the same POS order id at another location is another order
    second = seed_order(db, partner, location_id="location_789", pos_order_id="pos_order_123")

    one = client.get(f"/v1/locations/{partner.location_id}/orders/pos_order_123", headers=auth(partner))
    two = client.get("/v1/locations/location_789/orders/pos_order_123", headers=auth(partner))
    missing = client.get(f"/v1/locations/{partner.location_id}/orders/pos_order_999", headers=auth(partner))

    assert (one.status_code, one.json()["id"]) == (200, first)
    assert (two.status_code, two.json()["id"], two.json()["location_id"]) == (200, second, "location_789")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "order_not_found"


def test_history_lists_changes_oldest_first(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    order_id = seed_order(db, partner)
    from orderstream.orders import service
    from orderstream.orders.domain import Actor, OrderStatus

    with db.write() as conn:
        row = service.get_order_for_update(conn, order_id=order_id)
        assert row is not None
        service.change_status(conn, order=row, target=OrderStatus.PREPARING, actor=Actor.POS, reason="kitchen")

    resp = client.get(f"/v1/orders/{order_id}/history", headers=auth(partner))

    assert resp.status_code == 200
    body = resp.json()
    assert body["order_id"] == order_id
    assert [(h["from_status"], h["to_status"], h["actor"]) for h in body["data"]] == [
        (None, "received", "pos"),
        ("received", "preparing", "pos"),
    ]
    assert body["data"][1]["reason"] == "kitchen"
    assert client.get(f"/v1/orders/{order_id}", headers=auth(partner)).json()["status"] == "preparing"


def test_another_partners_orders_are_not_found_on_every_endpoint(client: TestClient, db: Database) -> None:
    # both partners use the same location id, so only the credential tells their orders apart
    alice, bob = make_partner(db), make_partner(db)
    bob_orders = [seed_order(db, bob, pos_order_id=f"bob_{i}") for i in range(3)]
    alice_order = seed_order(db, alice, pos_order_id="alice_1")
    never_existed = "ord_01hzzzzzzzzzzzzzzzzzzzzzzz"
    not_found_body = client.get(f"/v1/orders/{never_existed}", headers=auth(alice)).json()

    probes = []
    for i, order_id in enumerate(bob_orders):
        probes += [
            f"/v1/orders/{order_id}",
            f"/v1/orders/{order_id}/history",
            f"/v1/locations/{bob.location_id}/orders/bob_{i}",
        ]
    for path in probes:
        resp = client.get(path, headers=auth(alice))
        assert resp.status_code == 404, path
        assert resp.json() == not_found_body, path  # indistinguishable from an id that never existed

    listed = {o["id"] for page in all_pages(client, alice) for o in [{"id": i} for i in page]}
    assert listed == {alice_order}
    filtered = client.get("/v1/orders", params={"location_id": bob.location_id}, headers=auth(alice)).json()
    assert [o["id"] for o in filtered["data"]] == [alice_order]
    # and Bob still reads his own
    for order_id in bob_orders:
        assert client.get(f"/v1/orders/{order_id}", headers=auth(bob)).status_code == 200


def test_pages_cover_every_order_once_newest_first(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    seeded = [seed_order(db, partner) for _ in range(7)]

    pages = all_pages(client, partner, limit=3)

    assert [len(p) for p in pages] == [3, 3, 1]
    flat = [order_id for page in pages for order_id in page]
    assert flat == sorted(seeded, reverse=True)


def test_orders_arriving_while_paging_cause_no_duplicates_or_gaps(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    seeded = [seed_order(db, partner) for _ in range(5)]
    first = client.get("/v1/orders", params={"limit": 2}, headers=auth(partner)).json()
    newer = seed_order(db, partner)  # lands before the first page: not part of this walk

    seen = [o["id"] for o in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/v1/orders", params={"limit": 2, "cursor": cursor}, headers=auth(partner)).json()
        seen += [o["id"] for o in page["data"]]
        cursor = page["next_cursor"]

    assert seen == sorted(seeded, reverse=True)
    assert newer not in seen
    assert client.get("/v1/orders", params={"limit": 1}, headers=auth(partner)).json()["data"][0]["id"] == newer


def test_the_last_page_has_no_cursor_even_when_full(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    for _ in range(4):
        seed_order(db, partner)
    assert [len(p) for p in all_pages(client, partner, limit=2)] == [2, 2]
    assert [len(p) for p in all_pages(client, partner)] == [4]


def test_page_size_is_capped(settings: Settings, db: Database) -> None:
    partner = make_partner(db)
    for _ in range(4):
        seed_order(db, partner)
    app = create_app(settings.model_copy(update={"page_size_max": 3}), db=db)
    with TestClient(app) as capped:
        body = capped.get("/v1/orders", params={"limit": 1000}, headers=auth(partner)).json()
    assert len(body["data"]) == 3
    assert body["next_cursor"] is not None


def test_filters_combine(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    add_location(db, partner, "location_789")
    old = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    delivery_old = seed_order(db, partner, created_at=old)
    pickup_ready = seed_order(db, partner, fulfillment_type="pickup", status="ready_for_pickup")
    delivery_other_location = seed_order(db, partner, location_id="location_789", status="preparing")
    canceled = seed_order(db, partner, status="canceled", cancel_reason="customer_request", cancel_source="pos")

    def ids(**params: Any) -> set[str]:
        resp = client.get("/v1/orders", params=params, headers=auth(partner))
        assert resp.status_code == 200, resp.text
        return {o["id"] for o in resp.json()["data"]}

    assert ids(fulfillment_type="pickup") == {pickup_ready}
    assert ids(status="ready_for_pickup") == {pickup_ready}
    assert ids(status=["preparing", "canceled"]) == {delivery_other_location, canceled}
    assert ids(location_id="location_789") == {delivery_other_location}
    assert ids(location_id="nowhere") == set()
    assert ids(created_before="2026-01-11T00:00:00Z") == {delivery_old}
    assert ids(created_after="2026-01-10T12:00:00+00:00", created_before="2026-01-10T12:00:01Z") == {delivery_old}
    assert ids(created_after="2026-01-10T04:00:01-08:00") == {pickup_ready, delivery_other_location, canceled}
    assert ids(fulfillment_type="delivery", location_id=partner.location_id) == {delivery_old, canceled}
    cancel = client.get(f"/v1/orders/{canceled}", headers=auth(partner)).json()["cancellation"]
    assert cancel == {"reason": "customer_request", "source": "pos", "note": None}


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"limit": "0"}, "query.limit"),
        ({"limit": "ten"}, "query.limit"),
        ({"status": "lost"}, "query.status[0]"),
        ({"fulfillment_type": "teleport"}, "query.fulfillment_type[0]"),
        ({"created_after": "yesterday"}, "query.created_after"),
        ({"created_after": "2026-01-10T12:00:00"}, "query.created_after"),  # no offset
        ({"created_after": "2026-01-10T12:00:00Z", "created_before": "2026-01-10T11:00:00Z"}, "query.created_before"),
        ({"cursor": "not-a-cursor"}, "query.cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"o1:'; DROP TABLE orders;--").decode()}, "query.cursor"),
        ({"location_id": "x" * 500}, "query.location_id"),
    ],
)
def test_bad_query_parameters_are_422_with_their_path(
    client: TestClient, db: Database, params: dict[str, str], path: str
) -> None:
    partner = make_partner(db)
    resp = client.get("/v1/orders", params=params, headers=auth(partner))
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "validation_error"
    assert path in [d["path"] for d in error["details"]]


def test_without_a_valid_key_everything_is_401(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    order_id = seed_order(db, partner)
    for path in [
        "/v1/orders",
        f"/v1/orders/{order_id}",
        f"/v1/orders/{order_id}/history",
        f"/v1/locations/{partner.location_id}/orders/x",
    ]:
        for headers in [{}, {"Authorization": "Bearer osk_wrong"}, {"Authorization": f"Basic {partner.api_key}"}]:
            resp = client.get(path, headers=headers)
            assert resp.status_code == 401, (path, headers)
            assert resp.headers["www-authenticate"] == "Bearer"
            assert resp.json()["error"]["code"] in ("missing_api_key", "invalid_api_key")
    # authentication is checked before parameters: a bad parameter without a key is still a 401
    assert client.get("/v1/orders", params={"limit": "0"}).status_code == 401


def test_openapi_documents_the_api_and_its_security(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in [
        "/v1/orders",
        "/v1/orders/{order_id}",
        "/v1/orders/{order_id}/history",
        "/v1/locations/{location_id}/orders/{pos_order_id}",
        "/healthz",
        "/readyz",
    ]:
        assert path in paths, path
    schemes = spec["components"]["securitySchemes"]
    assert any(
        s == {"type": "http", "scheme": "bearer", **{k: v for k, v in s.items() if k not in ("type", "scheme")}}
        for s in schemes.values()
    )
    assert paths["/v1/orders"]["get"]["security"]
    assert "Order" in spec["components"]["schemas"]
    assert paths["/v1/orders"]["get"]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_times_are_utc_with_offset(client: TestClient, db: Database) -> None:
    partner = make_partner(db)
    when = datetime(2026, 3, 1, 9, 30, tzinfo=UTC) - timedelta(days=1)
    order_id = seed_order(db, partner, created_at=when)
    order = client.get(f"/v1/orders/{order_id}", headers=auth(partner)).json()
    assert datetime.fromisoformat(order["created_at"]) == when
    assert datetime.fromisoformat(order["placed_at"]).utcoffset() == timedelta(0)
