"""Database.write(): after-commit callbacks, and prebuilt locking reads per database."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from orderstream.db import Database, LockedSelect, after_commit, in_values
from orderstream.orders.models import orders


def test_after_commit_callbacks_run_on_commit_only(db: Database) -> None:
    ran: list[str] = []

    def rolled_back() -> None:
        with db.write() as conn:
            after_commit(conn, lambda: ran.append("rolled back"))
            raise RuntimeError("undo")

    try:
        rolled_back()
    except RuntimeError:
        pass
    with db.write() as conn:
        after_commit(conn, lambda: ran.append("committed"))
        assert ran == []  # not before the commit
    with db.write():
        pass
    assert ran == ["committed"]  # once, and nothing left over from the rolled-back transaction


def test_locked_select_locks_on_postgresql_only(db: Database) -> None:
    prebuilt = LockedSelect(sa.select(orders.c.id).where(orders.c.id == sa.bindparam("b_id")))
    with db.write() as conn:
        sql = str(prebuilt.on(conn).compile(conn))
        assert ("FOR UPDATE" in sql) == (conn.dialect.name == "postgresql")
        assert prebuilt.on(conn) is prebuilt.on(conn)  # built once, not per call
        assert conn.execute(prebuilt.on(conn), {"b_id": "no-such-order"}).first() is None


def _in_transaction(conn: sa.Connection) -> bool:
    """Whether the database itself has a transaction open on this connection (not SQLAlchemy's view of it)."""
    raw = conn.connection.dbapi_connection
    if conn.dialect.name == "sqlite":
        return bool(raw.in_transaction)  # type: ignore[union-attr]
    from psycopg.pq import TransactionStatus

    return raw.info.transaction_status != TransactionStatus.IDLE  # type: ignore[union-attr]


def test_reads_open_no_transaction_on_postgresql(db: Database) -> None:
    """READ COMMITTED gives each statement its own snapshot: a read there sends no BEGIN and no COMMIT."""
    with db.read() as conn:
        conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
        assert _in_transaction(conn) is (db.engine.dialect.name == "sqlite")  # SQLite: one snapshot
    with db.write() as conn:
        conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
        assert _in_transaction(conn)
    with db.read() as conn:  # the pooled connection came back to transactions after the read
        pass
    with db.write() as conn:
        conn.execute(sa.select(1)).scalar_one()
        assert _in_transaction(conn)


def test_atomic_statements_commit_each_statement_on_postgresql(db: Database) -> None:
    """A claim or a job outcome is one statement: on PostgreSQL it commits by itself; on SQLite it is a write()."""
    committed: list[bool] = []
    db.on_commit(lambda conn: committed.append(True))
    with db.atomic_statements() as conn:
        conn.execute(sa.select(1)).scalar_one()
        assert _in_transaction(conn) is (db.engine.dialect.name == "sqlite")
    assert committed == [True]  # after-commit listeners run either way


def test_in_values_writes_its_constants_into_the_sql(db: Database) -> None:
    """No expanding parameter (rendered again on every execution) and no parameter a generic plan cannot see."""
    stmt = sa.select(orders.c.id).where(in_values(orders.c.status, ["accepted", "it's"]))
    compiled = stmt.compile(dialect=db.engine.dialect)
    assert "POSTCOMPILE" not in str(compiled)
    assert "IN ('accepted', 'it''s')" in str(compiled)
    assert compiled.params == {}
    with db.read() as conn:
        assert conn.execute(stmt).all() == []


def test_held_statements_keep_one_connection_and_start_again_after_a_failure(db: Database) -> None:
    held = db.held()
    ran: list[str] = []
    with held.statements() as conn:
        after_commit(conn, lambda: ran.append("first"))
        first = conn.connection.dbapi_connection
    with held.statements() as conn:
        second = conn.connection.dbapi_connection
        assert not _in_transaction(conn) or db.is_sqlite  # each statement commits on its own (PostgreSQL)
    assert ran == ["first"]  # as atomic_statements(): callbacks once the round's statements ran
    if not db.is_sqlite:
        assert first is second  # kept, not checked out and in again per round
    with pytest.raises(sa.exc.DBAPIError), held.statements() as conn:
        conn.exec_driver_sql("SELECT no_such_column FROM orders")
    with held.statements() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    held.close()
    held.close()  # twice is fine


def test_held_settings_stay_with_their_connection(db: Database) -> None:
    """A held connection's session settings never reach the pool's other users, after a failure or a close."""
    if db.is_sqlite:
        pytest.skip("PostgreSQL's session settings")
    held = db.held({"enable_bitmapscan": "off"})

    def setting(conn: sa.Connection) -> str:
        return str(conn.exec_driver_sql("SHOW enable_bitmapscan").scalar())

    with held.statements() as conn:
        assert setting(conn) == "off"
    with pytest.raises(sa.exc.DBAPIError), held.statements() as conn:
        conn.exec_driver_sql("SELECT no_such_column FROM orders")
    with held.statements() as conn:
        assert setting(conn) == "off"  # the new connection after the failure has them too
    held.close()
    for _ in range(db.engine.pool.size() + 2):  # every connection the pool hands out
        with db.read() as conn:
            assert setting(conn) == "on"
