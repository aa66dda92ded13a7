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
    if key is not None and dialect == "postgresql":
        stmt: Any = postgresql.insert(jobs).on_conflict_do_nothing(
            index_elements=["kind", "key"], index_where=_ACTIVE_WHERE
        )
    elif key is not None and dialect == "sqlite":
        stmt = sqlite.insert(jobs).on_conflict_do_nothing(index_elements=["kind", "key"], index_where=_ACTIVE_WHERE)
    else:
        stmt = sa.insert(jobs)
    # values apart from the statement: SQLAlchemy reuses the compiled statement instead of rebuilding it
    row = conn.execute(stmt.returning(jobs.c.id), values).first()
    if row is None:
        return None
    if dialect == "postgresql":
        conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, kind)))
    # the kinds enqueued in this transaction: an in-process worker wakes only for kinds it runs
    conn.info.setdefault(ENQUEUED_FLAG, set()).add(kind)
    return int(row[0])
