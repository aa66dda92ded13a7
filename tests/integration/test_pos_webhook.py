"""The POS webhook through the ASGI app on SQLite and PostgreSQL: the docs' payloads, storage, duplicates, statuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.app import create_app
from orderstream.config import Settings
from orderstream.db import Database
from orderstream.jobs.models import jobs
from orderstream.orders.models import order_history, order_line_items, orders
from orderstream.pos.models import inbound_events
from tests.factories import PartnerFixture, make_partner
from tests.pos_helpers import (
    DOC_ORDER_CANCELED,
    DOC_ORDER_CREATED,
    DOC_STATUS_UPDATED,
    current_order,
    doc_bytes,
    legacy_order,
    post_event,
)


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"public_base_url": "https://orders.example.test"}), db=db)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def partner(db: Database) -> PartnerFixture:
    return make_partner(db)


def counts(db: Database, order_id: str) -> dict[str, int]:
    """How many rows each table holds for one order (to prove nothing happened twice)."""
    with db.read() as conn:

        def count(table: sa.Table, column: sa.Column[Any]) -> int:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(column == order_id)).scalar())

        return {
            "orders": count(orders, orders.c.id),
            "line_items": count(order_line_items, order_line_items.c.order_id),
            "history": count(order_history, order_history.c.order_id),
            "events": count(inbound_events, inbound_events.c.order_id),
            "dispatch_jobs": int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(jobs)
                    .where(jobs.c.kind == "dispatch")
                    .where(jobs.c.key == order_id)
                ).scalar()
            ),
        }


def api_order(client: TestClient, partner: PartnerFixture, order_id: str) -> dict[str, Any]:
    resp = client.get(f"/v1/orders/{order_id}", headers={"Authorization": f"Bearer {partner.api_key}"})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_the_docs_order_created_is_accepted_byte_for_byte_and_stored(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    body = doc_bytes(DOC_ORDER_CREATED)

    resp = post_event(client, partner.slug, partner.secret, body)

    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["accepted"] is True
    assert answer["duplicate"] is False
    order_id = answer["order"]["id"]
    assert order_id.startswith("ord_")
    assert answer["order"]["status"] == "received"
    assert answer["order"]["pos_order_id"] == "pos_order_123"
    assert answer["order"]["location_id"] == "location_456"
    warnings = {w["code"]: w for w in answer["order"]["warnings"]}
    assert set(warnings) == {"subtotal_mismatch", "invalid_phone"}
    assert warnings["subtotal_mismatch"]["expected"] == 2600
    assert warnings["subtotal_mismatch"]["given"] == 2400
    assert warnings["invalid_phone"]["path"] == "data.order.customer.phone"

    stored = api_order(client, partner, order_id)
    assert stored["customer"]["phone"] == "+1234567890"
    assert stored["customer"]["phone_e164"] is None
    assert stored["customer"]["email"] == "john.doe@example.com"
    assert stored["delivery_address"]["postal_code"] == "12345"
    assert stored["delivery_address"]["street"] == "123 Main St"
    assert stored["currency"] == "usd"
    assert (stored["subtotal_amount"], stored["tax_amount"], stored["total_amount"]) == (2400, 200, 2600)
    assert stored["notes"] == "Extra crispy fries please"
    assert stored["unpaid"] is False
    assert stored["prep_time_minutes"] == 15  # the location's default
    [line] = stored["line_items"]
    assert (line["name"], line["quantity"], line["price_amount"], line["provider_id"]) == (
        "Cheeseburger",
        2,
        1200,
        "item_789",
    )
    assert line["modifiers"][0]["name"] == "Extra Cheese"
    assert line["modifiers"][0]["price_amount"] == 100
    assert counts(db, order_id) == {"orders": 1, "line_items": 1, "history": 1, "events": 1, "dispatch_jobs": 1}
    with db.read() as conn:
        raw = conn.execute(sa.select(inbound_events.c.body).where(inbound_events.c.order_id == order_id)).scalar()
        history = conn.execute(sa.select(order_history).where(order_history.c.order_id == order_id)).mappings().one()
    assert raw == body.decode()
    assert (history["from_status"], history["to_status"], history["actor"]) == (None, "received", "pos")


def test_the_same_order_again_is_a_duplicate_and_nothing_happens_twice(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    first = post_event(client, partner.slug, partner.secret, legacy_order("pos_dup_1")).json()
    order_id = first["order"]["id"]
    before = counts(db, order_id)

    again = post_event(client, partner.slug, partner.secret, legacy_order("pos_dup_1"))

    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["order"] == first["order"]
    after = counts(db, order_id)
    assert after == {**before, "events": before["events"] + 1}  # the resend is kept, nothing else is done


def test_a_resend_with_a_new_idempotency_key_and_placed_at_is_still_the_same_order(
    client: TestClient, partner: PartnerFixture
) -> None:
    first = post_event(client, partner.slug, partner.secret, current_order("pos_dup_2")).json()
    resend = current_order("pos_dup_2", idempotency_key="pos_dup_2_1699999999", placed_at=1699999999000)

    again = post_event(client, partner.slug, partner.secret, resend)

    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["order"]["id"] == first["order"]["id"]


def test_the_same_order_id_with_other_content_is_a_conflict(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    first = post_event(client, partner.slug, partner.secret, legacy_order("pos_conflict")).json()
    order_id = first["order"]["id"]
    before = counts(db, order_id)

    changed = legacy_order("pos_conflict", notes="No onions")
    resp = post_event(client, partner.slug, partner.secret, changed)

    assert resp.status_code == 409
    error = resp.json()["error"]
    assert error["code"] == "order_conflict"
    assert error["details"]["order_id"] == order_id
    assert counts(db, order_id) == before


def test_the_current_envelope_is_mapped_onto_the_same_order(client: TestClient, partner: PartnerFixture) -> None:
    resp = post_event(client, partner.slug, partner.secret, current_order("pos_current"))

    assert resp.status_code == 200, resp.text
    assert resp.json()["order"]["warnings"] == []
    stored = api_order(client, partner, resp.json()["order"]["id"])
    assert stored["pos_order_id"] == "pos_current"
    assert stored["idempotency_key"] == "pos_current_1699564800"
    assert stored["customer"]["phone_e164"] == "+14155550123"
    assert stored["customers"][0]["id"] == "customer_1"
    assert stored["line_items"][0]["customer_id"] == "customer_1"
    assert stored["line_items"][0]["price_currency"] == "usd"
    assert stored["placed_at"].startswith("2023-11-09T21:20:00")
    assert stored["should_include_utensils"] is True
    assert stored["special_instructions"] == "Ring the bell"
    assert stored["source"] == "your_pos_name"
    assert stored["amounts"] == {"tax_withheld_by_dsp": 0}


def test_a_pickup_order_gets_no_dispatch_job(client: TestClient, db: Database, partner: PartnerFixture) -> None:
    event = current_order(fulfillment_type="pickup")
    del event["object"]["delivery_address"]

    resp = post_event(client, partner.slug, partner.secret, event)

    assert resp.status_code == 200, resp.text
    assert counts(db, resp.json()["order"]["id"])["dispatch_jobs"] == 0


def test_a_future_order_is_scheduled_and_its_dispatch_waits(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    event = current_order(is_future_order=True, requested_for="2099-01-01T12:00:00+00:00")
    resp = post_event(client, partner.slug, partner.secret, event)
    assert resp.status_code == 422  # 2099 is more than 30 days ahead

    when = datetime.now(UTC) + timedelta(days=2)
    event = current_order(is_future_order=True, requested_for=int(when.timestamp() * 1000))
    resp = post_event(client, partner.slug, partner.secret, event)

    assert resp.status_code == 200, resp.text
    order = resp.json()["order"]
    assert order["status"] == "scheduled"
    assert order["is_future_order"] is True
    with db.read() as conn:
        run_at = conn.execute(sa.select(jobs.c.run_at).where(jobs.c.key == order["id"])).scalar_one()
    assert when - timedelta(hours=1) < run_at < when


def test_the_docs_status_update_and_cancel_follow_the_order(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = post_event(client, partner.slug, partner.secret, doc_bytes(DOC_ORDER_CREATED)).json()["order"]["id"]

    ready = post_event(client, partner.slug, partner.secret, doc_bytes(DOC_STATUS_UPDATED))
    assert ready.status_code == 200, ready.text
    assert ready.json()["order"] == {
        "id": order_id,
        "pos_order_id": "pos_order_123",
        "status": "ready_for_pickup",
        "previous_status": "received",
        "changed": True,
    }

    canceled = post_event(client, partner.slug, partner.secret, doc_bytes(DOC_ORDER_CANCELED))
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["order"]["status"] == "canceled"
    stored = api_order(client, partner, order_id)
    assert stored["status"] == "canceled"
    assert stored["cancellation"] == {
        "reason": "customer_requested",
        "source": "customer",
        "note": "Customer requested cancellation",
    }
    history = client.get(
        f"/v1/orders/{order_id}/history", headers={"Authorization": f"Bearer {partner.api_key}"}
    ).json()["data"]
    assert [(h["from_status"], h["to_status"], h["actor"]) for h in history] == [
        (None, "received", "pos"),
        ("received", "ready_for_pickup", "pos"),
        ("ready_for_pickup", "canceled", "pos"),
    ]
    assert history[2]["reason"] == "Customer requested cancellation"
    assert counts(db, order_id)["events"] == 3


def _status(pos_order_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "event": "order.status.updated",
        "data": {"order": {"provider_id": pos_order_id, "status": status, **extra}},
    }


def test_status_rules_unknown_order_repeat_and_illegal_moves(client: TestClient, partner: PartnerFixture) -> None:
    unknown = post_event(client, partner.slug, partner.secret, _status("pos_nobody", "preparing"))
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "order_not_found"

    post_event(client, partner.slug, partner.secret, legacy_order("pos_flow"))
    assert post_event(client, partner.slug, partner.secret, _status("pos_flow", "preparing")).status_code == 200

    repeat = post_event(client, partner.slug, partner.secret, _status("pos_flow", "preparing"))
    assert repeat.status_code == 200
    assert repeat.json()["order"]["changed"] is False
    assert repeat.json()["order"]["status"] == "preparing"

    assert post_event(client, partner.slug, partner.secret, _status("pos_flow", "completed")).status_code == 200
    backwards = post_event(client, partner.slug, partner.secret, _status("pos_flow", "preparing"))
    assert backwards.status_code == 409
    error = backwards.json()["error"]
    assert error["code"] == "illegal_transition"
    assert "completed" in error["message"]
    assert "preparing" in error["message"]
    assert error["details"] == {"from_status": "completed", "to_status": "preparing"}

    after_end = post_event(
        client, partner.slug, partner.secret, {"type": "order.canceled", "object": {"source_order_id": "pos_flow"}}
    )
    assert after_end.status_code == 409


def test_current_envelope_status_names_and_explicit_cancel_codes(client: TestClient, partner: PartnerFixture) -> None:
    post_event(client, partner.slug, partner.secret, current_order("pos_curr_status"))
    moved = post_event(
        client,
        partner.slug,
        partner.secret,
        {
            "type": "order.updated",
            "object": {"order_id": "pos_curr_status", "location_id": "location_456", "status": "in_progress"},
        },
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["order"]["status"] == "preparing"

    canceled = post_event(
        client,
        partner.slug,
        partner.secret,
        {
            "type": "order.canceled",
            "object": {
                "source_order_id": "pos_curr_status",
                "cancel_reason": "kitchen_too_busy",
                "cancel_source": "restaurant",
                "reason": "Friday rush",
            },
        },
    )
    assert canceled.status_code == 200, canceled.text
    stored = api_order(client, partner, moved.json()["order"]["id"])
    assert stored["cancellation"] == {"reason": "kitchen_too_busy", "source": "restaurant", "note": "Friday rush"}


def test_location_status_pauses_and_reopens(client: TestClient, db: Database, partner: PartnerFixture) -> None:
    paused = post_event(
        client,
        partner.slug,
        partner.secret,
        {
            "type": "location.status.updated",
            "object": {"location_id": "location_456", "status": "inactive", "paused_until": 4000000000000},
        },
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["location"]["status"] == "paused"
    assert paused.json()["location"]["paused_until"].startswith("2096-")

    order = post_event(client, partner.slug, partner.secret, current_order())
    assert order.status_code == 200
    assert [w["code"] for w in order.json()["order"]["warnings"]] == ["location_paused"]

    active = post_event(
        client,
        partner.slug,
        partner.secret,
        {"event": "location.status.updated", "data": {"location": {"location_id": "location_456", "status": "active"}}},
    )
    assert active.status_code == 200, active.text
    assert active.json()["location"] == {
        "id": "location_456",
        "status": "active",
        "paused_until": None,
        "previous_status": "paused",
    }
    assert post_event(client, partner.slug, partner.secret, current_order()).json()["order"]["warnings"] == []


def test_standard_webhooks_id_dedupes_forever(client: TestClient, db: Database, partner: PartnerFixture) -> None:
    event = current_order("pos_std")
    first = post_event(client, partner.slug, partner.secret, event, msg_id="msg_std_1")
    assert first.status_code == 200, first.text
    order_id = first.json()["order"]["id"]
    before = counts(db, order_id)

    again = post_event(client, partner.slug, partner.secret, event, msg_id="msg_std_1")

    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert again.json()["order"] == first.json()["order"]
    assert counts(db, order_id) == before

    status = _status("pos_std", "preparing")
    assert post_event(client, partner.slug, partner.secret, status, msg_id="msg_std_2").status_code == 200
    # the same message id again replays the stored answer, even though a repeat would now say changed=False
    replay = post_event(client, partner.slug, partner.secret, status, msg_id="msg_std_2")
    assert replay.json()["order"]["changed"] is True
    assert replay.json()["duplicate"] is True
    assert counts(db, order_id)["history"] == 2


def test_a_partner_only_reaches_its_own_locations_and_orders(client: TestClient, db: Database) -> None:
    mine = make_partner(db, location_id="loc_mine")
    other = make_partner(db, location_id="loc_other")
    post_event(client, other.slug, other.secret, legacy_order("pos_theirs", location_id="loc_other"))

    foreign = post_event(client, mine.slug, mine.secret, legacy_order(location_id="loc_other"))
    assert foreign.status_code == 422
    assert foreign.json()["error"]["details"] == [
        {
            "path": "data.order.location_id",
            "code": "unknown_location",
            "message": "no location 'loc_other' for this partner",
        }
    ]
    assert post_event(client, mine.slug, mine.secret, _status("pos_theirs", "preparing")).status_code == 404
    # another partner's secret does not open this partner's webhook
    assert post_event(client, mine.slug, other.secret, legacy_order(location_id="loc_mine")).status_code == 401


def test_raw_event_keeps_unknown_fields_and_none_are_assigned(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    event = current_order("pos_extra", status="completed", id="ord_forged", partner_id=999, tracking_token="mine")
    resp = post_event(client, partner.slug, partner.secret, event)

    assert resp.status_code == 200
    order = resp.json()["order"]
    assert order["id"] != "ord_forged"
    assert order["status"] == "received"
    with db.read() as conn:
        row = conn.execute(sa.select(orders).where(orders.c.id == order["id"])).mappings().one()
        raw = conn.execute(sa.select(inbound_events.c.body).where(inbound_events.c.order_id == order["id"])).scalar()
    assert row["partner_id"] == partner.partner_id
    assert row["tracking_token"] != "mine"
    assert json.loads(raw)["object"]["partner_id"] == 999
