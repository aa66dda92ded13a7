"""Outbound webhooks against a real receiving HTTP server, jobs run in-process: signing, retries, order, health."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook, WebhookVerificationError

from orderstream.db import Database
from orderstream.jobs.models import jobs
from orderstream.jobs.registry import JobContext, RetryableError
from orderstream.webhooks_out import service
from orderstream.webhooks_out.jobs import deliver
from orderstream.webhooks_out.models import webhook_attempts, webhook_deliveries, webhook_endpoints
from orderstream.webhooks_out.service import DELIVER_KIND
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

ALL_TYPES = ["order.updated", "order.canceled", "order.delivery_failed"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiving POS on a free port."""
    rec = Receiver().start()
    yield rec
    rec.stop()


def add_endpoint(db: Database, partner: PartnerFixture, url: str, types: list[str] | None = None) -> tuple[str, str]:
    """An endpoint of the partner; returns (endpoint id, secret)."""
    with db.write() as conn:
        endpoint, secret = service.create_endpoint(
            conn, partner_id=partner.partner_id, url=url, event_types=types or ALL_TYPES, allow_private=True
        )
    return str(endpoint["id"]), secret


def deliveries(db: Database, endpoint_id: str) -> list[dict[str, object]]:
    """The endpoint's deliveries in event order."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(webhook_deliveries)
            .where(webhook_deliveries.c.endpoint_id == endpoint_id)
            .order_by(webhook_deliveries.c.sequence)
        ).mappings()
        return [dict(r) for r in rows]


def attempts(db: Database, endpoint_id: str) -> list[dict[str, object]]:
    """Every attempt to the endpoint, in order."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(webhook_attempts)
            .where(webhook_attempts.c.endpoint_id == endpoint_id)
            .order_by(webhook_attempts.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def test_signed_webhook_verifies_as_an_independent_receiver_would(
    db: Database, db_url: str, receiver: Receiver
) -> None:
    partner = make_partner(db)
    endpoint_id, secret = add_endpoint(db, partner, receiver.url())
    order_id = insert_order(db, partner)
    delivery_changed(db, partner, order_id, "enroute_to_pickup", courier=COURIER)
    JobDriver(db, webhook_settings(db_url), partner).drain()

    assert len(receiver.requests) == 1
    got = receiver.requests[0]
    payload = Webhook(secret).verify(got.body, got.headers)  # raises on a bad signature or timestamp
    assert payload["type"] == "order.updated"
    assert got.headers["webhook-id"] == payload["id"]
    assert payload["id"].startswith("evt_")
    expected_hex = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-stream-signature"] == expected_hex
    obj = payload["object"]
    assert obj["order_id"] == pos_order_id(db, order_id)
    assert obj["location_id"] == partner.location_id
    assert obj["status"] == "in_progress"
    assert obj["delivery_status"] == "enroute_to_pickup"
    assert obj["driver_details"] == {
        "source": "doordash",
        "name": "Dana D.",
        "phone": {"number": "+15555550123", "code": "4821"},
        "vehicle_info": {"make": "Toyota", "model": "Prius", "color": "blue", "license_plate": "7ABC123"},
    }
    assert obj["tracking_url"] == "https://track.example.com/abc"
    # nothing of the customer leaves: not the name, phone or e-mail the POS sent
    for canary in (b"Canary Customer", b"+14155550199", b"canary@example.com"):
        assert canary not in got.body
    [delivery] = deliveries(db, endpoint_id)
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == 1
    [attempt] = attempts(db, endpoint_id)
    assert attempt["response_status"] == 200
    assert attempt["request_headers"]["webhook-id"] == payload["id"]  # type: ignore[index]
    assert attempt["response_excerpt"] == '{"ok":true}'


def test_rotation_signs_with_both_secrets_during_the_overlap(db: Database, db_url: str, receiver: Receiver) -> None:
    partner = make_partner(db)
    endpoint_id, old_secret = add_endpoint(db, partner, receiver.url())
    with db.write() as conn:
        rotated = service.rotate_endpoint_secret(conn, endpoint_id=endpoint_id, overlap=timedelta(hours=24))
    order_id = insert_order(db, partner)
    set_status(db, order_id, "ready_for_pickup")
    JobDriver(db, webhook_settings(db_url), partner).drain()

    [got] = receiver.requests
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(got.body, got.headers)
    Webhook(rotated["secret"]).verify(got.body, got.headers)
    # a rotation with no overlap (a leaked secret): from now on only the newest secret signs
    with db.write() as conn:
        newest = service.rotate_endpoint_secret(conn, endpoint_id=endpoint_id, overlap=timedelta(0))
    set_status(db, order_id, "out_for_delivery")
    JobDriver(db, webhook_settings(db_url), partner).drain()
    last = receiver.requests[-1]
    assert len(last.headers["webhook-signature"].split(" ")) == 1
    Webhook(newest["secret"]).verify(last.body, last.headers)
    for stale in (old_secret, rotated["secret"]):
        with pytest.raises(WebhookVerificationError):
            Webhook(stale).verify(last.body, last.headers)


def test_500s_then_success_retries_on_the_schedule(db: Database, db_url: str, receiver: Receiver) -> None:
    partner = make_partner(db)
    endpoint_id, secret = add_endpoint(db, partner, receiver.url())
    receiver.script = [Reply(500), Reply(503), Reply(502)]
    order_id = insert_order(db, partner)
    set_status(db, order_id, "preparing")
    JobDriver(db, webhook_settings(db_url, webhook_retry_scale=0.001), partner).drain(timeout=60)

    assert [r.headers["webhook-id"] for r in receiver.requests] == [receiver.requests[0].headers["webhook-id"]] * 4
    timestamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
    assert timestamps == sorted(timestamps)
    for got in receiver.requests:
        Webhook(secret).verify(got.body, got.headers)
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    # the schedule x 0.001: 5 s, 5 min, 30 min -> 0.005 s, 0.3 s, 1.8 s
    assert gaps[1] >= 0.3
    assert gaps[2] >= 1.8
    [delivery] = deliveries(db, endpoint_id)
    assert delivery["status"] == "succeeded"
    assert delivery["attempts"] == 4
    assert [a["outcome"] for a in attempts(db, endpoint_id)] == ["retry", "retry", "retry", "succeeded"]


def test_4xx_is_final_and_3xx_is_not_followed(db: Database, db_url: str, receiver: Receiver) -> None:
    partner = make_partner(db)
    other = Receiver().start()
    try:
        endpoint_id, _ = add_endpoint(db, partner, receiver.url())
        receiver.script = [Reply(302, headers={"Location": other.url("/stolen")}), Reply(400)]
        first, second = insert_order(db, partner), insert_order(db, partner)
        set_status(db, first, "preparing")
        set_status(db, second, "preparing")
        JobDriver(db, webhook_settings(db_url), partner).drain()
        assert other.requests == []
        assert other.foreign == []
        assert [d["status"] for d in deliveries(db, endpoint_id)] == ["failed", "failed"]
        assert [a["response_status"] for a in attempts(db, endpoint_id)] == [302, 400]
    finally:
        other.stop()


def test_429_honours_retry_after(db: Database, db_url: str, receiver: Receiver) -> None:
    partner = make_partner(db)
    endpoint_id, _ = add_endpoint(db, partner, receiver.url())
    receiver.script = [Reply(429, headers={"Retry-After": "2"})]
    order_id = insert_order(db, partner)
    set_status(db, order_id, "preparing")
    JobDriver(db, webhook_settings(db_url), partner).drain(timeout=30)

    assert len(receiver.requests) == 2
    assert receiver.requests[1].at - receiver.requests[0].at >= 1.9  # the schedule alone would wait 0.05 s
    assert [a["outcome"] for a in attempts(db, endpoint_id)] == ["retry", "succeeded"]


def test_410_disables_the_endpoint_and_fails_its_pending_deliveries(
    db: Database, db_url: str, receiver: Receiver
) -> None:
    partner = make_partner(db)
    endpoint_id, _ = add_endpoint(db, partner, receiver.url())
    receiver.default = Reply(410)
    order_a, order_b = insert_order(db, partner), insert_order(db, partner)
    set_status(db, order_a, "preparing")
    set_status(db, order_a, "ready_for_pickup")
    set_status(db, order_b, "preparing")
    JobDriver(db, webhook_settings(db_url), partner).drain()

    assert len(receiver.requests) == 1  # nothing after the 410
    with db.read() as conn:
        endpoint = (
            conn.execute(sa.select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)).mappings().one()
        )
    assert endpoint["status"] == "disabled"
    assert "410" in endpoint["disabled_reason"]
    assert {d["status"] for d in deliveries(db, endpoint_id)} == {"failed"}
    # a disabled endpoint gets no new deliveries
    set_status(db, order_b, "ready_for_pickup")
    assert len(deliveries(db, endpoint_id)) == 3


