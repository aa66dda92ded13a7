"""Writing jobs: called inside the transaction of the change that causes them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from orderstream.db import json_ready, pg_json_rows, utcnow
from orderstream.jobs.models import jobs
from orderstream.logs import REQUEST_ID
from orderstream.prepared import DEFERRED_KEY, Prepared

# payload key carrying the id of the request that enqueued the job: the job's logs show it too
REQUEST_ID_KEY = "_request_id"

NOTIFY_CHANNEL = "orderstream_jobs"
ENQUEUED_FLAG = "orderstream_jobs_enqueued"
ENQUEUED_DUE_KEY = "orderstream_jobs_enqueued_due"  # conn.info: the earliest run_at enqueued (None: now)
BATCH_KEY = "orderstream_jobs_batch"  # conn.info: rows of a batch() not written yet
_ACTIVE_WHERE = sa.text("key IS NOT NULL AND status IN ('pending', 'running')")
_INSERT = sa.insert(jobs).returning(jobs.c.id)
# (PostgreSQL uses the insert-and-notify statements below)
_SQLITE_INSERT_KEYED = (
    sqlite.insert(jobs)
    .on_conflict_do_nothing(index_elements=["kind", "key"], index_where=_ACTIVE_WHERE)
    .returning(jobs.c.id)
)

_COLUMNS = ("kind", "key", "payload", "status", "run_at", "attempts", "max_attempts", "created_at", "updated_at")


def _pg_insert_notify(*, keyed: bool) -> Any:
    # inside a CTE the values are not matched to columns by name: explicit parameters (`job_<column>`)
    insert = postgresql.insert(jobs).values({c: sa.bindparam(f"job_{c}", type_=jobs.c[c].type) for c in _COLUMNS})
    if keyed:
        insert = insert.on_conflict_do_nothing(index_elements=["kind", "key"], index_where=_ACTIVE_WHERE)
    inserted = insert.returning(jobs.c.id).cte("inserted_job")
    notify = sa.func.pg_notify(sa.bindparam("notify_channel"), sa.bindparam("notify_kind"))
    return sa.select(inserted.c.id, notify).select_from(inserted)


_PG_INSERT_NOTIFY = _pg_insert_notify(keyed=False)
_PG_INSERT_NOTIFY_KEYED = _pg_insert_notify(keyed=True)


def pg_insert_rows(*, only_with: Any = None, keys_in: Any = None) -> Any:
    """INSERT of job rows given as one JSON array (parameter `jobs`), as a CTE `new_jobs` returning (id, kind).

    One statement for any number of rows, compiled and prepared once (a multi-row VALUES would be compiled
    again on every execution). Keyed for every row: a NULL key never conflicts, so unkeyed rows always go
    in. With `only_with` (a CTE of the same statement), the rows go in only when it yields a row; with
    `keys_in` (a one-column select of the same statement), only the rows whose key it yields.
    """
    row = pg_json_rows("jobs", jobs, _JSON_COLUMNS, "job", many=True)
    values = [
        row.c.kind,
        row.c.key,
        row.c.payload,
        sa.literal_column("'pending'"),
        row.c.run_at,
        sa.literal_column("0"),
        row.c.max_attempts,
        row.c.created_at,
        row.c.updated_at,
    ]
    source = sa.select(*values).select_from(row)
    if only_with is not None:
        source = source.join(only_with, sa.true())
    if keys_in is not None:
        source = source.where(row.c.key.in_(keys_in))
    insert = (
        postgresql.insert(jobs)
        .from_select(list(_COLUMNS), source)
        .on_conflict_do_nothing(index_elements=["kind", "key"], index_where=_ACTIVE_WHERE)
    )
    return insert.returning(jobs.c.id, jobs.c.kind, jobs.c.run_at).cte("new_jobs")


def notice(kind: str, run_at: datetime) -> str:
    """The NOTIFY payload of a new job, `<kind>@<run_at in Unix seconds>`: a worker waking later anyway skips it."""
    return f"{kind}@{run_at.timestamp()}"


def read_notice(payload: str) -> tuple[str, float | None]:
    """(kind, run_at as Unix seconds or None) of a NOTIFY payload; a bare kind (or a bad time) is due now."""
    kind, _, at = payload.partition("@")
    try:
        return kind, float(at) if at else None
    except ValueError:
        return kind, None


def pg_notify_kinds(new_jobs: Any) -> Any:
    """The kinds inserted by `new_jobs` as an array, each job sent as a NOTIFY to the workers (parameter `channel`)."""
    payload = new_jobs.c.kind + "@" + sa.cast(sa.extract("epoch", new_jobs.c.run_at), sa.Text)  # as notice()
    notified = sa.select(new_jobs.c.kind, sa.func.pg_notify(sa.bindparam("channel"), payload)).subquery()
    return sa.select(sa.func.array_agg(notified.c.kind)).scalar_subquery()


_JSON_COLUMNS = ("kind", "key", "payload", "run_at", "max_attempts", "created_at", "updated_at")
_PG_INSERT_ROWS_NOTIFY = Prepared(sa.select(pg_notify_kinds(pg_insert_rows()).label("kinds")))


@contextmanager
def collect(conn: Connection) -> Iterator[list[dict[str, Any]]]:
    """Jobs enqueued inside the block are not written but gathered in the list it yields; the caller writes them.

    With `write()`, or inside a statement of its own (`pg_insert_rows`, `json_rows`, `note_enqueued`).
    Inside it, enqueue() returns None (the ids are not known yet): only for callers that need no id.
    """
    if BATCH_KEY in conn.info:
        raise RuntimeError("jobs are being collected on this connection already")
    pending: list[dict[str, Any]] = []
    conn.info[BATCH_KEY] = pending
    try:
        yield pending
    finally:
        conn.info.pop(BATCH_KEY, None)


@contextmanager
def batch(conn: Connection) -> Iterator[None]:
    """Jobs enqueued inside the block go in together at its end: on PostgreSQL one statement, one round trip.

    Inside it, enqueue() returns None (the ids are not known yet): only for callers that need no id.
    A block that raises writes none of its jobs. (SQLite writes them one by one: no round trips to save.)
    """
    if BATCH_KEY in conn.info:
        yield  # nested: the outer block writes them
        return
    with collect(conn) as pending:
        yield
    write(conn, pending)


def write(conn: Connection, pending: list[dict[str, Any]]) -> None:
    """Write collected jobs: on PostgreSQL in one statement with its NOTIFY, on SQLite one by one."""
    if conn.dialect.name != "postgresql":
        for values in pending:
            _insert(conn, values)
    elif pending:
        due = earliest_due(pending)

        def _written(_count: int, rows: list[dict[str, Any]]) -> None:
            note_enqueued(conn, rows[0]["kinds"] or (), due)

        # inside prepared.deferred_writes() the jobs go with the transaction's other writes
        _PG_INSERT_ROWS_NOTIFY.defer(conn, {"jobs": json_rows(pending), "channel": NOTIFY_CHANNEL}, then=_written)


def earliest_due(pending: list[dict[str, Any]]) -> datetime | None:
    """The earliest run_at of collected jobs (those a keyed conflict skipped included: earlier is safe)."""
    return min((values["run_at"] for values in pending), default=None)


def json_rows(pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Collected jobs as the (JSON) parameter of `pg_insert_rows`: times in ISO 8601."""
    return [json_ready(values) for values in pending]


