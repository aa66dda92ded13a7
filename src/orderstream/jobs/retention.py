"""Retention of finished jobs: done jobs older than the setting are deleted in small batches; dead ones stay."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.db import Database, sql_constant, utcnow
from orderstream.jobs.models import jobs

DONE = sql_constant("done")
BATCH_SIZE = 1000


def _batch_statement(dialect: str) -> sa.Delete:
    victims = (
        sa.select(jobs.c.id)
        # run_at <= finished_at: the run_at bound lets ix_jobs_claim (status, run_at) find the rows
        .where(
            jobs.c.status == DONE,
            jobs.c.run_at < sa.bindparam("cutoff", type_=jobs.c.run_at.type),
            jobs.c.finished_at < sa.bindparam("cutoff", type_=jobs.c.finished_at.type),
        )
        .order_by(jobs.c.run_at)
        .limit(sa.bindparam("batch", type_=sa.Integer()))
    )
    if dialect == "postgresql":
        victims = victims.with_for_update(skip_locked=True)  # two workers pruning at once never wait on each other
    return sa.delete(jobs).where(jobs.c.id.in_(victims.scalar_subquery()))


_STATEMENTS = {dialect: _batch_statement(dialect) for dialect in ("postgresql", "sqlite")}


def prune_batch(conn: Connection, *, older_than: datetime, limit: int = BATCH_SIZE) -> int:
    """Delete up to `limit` done jobs that finished before `older_than`; how many were deleted."""
    stmt = _STATEMENTS[conn.dialect.name]
    return int(conn.execute(stmt, {"cutoff": older_than, "batch": limit}).rowcount or 0)


def prune(db: Database, *, older_than: datetime, stop: threading.Event | None = None, batch: int = BATCH_SIZE) -> int:
    """Delete every done job that finished before `older_than`, one short transaction per batch; how many."""
    total = 0
    while stop is None or not stop.is_set():
        with db.write() as conn:
            deleted = prune_batch(conn, older_than=older_than, limit=batch)
        total += deleted
        if deleted < batch:
            break
    return total


def cutoff(retention_hours: float, now: datetime | None = None) -> datetime:
    """The finish time before which a done job is deleted."""
    return (now or utcnow()) - timedelta(hours=retention_hours)