def test_slow_answer_times_out_and_is_retried(db: Database, db_url: str, receiver: Receiver) -> None:
    partner = make_partner(db)
    endpoint_id, _ = add_endpoint(db, partner, receiver.url())
    receiver.script = [Reply(200, delay=3.0)]
    order_id = insert_order(db, partner)
    set_status(db, order_id, "preparing")
    JobDriver(db, webhook_settings(db_url, webhook_timeout_seconds=1.0), partner).drain(timeout=30)

    tries = attempts(db, endpoint_id)
    assert [a["outcome"] for a in tries] == ["retry", "succeeded"]
    assert tries[0]["response_status"] is None
    assert "timeout" in str(tries[0]["error"])
    assert 900 <= int(tries[0]["duration_ms"]) < 3000  # type: ignore[call-overload]


def test_receiver_down_then_up(db: Database, db_url: str) -> None:
    partner = make_partner(db)
    down = Receiver()  # bound, then closed: connections are refused on its port
    port = down.port
    down.server.server_close()
    endpoint_id, _ = add_endpoint(db, partner, f"http://127.0.0.1:{port}{down.base}/hooks")
    order_id = insert_order(db, partner)
    set_status(db, order_id, "preparing")
    driver = JobDriver(db, webhook_settings(db_url, webhook_retry_scale=0.01), partner)
    driver.drain(until=lambda: len(attempts(db, endpoint_id)) >= 2, timeout=30)
    assert {a["outcome"] for a in attempts(db, endpoint_id)} == {"retry"}
    # the POS comes back on the same port
    up = Receiver(port=port, base=down.base).start()
    try:
        driver.drain(timeout=60)
        assert len(up.requests) == 1
        [delivery] = deliveries(db, endpoint_id)
        assert delivery["status"] == "succeeded"
        assert delivery["attempts"] >= 3
    finally:
        up.stop()


