"""The PostgreSQL pool replaces a connection that died while idle, without a ping on every checkout."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from orderstream import db as db_module
from orderstream.db import Database


def _backend_pid(database: Database) -> int:
    with database.read() as conn:
        return int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())


@pytest.mark.postgres
def test_idle_connection_killed_by_the_server_is_replaced(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    database, admin = Database.from_url(pg_url, pool_size=1), Database.from_url(pg_url, pool_size=1)
    pings: list[object] = []
    real_ping = database.engine.dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    monkeypatch.setattr(database.engine.dialect, "do_ping", counted_ping)
    try:
        first = _backend_pid(database)
        assert _backend_pid(database) == first
        assert pings == []  # reused at once: no ping
        with admin.write() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        monkeypatch.setattr(db_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        assert _backend_pid(database) != first  # pinged, found dead, replaced: the caller saw no error
        assert len(pings) == 1
    finally:
        database.dispose()
        admin.dispose()
