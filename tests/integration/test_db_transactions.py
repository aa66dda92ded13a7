"""Database.write(): after-commit callbacks, and prebuilt locking reads per database."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import Database, LockedSelect, after_commit
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