def test_in_order_per_order_a_newer_state_waits_for_an_older_retrying_one(
    db: Database, db_url: str, receiver: Receiver
) -> None:
    partner = make_partner(db)
    endpoint_id, _ = add_endpoint(db, partner, receiver.url())
    other_order = insert_order(db, partner)
    order_id = insert_order(db, partner)
    pos_id = pos_order_id(db, order_id)

    def respond(got: object) -> Reply:
        body = got.json()  # type: ignore[attr-defined]
        # the first state of this order fails twice; other orders are unaffected
        firsts = [r for r in receiver.requests if r.json()["object"].get("order_id") == pos_id]
        if body["object"].get("order_id") == pos_id and len(firsts) <= 2:
            return Reply(500)
        return Reply(200)

    receiver.responder = respond
    set_status(db, order_id, "preparing")
    delivery_changed(db, partner, order_id, "enroute_to_pickup", courier=COURIER)
    set_status(db, other_order, "preparing")
    delivery_changed(db, partner, order_id, "enroute_to_dropoff", from_status="enroute_to_pickup", courier=COURIER)
    set_status(db, order_id, "completed")
    JobDriver(db, webhook_settings(db_url, webhook_retry_scale=0.001), partner).drain(timeout=60)

    mine = [b for b in receiver.bodies() if b["object"].get("order_id") == pos_id]
    delivered_ids: list[str] = []
    for body in mine:
        if body["id"] not in delivered_ids:
            delivered_ids.append(body["id"])
    with db.read() as conn:
        expected = [
            row.event_id
            for row in conn.execute(
                sa.select(webhook_deliveries.c.event_id)
                .where(webhook_deliveries.c.endpoint_id == endpoint_id)
                .where(webhook_deliveries.c.order_id == order_id)
                .order_by(webhook_deliveries.c.sequence)
            )
        ]
    assert delivered_ids == expected
    assert len(expected) == 4
    states = [(b["object"]["status"], b["object"].get("delivery_status")) for b in mine[2:]]
    assert states == [
        ("in_progress", None),
        ("in_progress", "enroute_to_pickup"),
        ("in_progress", "enroute_to_dropoff"),
        ("completed", "enroute_to_dropoff"),
    ]
    # the other order's event was not held up by this order's retries
    other_pos = pos_order_id(db, other_order)
    first_other = next(i for i, b in enumerate(receiver.bodies()) if b["object"].get("order_id") == other_pos)
    assert first_other < 3


