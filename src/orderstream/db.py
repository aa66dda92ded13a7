"""Database access: one metadata, portable column types, and the engine for SQLite or PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from orderstream.prepared import DEFERRED_KEY, send_deferred

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def insert_ignoring(dialect: str, table: sa.Table, **conflict: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for PostgreSQL or SQLite (`conflict`: index_elements, index_where).

    Callers learn whether a row went in through RETURNING: psycopg reports no rowcount for it."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(**conflict)


def locked(conn: Connection, stmt: sa.Select[Any], **for_update: Any) -> sa.Select[Any]:
    """The SELECT locking its rows until the transaction ends, on PostgreSQL; SQLite has one writer anyway."""
    return stmt.with_for_update(**for_update) if conn.dialect.name == "postgresql" else stmt


class LockedSelect:
    """locked() for a prebuilt SELECT: both variants built once, picked per connection (no rebuild per call)."""

    def __init__(self, stmt: sa.Select[Any], **for_update: Any) -> None:
        self._plain = stmt
        self._locking = stmt.with_for_update(**for_update)

    def on(self, conn: Connection) -> sa.Select[Any]:
        """The variant for this connection's database."""
        return self._locking if conn.dialect.name == "postgresql" else self._plain


def pg_json_rows(param: str, table: sa.Table, columns: Sequence[str], name: str, *, many: bool) -> Any:
    """Rows given as one JSON parameter, typed as the table's columns: `jsonb_to_recordset` (many) or `_record`.

    One parameter instead of one per value: SQLAlchemy and psycopg adapt it once, not value by value.
    """
    func = sa.func.jsonb_to_recordset if many else sa.func.jsonb_to_record
    return (
        func(sa.bindparam(param, type_=postgresql.JSONB))
        .table_valued(*(sa.column(c, table.c[c].type) for c in columns))
        .render_derived(name=name, with_types=True)
    )


def pg_insert_json_rows(table: sa.Table, columns: Sequence[str], *, param: str = "rows") -> Any:
    """PostgreSQL: INSERT of the rows given as one JSON array parameter (`pg_json_rows`) into these columns."""
    row = pg_json_rows(param, table, columns, f"{table.name}_row", many=True)
    return postgresql.insert(table).from_select(list(columns), sa.select(*row.c).select_from(row))


def sql_constant(value: str) -> sa.ColumnElement[Any]:
    """A string constant written into the SQL text (quoted), not a bound parameter.

    For the fixed values of hot queries (job statuses and kinds): PostgreSQL plans a prepared statement
    generically after a few runs, and a generic plan cannot know a parameter's value, so `status = $1`
    planned a scan of the whole jobs table where `status = 'running'` uses the partial index.
    """
    return sa.literal_column("'" + value.replace("'", "''") + "'", sa.String())


def in_values(column: sa.ColumnElement[Any], values: Sequence[str]) -> sa.ColumnElement[bool]:
    """column IN ('a', 'b', ...) with the constants in the SQL text (see sql_constant), for a statement built
    once and run often.

    An IN of a plain list is an "expanding" parameter that SQLAlchemy renders anew on every execution
    (it showed in profiles of the job claim), and a parameter hides its value from a generic plan.
    """
    return column.in_([sql_constant(value) for value in values])


def prefixed(table: sa.Table, prefix: str) -> list[sa.Label[Any]]:
    """The table's columns labelled `<prefix>__<name>`, to read a joined table's row apart from the main one."""
    return [column.label(f"{prefix}__{column.name}") for column in table.c]


def unprefixed(row: Mapping[Any, Any], table: sa.Table, prefix: str) -> dict[str, Any] | None:
    """The table's row out of a joined result read with prefixed(); None when an outer join found none."""
    values = {name: row[f"{prefix}__{name}"] for name in table.c.keys()}
    primary_key = [column.name for column in table.primary_key.columns]
    return None if all(values[name] is None for name in primary_key) else values


def json_ready(values: dict[str, Any]) -> dict[str, Any]:
    """A row's values for `pg_json_rows`: times in ISO 8601 with their offset (the UTC columns take no other)."""
    row = dict(values)
    for column, value in values.items():
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError(f"naive datetime given to {column}")  # as the UTC columns refuse one
            row[column] = value.isoformat()
    return row


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # take over transaction control so that writers can BEGIN IMMEDIATE (no upgrade deadlocks)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("orderstream_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")


# conn.info key: callbacks to run once this write() transaction has committed
AFTER_COMMIT_KEY = "orderstream_after_commit"


def after_commit(conn: Connection, callback: Callable[[], None]) -> None:
    """Run callback once the write() transaction of conn has committed; never when it rolls back."""
    conn.info.setdefault(AFTER_COMMIT_KEY, []).append(callback)


# a pooled PostgreSQL connection idle for longer than this is pinged before use
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    # pool_pre_ping would cost every checkout a round trip; a connection back in the pool within the
    # last second is not pinged (a dead one then fails once and SQLAlchemy invalidates the whole pool)
    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("checked_in", None)
        if idle_since is None or time.monotonic() - idle_since <= PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as err:  # noqa: BLE001 - any failure means: replace this connection
            raise sa.exc.DisconnectionError() from err  # the pool retries with a fresh connection


# psycopg turns a statement's placeholders into PostgreSQL's once and caches the result, but only for
# statements up to 4096 characters and 50 parameters: a longer one is converted again on every execution
# (~80 us of CPU for the order intake's one statement). Ours are a fixed, small set, so the cache
# (128 entries) may hold the longer ones too.
PSYCOPG_CACHE_LIMITS = (16384, 128)