def note_enqueued(conn: Connection, kinds: Iterable[str], due: datetime | None = None) -> None:
    """Remember the kinds enqueued in this transaction, and the earliest due (None: now).

    At commit an in-process worker wakes for the kinds it runs, unless they are due after it wakes anyway.
    """
    if not kinds:
        return
    conn.info.setdefault(ENQUEUED_FLAG, set()).update(kinds)
    known = conn.info.get(ENQUEUED_DUE_KEY, due)
    conn.info[ENQUEUED_DUE_KEY] = None if known is None or due is None else min(known, due)


def enqueue(
    conn: Connection,
    *,
    kind: str,
    payload: dict[str, Any],
    key: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int = 10,
) -> int | None:
    """Add a job in the caller's transaction; with a key, skip it if one is already active.

    Returns the new job id, or None when an active job with the same (kind, key) exists (or inside batch() or
    prepared.deferred_writes(): the id is not known yet).
    max_attempts caps the kind's RetryPolicy.max_attempts (the lower of the two applies).
    """
    now = utcnow()
    request_id = REQUEST_ID.get()
    if request_id is not None and REQUEST_ID_KEY not in payload:
        payload = {**payload, REQUEST_ID_KEY: request_id}
    values = {
        "kind": kind,
        "key": key,
        "payload": payload,
        "status": "pending",
        "run_at": run_at or now,
        "attempts": 0,
        "max_attempts": max_attempts,
        "created_at": now,
        "updated_at": now,
    }
    pending = conn.info.get(BATCH_KEY)
    if pending is not None:
        pending.append(values)
        return None
    if conn.info.get(DEFERRED_KEY) is not None:  # goes with the block's other writes (PostgreSQL)
        write(conn, [values])
        return None
    return _insert(conn, values)


def _insert(conn: Connection, values: dict[str, Any]) -> int | None:
    kind, key = values["kind"], values["key"]
    dialect = conn.dialect.name
    # prebuilt statements, values apart: SQLAlchemy reuses the compiled statement instead of rebuilding it
    if dialect == "postgresql":
        # one round-trip: the insert and, when it inserted, the NOTIFY that wakes the workers
        stmt = _PG_INSERT_NOTIFY_KEYED if key is not None else _PG_INSERT_NOTIFY
        params = {f"job_{c}": v for c, v in values.items()}
        notify = {"notify_channel": NOTIFY_CHANNEL, "notify_kind": notice(kind, values["run_at"])}
        row = conn.execute(stmt, {**params, **notify}).first()
    else:
        row = conn.execute(_SQLITE_INSERT_KEYED if key is not None and dialect == "sqlite" else _INSERT, values).first()
    if row is None:
        return None
    note_enqueued(conn, (kind,), values["run_at"])
    return int(row[0])