def test_concurrent_updates_of_one_order_arrive_in_commit_order(db: Database, db_url: str, receiver: Receiver) -> None:
    partner = make_partner(db)
    endpoint_id, _ = add_endpoint(db, partner, receiver.url(), types=["order.updated"])
    order_id = insert_order(db, partner)
    statuses = ["enroute_to_pickup", "arrived_at_pickup", "enroute_to_dropoff", "arrived_at_dropoff"]
    errors: list[BaseException] = []

    def update(step: int) -> None:
        try:
            for n in range(5):
                delivery_changed(db, partner, order_id, statuses[(step + n) % len(statuses)], courier=COURIER)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    settings = webhook_settings(db_url)
    drivers = [JobDriver(db, settings, partner) for _ in range(3)]
    stop = threading.Event()

    def work(driver: JobDriver) -> None:
        while not stop.is_set():
            if not driver.run_once():
                time.sleep(0.01)

    workers = [threading.Thread(target=work, args=(d,)) for d in drivers]
    writers = [threading.Thread(target=update, args=(i,)) for i in range(4)]
    for t in workers + writers:
        t.start()
    for t in writers:
        t.join()
    assert errors == []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(d["status"] == "pending" for d in deliveries(db, endpoint_id)):
        time.sleep(0.05)
    stop.set()
    for t in workers:
        t.join()

    rows = deliveries(db, endpoint_id)
    assert len(rows) == 20
    assert {r["status"] for r in rows} == {"succeeded"}
    sent_ids = []
    for got in receiver.requests:
        if got.headers["webhook-id"] not in sent_ids:
            sent_ids.append(got.headers["webhook-id"])
    assert sent_ids == [r["event_id"] for r in rows]  # arrival order == sequence (commit) order


def test_circuit_breaker_pauses_a_failing_endpoint_then_resumes(db: Database, db_url: str, receiver: Receiver) -> None:
    partner = make_partner(db)
    endpoint_id, _ = add_endpoint(db, partner, receiver.url())
    receiver.default = Reply(500)
    settings = webhook_settings(
        db_url,
        webhook_health_min_attempts=4,
        webhook_pause_seconds=2,
        webhook_retry_scale=0.001,
    )
    orders_ = [insert_order(db, partner) for _ in range(4)]
    for order_id in orders_:
        set_status(db, order_id, "preparing")
    driver = JobDriver(db, settings, partner)
    driver.drain(until=lambda: len(attempts(db, endpoint_id)) >= 4, timeout=30)
    with db.read() as conn:
        endpoint = (
            conn.execute(sa.select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)).mappings().one()
        )
        shown = service.endpoint_dict(endpoint)
    assert endpoint["paused_until"] is not None
    assert shown["status"] == "paused"
    paused_at = time.monotonic()
    count = len(receiver.requests)
    receiver.default = Reply(200)
    driver.drain(timeout=60)
    assert {d["status"] for d in deliveries(db, endpoint_id)} == {"succeeded"}
    resumed = receiver.requests[count:]
    assert resumed
    assert resumed[0].at - paused_at >= 1.0


class _WorkerKilled(BaseException):
    """Stands for kill -9: nothing after it runs, no except clause catches it."""


