"""What one new order costs the database: the statements of order.created, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.db import PSYCOPG_CACHE_LIMITS, Database
from orderstream.jobs.outbox import NOTIFY_CHANNEL, read_notice
from orderstream.notifications.handlers import PLAN_KIND
from tests.factories import PartnerFixture
from tests.pos_helpers import legacy_order, post_event


@pytest.fixture
def statements(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """Every statement sent to the database while the test runs, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    sa.event.listen(db.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(db.engine, "before_cursor_execute", record)


def test_a_new_order_is_few_statements_each_cacheable_by_the_driver(
    client: TestClient, db: Database, partner: PartnerFixture, statements: list[tuple[str, Any]]
) -> None:
    assert post_event(client, partner.slug, partner.secret, legacy_order("warm-up")).status_code == 200
    statements.clear()

    resp = post_event(client, partner.slug, partner.secret, legacy_order("counted"))

    assert resp.status_code == 200, resp.text
    sent = [s for s, _ in statements if not s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
    if db.is_sqlite:
        # credentials + location; event, order, lines, history, tracking token, dispatch job, notifications job
        assert len(sent) == 8, sent
        return
    # credentials + location; then event, order, lines, history, tracking token, both jobs and the NOTIFY in one
    assert len(sent) == 2, sent
    for table in ("inbound_events", "orders", "order_line_items", "order_history", "tracking_tokens", "jobs"):
        assert f"INSERT INTO {table} " in sent[-1], table
    assert "pg_notify" in sent[-1], sent[-1]
    from psycopg import _queries

    assert (_queries.MAX_CACHED_STATEMENT_LENGTH, _queries.MAX_CACHED_STATEMENT_PARAMS) == PSYCOPG_CACHE_LIMITS
    max_length, max_params = PSYCOPG_CACHE_LIMITS
    for statement, parameters in statements:
        # psycopg parses longer statements (or ones with more parameters) again on every execution
        assert len(statement) <= max_length, statement[:200]
        assert len(parameters or ()) <= max_params, statement[:200]


@pytest.mark.postgres
def test_the_intake_statement_wakes_listening_workers_for_a_new_order_only(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's NOTIFY")
    import psycopg

    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        event = legacy_order("notified")
        assert post_event(client, partner.slug, partner.secret, event).status_code == 200
        notices = [read_notice(n.payload) for n in listener.notifies(timeout=2, stop_after=2)]
        assert sorted(kind for kind, _ in notices) == ["dispatch", PLAN_KIND]
        assert all(due is not None and abs(due - time.time()) < 60 for _, due in notices)  # both due now
        assert post_event(client, partner.slug, partner.secret, event).json()["duplicate"] is True
        assert list(listener.notifies(timeout=0.5)) == []  # a resend writes no job
