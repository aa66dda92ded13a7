"""HTTP side on both databases: tracking page (steps, expiry, no PII), Twilio callbacks (signed), STOP, unsubscribe."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.app import create_app
from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.notifications import service, tracking
from orderstream.notifications.channels.twilio.signature import compute
from orderstream.notifications.models import tracking_tokens
from tests.factories import PartnerFixture, make_partner
from tests.notifications_helpers import Driver, by_key, delivery, notif_settings, order_created, set_status, twilio
from tests.orders_api_helpers import seed_order

BASE = "http://testserver"


@pytest.fixture
def partner(db: Database) -> PartnerFixture:
    return make_partner(db)


@pytest.fixture
def app_settings(db_url: str) -> Settings:
    return notif_settings(db_url, sms_url=None, smtp_port=None, public_base_url=BASE)


@pytest.fixture
def client(db: Database, app_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings, db=db), base_url=BASE) as running:
        yield running


def _token(db: Database, order_id: str) -> str:
    with db.read() as conn:
        return str(conn.execute(sa.text("SELECT tracking_token FROM orders WHERE id = :i"), {"i": order_id}).scalar())


def test_tracking_page_follows_the_delivery_and_shows_no_pii(
    db: Database, client: TestClient, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner, customer_phone="+14155550160", street="987 Canary Lane")
    order_created(db, order_id)
    token = _token(db, order_id)
    page = client.get(f"/t/{token}")
    assert page.status_code == 200
    assert "Main Street Burgers" in page.text
    assert "(415) 555-0100" in page.text
    assert '<li class="current">Order received</li>' in page.text
    assert '<meta http-equiv="refresh"' in page.text  # inside <noscript>: works without JavaScript
    assert page.headers["cache-control"] == "no-store"
    eta = utcnow().replace(second=0, microsecond=0) + timedelta(minutes=25)
    delivery(db, partner, order_id, "enroute_to_dropoff", dropoff_eta=eta)
    page = client.get(f"/t/{token}")
    assert '<li class="current">On the way</li>' in page.text
    assert "Dana" in page.text
    assert "blue Toyota Prius" in page.text
    for secret in ("+14155550160", "4155550160", "987 Canary Lane", "Jane Doe", "jane.doe", "Driver", "0123"):
        assert secret not in page.text
    with db.read() as conn:
        version = conn.execute(sa.select(tracking_tokens.c.version).where(tracking_tokens.c.token == token)).scalar()
    assert version == 2


def test_pickup_page_says_where_to_collect(db: Database, client: TestClient, partner: PartnerFixture) -> None:
    order_id = seed_order(db, partner, fulfillment_type="pickup", fulfillment_instructions="Shelf by the door")
    order_created(db, order_id)
    set_status(db, order_id, "ready_for_pickup")
    page = client.get(f"/t/{_token(db, order_id)}")
    assert '<li class="current">Ready for pickup</li>' in page.text
    assert "1 Main St, Anytown" in page.text
    assert "Shelf by the door" in page.text


def test_unknown_and_expired_links(
    db: Database, client: TestClient, partner: PartnerFixture, app_settings: Settings
) -> None:
    assert client.get("/t/not-a-real-token").status_code == 404
    assert client.get("/t/" + "x" * 500).status_code == 404
    order_id = seed_order(db, partner)
    order_created(db, order_id)
    set_status(db, order_id, "completed")
    token = _token(db, order_id)
    assert client.get(f"/t/{token}").status_code == 200  # still within the retention
    with db.write() as conn:
        ended = utcnow() - timedelta(days=app_settings.tracking_link_days, minutes=1)
        conn.execute(sa.update(tracking_tokens).where(tracking_tokens.c.token == token).values(ended_at=ended))
    expired = client.get(f"/t/{token}")
    assert expired.status_code == 410
    assert "expired" in expired.text
    assert "Main Street Burgers" not in expired.text


def _signed(url: str, params: dict[str, str], token: str = "sim-auth-token") -> dict[str, str]:
    return {"X-Twilio-Signature": compute(token, url, params)}


def test_status_callbacks_need_a_valid_signature_and_move_forward_only(
    db: Database, db_url: str, client: TestClient, partner: PartnerFixture
) -> None:
    with twilio(callback_delay_seconds=60) as sim:
        driver = Driver(db, notif_settings(db_url, sms_url=sim.base_url, smtp_port=None, public_base_url=BASE), partner)
        order_id = seed_order(db, partner, customer_phone="+14155550161", customer_email=None)
        order_created(db, order_id)
        driver.drain()
        driver.close()
    sms = by_key(db, order_id)[("confirmed", "sms")]
    assert sms["status"] == "sent"
    url = f"{BASE}/notifications/twilio/status?n={sms['id']}"
    params = {"MessageSid": sms["provider_message_id"], "MessageStatus": "delivered", "AccountSid": "AC0"}
    forged = client.post(url, data=params, headers=_signed(url, params, token="wrong"))
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "invalid_signature"
    assert client.post(url, data=params).status_code == 401
    assert client.post(url, data=params, headers=_signed(url, params)).status_code == 204
    assert by_key(db, order_id)[("confirmed", "sms")]["status"] == "delivered"
    late = {**params, "MessageStatus": "sent"}
    assert client.post(url, data=late, headers=_signed(url, late)).status_code == 204
    assert by_key(db, order_id)[("confirmed", "sms")]["status"] == "delivered"


def test_undelivered_callback_is_a_permanent_failure_in_history(
    db: Database, client: TestClient, partner: PartnerFixture, app_settings: Settings
) -> None:
    order_id = seed_order(db, partner, customer_phone="+14155550162", customer_email=None)
    order_created(db, order_id)
    assert Driver(db, app_settings, partner).run_once()  # the plan job queues; nothing is sent
    with db.write() as conn:
        conn.execute(
            sa.text("UPDATE notifications SET status = 'sent', provider_message_id = 'SMabc'"
                    " WHERE order_id = :o AND channel = 'sms'"),
            {"o": order_id},
        )  # fmt: skip
    url = f"{BASE}/notifications/twilio/status"
    params = {"MessageSid": "SMabc", "MessageStatus": "undelivered", "ErrorCode": "30003"}
    assert client.post(url, data=params, headers=_signed(url, params)).status_code == 204
    sms = by_key(db, order_id)[("confirmed", "sms")]
    assert (sms["status"], sms["reason"]) == ("failed", "twilio undelivered (error 30003)")
    history = client.get(f"/v1/orders/{order_id}/history", headers={"Authorization": f"Bearer {partner.api_key}"})
    entries = [e for e in history.json()["data"] if e["kind"] == "notification"]
    assert any(e["reason"] == "sms confirmed failed: twilio undelivered (error 30003)" for e in entries)


def test_inbound_stop_and_start(db: Database, client: TestClient) -> None:
    url = f"{BASE}/notifications/twilio/inbound"
    stop = {"From": "+14155550163", "To": "+15005550006", "Body": " stop "}
    answer = client.post(url, data=stop, headers=_signed(url, stop))
    assert answer.status_code == 200
    assert "<Response>" in answer.text
    with db.read() as conn:
        assert service.is_opted_out(conn, service.Channel.SMS, service.domain.contact_hash("+14155550163"))
    assert client.post(url, data=stop).status_code == 401
    start = {**stop, "Body": "START"}
    assert client.post(url, data=start, headers=_signed(url, start)).status_code == 200
    with db.read() as conn:
        assert not service.is_opted_out(conn, service.Channel.SMS, service.domain.contact_hash("+14155550163"))
    bad = {**stop, "From": "not-a-phone"}
    refused = client.post(url, data=bad, headers=_signed(url, bad))
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["path"] == "From"


def _email_opted_out(db: Database, address: str) -> bool:
    with db.read() as conn:
        return service.is_opted_out(conn, service.Channel.EMAIL, service.domain.contact_hash(address))


def test_unsubscribe_link(db: Database, client: TestClient, partner: PartnerFixture, app_settings: Settings) -> None:
    order_id = seed_order(db, partner, customer_email="unsub.me@example.com")
    order_created(db, order_id)
    driver = Driver(db, app_settings, partner)
    driver.drain()
    mail = by_key(db, order_id)[("confirmed", "email")]
    token = service.unsubscribe_token(app_settings, mail["id"])
    page = client.get(f"/notifications/unsubscribe/{token}")
    assert page.status_code == 200
    assert "<form" in page.text
    with db.read() as conn:  # a GET (link scanners) changes nothing
        assert not service.is_opted_out(
            conn, service.Channel.EMAIL, service.domain.contact_hash("unsub.me@example.com")
        )
    assert client.post(f"/notifications/unsubscribe/{token}").status_code == 200
    with db.read() as conn:
        assert service.is_opted_out(conn, service.Channel.EMAIL, service.domain.contact_hash("unsub.me@example.com"))
    assert client.get(f"/notifications/unsubscribe/{mail['id']}.forged").status_code == 404
    other = seed_order(db, partner, customer_email="unsub.me@example.com")
    order_created(db, other)
    driver.drain()
    assert by_key(db, other)[("confirmed", "email")]["reason"] == "opted_out"


def test_tracking_touch_makes_a_missing_row_and_refuses_an_unknown_order(db: Database, partner: PartnerFixture) -> None:
    order_id = seed_order(db, partner)  # no OrderCreated: the order has no tracking row yet
    at = utcnow()
    with db.write() as conn:
        tracking.touch(conn, order_id=order_id, at=at, status="canceled")
        tracking.touch(conn, order_id=order_id, at=at + timedelta(minutes=1))
    with db.read() as conn:
        row = conn.execute(sa.select(tracking_tokens).where(tracking_tokens.c.order_id == order_id)).mappings().one()
    assert (row["token"], row["version"], row["ended_at"]) == (_token(db, order_id), 3, at)
    with pytest.raises(sa.exc.NoResultFound), db.write() as conn:
        tracking.touch(conn, order_id="ord_missing", at=at)