class _DieAfterSending(httpx.HTTPTransport):
    """Delivers the request for real, then the worker dies before it can record the answer."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        response.read()
        raise _WorkerKilled


def test_a_worker_dying_mid_delivery_resends_with_the_same_webhook_id(
    db: Database, db_url: str, receiver: Receiver
) -> None:
    partner = make_partner(db)
    endpoint_id, secret = add_endpoint(db, partner, receiver.url())
    order_id = insert_order(db, partner)
    set_status(db, order_id, "preparing")
    set_status(db, order_id, "ready_for_pickup")
    first, second = deliveries(db, endpoint_id)
    with db.read() as conn:
        job_id = conn.execute(
            sa.select(jobs.c.id).where(jobs.c.payload["delivery_id"].as_string() == first["id"])
        ).scalar_one()
    settings = webhook_settings(db_url)

    def context(job: int, services: dict[str, object]) -> JobContext:
        payload = {"delivery_id": first["id"]}
        return JobContext(job, DELIVER_KIND, None, payload, 1, db, settings, services)

    with httpx.Client(transport=_DieAfterSending()) as dying, pytest.raises(_WorkerKilled):
        deliver(context(job_id, {"webhooks_http": dying}))
    assert len(receiver.requests) == 1

    # meanwhile another job for the same delivery must not send while the claim is live
    with pytest.raises(RetryableError):
        deliver(context(job_id + 10_000_000, {}))
    assert len(receiver.requests) == 1

    # the runtime runs the crashed job again after its lease: the delivery goes out again, same id
    deliver(context(job_id, {}))
    JobDriver(db, settings, partner).drain()  # the newer state follows, only now
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert ids == [first["event_id"], first["event_id"], second["event_id"]]
    for got in receiver.requests:
        Webhook(secret).verify(got.body, got.headers)
    assert [d["status"] for d in deliveries(db, endpoint_id)] == ["succeeded", "succeeded"]


def test_alert_is_logged_past_the_alert_rate_and_response_excerpts_are_bounded(
    db: Database, db_url: str, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    partner = make_partner(db)
    endpoint_id, _ = add_endpoint(db, partner, receiver.url())
    receiver.script = [Reply(500, body=b"x" * 5000)]
    settings = webhook_settings(
        db_url, webhook_health_min_attempts=4, webhook_alert_failure_rate=0.2, webhook_pause_failure_rate=0.9
    )
    for _ in range(3):
        set_status(db, insert_order(db, partner), "preparing")
    with caplog.at_level("WARNING", logger="orderstream.webhooks_out"):
        JobDriver(db, settings, partner).drain()
    alerts = [r for r in caplog.records if getattr(r, "event", None) == "webhook_endpoint_alert"]
    assert len(alerts) == 1  # 1 failure in 4 attempts = 25 %: alert once, no pause
    assert alerts[0].endpoint_id == endpoint_id  # type: ignore[attr-defined]
    tries = attempts(db, endpoint_id)
    assert len(tries) == 4
    assert len(str(tries[0]["response_excerpt"])) == 1024
    with db.read() as conn:
        endpoint = (
            conn.execute(sa.select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)).mappings().one()
        )
    assert endpoint["paused_until"] is None


def test_order_deliveries_lists_an_orders_deliveries_with_their_attempts_as_get_delivery_does(
    db: Database, db_url: str, receiver: Receiver
) -> None:
    partner = make_partner(db)
    endpoint_id, _secret = add_endpoint(db, partner, receiver.url())
    receiver.script = [Reply(500)]
    order_id = insert_order(db, partner)
    other_id = insert_order(db, partner)
    set_status(db, order_id, "preparing")
    set_status(db, other_id, "preparing")
    set_status(db, order_id, "canceled")
    JobDriver(db, webhook_settings(db_url, webhook_retry_scale=0.001), partner).drain(timeout=60)
    stranger = make_partner(db)

    with db.read() as conn:
        listed = service.order_deliveries(conn, order_id=order_id, partner_id=partner.partner_id)
        one_by_one = [
            service.get_delivery(conn, delivery_id=str(d["id"]), partner_id=partner.partner_id)
            for d in deliveries(db, endpoint_id)
            if d["order_id"] == order_id
        ]
        foreign = service.order_deliveries(conn, order_id=order_id, partner_id=stranger.partner_id)
    assert [d["event_type"] for d in listed] == ["order.updated", "order.canceled"]
    assert listed == one_by_one
    assert sum(len(d["attempt_log"]) for d in listed) >= 3  # the first delivery was retried once
    assert foreign == []
