"""An order's life on both databases: courier, ETA updates and their throttle, pickup, cancel, reminders, settings."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from typer.testing import CliRunner

from orderstream.cli import app
from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.jobs.models import jobs
from orderstream.jobs.outbox import enqueue
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry, RetryPolicy
from orderstream.notifications import planner
from orderstream.notifications.handlers import PLAN_KIND
from orderstream.notifications.models import notifications
from orderstream.tenancy import service as tenancy
from tests.factories import PartnerFixture, make_partner
from tests.jobs_helpers import running_worker, unique_kind
from tests.notifications_helpers import (
    Driver,
    by_key,
    delivery,
    notif_settings,
    order_created,
    rows,
    set_status,
    sim_messages,
    twilio,
)
from tests.orders_api_helpers import seed_order

runner = CliRunner()


@pytest.fixture
def partner(db: Database) -> PartnerFixture:
    return make_partner(db)


@pytest.fixture
def sim() -> Iterator[str]:
    with twilio(callback_delay_seconds=0.05) as running:
        yield running.base_url


@pytest.fixture
def driver(db: Database, db_url: str, sim: str, partner: PartnerFixture) -> Iterator[Driver]:
    running = Driver(db, notif_settings(db_url, sms_url=sim, smtp_port=None), partner)
    yield running
    running.close()


def _texts(sim: str, phone: str) -> list[str]:
    return [str(m["body"]) for m in sim_messages(sim) if m["to"] == phone]


def _sms(db: Database, order_id: str) -> list[dict[str, object]]:
    return [r for r in rows(db, order_id) if r["channel"] == "sms"]


def _age_updates(db: Database, order_id: str, minutes: int) -> None:
    """Pretend the order's messages were queued `minutes` ago (the update throttle looks at that)."""
    with db.write() as conn:
        for row in conn.execute(sa.select(notifications.c.id, notifications.c.created_at).where(
            notifications.c.order_id == order_id
        )).all():  # fmt: skip
            conn.execute(
                sa.update(notifications)
                .where(notifications.c.id == row.id)
                .values(created_at=row.created_at - timedelta(minutes=minutes))
            )


def test_a_delivery_from_confirmation_to_door(db: Database, driver: Driver, partner: PartnerFixture, sim: str) -> None:
    phone = "+14155550150"
    order_id = seed_order(db, partner, customer_phone=phone)
    order_created(db, order_id)
    eta = utcnow() + timedelta(minutes=30)
    delivery(db, partner, order_id, "pending_driver_confirmation", courier=None, dropoff_eta=eta)
    delivery(db, partner, order_id, "enroute_to_pickup", dropoff_eta=eta)
    delivery(db, partner, order_id, "arrived_at_pickup", dropoff_eta=eta + timedelta(minutes=2))  # small move
    delivery(db, partner, order_id, "enroute_to_dropoff", dropoff_eta=eta)
    delivery(db, partner, order_id, "completed", dropoff_eta=eta)
    set_status(db, order_id, "completed")  # the order's own completion does not send a second "delivered"
    driver.drain()
    kinds = [(r["kind"], r["channel"]) for r in rows(db, order_id) if r["channel"] == "sms"]
    assert kinds == [
        ("confirmed", "sms"),
        ("courier_assigned", "sms"),
        ("out_for_delivery", "sms"),
        ("delivered", "sms"),
    ]
    texts = _texts(sim, phone)
    assert len(texts) == 4
    assert any("Dana (blue Toyota Prius) is picking up" in t for t in texts)
    assert any("on its way with Dana, arriving around" in t for t in texts)
    assert all(r["status"] in ("sent", "delivered") for r in rows(db, order_id))


