"""Outbound webhooks: events in the order's transaction, replay, the polling feed, the API and partner scoping."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.app import create_app
from orderstream.db import Database, utcnow
from orderstream.jobs.models import jobs
from orderstream.orders import domain
from orderstream.orders.service import change_status, get_order_for_update
from orderstream.webhooks_out import service
from orderstream.webhooks_out.models import outbound_events, webhook_deliveries
from tests.factories import PartnerFixture, make_partner
from tests.webhooks_out_helpers import (
    COURIER,
    JobDriver,
    Receiver,
    Reply,
    delivery_changed,
    insert_order,
    pos_order_id,
    set_status,
    webhook_settings,
)

ADMIN = "admin-token-for-tests"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiving POS on a free port."""
    rec = Receiver().start()
    yield rec
    rec.stop()


@pytest.fixture
def client(db: Database, db_url: str) -> Iterator[TestClient]:
    """The app on the test database, private targets allowed, with an admin token and a resolver seam."""
    app = create_app(webhook_settings(db_url, admin_token=ADMIN), db=db)
    app.state.webhooks_resolver = lambda host, _port: {"pos.example.test": ["10.0.0.5"]}.get(host, ["127.0.0.1"])
    with TestClient(app) as test_client:
        yield test_client


def auth(partner: PartnerFixture) -> dict[str, str]:
    """The partner's API key header."""
    return {"Authorization": f"Bearer {partner.api_key}"}


