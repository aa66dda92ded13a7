"""Prepared statements give what SQLAlchemy's execute() gives, on SQLite and PostgreSQL (there on the driver)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from orderstream.db import Database, prefixed
from orderstream.jobs import outbox
from orderstream.jobs.models import jobs
from orderstream.orders.models import orders
from orderstream.prepared import Prepared, deferred_writes
from orderstream.tenancy.models import locations
from tests.factories import PartnerFixture
from tests.orders_api_helpers import seed_order

_ORDER_WITH_LOCATION = (
    sa.select(orders, *prefixed(locations, "location"))
    .join(locations, locations.c.id == orders.c.location_id)
    .where(orders.c.id == sa.bindparam("b_order_id", type_=orders.c.id.type))
)
_INSERT_JOB = sa.insert(jobs).returning(jobs.c.id, jobs.c.kind, jobs.c.payload, jobs.c.run_at)
_UPDATE_JOB = sa.update(jobs).where(jobs.c.id == sa.bindparam("b_id", type_=jobs.c.id.type)).values(status="done")
_COUNT_PENDING = sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == "pending")


def _job(kind: str = "sample", **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "kind": kind, "key": None, "payload": {"n": 1, "nested": {"a": [1, 2]}}, "status": "pending", "run_at": now,
        "attempts": 0, "max_attempts": 3, "created_at": now, "updated_at": now, **overrides,
    }  # fmt: skip


def test_a_select_gives_the_rows_and_keys_of_mappings(db: Database, partner: PartnerFixture) -> None:
    order_id = seed_order(db, partner, pos_order_id="p-1")
    prepared = Prepared(_ORDER_WITH_LOCATION)
    with db.read() as conn:
        expected = [dict(row) for row in conn.execute(_ORDER_WITH_LOCATION, {"b_order_id": order_id}).mappings()]
        got = prepared.rows(conn, {"b_order_id": order_id})
        again = prepared.first(conn, {"b_order_id": order_id})
        none = prepared.first(conn, {"b_order_id": "ord_missing"})

    assert got == expected
    assert len(got) == 1
    assert again == expected[0]
    assert none is None
    assert got[0]["source_order_id"] == "p-1"
    assert "location__external_id" in got[0]
    created = got[0]["created_at"]
    assert isinstance(created, datetime)
    assert created.utcoffset() == timedelta(0)


def test_an_insert_returning_and_an_update_with_values_given_at_execution(db: Database) -> None:
    prepared, update = Prepared(_INSERT_JOB), Prepared(_UPDATE_JOB)
    run_at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    with db.write() as conn:
        row = prepared.first(conn, _job(run_at=run_at))
        assert row is not None
        # different column sets compile apart: the second INSERT has no key and no max_attempts column
        other = prepared.first(conn, {k: v for k, v in _job("other").items() if k not in ("key", "max_attempts")})
        assert other is not None
        changed = update.run(conn, {"b_id": row["id"], "updated_at": run_at + timedelta(hours=1)})
        missing = update.run(conn, {"b_id": -1, "updated_at": run_at})

    assert row["kind"] == "sample"
    assert row["payload"] == {"n": 1, "nested": {"a": [1, 2]}}
    assert row["run_at"] == run_at
    assert row["run_at"].tzinfo is not None
    assert (changed, missing) == (1, 0)
    with db.read() as conn:
        stored = conn.execute(sa.select(jobs).where(jobs.c.id == row["id"])).mappings().one()
        other_stored = conn.execute(sa.select(jobs).where(jobs.c.id == other["id"])).mappings().one()
        pending = Prepared(_COUNT_PENDING).scalar(conn)
    assert stored["status"] == "done"
    assert stored["updated_at"] == run_at + timedelta(hours=1)
    assert other_stored["max_attempts"] == 10
    assert other_stored["key"] is None
    assert pending == 1


def test_a_naive_time_is_refused_as_by_sqlalchemy(db: Database) -> None:
    prepared = Prepared(_INSERT_JOB)
    with pytest.raises((ValueError, sa.exc.StatementError)), db.write() as conn:
        prepared.first(conn, _job(run_at=datetime(2026, 11, 27, 12, 0)))  # noqa: DTZ001 - the naive time refused


def test_a_missing_parameter_and_a_database_error_raise_sqlalchemy_errors(db: Database) -> None:
    with pytest.raises(sa.exc.StatementError, match="b_order_id"), db.read() as conn:
        Prepared(_ORDER_WITH_LOCATION).rows(conn, {})
    keyed = _job(key="k-1")
    with db.write() as conn:
        assert Prepared(_INSERT_JOB).first(conn, keyed) is not None
    # a second active job with the same (kind, key) breaks the unique index
    with pytest.raises(sa.exc.IntegrityError), db.write() as conn:
        Prepared(_INSERT_JOB).first(conn, keyed)
    with db.read() as conn:  # the connection and the pool are usable after it
        assert Prepared(_COUNT_PENDING).scalar(conn) == 1


def test_it_runs_in_the_callers_transaction(db: Database) -> None:
    prepared = Prepared(_INSERT_JOB)

    def insert_then_fail() -> None:
        with db.write() as conn:
            assert prepared.first(conn, _job()) is not None
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        insert_then_fail()
    with db.read() as conn:
        assert Prepared(_COUNT_PENDING).scalar(conn) == 0


def test_a_locking_select_and_the_statement_listeners(
    db: Database, partner: PartnerFixture, statements: list[str]
) -> None:
    order_id = seed_order(db, partner)
    # SQLite's compiler leaves FOR UPDATE out (one writer there anyway): one statement serves both
    locking = Prepared(
        sa.select(orders.c.id, orders.c.status).where(orders.c.id == sa.bindparam("b_order_id")).with_for_update()
    )
    statements.clear()
    with db.write() as conn:
        row = locking.first(conn, {"b_order_id": order_id})

    assert row == {"id": order_id, "status": "received"}
    sent = [s for s in statements if not s.startswith(("BEGIN", "COMMIT"))]
    assert len(sent) == 1
    assert ("FOR UPDATE" in sent[0]) == (not db.is_sqlite)


# -- deferred writes --------------------------------------------------------------------------------

_SET_STATUS = sa.update(jobs).where(jobs.c.id == sa.bindparam("b_id", type_=jobs.c.id.type))
_SET_ORDER_STATUS = sa.update(orders).where(orders.c.id == sa.bindparam("b_order_id", type_=orders.c.id.type))
_SET_STATUS_OF_KIND = sa.update(jobs).where(jobs.c.kind == sa.bindparam("b_kind", type_=jobs.c.kind.type))


def _sent(statements: list[str]) -> list[str]:
    return [s for s in statements if not s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]


def _status(db: Database, job_id: int) -> str:
    with db.read() as conn:
        return str(conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one())


def _seed_job(db: Database, kind: str = "sample") -> int:
    with db.write() as conn:
        row = Prepared(_INSERT_JOB).first(conn, _job(kind))
    assert row is not None
    return int(row["id"])


def test_deferred_writes_go_as_one_statement_and_each_caller_learns_its_outcome(
    db: Database, statements: list[str]
) -> None:
    existing = _seed_job(db)
    told: list[tuple[str, int, list[dict[str, Any]]]] = []
    insert, update = Prepared(_INSERT_JOB), Prepared(_SET_STATUS, known_rows_only=True)
    statements.clear()
    with db.write() as conn, deferred_writes(conn):
        insert.defer(conn, _job("first"), then=lambda n, rows: told.append(("first", n, rows)))
        insert.defer(conn, _job("second"))  # nobody asks
        update.defer(conn, {"b_id": existing, "status": "done"}, then=lambda n, rows: told.append(("done", n, rows)))
        missing = {"b_order_id": "ord_missing", "status": "canceled"}
        Prepared(_SET_ORDER_STATUS).defer(conn, missing, then=lambda n, rows: told.append(("none", n, rows)))
        assert len(told) == (3 if db.is_sqlite else 0)  # SQLite runs each at once; PostgreSQL holds them

    assert len(_sent(statements)) == (4 if db.is_sqlite else 1)
    assert [(name, n) for name, n, _rows in told] == [("first", 1), ("done", 1), ("none", 0)]
    [first] = told[0][2]
    assert first["kind"] == "first"
    assert first["payload"] == {"n": 1, "nested": {"a": [1, 2]}}
    assert told[1][2] == told[2][2] == []  # no RETURNING: the count only
    assert _status(db, existing) == "done"
    with db.read() as conn:
        kinds = sorted(conn.execute(sa.select(jobs.c.kind)).scalars())
    assert kinds == ["first", "sample", "second"]


def test_a_statement_run_another_way_first_sends_the_deferred_writes(db: Database) -> None:
    job_id = _seed_job(db)
    with db.write() as conn, deferred_writes(conn):
        Prepared(_SET_STATUS).defer(conn, {"b_id": job_id, "status": "running"})
        # SQLAlchemy's execute() and a Prepared read both see it
        assert conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar_one() == "running"
        Prepared(_SET_STATUS).defer(conn, {"b_id": job_id, "status": "done"})
        assert Prepared(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar(conn) == "done"
    assert _status(db, job_id) == "done"


def test_a_write_that_depends_on_a_deferred_one_goes_after_it(db: Database, statements: list[str]) -> None:
    job_id = _seed_job(db)
    update = Prepared(_SET_STATUS)
    statements.clear()
    with db.write() as conn, deferred_writes(conn):
        update.defer(conn, {"b_id": job_id, "status": "running"})
        update.defer(conn, {"b_id": job_id, "status": "done"})  # the same table changed: after it
        Prepared(_INSERT_JOB).defer(conn, _job("late"))
        # an UPDATE by kind could touch the row just inserted: it must see it
        Prepared(_SET_STATUS_OF_KIND).defer(conn, {"b_kind": "late", "status": "dead"})
    assert len(_sent(statements)) == 4  # each one depends on the one before it
    assert _status(db, job_id) == "done"
    with db.read() as conn:
        assert conn.execute(sa.select(jobs.c.status).where(jobs.c.kind == "late")).scalar_one() == "dead"


def test_a_block_that_raises_sends_none_of_its_deferred_writes(db: Database) -> None:
    job_id = _seed_job(db)

    def defer_then_fail() -> None:
        with db.atomic_statements() as conn, deferred_writes(conn):
            Prepared(_SET_STATUS).defer(conn, {"b_id": job_id, "status": "done"})
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        defer_then_fail()
    assert _status(db, job_id) == "pending"  # PostgreSQL never got it; SQLite ran it at once and rolled back


def test_statements_with_ctes_of_the_same_name_go_together(db: Database, statements: list[str]) -> None:
    now = datetime.now(UTC)
    kinds: list[Any] = []
    statements.clear()
    with db.write() as conn:
        with deferred_writes(conn):
            for kind in ("a", "b"):
                with outbox.batch(conn):
                    outbox.enqueue(conn, kind=kind, payload={}, run_at=now)
                    outbox.enqueue(conn, kind=kind, payload={}, run_at=now, key="k")
        kinds.append(set(conn.info.get(outbox.ENQUEUED_FLAG) or ()))  # told once the jobs went in
    assert len(_sent(statements)) == (4 if db.is_sqlite else 1)
    with db.read() as conn:
        assert sorted(conn.execute(sa.select(jobs.c.kind, jobs.c.key)).all(), key=lambda r: (r[0], r[1] or "")) == [
            ("a", None), ("a", "k"), ("b", None), ("b", "k"),
        ]  # fmt: skip
    assert kinds == [{"a", "b"}]


def test_a_combined_statement_still_notifies_the_workers(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("PostgreSQL's NOTIFY")
    import psycopg

    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {outbox.NOTIFY_CHANNEL}")
        job_id = _seed_job(db)
        with db.write() as conn, deferred_writes(conn):
            Prepared(_SET_STATUS, known_rows_only=True).defer(conn, {"b_id": job_id, "status": "done"})
            with outbox.batch(conn):
                outbox.enqueue(conn, kind="woken", payload={}, run_at=datetime.now(UTC))
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert any(p.startswith("woken@") for p in got), got