def test_eta_slip_sends_one_delay_then_throttled_updates(
    db: Database, driver: Driver, partner: PartnerFixture, sim: str
) -> None:
    phone = "+14155550151"
    order_id = seed_order(db, partner, customer_phone=phone, customer_email=None)
    order_created(db, order_id)
    eta = utcnow() + timedelta(minutes=30)
    delivery(db, partner, order_id, "enroute_to_dropoff", dropoff_eta=eta)
    driver.drain()
    delivery(db, partner, order_id, "enroute_to_dropoff", dropoff_eta=eta + timedelta(minutes=20))
    driver.drain()
    delivery(db, partner, order_id, "enroute_to_dropoff", dropoff_eta=eta + timedelta(minutes=45))  # throttled
    driver.drain()
    assert [r["kind"] for r in _sms(db, order_id)] == ["confirmed", "out_for_delivery", "delayed"]
    _age_updates(db, order_id, 11)
    delivery(db, partner, order_id, "enroute_to_dropoff", dropoff_eta=eta + timedelta(minutes=45))
    driver.drain()
    _age_updates(db, order_id, 11)
    delivery(db, partner, order_id, "enroute_to_dropoff", dropoff_eta=eta + timedelta(minutes=46))  # no real move
    driver.drain()
    found = [(r["kind"], r["seq"]) for r in _sms(db, order_id)]
    assert found == [("confirmed", 0), ("out_for_delivery", 0), ("delayed", 0), ("update", 1)]
    texts = _texts(sim, phone)
    assert any("running late" in t for t in texts)
    assert any("new arrival time around" in t for t in texts)


def test_redispatch_tells_the_new_courier(db: Database, driver: Driver, partner: PartnerFixture, sim: str) -> None:
    phone = "+14155550152"
    order_id = seed_order(db, partner, customer_phone=phone, customer_email=None)
    order_created(db, order_id)
    delivery(db, partner, order_id, "enroute_to_pickup", attempt_id=1)
    driver.drain()
    other = {"name": "Sam Rider", "vehicle_type": "bicycle"}
    delivery(db, partner, order_id, "enroute_to_pickup", attempt_id=2, courier=other)
    driver.drain()
    assert [r["kind"] for r in _sms(db, order_id)] == ["confirmed", "courier_assigned", "update"]
    assert "Sam (bicycle) is now bringing it" in _texts(sim, phone)[-1]


def test_pickup_ready_and_cancel(db: Database, driver: Driver, partner: PartnerFixture, sim: str) -> None:
    phone = "+14155550153"
    order_id = seed_order(db, partner, fulfillment_type="curbside", customer_phone=phone, customer_email=None)
    order_created(db, order_id)
    set_status(db, order_id, "preparing")
    set_status(db, order_id, "ready_for_pickup")
    driver.drain()
    assert "curbside" in _texts(sim, phone)[-1]
    other = seed_order(db, partner, fulfillment_type="pickup", customer_phone=phone, customer_email=None)
    order_created(db, other)
    set_status(db, other, "canceled")
    driver.drain()
    assert [r["kind"] for r in _sms(db, other)] == ["confirmed", "canceled"]
    assert "was canceled" in _texts(sim, phone)[-1]


def test_a_future_order_gets_a_reminder_that_waits(
    db: Database, driver: Driver, partner: PartnerFixture, sim: str
) -> None:
    phone = "+14155550154"
    order_id = seed_order(db, partner, status="scheduled", customer_phone=phone, customer_email=None)
    order_created(db, order_id)
    driver.drain()
    reminder = by_key(db, order_id)[("reminder", "sms")]
    assert reminder["status"] == "queued"
    assert reminder["send_after"] > utcnow() + timedelta(minutes=80)  # requested_for (2 h) - 30 min
    assert len(_texts(sim, phone)) == 1
    driver.make_due()
    driver.drain()
    assert by_key(db, order_id)[("reminder", "sms")]["status"] == "sent"
    assert "reminder" in _texts(sim, phone)[-1]


def test_a_reminder_for_a_canceled_order_is_skipped(db: Database, driver: Driver, partner: PartnerFixture) -> None:
    order_id = seed_order(db, partner, status="scheduled", customer_email=None)
    order_created(db, order_id)
    driver.drain()
    set_status(db, order_id, "canceled")
    driver.make_due()
    driver.drain()
    reminder = by_key(db, order_id)[("reminder", "sms")]
    assert (reminder["status"], reminder["reason"]) == ("skipped", "order_ended")


def _location_id(db: Database, partner: PartnerFixture) -> int:
    with db.read() as conn:
        row = tenancy.get_location(conn, partner_id=partner.partner_id, external_id=partner.location_id)
        assert row is not None
        return int(row["id"])


