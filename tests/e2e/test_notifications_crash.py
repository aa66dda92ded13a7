"""Crash test: kill -9 the worker again and again while it sends 500 notifications.

Afterwards no required message is missing, and duplicates (messages the customer got twice) number at
most the kills. SMS carry the notification id as idempotency token and a cut-off send is looked up
before it is repeated, so SMS duplicates are expected to be 0; e-mail has no such key (only a stable
Message-ID), so an e-mail in flight at a kill may arrive twice.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orderstream.db import Database
from orderstream.notifications.models import notifications
from tests.e2e import harness
from tests.e2e.conftest import Launcher
from tests.e2e.test_notifications_e2e import SimProcess, notification_env, running_sim
from tests.factories import make_partner
from tests.notifications_helpers import SmtpSink, order_created, sim_messages, smtp_sink
from tests.orders_api_helpers import seed_order

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ORDERS = 250  # x 2 channels = 500 notifications
MAX_KILLS = 10


@pytest.fixture
def slow_sim(tmp_path: Path) -> Iterator[SimProcess]:
    with running_sim(tmp_path / "logs", "--request-delay-seconds", "0.05") as proc:
        yield proc


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as running:
        yield running


def _statuses(db: Database, partner_id: int) -> Counter[str]:
    with db.read() as conn:
        return Counter(
            conn.execute(sa.select(notifications.c.status).where(notifications.c.partner_id == partner_id)).scalars()
        )


def test_kill_9_while_sending_500(
    db: Database, db_url: str, launch: Launcher, slow_sim: SimProcess, sink: SmtpSink, tmp_path: Path
) -> None:
    partner = make_partner(db)
    order_ids = []
    for i in range(ORDERS):
        order_id = seed_order(
            db, partner, fulfillment_type="pickup", customer_phone=f"+1415555{2000 + i:04d}",
            customer_email=f"crash{i}@example.com",
        )  # fmt: skip
        order_created(db, order_id)
        order_ids.append(order_id)
    env = {**notification_env(slow_sim.base_url, sink.port), "ORDERSTREAM_JOB_LEASE_SECONDS": "2",
           "ORDERSTREAM_WORKER_CONCURRENCY": "8", "ORDERSTREAM_PUBLIC_BASE_URL": "http://127.0.0.1:9"}  # fmt: skip
    worker = launch.worker(db_url, env=env)
    rng = random.Random(7)
    kills = 0
    started = time.monotonic()

    def finished() -> int:
        return sum(n for s, n in _statuses(db, partner.partner_id).items() if s in ("sent", "delivered", "failed"))

    while kills < MAX_KILLS:
        before = finished()
        # kill only once this worker is really sending: some messages finished since it started
        harness.wait_for(lambda b=before: finished() >= min(b + 15, 2 * ORDERS), timeout=60, message="progress")
        if finished() >= 2 * ORDERS - 20:
            break
        time.sleep(rng.uniform(0.0, 0.3))
        worker.kill()
        kills += 1
        worker.start()
    harness.wait_for(
        lambda: _statuses(db, partner.partner_id)["sent"] == 2 * ORDERS, timeout=240, message="all notifications sent"
    )
    elapsed = time.monotonic() - started

    with db.read() as conn:
        rows = conn.execute(
            sa.select(notifications.c.id, notifications.c.channel, notifications.c.attempts).where(
                notifications.c.partner_id == partner.partner_id
            )
        ).all()
    assert len(rows) == 2 * ORDERS  # every (order, confirmed, channel), once
    sms_copies = Counter(str(m["idempotency_key"]) for m in sim_messages(slow_sim.base_url))
    mail_copies = sink.by_message_id()
    missing = duplicates_sms = duplicates_mail = 0
    for row in rows:
        if row.channel == "sms":
            copies = sms_copies.get(row.id, 0)
            duplicates_sms += max(0, copies - 1)
        else:
            copies = mail_copies.get(f"<{row.id}@orderstream.local>", 0)
            duplicates_mail += max(0, copies - 1)
        missing += copies == 0
    report = {
        "database": db.engine.dialect.name,
        "notifications": len(rows),
        "kills": kills,
        "missing": missing,
        "duplicates_sms": duplicates_sms,
        "duplicates_email": duplicates_mail,
        "resumed_attempts": sum(1 for r in rows if r.attempts > 1),
        "seconds": round(elapsed, 1),
    }
    (tmp_path / "crash-report.json").write_text(json.dumps(report))
    print("notifications crash test:", json.dumps(report))
    assert kills >= 3, report  # the worker was really killed while it had work
    assert missing == 0, report
    assert duplicates_sms + duplicates_mail <= kills, report
