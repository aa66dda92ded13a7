"""The order page and its actions on SQLite and PostgreSQL: detail, reveal (logged), cancel, mark ready, replay."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.dashboard.models import dashboard_audit
from orderstream.db import Database
from orderstream.orders.models import order_history, orders
from orderstream.webhooks_out import service as webhooks_service
from orderstream.webhooks_out.models import webhook_deliveries
from tests.dashboard_helpers import csrf_of, make_user, sign_in
from tests.factories import PartnerFixture
from tests.orders_api_helpers import seed_order


def status_of(db: Database, order_id: str) -> str:
    with db.read() as conn:
        return str(conn.execute(sa.select(orders.c.status).where(orders.c.id == order_id)).scalar_one())


def test_order_page_shows_items_modifiers_totals_history_and_warnings(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner, pos_order_id="pos_order_123")
    sign_in(client, make_user(db))

    html = client.get(f"/dashboard/orders/{order_id}").text

    assert "#pos_order_123" in html
    assert "Cheeseburger" in html
    assert "Extra Cheese" in html
    assert "Cheddar" in html
    assert "28.08 usd" in html  # total
    assert "Tip amount" in html
    assert "invalid_phone" in html  # intake warning
    assert "Delivery attempts" in html


def test_contact_details_are_masked_until_revealed_and_the_reveal_is_logged(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner, customer_phone="+14155550123", customer_email="jane.doe@example.com")
    email = make_user(db)
    sign_in(client, email)

    page = client.get(f"/dashboard/orders/{order_id}").text
    revealed = client.post(f"/dashboard/orders/{order_id}/reveal", data={"csrf_token": csrf_of(page)})
    again = client.get(f"/dashboard/orders/{order_id}").text

    assert "+14155550123" not in page
    assert "jane.doe@example.com" not in page
    assert "123 Main St" not in page
    assert "•••• ••23" in page
    assert revealed.status_code == 200
    assert "+14155550123" in revealed.text
    assert "jane.doe@example.com" in revealed.text
    assert "123 Main St" in revealed.text
    assert "+14155550123" not in again  # a reveal is for one page view
    with db.read() as conn:
        entries = (
            conn.execute(sa.select(dashboard_audit).where(dashboard_audit.c.order_id == order_id)).mappings().all()
        )
    assert [(e["action"], e["user_email"], e["order_id"]) for e in entries] == [("reveal_customer", email, order_id)]


def test_cancel_asks_for_confirmation_then_goes_through_change_status(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner)
    email = make_user(db)
    sign_in(client, email)
    token = csrf_of(client.get(f"/dashboard/orders/{order_id}").text)

    confirm = client.post(f"/dashboard/orders/{order_id}/cancel", data={"csrf_token": token, "reason": "out_of_stock"})
    assert confirm.status_code == 200
    assert 'name="confirmed" value="yes"' in confirm.text
    assert status_of(db, order_id) == "received"

    done = client.post(
        f"/dashboard/orders/{order_id}/cancel",
        data={"csrf_token": token, "reason": "out_of_stock", "note": "fryer broke", "confirmed": "yes"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    page = client.get(done.headers["location"]).text

    assert "The order was canceled." in page
    with db.read() as conn:
        row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().one()
        history = conn.execute(sa.select(order_history).where(order_history.c.order_id == order_id)).mappings().all()
    assert (row["status"], row["cancel_reason"], row["cancel_source"], row["cancel_note"]) == (
        "canceled",
        "out_of_stock",
        "operator",
        "fryer broke",
    )
    assert history[-1]["actor"] == "operator"
    assert history[-1]["to_status"] == "canceled"
    assert email in history[-1]["reason"]
    assert 'data-to="canceled"' in page


def test_an_action_the_state_machine_refuses_is_explained(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner, status="completed")
    sign_in(client, make_user(db))
    page = client.get(f"/dashboard/orders/{order_id}").text
    assert "Cancel order" not in page  # no button for an impossible action

    resp = client.post(
        f"/dashboard/orders/{order_id}/cancel",
        data={"csrf_token": csrf_of(page), "reason": "other", "confirmed": "yes"},
    )

    assert resp.status_code == 409
    assert "completed is final" in resp.text
    assert status_of(db, order_id) == "completed"


def test_mark_ready(client: TestClient, db: Database, partner: PartnerFixture) -> None:
    order_id = seed_order(db, partner, fulfillment_type="pickup", status="preparing")
    sign_in(client, make_user(db))
    token = csrf_of(client.get(f"/dashboard/orders/{order_id}").text)

    client.post(f"/dashboard/orders/{order_id}/mark-ready", data={"csrf_token": token, "confirmed": "yes"})

    assert status_of(db, order_id) == "ready_for_pickup"


def canceled_with_failed_webhook(client: TestClient, db: Database, partner: PartnerFixture, order_id: str) -> str:
    """Subscribe the partner to order.canceled, cancel the order from the dashboard, fail the webhook; its id."""
    with db.write() as conn:
        webhooks_service.create_endpoint(
            conn,
            partner_id=partner.partner_id,
            url="http://127.0.0.1:9/hook",
            event_types=["order.canceled"],
            allow_private=True,
        )
    token = csrf_of(client.get(f"/dashboard/orders/{order_id}").text)
    client.post(
        f"/dashboard/orders/{order_id}/cancel", data={"csrf_token": token, "reason": "other", "confirmed": "yes"}
    )
    with db.write() as conn:  # as if the worker had given up on it
        delivery_id = str(
            conn.execute(
                sa.select(webhook_deliveries.c.id).where(webhook_deliveries.c.order_id == order_id)
            ).scalar_one()
        )
        conn.execute(
            sa.update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery_id)
            .values(status="failed", last_status_code=500)
        )
    return delivery_id


def test_webhooks_of_the_order_are_listed_and_can_be_replayed(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner)
    sign_in(client, make_user(db))
    delivery_id = canceled_with_failed_webhook(client, db, partner, order_id)
    token = csrf_of(client.get(f"/dashboard/orders/{order_id}").text)

    page = client.get(f"/dashboard/orders/{order_id}").text
    resp = client.post(
        f"/dashboard/orders/{order_id}/webhooks/{delivery_id}/replay",
        data={"csrf_token": token, "confirmed": "yes"},
        follow_redirects=True,
    )

    assert "order.canceled" in page
    assert "HTTP 500" in page
    assert "The webhook will be sent again." in resp.text
    with db.read() as conn:
        assert (
            conn.execute(
                sa.select(webhook_deliveries.c.status).where(webhook_deliveries.c.id == delivery_id)
            ).scalar_one()
            == "pending"
        )
        actions = list(
            conn.execute(
                sa.select(dashboard_audit.c.action)
                .where(dashboard_audit.c.order_id == order_id)
                .order_by(dashboard_audit.c.id)
            ).scalars()
        )
    assert actions == ["cancel", "replay_webhook"]


def test_a_webhook_of_another_order_cannot_be_replayed_through_this_one(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    first = seed_order(db, partner)
    second = seed_order(db, partner)
    sign_in(client, make_user(db))
    delivery_id = canceled_with_failed_webhook(client, db, partner, first)
    token = csrf_of(client.get(f"/dashboard/orders/{second}").text)

    resp = client.post(
        f"/dashboard/orders/{second}/webhooks/{delivery_id}/replay", data={"csrf_token": token, "confirmed": "yes"}
    )

    assert resp.status_code == 404
    with db.read() as conn:
        status = sa.select(webhook_deliveries.c.status).where(webhook_deliveries.c.id == delivery_id)
        assert conn.execute(status).scalar_one() == "failed"


def test_an_unknown_cancel_reason_is_a_422_naming_the_field(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner)
    sign_in(client, make_user(db))
    token = csrf_of(client.get(f"/dashboard/orders/{order_id}").text)

    resp = client.post(
        f"/dashboard/orders/{order_id}/cancel", data={"csrf_token": token, "reason": "bored", "confirmed": "yes"}
    )

    assert resp.status_code == 422
    assert "reason: choose one of the listed reasons (invalid_reason)" in resp.text
    assert status_of(db, order_id) == "received"