def test_location_settings_turn_off_and_override(
    db: Database, db_url: str, driver: Driver, partner: PartnerFixture, sim: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("ORDERSTREAM_DATABASE_URL", db_url)
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"confirmed": {"sms": {"text": "{{ location_name }} has order {{ order_ref }}!"}}}))
    base = ["notifications", "settings", "--partner", partner.slug, "--id", partner.location_id]
    result = runner.invoke(app, [*base, "--no-email", "--disable-kinds", "delivered", "--overrides-file",
                                 str(overrides), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["disabled_kinds"] == ["delivered"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"confirmed": {"sms": {"text": "{{ oops"}}}))
    refused = runner.invoke(app, [*base, "--overrides-file", str(bad)])
    assert refused.exit_code == 1
    assert json.loads(refused.stderr)["error"]["details"][0]["path"] == "overrides.confirmed.sms.text"
    assert runner.invoke(app, [*base, "--disable-kinds", "eaten"]).exit_code == 1

    phone = "+14155550155"
    order_id = seed_order(db, partner, customer_phone=phone)
    order_created(db, order_id)
    delivery(db, partner, order_id, "completed")
    driver.drain()
    found = {k: (r["status"], r["reason"]) for k, r in by_key(db, order_id).items()}
    assert found == {
        ("confirmed", "sms"): ("sent", None),
        ("confirmed", "email"): ("skipped", "channel_disabled"),
        ("delivered", "sms"): ("skipped", "kind_disabled"),
        ("delivered", "email"): ("skipped", "channel_disabled"),
    }
    with db.read() as conn:
        ref = conn.execute(sa.text("SELECT source_order_id FROM orders WHERE id = :i"), {"i": order_id}).scalar()
    assert _texts(sim, phone) == [f"Main Street Burgers has order #{ref}!"]
    listed = runner.invoke(app, ["notifications", "list", "--order", order_id, "--json"])
    assert [r["status"] for r in json.loads(listed.stdout)] == ["sent", "skipped", "skipped", "skipped"]
    assert phone not in listed.stdout


def _run_in_a_job(db: Database, settings: Settings, body: Callable[[], None]) -> None:
    """Run body as the handler of a job, on a real worker, until the job is done."""
    kind, done = unique_kind("raises_events"), threading.Event()

    def handler(_ctx: JobContext) -> None:
        body()
        done.set()

    registry = JobRegistry()
    registry.register(JobKind(kind, handler, retry=RetryPolicy(max_attempts=1)))
    with running_worker(db, settings, registry):
        with db.write() as conn:
            enqueue(conn, kind=kind, payload={})
        assert done.wait(20)


def _plan_jobs(db: Database, order_id: str, event: str) -> list[dict[str, object]]:
    with db.read() as conn:
        payloads = conn.execute(sa.select(jobs.c.payload).where(jobs.c.kind == PLAN_KIND)).scalars().all()
    return [p for p in payloads if p["order_id"] == order_id and p["event"] == event]


def test_a_delivery_event_raised_in_a_job_is_planned_in_its_transaction(
    db: Database, db_url: str, partner: PartnerFixture, sim: str
) -> None:
    order_id = seed_order(db, partner, customer_phone="+14155550151")
    settings = notif_settings(db_url, sms_url=sim, smtp_port=None)
    _run_in_a_job(db, settings, lambda: delivery(db, partner, order_id, "enroute_to_pickup"))
    assert _plan_jobs(db, order_id, "DeliveryStatusChanged") == []
    assert by_key(db, order_id)[("courier_assigned", "sms")]["status"] == "queued"  # planned, its send job queued


def test_a_planning_error_in_a_job_falls_back_to_a_plan_job(
    db: Database, db_url: str, partner: PartnerFixture, sim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = planner.plan

    def plan(conn: Connection, settings: Settings, payload: dict[str, Any], now: datetime) -> None:
        conn.execute(sa.text("SELECT no_such_column FROM orders"))  # a database error in the middle of planning
        real(conn, settings, payload, now)

    monkeypatch.setattr(planner, "plan", plan)
    order_id = seed_order(db, partner, customer_phone="+14155550152")
    settings = notif_settings(db_url, sms_url=sim, smtp_port=None)
    _run_in_a_job(db, settings, lambda: delivery(db, partner, order_id, "enroute_to_pickup"))
    [payload] = _plan_jobs(db, order_id, "DeliveryStatusChanged")  # the event's transaction still committed
    assert payload["to_status"] == "enroute_to_pickup"
    assert rows(db, order_id) == []
