"""Writing jobs: called inside the transaction of the change that causes them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from orderstream.db import utcnow
from orderstream.jobs.models import jobs
from orderstream.logs import REQUEST_ID

# payload key carrying the id of the request that enqueued the job: the job's logs show it too
REQUEST_ID_KEY = "_request_id"

NOTIFY_CHANNEL = "orderstream_jobs"
ENQUEUED_FLAG = "orderstream_jobs_enqueued"
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


# A batch's rows as one JSON parameter: one statement for any number of rows, compiled and prepared once
# (a multi-row VALUES would be compiled again on every execution). Keyed for every row: a NULL key
# never conflicts, so unkeyed rows always go in.
_PG_INSERT_ROWS_NOTIFY = sa.text(
    """
    WITH inserted_jobs AS (
        INSERT INTO jobs (kind, key, payload, status, run_at, attempts, max_attempts, created_at, updated_at)
        SELECT r.kind, r.key, r.payload, 'pending', r.run_at, 0, r.max_attempts, r.created_at, r.updated_at
        FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
            kind varchar, key varchar, payload jsonb, run_at timestamptz, max_attempts integer,
            created_at timestamptz, updated_at timestamptz
        )
        ON CONFLICT (kind, key) WHERE key IS NOT NULL AND status IN ('pending', 'running') DO NOTHING
        RETURNING id, kind
    )
    SELECT inserted_jobs.kind, pg_notify(:channel, inserted_jobs.kind) FROM inserted_jobs
    """
)


@contextmanager
def batch(conn: Connection) -> Iterator[None]:
    """Jobs enqueued inside the block go in together at its end: on PostgreSQL one statement, one round trip.

    Inside it, enqueue() returns None (the ids are not known yet): only for callers that need no id.
    A block that raises writes none of its jobs. (SQLite writes them one by one: no round trips to save.)
    """
    if BATCH_KEY in conn.info:
        yield  # nested: the outer block writes them
        return
    pending: list[dict[str, Any]] = []
    conn.info[BATCH_KEY] = pending
    try:
        yield
    finally:
        conn.info.pop(BATCH_KEY, None)
    if conn.dialect.name != "postgresql":
        for values in pending:
            _insert(conn, values)
    elif pending:
        rows = json.dumps([_json_row(values) for values in pending])
        kinds = set(conn.execute(_PG_INSERT_ROWS_NOTIFY, {"rows": rows, "channel": NOTIFY_CHANNEL}).scalars())
        if kinds:
            conn.info.setdefault(ENQUEUED_FLAG, set()).update(kinds)


def _json_row(values: dict[str, Any]) -> dict[str, Any]:
    times = {column: values[column] for column in ("run_at", "created_at", "updated_at")}
    if any(moment.tzinfo is None for moment in times.values()):
        raise ValueError("naive datetime given to a job")  # as the UTC columns refuse one
    return {**values, **{column: moment.isoformat() for column, moment in times.items()}}


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

    Returns the new job id, or None when an active job with the same (kind, key) exists (or inside batch()).
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
    return _insert(conn, values)


def _insert(conn: Connection, values: dict[str, Any]) -> int | None:
    kind, key = values["kind"], values["key"]
    dialect = conn.dialect.name
    # prebuilt statements, values apart: SQLAlchemy reuses the compiled statement instead of rebuilding it
    if dialect == "postgresql":
        # one round-trip: the insert and, when it inserted, the NOTIFY that wakes the workers
        stmt = _PG_INSERT_NOTIFY_KEYED if key is not None else _PG_INSERT_NOTIFY
        params = {f"job_{c}": v for c, v in values.items()}
        row = conn.execute(stmt, {**params, "notify_channel": NOTIFY_CHANNEL, "notify_kind": kind}).first()
    else:
        row = conn.execute(_SQLITE_INSERT_KEYED if key is not None and dialect == "sqlite" else _INSERT, values).first()
    if row is None:
        return None
    # the kinds enqueued in this transaction: an in-process worker wakes only for kinds it runs
    conn.info.setdefault(ENQUEUED_FLAG, set()).add(kind)
    return int(row[0])
