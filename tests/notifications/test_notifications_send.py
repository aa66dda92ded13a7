"""Queue and send on SQLite and PostgreSQL: the Twilio simulator over HTTP and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orderstream.db import Database, utcnow
from orderstream.jobs.models import jobs
from orderstream.notifications import service
from orderstream.notifications.domain import Channel
from orderstream.notifications.jobs import build_channels
from orderstream.orders.models import order_history
from tests.factories import PartnerFixture, make_partner
from tests.notifications_helpers import (
    Driver,
    SmtpSink,
    by_key,
    notif_settings,
    order_created,
    rows,
    sim_messages,
    smtp_sink,
    twilio,
)
from tests.orders_api_helpers import seed_order


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as running:
        yield running


@pytest.fixture
def sim() -> Iterator[str]:
    with twilio(callback_delay_seconds=0.05) as running:
        yield running.base_url


@pytest.fixture
def partner(db: Database) -> PartnerFixture:
    return make_partner(db)


@pytest.fixture
def driver(db: Database, db_url: str, sim: str, sink: SmtpSink, partner: PartnerFixture) -> Iterator[Driver]:
    running = Driver(db, notif_settings(db_url, sms_url=sim, smtp_port=sink.port), partner)
    yield running
    running.close()


def _mine(sim: str, phone: str) -> list[dict[str, object]]:
    return [m for m in sim_messages(sim) if m["to"] == phone]


def test_confirmation_goes_out_once_on_both_channels(
    db: Database, driver: Driver, partner: PartnerFixture, sim: str, sink: SmtpSink
) -> None:
    phone = "+14155550142"
    order_id = seed_order(db, partner, customer_phone=phone, customer_email="jane.doe@example.com")
    order_created(db, order_id)
    order_created(db, order_id)  # a repeated event (POS retry) queues nothing new
    driver.drain()
    found = by_key(db, order_id)
    sms, mail = found[("confirmed", "sms")], found[("confirmed", "email")]
    assert len(rows(db, order_id)) == 2
    assert sms["status"] == "sent"
    assert mail["status"] == "sent"
    assert sms["recipient_masked"] == "+1********42"
    assert mail["recipient_masked"] == "j***@example.com"
    sent = _mine(sim, phone)
    assert len(sent) == 1
    assert sent[0]["idempotency_key"] == sms["id"]
    assert sms["provider_message_id"] == sent[0]["sid"]
    with db.read() as conn:
        token = conn.execute(sa.text("SELECT tracking_token FROM orders WHERE id = :i"), {"i": order_id}).scalar()
    assert f"/t/{token}" in str(sent[0]["body"])
    assert "Main Street Burgers" in str(sent[0]["body"])
    assert "$28.08" in str(sent[0]["body"])
    copies = sink.by_message_id()
    assert copies[f"<{mail['id']}@orderstream.local>"] == 1
    msg = next(m for m in sink.messages if m["Message-ID"] == f"<{mail['id']}@orderstream.local>")
    assert msg["To"] == "jane.doe@example.com"
    assert msg["List-Unsubscribe"].startswith("<http://127.0.0.1:9/notifications/unsubscribe/")
    assert msg.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in msg.iter_parts()}
    assert f"/t/{token}" in parts["text/plain"]
    assert f'href="http://127.0.0.1:9/t/{token}"' in parts["text/html"]
    with db.read() as conn:
        history = conn.execute(
            sa.select(order_history.c.reason, order_history.c.details).where(
                order_history.c.order_id == order_id, order_history.c.kind == "notification"
            )
        ).all()
    assert sorted(r.reason for r in history) == ["email confirmed sent", "sms confirmed sent"]
    assert all(phone not in str(r.details) and "jane.doe" not in str(r.details) for r in history)


def test_no_contact_and_invalid_phone_are_skipped_with_a_reason(
    db: Database, driver: Driver, partner: PartnerFixture
) -> None:
    no_contact = seed_order(db, partner, customer_phone=None, customer_email=None, customer_phone_e164=None)
    bad_phone = seed_order(db, partner, customer_phone="12345", customer_phone_e164=None)
    order_created(db, no_contact)
    order_created(db, bad_phone)
    driver.drain()
    assert {k: (r["status"], r["reason"]) for k, r in by_key(db, no_contact).items()} == {
        ("confirmed", "sms"): ("skipped", "no_phone"),
        ("confirmed", "email"): ("skipped", "no_email"),
    }
    assert by_key(db, bad_phone)[("confirmed", "sms")]["reason"] == "invalid_phone"
    assert by_key(db, bad_phone)[("confirmed", "email")]["status"] == "sent"


def test_opted_out_customers_get_nothing(db: Database, driver: Driver, partner: PartnerFixture, sim: str) -> None:
    phone = "+14155550143"
    with db.write() as conn:
        service.set_opt_out(conn, channel=Channel.SMS, contact=phone, source="sms_stop", opted_out=True)
    order_id = seed_order(db, partner, customer_phone=phone)
    order_created(db, order_id)
    driver.drain()
    assert by_key(db, order_id)[("confirmed", "sms")]["reason"] == "opted_out"
    assert _mine(sim, phone) == []


def test_opt_out_after_queueing_still_stops_the_message(
    db: Database, driver: Driver, partner: PartnerFixture, sim: str
) -> None:
    phone = "+14155550144"
    order_id = seed_order(db, partner, customer_phone=phone)
    order_created(db, order_id)
    driver.run_once()  # the plan job queues; the send job has not run
    with db.write() as conn:
        service.set_opt_out(conn, channel=Channel.SMS, contact=phone, source="sms_stop", opted_out=True)
    driver.drain()
    assert by_key(db, order_id)[("confirmed", "sms")]["status"] == "skipped"
    assert _mine(sim, phone) == []


def test_per_customer_cap_stops_a_flood(db: Database, driver: Driver, partner: PartnerFixture, sim: str) -> None:
    phone = "+14155550145"
    order_ids = [seed_order(db, partner, customer_phone=phone, customer_email=None) for _ in range(12)]
    for order_id in order_ids:
        order_created(db, order_id)
    driver.drain()
    statuses = [by_key(db, o)[("confirmed", "sms")]["status"] for o in order_ids]
    assert statuses.count("sent") == driver.settings.notifications_cap_per_hour == 8
    assert [by_key(db, o)[("confirmed", "sms")]["reason"] for o in order_ids[8:]] == ["rate_capped"] * 4
    assert len(_mine(sim, phone)) == 8


def test_permanent_failures_are_recorded_and_in_history(
    db: Database, driver: Driver, partner: PartnerFixture, sink: SmtpSink
) -> None:
    order_id = seed_order(db, partner, customer_phone="+15005550001", customer_email="bounce@example.com")
    order_created(db, order_id)
    driver.drain()
    found = by_key(db, order_id)
    assert found[("confirmed", "sms")]["status"] == "failed"
    assert "21211" in found[("confirmed", "sms")]["reason"]
    assert found[("confirmed", "email")]["status"] == "failed"
    assert "recipient refused" in found[("confirmed", "email")]["reason"]
    assert driver.pending() == []  # nothing is retried
    with db.read() as conn:
        reasons = conn.execute(
            sa.select(order_history.c.reason).where(
                order_history.c.order_id == order_id, order_history.c.kind == "notification"
            )
        ).scalars()
        assert sorted(r.split(":")[0] for r in reasons) == ["email confirmed failed", "sms confirmed failed"]


def test_provider_errors_are_retried_with_backoff(
    db: Database, driver: Driver, partner: PartnerFixture, sim: str
) -> None:
    import httpx

    httpx.post(f"{sim}/_sim/faults", json={"mode": "http_500", "count": 1}, timeout=5)
    phone = "+14155550146"
    order_id = seed_order(db, partner, customer_phone=phone, customer_email=None)
    order_created(db, order_id)
    driver.drain()
    sms = by_key(db, order_id)[("confirmed", "sms")]
    assert sms["status"] == "queued"
    assert "500" in sms["last_error"]
    [job] = [j for j in driver.pending() if j["kind"] == "notifications.send"]
    assert (job["run_at"] - utcnow()).total_seconds() > 3  # backoff, not an immediate retry
    driver.make_due()
    driver.drain()
    assert by_key(db, order_id)[("confirmed", "sms")]["status"] == "sent"
    assert by_key(db, order_id)[("confirmed", "sms")]["attempts"] == 2
    assert len(_mine(sim, phone)) == 1


def test_a_send_cut_off_in_flight_is_found_not_repeated(
    db: Database, driver: Driver, partner: PartnerFixture, sim: str
) -> None:
    phone = "+14155550147"
    order_id = seed_order(db, partner, customer_phone=phone, customer_email=None)
    order_created(db, order_id)
    driver.run_once()  # plan
    sms = by_key(db, order_id)[("confirmed", "sms")]
    # a worker marked it sending, the provider accepted the message, and the worker died before recording it
    with db.write() as conn:
        conn.execute(
            sa.text("UPDATE notifications SET status = 'sending', sending_at = :t, attempts = 1 WHERE id = :i"),
            {"t": utcnow(), "i": sms["id"]},
        )
    channels = build_channels(driver.settings)
    try:
        first = channels.sms.send(to=phone, body=sms["body_text"], status_callback=None, idempotency_key="other-key")
    finally:
        channels.close()
    driver.drain()
    after = by_key(db, order_id)[("confirmed", "sms")]
    assert after["status"] == "sent"
    assert after["provider_message_id"] == first.sid
    assert len(_mine(sim, phone)) == 1


def test_sent_messages_are_never_sent_again(db: Database, driver: Driver, partner: PartnerFixture, sim: str) -> None:
    phone = "+14155550148"
    order_id = seed_order(db, partner, customer_phone=phone, customer_email=None)
    order_created(db, order_id)
    driver.drain()
    sms = by_key(db, order_id)[("confirmed", "sms")]
    with db.write() as conn:  # the send job runs again (a lease expired after the outcome was recorded)
        conn.execute(sa.update(jobs).where(jobs.c.key == sms["id"]).values(status="pending", run_at=utcnow()))
    driver.drain()
    assert len(_mine(sim, phone)) == 1


def test_a_send_is_three_statements_on_the_message_on_postgresql(
    db: Database, driver: Driver, partner: PartnerFixture, sim: str, statements: list[str]
) -> None:
    phone = "+14155550149"
    order_id = seed_order(db, partner, customer_phone=phone, customer_email=None)
    order_created(db, order_id)
    driver.run_once()  # plan
    statements.clear()
    driver.drain()
    sent_with = list(statements)
    sms = by_key(db, order_id)[("confirmed", "sms")]
    assert sms["status"] == "sent"
    assert len(_mine(sim, phone)) == 1
    with db.read() as conn:
        reasons = conn.execute(
            sa.select(order_history.c.reason).where(
                order_history.c.order_id == order_id, order_history.c.kind == "notification"
            )
        ).scalars()
        assert sorted(reasons) == ["email confirmed skipped: no_email", "sms confirmed sent"]
    if db.is_sqlite:
        return
    # the read (message, contact, opt-out, sender), `sending`, and the outcome with its history entry and the
    # job's end
    on_message = [s for s in sent_with if "notifications" in s and "SKIP LOCKED" not in s]  # not the claims
    assert len(on_message) == 3, on_message
    assert "INSERT INTO order_history" in on_message[2]
    assert "UPDATE jobs" in on_message[2]
    assert not [s for s in sent_with if s.startswith("INSERT INTO order_history")]


def test_a_message_settled_meanwhile_is_neither_marked_nor_recorded_again(
    db: Database, db_url: str, partner: PartnerFixture
) -> None:
    order_id = seed_order(db, partner, customer_phone="+14155550150", customer_email=None)
    settings = notif_settings(db_url, sms_url=None, smtp_port=None)
    with db.write() as conn:
        service.queue(conn, settings, order_id=order_id, kind=service.Kind.CONFIRMED)
    [queued] = [row for row in rows(db, order_id) if row["channel"] == "sms"]
    history = service.history_row(queued, "sent", None)
    outcome = service.Outcome(status="sent", reason=None, provider="twilio", message_id="SM1", error=None, at=utcnow())
    with db.atomic_statements() as conn:
        assert service.mark_sending(conn, queued["id"], sending_at=utcnow())
        assert service.record_outcome(conn, queued["id"], outcome, history=history)
        # a second worker's late outcome, or a send of a message already settled: nothing changes
        assert not service.mark_sending(conn, queued["id"], sending_at=utcnow())
        late = service.Outcome(status="failed", reason="late", provider=None, message_id=None, error="x", at=utcnow())
        assert not service.record_outcome(conn, queued["id"], late, history=service.history_row(queued, "failed", "x"))
    [stored] = [row for row in rows(db, order_id) if row["channel"] == "sms"]
    assert (stored["status"], stored["provider"], stored["provider_message_id"], stored["attempts"]) == (
        "sent", "twilio", "SM1", 1,
    )  # fmt: skip
    assert stored["sent_at"] is not None
    with db.read() as conn:
        reasons = conn.execute(
            sa.select(order_history.c.reason).where(
                order_history.c.order_id == order_id, order_history.c.kind == "notification"
            )
        ).scalars()
        assert sorted(reasons) == ["email confirmed skipped: no_email", "sms confirmed sent"]


def test_a_plan_writes_messages_send_jobs_and_skips_in_one_statement_on_postgresql(
    db: Database, driver: Driver, partner: PartnerFixture, statements: list[str]
) -> None:
    order_id = seed_order(db, partner, customer_phone="+14155550151", customer_email=None)
    order_created(db, order_id)
    statements.clear()
    driver.run_once()  # the plan job only: its send job is written by it
    planned_with = list(statements)

    def state() -> tuple[dict[tuple[str, str], str], list[str], list[str]]:
        found = {key: row["status"] for key, row in by_key(db, order_id).items()}
        with db.read() as conn:
            sends = conn.execute(
                sa.select(jobs.c.key).where(jobs.c.kind == "notifications.send", jobs.c.key.in_(
                    [row["id"] for row in rows(db, order_id)]))
            ).scalars().all()  # fmt: skip
            history = conn.execute(
                sa.select(order_history.c.reason).where(
                    order_history.c.order_id == order_id, order_history.c.kind == "notification"
                )
            ).scalars()
            return found, list(sends), list(history)

    statuses, sends, history = state()
    assert statuses == {("confirmed", "sms"): "queued", ("confirmed", "email"): "skipped"}
    assert sends == [by_key(db, order_id)[("confirmed", "sms")]["id"]]
    assert history == ["email confirmed skipped: no_email"]
    if not db.is_sqlite:
        [write] = [s for s in planned_with if "INSERT INTO notifications" in s]
        assert "INSERT INTO jobs" in write
        assert "INSERT INTO order_history" in write
        assert not [s for s in planned_with if s.startswith(("INSERT INTO jobs", "INSERT INTO order_history"))]
    # the plan job run again (its lease expired after it wrote): nothing new, nothing twice
    with db.write() as conn:
        mine = jobs.c.payload["order_id"].as_string() == order_id
        conn.execute(
            sa.update(jobs).where(jobs.c.kind == "notifications.plan", mine).values(status="pending", run_at=utcnow())
        )
    driver.run_once()  # the plan again, and the send job
    _, sends_after, history_after = state()
    assert len(rows(db, order_id)) == 2
    assert sends_after == sends
    assert history_after.count("email confirmed skipped: no_email") == 1
