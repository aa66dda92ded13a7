"""Shared fixtures: settings without ambient ORDERSTREAM_* variables, and databases on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.config import Settings
from orderstream.db import Database
from orderstream.migrate import upgrade
from tests.factories import PartnerFixture, make_partner

PG_ENV = "ORDERSTREAM_TEST_POSTGRES_URL"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build Settings explicitly; nothing leaks in from the environment."""
    for key in list(os.environ):
        if key.startswith("ORDERSTREAM_") and not key.startswith("ORDERSTREAM_TEST_"):
            monkeypatch.delenv(key)


def _pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV, DEFAULT_PG)
    try:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception:  # noqa: BLE001 - any failure means: no PostgreSQL here
        return None
    return url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session (skips without PostgreSQL)."""
    admin = _pg_admin_url()
    if admin is None:
        if os.environ.get("ORDERSTREAM_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here but {os.environ.get(PG_ENV, DEFAULT_PG)} is unreachable")
        pytest.skip(f"PostgreSQL not reachable at {os.environ.get(PG_ENV, DEFAULT_PG)} (set {PG_ENV})")
    name = f"orderstream_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    upgrade(url)
    yield url
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    """A fresh, migrated SQLite database file."""
    url = f"sqlite:///{tmp_path}/orderstream.db"
    upgrade(url)
    return url


def _empty_pg_database(url: str) -> None:
    """Empty every table (not the migration version), so each test starts as on a fresh SQLite file."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            # a process a test killed may leave a session holding locks for a moment: end them first
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            tables = conn.exec_driver_sql(
                "SELECT quote_ident(tablename) FROM pg_tables "
                "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            ).scalars()
            names = ", ".join(tables)
            if names:
                conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database URL, once per backend; on PostgreSQL emptied after each test (jobs, caps and
    rows of one test never leak into the next, as with SQLite's file per test)."""
    if request.param == "sqlite":
        yield str(request.getfixturevalue("sqlite_url"))
        return
    url = str(request.getfixturevalue("pg_url"))
    yield url
    _empty_pg_database(url)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A Database on each backend."""
    database = Database.from_url(db_url, pool_size=5)
    yield database
    database.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings for the database under test, with no embedded worker."""
    return Settings(database_url=db_url, embedded_worker=False, log_json=False)


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    """The app over HTTP in process, on the database under test (a test module may define its own)."""
    from orderstream.app import create_app

    with TestClient(create_app(settings, db=db)) as c:
        yield c


@pytest.fixture
def partner(db: Database) -> PartnerFixture:
    """A partner with one location and an API key."""
    return make_partner(db)


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    """Every statement sent to the database while the test runs (a test module may define its own)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(db.engine, "before_cursor_execute", record)
