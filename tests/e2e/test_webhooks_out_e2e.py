"""Outbound webhooks end to end: `orderstream worker` processes deliver to a real receiving HTTP server.

The order changes are written by the test (as the API or dispatch would), the worker is a real child
process, killed with SIGKILL while deliveries are in flight. A ledger then checks that every event
arrived (lost: 0), that nothing unexpected arrived, that duplicates carry the same webhook-id and
body, and that no order ever went back in time at the receiver.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from orderstream.db import Database
from orderstream.webhooks_out import service
from orderstream.webhooks_out.models import outbound_events, webhook_attempts, webhook_deliveries, webhook_endpoints
from tests.e2e import harness
from tests.factories import make_partner
from tests.webhooks_out_helpers import COURIER, Receiver, Reply, delivery_changed, insert_order, set_status

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKER_ENV = {
    "ORDERSTREAM_ALLOW_PRIVATE_WEBHOOK_TARGETS": "true",
    "ORDERSTREAM_WEBHOOK_RETRY_SCALE": "0.001",
    "ORDERSTREAM_WEBHOOK_RETRY_JITTER": "0",
    "ORDERSTREAM_WEBHOOK_TIMEOUT_SECONDS": "2",
    "ORDERSTREAM_JOB_LEASE_SECONDS": "3",
    "ORDERSTREAM_WORKER_IDLE_POLL_SECONDS": "0.2",
    "ORDERSTREAM_WORKER_CONCURRENCY": "4",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiving POS on a free port."""
    rec = Receiver().start()
    yield rec
    rec.stop()


def _deliveries_by_status(db: Database, endpoint_id: str) -> Counter[str]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(webhook_deliveries.c.status).where(webhook_deliveries.c.endpoint_id == endpoint_id)
        ).scalars()
        return Counter(rows)


def _events(db: Database, partner_id: int) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(outbound_events.c.id, outbound_events.c.order_id, outbound_events.c.sequence)
            .where(outbound_events.c.partner_id == partner_id)
            .order_by(outbound_events.c.sequence)
        ).mappings()
        return [dict(r) for r in rows]