def _cache_long_statements() -> None:
    from psycopg import _queries  # no public setting for this: the module's own limits

    _queries.MAX_CACHED_STATEMENT_LENGTH, _queries.MAX_CACHED_STATEMENT_PARAMS = PSYCOPG_CACHE_LIMITS


def _send_deferred_first(engine: Engine) -> None:
    # a statement SQLAlchemy runs must see the writes deferred before it (prepared.deferred_writes)
    @sa.event.listens_for(engine, "before_execute")
    def _on_execute(conn: Connection, *_args: Any) -> None:
        if conn.info.get(DEFERRED_KEY):
            send_deferred(conn)


def create_engine(url: str, *, pool_size: int = 20) -> Engine:
    """An engine for the URL: SQLite gets WAL, synchronous=FULL and immediate write transactions."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 10},
            pool_size=pool_size,
            max_overflow=20,
        )
        _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    engine = sa.create_engine(url, pool_size=pool_size, max_overflow=20)
    _ping_idle_connections(engine)
    _send_deferred_first(engine)
    _cache_long_statements()
    return engine


class HeldStatements:
    """One thread's atomic_statements() on one PostgreSQL connection kept across rounds; reopened after a failure.

    For a loop that runs a few statements many times a second (the claim loop): a pool checkout and check-in
    per round cost more CPU than its statements (the autocommit setting is switched on and off with each).
    On SQLite it is atomic_statements() itself (a write transaction per round). Not for several threads.
    """

    def __init__(self, db: Database, settings: Mapping[str, str] | None = None) -> None:
        self._db = db
        self._settings = dict(settings or {})  # PostgreSQL session settings, for this connection only
        self._conn: Connection | None = None

    @contextmanager
    def statements(self) -> Iterator[Connection]:
        """The kept connection (opened on first use), each statement committed on its own."""
        if self._db.is_sqlite:
            with self._db.atomic_statements() as conn:
                yield conn
            return
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._db._autocommit.connect()
            for name, value in self._settings.items():
                setting = {"name": name, "value": value}
                self._conn.exec_driver_sql("SELECT set_config(%(name)s, %(value)s, false)", setting)
        try:
            yield self._conn
        except BaseException:
            self.close()  # whatever failed, the next round starts on a fresh connection
            raise
        self._db._after_commit(self._conn)

    def close(self) -> None:
        """Give the connection back to the pool (or, if it has session settings, close it for good)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._settings and not conn.invalidated:
                conn.invalidate()  # not back to the pool with its settings: the pool opens a new one
            conn.close()


class Database:
    """The engine plus the two ways code touches it: read() and write() transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # SQLite has one writer; queueing threads here is fairer and faster than its busy handler
        self._write_lock = threading.Lock()
        self._commit_listeners: list[Callable[[Connection], None]] = []
        # same pool; the isolation level is set on checkout and reset on checkin (client side in psycopg)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # PostgreSQL: the server processes of this pool's connections (a NOTIFY names the one that sent it)
        self.backend_pids: set[int] = set()
        if not self.is_sqlite:
            self._track_backend_pids()

    def _track_backend_pids(self) -> None:
        @sa.event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            self.backend_pids.add(dbapi_connection.info.backend_pid)

        @sa.event.listens_for(self.engine, "close")
        def _on_close(dbapi_connection: Any, _record: Any) -> None:
            try:
                self.backend_pids.discard(dbapi_connection.info.backend_pid)
            except Exception:  # noqa: BLE001 - a broken connection may not tell: the idle poll covers a pid left
                pass

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        """Open a database by URL."""
        return cls(create_engine(url, **kwargs))

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """Reads: one transaction on SQLite (a snapshot); on PostgreSQL each statement on its own (autocommit).

        PostgreSQL's READ COMMITTED gives each statement of a transaction its own snapshot anyway, so
        a read transaction there would only add a BEGIN and a COMMIT round trip.
        """
        if self.is_sqlite:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        else:
            with self._autocommit.connect() as conn:
                yield conn

    @contextmanager
    def atomic_statements(self) -> Iterator[Connection]:
        """Writes that are each complete on their own (a claim, a job outcome): autocommit on PostgreSQL.

        On SQLite a write() transaction (its single writer is what serialises claims there).
        """
        if self.is_sqlite:
            with self.write() as conn:
                yield conn
        else:
            with self._autocommit.connect() as conn:
                yield conn
                self._after_commit(conn)

    def held(self, settings: Mapping[str, str] | None = None) -> HeldStatements:
        """atomic_statements() for one thread's loop, keeping its PostgreSQL connection (with these session
        settings) between rounds."""
        return HeldStatements(self, settings)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed on success and rolled back on any exception."""
        if self.is_sqlite:
            with self._write_lock, self.engine.connect() as conn:
                conn = conn.execution_options(orderstream_write=True)
                with self._committing(conn):
                    yield conn
        else:
            with self.engine.connect() as conn, self._committing(conn):
                yield conn

    @contextmanager
    def _committing(self, conn: Connection) -> Iterator[None]:
        try:
            with conn.begin():
                yield
        except BaseException:
            # conn.info lives as long as the pooled connection: what a rolled-back transaction noted
            # (jobs enqueued, after-commit callbacks) must not reach the next one
            conn.info.clear()
            raise
        self._after_commit(conn)

    def on_commit(self, listener: Callable[[Connection], None]) -> None:
        """Call listener after every committed write() (e.g. to wake an in-process worker)."""
        self._commit_listeners.append(listener)

    def _after_commit(self, conn: Connection) -> None:
        for callback in conn.info.pop(AFTER_COMMIT_KEY, ()):
            callback()
        for listener in self._commit_listeners:
            listener(conn)
        conn.info.clear()

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
