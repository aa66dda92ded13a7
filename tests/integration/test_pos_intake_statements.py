"""What one new order costs the database: the statements of order.created, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.db import Database
from orderstream.pos.store import PSYCOPG_CACHE_LIMITS
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
        # credentials + location; event, order, lines, history; dispatch job, tracking token, notifications job
        assert len(sent) == 8, sent
        return
    # credentials + location; event, order, lines and history in one; the tracking token; both jobs (+ NOTIFY) in one
    assert len(sent) == 4, sent
    assert "INSERT INTO jobs" in sent[-1], sent[-1]
    assert "pg_notify" in sent[-1], sent[-1]
    max_length, max_params = PSYCOPG_CACHE_LIMITS
    for statement, parameters in statements:
        # psycopg parses longer statements (or ones with more parameters) again on every execution
        assert len(statement) <= max_length, statement[:200]
        assert len(parameters or ()) <= max_params, statement[:200]