def test_kill_9_of_the_worker_mid_delivery_loses_nothing_and_keeps_order(
    db: Database, db_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    rng = random.Random(20261126)
    partner = make_partner(db)
    with db.write() as conn:
        endpoint, secret = service.create_endpoint(
            conn,
            partner_id=partner.partner_id,
            url=receiver.url(),
            event_types=["order.updated", "order.canceled", "order.delivery_failed"],
            allow_private=True,
        )

    def respond(_got: object) -> Reply:
        # slow answers make kills land mid-delivery; some 503s exercise retries under crashes
        return Reply(503) if rng.random() < 0.1 else Reply(200, delay=rng.uniform(0.0, 0.25))

    receiver.responder = respond
    order_ids = [insert_order(db, partner) for _ in range(20)]
    steps: dict[str, list[tuple[str, str]]] = {
        o: [
            ("delivery", "enroute_to_pickup"),
            ("status", "ready_for_pickup"),
            ("delivery", "enroute_to_dropoff"),
            ("status", "out_for_delivery"),
            ("status", "completed"),
        ]
        for o in order_ids
    }
    writer_errors: list[BaseException] = []

    def write_changes() -> None:
        try:
            pending = [o for o in order_ids for _ in range(5)]
            rng_w = random.Random(7)
            rng_w.shuffle(pending)
            for order_id in pending:  # interleaved across orders, each order's steps in its own order
                kind, value = steps[order_id].pop(0)
                if kind == "delivery":
                    delivery_changed(db, partner, order_id, value, courier=COURIER)
                else:
                    set_status(db, order_id, value)
                time.sleep(0.03)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            writer_errors.append(exc)

    log_dir = tmp_path / "logs"
    workers: list[harness.WorkerProcess] = []
    kills = 0
    writer = threading.Thread(target=write_changes)
    try:
        workers.append(harness.start_worker(db_url, log_dir=log_dir, env=WORKER_ENV, name="worker-0"))
        writer.start()
        deadline = time.monotonic() + 120
        while (writer.is_alive() or kills < 4) and time.monotonic() < deadline:
            time.sleep(rng.uniform(1.0, 2.0))
            workers[-1].kill()
            kills += 1
            workers.append(harness.start_worker(db_url, log_dir=log_dir, env=WORKER_ENV, name=f"worker-{kills}"))
        writer.join(timeout=60)
        assert writer_errors == []
        harness.wait_for(
            lambda: _deliveries_by_status(db, endpoint["id"]).get("pending", 0) == 0,
            timeout=180,
            interval=0.5,
            message="every delivery settled",
        )
    finally:
        for worker in workers:
            worker.kill()

    events = _events(db, partner.partner_id)
    event_ids = {e["id"] for e in events}
    sequence_of = {e["id"]: e["sequence"] for e in events}
    order_of = {e["id"]: e["order_id"] for e in events}
    received = list(receiver.requests)
    ids = [r.headers["webhook-id"] for r in received]
    first_body: dict[str, bytes] = {}
    for got in received:
        Webhook(secret).verify(got.body, got.headers)  # every request, duplicates included, is signed
        assert json.loads(got.body)["id"] == got.headers["webhook-id"]
        assert first_body.setdefault(got.headers["webhook-id"], got.body) == got.body
    lost = event_ids - set(ids)
    unexpected = set(ids) - event_ids
    duplicates = len(received) - len(set(ids))  # every repeat: retries after 503 and re-sends after a kill
    # no order goes back in time: per order, arrivals are in event sequence (repeats allowed)
    regressions = 0
    last_seen: dict[str, int] = defaultdict(int)
    for webhook_id in ids:
        seq = sequence_of[webhook_id]
        if seq < last_seen[order_of[webhook_id]]:
            regressions += 1
        last_seen[order_of[webhook_id]] = max(seq, last_seen[order_of[webhook_id]])
    statuses = _deliveries_by_status(db, endpoint["id"])
    with db.read() as conn:
        recorded = Counter(
            conn.execute(
                sa.select(webhook_attempts.c.response_status).where(webhook_attempts.c.endpoint_id == endpoint["id"])
            ).scalars()
        )
    print(
        f"\nwebhooks kill -9 ledger ({db.engine.dialect.name}): events={len(events)} requests={len(received)} "
        f"kills={kills} lost={len(lost)} unexpected={len(unexpected)} duplicates_same_id={duplicates} "
        f"resent_after_kill={len(received) - sum(recorded.values())} torn_by_kill={receiver.torn} "
        f"order_regressions={regressions} "
        f"deliveries={dict(statuses)} recorded_attempts={dict(recorded)}"
    )
    assert len(events) == 100
    assert lost == set()
    assert unexpected == set()
    assert regressions == 0
    assert statuses == Counter({"succeeded": 100})
    assert kills >= 4


def test_worker_process_retries_honours_retry_after_and_disables_on_410(
    db: Database, db_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    partner = make_partner(db)
    with db.write() as conn:
        endpoint, secret = service.create_endpoint(
            conn, partner_id=partner.partner_id, url=receiver.url(), event_types=["order.updated"], allow_private=True
        )
    receiver.script = [Reply(500), Reply(429, headers={"Retry-After": "2"}), Reply(200), Reply(410)]
    first, second = insert_order(db, partner), insert_order(db, partner)
    set_status(db, first, "preparing")
    worker = harness.start_worker(db_url, log_dir=tmp_path / "logs", env=WORKER_ENV)
    try:
        harness.wait_for(lambda: len(receiver.requests) >= 3, timeout=60, message="three attempts")
        set_status(db, second, "preparing")
        harness.wait_for(lambda: len(receiver.requests) >= 4, timeout=60, message="the 410")
        harness.wait_for(
            lambda: _deliveries_by_status(db, endpoint["id"]).get("pending", 0) == 0, timeout=30, message="settled"
        )
        set_status(db, second, "ready_for_pickup")  # after the 410: no delivery, nothing sent
        time.sleep(1.0)
    finally:
        worker.stop()
    got = receiver.requests
    assert len(got) == 4
    assert got[2].at - got[1].at >= 1.9  # Retry-After: 2 beat the scaled schedule (0.3 s)
    assert len({r.headers["webhook-id"] for r in got[:3]}) == 1
    for request in got:
        Webhook(secret).verify(request.body, request.headers)
    with db.read() as conn:
        status = conn.execute(
            sa.select(webhook_endpoints.c.status).where(webhook_endpoints.c.id == endpoint["id"])
        ).scalar_one()
    assert status == "disabled"
    assert _deliveries_by_status(db, endpoint["id"]) == Counter({"succeeded": 1, "failed": 1})


def test_served_api_feed_matches_what_the_worker_delivered(
    db: Database, db_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    """`orderstream serve` (embedded worker) delivers; its events feed carries exactly the delivered bodies."""
    partner = make_partner(db)
    # `orderstream serve` alone, as `make run` starts it: its embedded worker sends the webhooks
    server = harness.start_server(db_url, log_dir=tmp_path / "logs", env=WORKER_ENV, embedded_worker=True)
    try:
        with server.client(headers={"Authorization": f"Bearer {partner.api_key}"}) as client:
            resp = client.post(
                "/v1/webhook-endpoints",
                json={"url": receiver.url(), "event_types": ["order.updated", "order.canceled"]},
            )
            assert resp.status_code == 201, resp.text
            order_id = insert_order(db, partner)
            set_status(db, order_id, "preparing")
            delivery_changed(db, partner, order_id, "enroute_to_pickup", courier=COURIER)
            set_status(db, order_id, "canceled", actor="operator", reason="customer_request")
            harness.wait_for(lambda: len(receiver.requests) >= 3, timeout=60, message="three webhooks")
            feed = client.get("/v1/events", params={"after": 0}).json()
    finally:
        server.stop()
    delivered = [r.json() for r in receiver.requests]
    assert [{k: v for k, v in e.items() if k != "sequence"} for e in feed["data"]] == delivered
    assert [e["type"] for e in delivered] == ["order.updated", "order.updated", "order.canceled"]