def events_of(db: Database, order_id: str) -> list[dict[str, Any]]:
    """Stored events of an order, in sequence."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(outbound_events)
            .where(outbound_events.c.order_id == order_id)
            .order_by(outbound_events.c.sequence)
        ).mappings()
        return [dict(r) for r in rows]


def add_endpoint(client: TestClient, partner: PartnerFixture, url: str, types: list[str] | None = None) -> Any:
    """Add an endpoint through the API."""
    resp = client.post(
        "/v1/webhook-endpoints",
        json={"url": url, "event_types": types or ["order.updated", "order.canceled", "order.delivery_failed"]},
        headers=auth(partner),
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


# --- events are part of the order change ----------------------------------------------------------


def test_event_delivery_and_job_commit_or_roll_back_with_the_order_change(
    db: Database, client: TestClient, receiver: Receiver
) -> None:
    partner = make_partner(db)
    endpoint = add_endpoint(client, partner, receiver.url())
    order_id = insert_order(db, partner)

    def change_then_fail() -> None:
        with db.write() as conn:
            row = get_order_for_update(conn, order_id=order_id)
            assert row is not None
            change_status(conn, order=row, target=domain.OrderStatus.PREPARING, actor=domain.Actor.SYSTEM)
            seen = conn.execute(sa.select(outbound_events).where(outbound_events.c.order_id == order_id)).all()
            assert len(seen) == 1
            raise RuntimeError("the request failed after the change")

    with pytest.raises(RuntimeError):
        change_then_fail()
    assert events_of(db, order_id) == []

    set_status(db, order_id, "preparing")
    [event] = events_of(db, order_id)
    with db.read() as conn:
        [delivery] = conn.execute(
            sa.select(webhook_deliveries).where(webhook_deliveries.c.event_id == event["id"])
        ).mappings()
        job = (
            conn.execute(
                sa.select(jobs)
                .where(jobs.c.kind == service.DELIVER_KIND)
                .where(jobs.c.payload["delivery_id"].as_string() == delivery["id"])
            )
            .mappings()
            .one()
        )
    assert delivery["endpoint_id"] == endpoint["id"]
    assert delivery["status"] == "pending"
    assert job["status"] == "pending"


def test_which_changes_make_which_events(db: Database) -> None:
    partner = make_partner(db)
    order_id = insert_order(db, partner)
    set_status(db, order_id, "preparing", actor="pos")  # the POS's own change: no echo
    assert events_of(db, order_id) == []
    delivery_changed(db, partner, order_id, "pending_driver_confirmation")
    delivery_changed(
        db, partner, order_id, "enroute_to_pickup", from_status="pending_driver_confirmation", courier=COURIER
    )
    set_status(db, order_id, "ready_for_pickup", actor="system")
    delivery_changed(db, partner, order_id, "failed_to_pickup", from_status="enroute_to_pickup", courier=COURIER)
    set_status(db, order_id, "canceled", actor="operator", reason="no_courier")

    events = events_of(db, order_id)
    assert [e["type"] for e in events] == [
        "order.updated",
        "order.updated",
        "order.updated",
        "order.updated",
        "order.delivery_failed",
        "order.canceled",
    ]
    assert [e["sequence"] for e in events] == sorted(e["sequence"] for e in events)
    bodies = [json.loads(e["body"]) for e in events]
    assert all(b["id"] == e["id"] for b, e in zip(bodies, events, strict=True))
    ready = bodies[2]["object"]
    assert ready["status"] == "ready_for_pickup"
    assert ready["delivery_status"] == "enroute_to_pickup"  # carried over from the last delivery update
    assert ready["driver_details"]["name"] == "Dana D."
    assert bodies[4]["object"]["delivery_status"] == "failed_to_pickup"
    canceled = bodies[5]["object"]
    assert canceled["provider_id"] == pos_order_id(db, order_id)
    assert canceled["status"] == "merchant_canceled"
    assert canceled["cancel_reason"] == "no_courier"
    # the POS canceling itself is not echoed
    other = insert_order(db, partner)
    set_status(db, other, "canceled", actor="pos")
    assert events_of(db, other) == []


def test_only_subscribed_enabled_endpoints_get_deliveries(db: Database, client: TestClient, receiver: Receiver) -> None:
    partner = make_partner(db)
    updates = add_endpoint(client, partner, receiver.url("/updates"), ["order.updated"])
    cancels = add_endpoint(client, partner, receiver.url("/cancels"), ["order.canceled"])
    off = add_endpoint(client, partner, receiver.url("/off"))
    assert (
        client.patch(f"/v1/webhook-endpoints/{off['id']}", json={"enabled": False}, headers=auth(partner)).json()[
            "status"
        ]
        == "disabled"
    )
    order_id = insert_order(db, partner)
    set_status(db, order_id, "preparing")
    set_status(db, order_id, "canceled", actor="operator")
    with db.read() as conn:
        rows = conn.execute(
            sa.select(webhook_deliveries.c.endpoint_id, outbound_events.c.type)
            .join(outbound_events, outbound_events.c.id == webhook_deliveries.c.event_id)
            .where(webhook_deliveries.c.order_id == order_id)
        ).all()
    assert sorted((r[0], r[1]) for r in rows) == sorted(
        [(updates["id"], "order.updated"), (cancels["id"], "order.canceled")]
    )


# --- replay ---------------------------------------------------------------------------------------


def test_replay_one_and_bulk_replay_of_failed_deliveries(
    db: Database, db_url: str, client: TestClient, receiver: Receiver
) -> None:
    partner = make_partner(db)
    endpoint = add_endpoint(client, partner, receiver.url())
    receiver.default = Reply(400)
    order_a, order_b = insert_order(db, partner), insert_order(db, partner)
    set_status(db, order_a, "preparing")
    set_status(db, order_b, "preparing")
    set_status(db, order_b, "ready_for_pickup")
    driver = JobDriver(db, webhook_settings(db_url), partner)
    driver.drain()
    failed = client.get("/v1/webhook-deliveries?status=failed", headers=auth(partner)).json()["data"]
    assert len(failed) == 3

    # the receiver is fixed; the operator replays one delivery of order A
    receiver.default = Reply(200)
    first_a = next(
        d
        for d in failed
        if d["event_type"] == "order.updated" and d["created_at"] == min(x["created_at"] for x in failed)
    )
    assert client.post(f"/admin/webhook-deliveries/{first_a['id']}/replay").status_code == 401
    resp = client.post(
        f"/admin/webhook-deliveries/{first_a['id']}/replay", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "pending"
    driver.drain()
    detail = client.get(f"/v1/webhook-deliveries/{first_a['id']}", headers=auth(partner)).json()
    assert detail["status"] == "succeeded"
    assert [a["response_status"] for a in detail["attempt_log"]] == [400, 200]
    assert detail["attempt_log"][0]["request_headers"]["webhook-id"] == detail["event_id"]

    # bulk: the rest of the partner's failed deliveries in the last hour, oldest first
    now = utcnow()
    body = {
        "partner": partner.slug,
        "since": (now - timedelta(hours=1)).isoformat(),
        "until": (now + timedelta(minutes=1)).isoformat(),
    }
    resp = client.post("/admin/webhook-deliveries/replay", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["replayed"] == 2
    before = len(receiver.requests)
    driver.drain()
    resent = [r.json()["object"]["status"] for r in receiver.requests[before:]]
    assert resent == ["in_progress", "ready_for_pickup"]  # order B's two states, in order
    assert client.get("/v1/webhook-deliveries?status=failed", headers=auth(partner)).json()["data"] == []
    assert endpoint["id"]


def test_bulk_replay_skips_a_failed_state_superseded_by_a_newer_delivered_one(
    db: Database, db_url: str, receiver: Receiver
) -> None:
    partner = make_partner(db)
    with db.write() as conn:
        endpoint, _ = service.create_endpoint(
            conn, partner_id=partner.partner_id, url=receiver.url(), event_types=["order.updated"], allow_private=True
        )
    receiver.script = [Reply(422)]
    order_id = insert_order(db, partner)
    set_status(db, order_id, "preparing")
    set_status(db, order_id, "ready_for_pickup")
    JobDriver(db, webhook_settings(db_url), partner).drain()
    with db.write() as conn:
        result = service.replay_failed(
            conn,
            partner_id=partner.partner_id,
            since=utcnow() - timedelta(hours=1),
            until=utcnow() + timedelta(minutes=1),
        )
    assert result.replayed == []
    assert len(result.superseded) == 1  # resending "preparing" after "ready" would move the POS back in time


# --- polling feed ---------------------------------------------------------------------------------


def test_events_feed_pages_in_order_with_a_cursor(db: Database, client: TestClient) -> None:
    partner = make_partner(db)
    other = make_partner(db)
    orders_ = [insert_order(db, partner) for _ in range(3)]
    for order_id in orders_:
        set_status(db, order_id, "preparing")
        set_status(db, order_id, "ready_for_pickup")
    set_status(db, insert_order(db, other), "preparing")

    seen: list[dict[str, Any]] = []
    cursor = "0"
    while True:
        page = client.get(f"/v1/events?after={cursor}&limit=4", headers=auth(partner)).json()
        seen.extend(page["data"])
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert len(seen) == 6
    assert [e["sequence"] for e in seen] == list(range(1, 7))
    pos_ids = {pos_order_id(db, o) for o in orders_}
    assert {e["object"]["order_id"] for e in seen} == pos_ids  # nothing of the other partner
    assert all(e["id"].startswith("evt_") and e["type"] == "order.updated" for e in seen)
    # nothing new: the same cursor, an empty page
    page = client.get(f"/v1/events?after={cursor}", headers=auth(partner)).json()
    assert page == {"data": [], "next_cursor": cursor, "has_more": False}
    set_status(db, orders_[0], "out_for_delivery")
    page = client.get(f"/v1/events?after={cursor}", headers=auth(partner)).json()
    assert [e["object"]["status"] for e in page["data"]] == ["out_for_delivery"]


@pytest.mark.parametrize("query", ["after=-1", "after=abc", "limit=0", "limit=100000"])
def test_events_feed_rejects_bad_parameters(db: Database, client: TestClient, query: str) -> None:
    partner = make_partner(db)
    assert client.get(f"/v1/events?{query}", headers=auth(partner)).status_code == 422


def test_events_feed_needs_a_key(client: TestClient) -> None:
    assert client.get("/v1/events").status_code == 401


# --- endpoints API and scoping --------------------------------------------------------------------


def test_endpoint_lifecycle_through_the_api(db: Database, client: TestClient, receiver: Receiver) -> None:
    partner = make_partner(db)
    created = add_endpoint(client, partner, receiver.url(), ["order.updated"])
    assert created["secret"].startswith("whsec_")
    assert created["status"] == "enabled"
    listed = client.get("/v1/webhook-endpoints", headers=auth(partner)).json()
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]
    rotated = client.post(
        f"/v1/webhook-endpoints/{created['id']}/rotate-secret", json={"overlap_hours": 1}, headers=auth(partner)
    ).json()
    assert rotated["secret"] != created["secret"]
    changed = client.patch(
        f"/v1/webhook-endpoints/{created['id']}",
        json={"event_types": ["order.updated", "order.delivery_failed"]},
        headers=auth(partner),
    ).json()
    assert changed["event_types"] == ["order.updated", "order.delivery_failed"]
    assert client.delete(f"/v1/webhook-endpoints/{created['id']}", headers=auth(partner)).status_code == 204
    assert client.get(f"/v1/webhook-endpoints/{created['id']}", headers=auth(partner)).status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "ftp://example.com/x", "event_types": ["order.updated"]}, "url_bad_url"),
        ({"url": "https://example.com/x", "event_types": ["order.eaten"]}, "unknown_event_type"),
        ({"url": "https://example.com/x", "event_types": []}, "validation_error"),
        ({"url": "https://example.com/x", "event_types": ["order.updated"], "status": "enabled"}, "validation_error"),
    ],
)
def test_endpoint_validation(db: Database, client: TestClient, body: dict[str, Any], code: str) -> None:
    partner = make_partner(db)
    resp = client.post("/v1/webhook-endpoints", json=body, headers=auth(partner))
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "https://pos.example.test/x",  # the resolver seam maps it to 10.0.0.5
    ],
)
def test_endpoint_creation_refuses_private_targets_when_not_allowed(db: Database, db_url: str, url: str) -> None:
    app = create_app(webhook_settings(db_url, allow_private_webhook_targets=False), db=db)
    app.state.webhooks_resolver = lambda host, _port: {"pos.example.test": ["10.0.0.5"]}[host]
    partner = make_partner(db)
    with TestClient(app) as test_client:
        resp = test_client.post(
            "/v1/webhook-endpoints", json={"url": url, "event_types": ["order.updated"]}, headers=auth(partner)
        )
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "url_blocked_address"


def test_another_partners_objects_are_404(db: Database, db_url: str, client: TestClient, receiver: Receiver) -> None:
    owner, intruder = make_partner(db), make_partner(db)
    endpoint = add_endpoint(client, owner, receiver.url())
    order_id = insert_order(db, owner)
    set_status(db, order_id, "preparing")
    JobDriver(db, webhook_settings(db_url), owner).drain()
    [delivery] = client.get("/v1/webhook-deliveries", headers=auth(owner)).json()["data"]

    for method, path, body in [
        ("GET", f"/v1/webhook-endpoints/{endpoint['id']}", None),
        ("PATCH", f"/v1/webhook-endpoints/{endpoint['id']}", {"enabled": False}),
        ("DELETE", f"/v1/webhook-endpoints/{endpoint['id']}", None),
        ("POST", f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", {}),
        ("GET", f"/v1/webhook-deliveries/{delivery['id']}", None),
        ("POST", f"/v1/webhook-deliveries/{delivery['id']}/replay", None),
    ]:
        resp = client.request(method, path, json=body, headers=auth(intruder))
        assert resp.status_code == 404, (method, path, resp.text)
    assert client.get("/v1/webhook-endpoints", headers=auth(intruder)).json() == []
    assert client.get("/v1/webhook-deliveries", headers=auth(intruder)).json() == {"data": []}
    assert client.get("/v1/events", headers=auth(intruder)).json()["data"] == []
    # and the owner's endpoint is untouched
    assert client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=auth(owner)).json()["status"] == "enabled"


def test_partner_key_cannot_use_the_operator_api(db: Database, client: TestClient) -> None:
    partner = make_partner(db)
    now = utcnow()
    body = {"partner": partner.slug, "since": now.isoformat(), "until": (now + timedelta(hours=1)).isoformat()}
    resp = client.post("/admin/webhook-deliveries/replay", json=body, headers=auth(partner))
    assert resp.status_code == 401
