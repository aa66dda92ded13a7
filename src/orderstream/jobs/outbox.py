"""Writing jobs: called inside the transaction of the change that causes them."""

from __future__ import annotations

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

    Returns the new job id, or None when an active job with the same (kind, key) exists.
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
