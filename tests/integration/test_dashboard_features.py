"""Dashboard sections backed by dispatch, own drivers and notifications, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.deliveries import service as dispatch
from orderstream.deliveries.models import delivery_attempts
from orderstream.deliveries.providers.own_drivers import service as own
from orderstream.deliveries.providers.own_drivers.models import driver_deliveries
from orderstream.jobs.models import jobs
from orderstream.notifications import service as notify
from orderstream.notifications.domain import Kind
from orderstream.notifications.models import notifications
from orderstream.orders.models import order_history
from orderstream.tenancy import service as tenancy
from orderstream.tenancy.models import locations
from tests.dashboard_helpers import csrf_of, make_user, sign_in
from tests.factories import PartnerFixture
from tests.orders_api_helpers import seed_order


def seed_attempt(db: Database, order_id: str, **values: Any) -> int:
    """Store a delivery attempt as dispatch would have (test data, no provider involved)."""

    now = utcnow()
    number = values.pop("number", 1)
    state = values.pop("state", "booked")
    row = {
        "order_id": order_id,
        "number": number,
        "active_order_id": order_id if state != "ended" else None,
        "provider": "doordash",
        "external_id": f"{order_id}-{number}",
        "state": state,
        "delivery_status": "enroute_to_pickup",
        "fee": 975,
        "currency": "usd",
        "context": {},
        "booked_at": now,
        "created_at": now,
        "updated_at": now,
        **values,
    }
    with db.write() as conn:
        return int(
            conn.execute(sa.insert(delivery_attempts).values(**row).returning(delivery_attempts.c.id)).scalar_one()
        )


def location_pk(db: Database, partner: PartnerFixture) -> int:
    with db.read() as conn:
        row = tenancy.get_location(conn, partner_id=partner.partner_id, external_id=partner.location_id)
    assert row is not None
    return int(row["id"])


def test_order_page_lists_every_delivery_attempt(client: TestClient, db: Database, partner: PartnerFixture) -> None:
    order_id = seed_order(db, partner)
    seed_attempt(
        db,
        order_id,
        number=1,
        state="ended",
        provider="uber",
        delivery_status="failed_to_assign_driver",
        outcome="no_courier",
        fee=1200,
    )
    seed_attempt(
        db,
        order_id,
        number=2,
        provider="doordash",
        quote_id="q_123",
        fee=975,
        courier={"name": "Dana D.", "phone": "+1*******23", "vehicle_make": "Toyota", "vehicle_model": "Prius"},
        proof_of_delivery={"photo_url": "https://example.com/proof.jpg"},
    )
    sign_in(client, make_user(db))

    html = client.get(f"/dashboard/orders/{order_id}").text
    table = html.split('id="attempts"')[1].split("</table>")[0]

    assert table.index('data-provider="uber"') < table.index('data-provider="doordash"')
    assert "no courier" in table
    assert "12.00 usd" in table
    assert "9.75 usd" in table
    assert "q_123" in table
    assert "Dana D." in table
    assert "Toyota Prius" in table
    assert 'href="https://example.com/proof.jpg"' in table


def test_board_shows_the_provider_filters_by_it_and_knows_the_courier(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    now = utcnow()
    # ready in 5 minutes: late without a courier, not late with one
    with_courier = seed_order(db, partner, pos_order_id="p_courier", created_at=now - timedelta(minutes=10))
    without = seed_order(db, partner, pos_order_id="p_none", created_at=now - timedelta(minutes=10))
    slow = seed_order(db, partner, pos_order_id="p_slow", created_at=now - timedelta(minutes=10))
    seed_attempt(db, with_courier, provider="doordash", delivery_status="enroute_to_pickup")
    seed_attempt(db, without, provider="uber", delivery_status="pending_driver_confirmation")
    seed_attempt(
        db, slow, provider="doordash", delivery_status="enroute_to_pickup", pickup_eta=now + timedelta(minutes=30)
    )
    sign_in(client, make_user(db))

    board = client.get("/dashboard/board").text
    by_provider = client.get("/dashboard/board", params={"provider": "uber"}).text

    def card(html: str, order_id: str) -> str:
        start = html.index(f'id="card-{order_id}"')
        return html[html.rindex("<a ", 0, start) : html.index("</a>", start)]

    assert "late" not in card(board, with_courier).split(">")[0]
    assert 'data-reason="no_courier"' in card(board, without)
    assert 'data-reason="pickup_eta_after_ready"' in card(board, slow)
    assert "doordash" in card(board, with_courier)
    assert f"card-{without}" in by_provider
    assert f"card-{with_courier}" not in by_provider
    assert '<option value="uber"' in board


def test_redispatch_without_an_active_delivery_queues_a_dispatch(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner)
    seed_attempt(db, order_id, state="ended", provider="uber", delivery_status="failed_to_assign_driver")
    email = make_user(db)
    sign_in(client, email)
    token = csrf_of(client.get(f"/dashboard/orders/{order_id}").text)

    resp = client.post(
        f"/dashboard/orders/{order_id}/redispatch",
        data={"csrf_token": token, "provider": "doordash", "confirmed": "yes"},
        follow_redirects=True,
    )

    assert "Booking with the chosen provider." in resp.text
    with db.read() as conn:
        job = conn.execute(
            sa.select(jobs.c.payload).where(jobs.c.kind == "dispatch", jobs.c.key == f"{order_id}:2")
        ).scalar_one()
        reasons = list(
            conn.execute(sa.select(order_history.c.reason).where(order_history.c.order_id == order_id)).scalars()
        )
    assert job["only"] == "doordash"
    assert job["actor"] == "operator"
    assert any(r and email in r for r in reasons)


def test_redispatch_with_an_active_delivery_cancels_it_first_and_skips_its_provider(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:

    order_id = seed_order(db, partner)
    attempt_id = seed_attempt(db, order_id, provider="uber")
    sign_in(client, make_user(db))
    token = csrf_of(client.get(f"/dashboard/orders/{order_id}").text)

    client.post(f"/dashboard/orders/{order_id}/redispatch", data={"csrf_token": token, "confirmed": "yes"})

    with db.read() as conn:
        attempt = (
            conn.execute(sa.select(delivery_attempts).where(delivery_attempts.c.id == attempt_id)).mappings().one()
        )
        cancel_job = conn.execute(
            sa.select(jobs.c.id).where(jobs.c.kind == "dispatch.cancel", jobs.c.key == f"attempt:{attempt_id}")
        ).first()
    assert attempt["cancel_requested_at"] is not None
    assert attempt["context"]["cancel"]["then_dispatch"] is True
    assert attempt["context"]["cancel"]["exclude"] == ["uber"]
    assert cancel_job is not None


def test_a_pickup_order_has_no_dispatch_actions_and_refuses_them(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner, fulfillment_type="pickup")
    sign_in(client, make_user(db))
    page = client.get(f"/dashboard/orders/{order_id}").text
    assert 'id="redispatch-form"' not in page

    resp = client.post(
        f"/dashboard/orders/{order_id}/redispatch", data={"csrf_token": csrf_of(page), "confirmed": "yes"}
    )

    assert resp.status_code == 409
    assert "not dispatched" in resp.text


def test_location_dispatch_policy_is_saved_through_dispatch(
    client: TestClient, db: Database, partner: PartnerFixture, settings: Settings
) -> None:

    loc = location_pk(db, partner)
    sign_in(client, make_user(db, role="merchant", partners=(partner,)))
    token = csrf_of(client.get(f"/dashboard/locations/{loc}").text)

    resp = client.post(
        f"/dashboard/locations/{loc}/dispatch-policy",
        data={
            "csrf_token": token,
            "allowed_providers": ["uber", "doordash"],
            "strategy": "fastest",
            "max_fee": "1500",
            "max_pickup_eta_minutes": "",
            "timeout_uber": "120",
            "redispatch_window_minutes": "20",
        },
        follow_redirects=True,
    )
    bad = client.post(
        f"/dashboard/locations/{loc}/dispatch-policy",
        data={"csrf_token": token, "allowed_providers": ["nope"], "strategy": "fastest"},
    )

    assert "Dispatch policy saved." in resp.text
    assert bad.status_code == 422
    with db.read() as conn:
        policy = dispatch.get_policy(conn, location_id=loc, settings=settings).as_dict()
    assert policy["allowed_providers"] == ["uber", "doordash"]
    assert (policy["strategy"], policy["max_fee"], policy["max_pickup_eta_minutes"]) == ("fastest", 1500, None)
    assert policy["acceptance_timeout_seconds"] == {"uber": 120.0}
    assert policy["redispatch_window_minutes"] == 20


def test_charts_show_fees_by_provider_and_the_redispatch_rate(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    first = seed_order(db, partner)
    second = seed_order(db, partner)
    seed_attempt(db, first, number=1, state="ended", provider="uber", fee=1000)
    seed_attempt(db, first, number=2, provider="doordash", fee=900)
    seed_attempt(db, second, number=1, provider="doordash", fee=1100)
    sign_in(client, make_user(db, role="merchant", partners=(partner,)))

    html = client.get("/dashboard/charts").text

    assert "<title>doordash: 10</title>" in html  # (9.00 + 11.00) / 2
    assert "<title>uber: 10</title>" in html
    assert "50% (1/2)" in html


def test_notifications_are_listed_and_one_can_be_sent_again(
    client: TestClient, db: Database, partner: PartnerFixture, settings: Settings
) -> None:

    order_id = seed_order(db, partner, customer_phone="+14155550123", customer_email="jane.doe@example.com")
    with db.write() as conn:
        first = notify.queue(conn, settings, order_id=order_id, kind=Kind.CONFIRMED)
        conn.execute(
            sa.update(notifications).where(notifications.c.id.in_(first)).values(status="failed", last_error="bounced")
        )
    sign_in(client, make_user(db))
    page = client.get(f"/dashboard/orders/{order_id}").text
    table = page.split('id="notifications"')[1].split("</table>")[0]
    assert 'data-kind="confirmed"' in table
    assert "bounced" in table

    resp = client.post(
        f"/dashboard/orders/{order_id}/notifications/{first[0]}/resend",
        data={"csrf_token": csrf_of(page), "confirmed": "yes"},
        follow_redirects=True,
    )

    assert "The notification is queued again." in resp.text
    with db.read() as conn:
        rows = conn.execute(
            sa.select(notifications.c.kind, notifications.c.seq, notifications.c.status).where(
                notifications.c.order_id == order_id
            )
        ).all()
    assert sorted((r.seq, r.status) for r in rows if r.kind == "confirmed") == sorted(
        [(0, "failed")] * len(first) + [(1, "queued")] * len(first)
    )


def test_location_notification_settings_are_saved_through_notifications(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:

    loc = location_pk(db, partner)
    sign_in(client, make_user(db, role="merchant", partners=(partner,)))
    token = csrf_of(client.get(f"/dashboard/locations/{loc}").text)
    kinds = ["confirmed", "canceled"]

    resp = client.post(
        f"/dashboard/locations/{loc}/notifications",
        data={
            "csrf_token": token,
            "sms_enabled": "on",
            "enabled_kinds": kinds,
            "text_confirmed_sms": "Thanks! Order {{ order_number }} is in.",
        },
        follow_redirects=True,
    )
    broken = client.post(
        f"/dashboard/locations/{loc}/notifications",
        data={"csrf_token": token, "enabled_kinds": kinds, "text_confirmed_sms": "{% if %}"},
    )

    assert "Notification settings saved." in resp.text
    assert broken.status_code == 422
    with db.read() as conn:
        saved = notify.location_settings(conn, location_id=loc)
    assert (saved["sms_enabled"], saved["email_enabled"]) == (True, False)
    assert "reminder" in saved["disabled_kinds"]
    assert "confirmed" not in saved["disabled_kinds"]
    assert saved["overrides"]["confirmed"]["sms"]["text"] == "Thanks! Order {{ order_number }} is in."


def test_an_own_driver_is_assigned_through_the_fleet_and_dispatch(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:

    order_id = seed_order(db, partner)
    now = utcnow()
    with db.write() as conn:
        loc = conn.execute(sa.select(locations).where(locations.c.id == location_pk(db, partner))).mappings().one()
        driver, _token = own.add_driver(conn, loc=loc, name="Sam Driver", phone="+14155550188", on_shift=True)
        conn.execute(
            sa.insert(driver_deliveries).values(
                id=f"drd_{order_id[-12:]}",
                external_id=f"{order_id}-1",
                order_id=order_id,
                location_id=loc["id"],
                status="unassigned",
                fee=500,
                currency="usd",
                created_at=now,
                updated_at=now,
            )
        )
    attempt_id = seed_attempt(
        db,
        order_id,
        provider="own_drivers",
        provider_delivery_id=f"drd_{order_id[-12:]}",
        delivery_status="pending_driver_confirmation",
        fee=500,
    )
    sign_in(client, make_user(db, role="merchant", partners=(partner,)))
    page = client.get(f"/dashboard/orders/{order_id}").text
    assert 'id="driver-form"' in page
    assert "Sam Driver" in page

    resp = client.post(
        f"/dashboard/orders/{order_id}/assign-driver",
        data={"csrf_token": csrf_of(page), "driver_id": driver["id"], "confirmed": "yes"},
        follow_redirects=True,
    )

    assert "The driver is assigned." in resp.text
    with db.read() as conn:
        delivery = (
            conn.execute(sa.select(driver_deliveries).where(driver_deliveries.c.order_id == order_id)).mappings().one()
        )
        attempt = (
            conn.execute(sa.select(delivery_attempts).where(delivery_attempts.c.id == attempt_id)).mappings().one()
        )
    assert (delivery["driver_id"], delivery["status"]) == (driver["id"], "assigned")
    assert attempt["delivery_status"] == "enroute_to_pickup"
    assert (attempt["courier"] or {}).get("name") == "Sam Driver"


def test_assigning_a_driver_needs_an_own_driver_delivery(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner)
    seed_attempt(db, order_id, provider="doordash")
    sign_in(client, make_user(db))
    page = client.get(f"/dashboard/orders/{order_id}").text
    assert 'id="driver-form"' not in page

    resp = client.post(
        f"/dashboard/orders/{order_id}/assign-driver",
        data={"csrf_token": csrf_of(page), "driver_id": "drv_x", "confirmed": "yes"},
    )

    assert resp.status_code == 409
    assert "choose that provider first" in resp.text
