"""Job state changes: claim with a lease, renew it, finish (fenced by the lease), list and replay."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.db import in_values, sql_constant, utcnow
from orderstream.jobs.models import jobs
from orderstream.prepared import Prepared

JOB_STATUSES = ("pending", "running", "done", "dead")
MAX_ERROR_CHARS = 4000
# in the SQL text of the claim and next-due queries, so that their plans use the partial indexes
PENDING, RUNNING = sql_constant("pending"), sql_constant("running")
ONE = sa.literal_column("1", sa.Integer())


class JobError(Exception):
    """A job operation asked for by an operator cannot be done."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds a lease on; (worker_id, attempts) identify the lease."""

    id: int
    kind: str
    key: str | None
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    run_at: datetime
    leased_until: datetime
    worker_id: str
    claimed_at: datetime


def _locked_first(kinds: tuple[str, ...], where: Any, order: Any) -> sa.Select[Any]:
    """Up to `claim_limit` jobs of these kinds matching where, first by order, locked (others' locks skipped)."""
    return (
        sa.select(jobs.c.id, jobs.c.run_at)
        .where(in_values(jobs.c.kind, kinds), where)
        .order_by(order)
        .limit(sa.bindparam("claim_limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True)
    )


def _claim_statement(kinds: tuple[str, ...], ranks: tuple[tuple[str, ...], ...] = ()) -> Any:
    """The claim UPDATE for these kinds, values apart (built once per set of kinds, then reused).

    Building it per call cost more CPU than running it (statement construction and its cache key):
    bound parameters `claim_now`, `claim_limit`, `claim_worker` and `claim_lease_<i>` (lease end of kinds[i]).
    `ranks` groups the kinds by priority, most urgent first: the claim takes the first group's due jobs before
    the next one's, and within a group the earliest `run_at` first.
    """
    now = sa.bindparam("claim_now", type_=jobs.c.run_at.type)
    found = []
    for rank, group in enumerate(ranks or (kinds,)):
        # two scans, each in its partial index's order (one condition with OR can only be a bitmap scan: see
        # CLAIM_SESSION_SETTINGS)
        pending = _locked_first(group, sa.and_(jobs.c.status == PENDING, jobs.c.run_at <= now), jobs.c.run_at)
        expired = _locked_first(
            group, sa.and_(jobs.c.status == RUNNING, jobs.c.leased_until < now), jobs.c.leased_until
        )
        for scan in (pending.cte(f"due_{rank}"), expired.cte(f"expired_{rank}")):
            found.append(sa.select(scan.c.id, scan.c.run_at, sa.literal_column(str(rank)).label("rank")))
    ranked = sa.union_all(*found).subquery("ranked_due")
    due = (
        sa.select(ranked.c.id)
        .order_by(ranked.c.rank, ranked.c.run_at, ranked.c.id)
        .limit(sa.bindparam("claim_limit", type_=sa.Integer()))
        .scalar_subquery()
    )
    lease_type = jobs.c.leased_until.type
    leased_until: Any = sa.case(
        *[(jobs.c.kind == name, sa.bindparam(f"claim_lease_{i}", type_=lease_type)) for i, name in enumerate(kinds)],
        else_=sa.bindparam("claim_lease_max", type_=lease_type),
    )
    return (
        sa.update(jobs)
        .where(jobs.c.id.in_(due))
        .values(
            status="running",
            leased_until=leased_until,
            leased_by=sa.bindparam("claim_worker", type_=jobs.c.leased_by.type),
            attempts=jobs.c.attempts + 1,
            updated_at=sa.bindparam("claim_now", type_=jobs.c.updated_at.type),
        )
        .returning(
            jobs.c.id,
            jobs.c.kind,
            jobs.c.key,
            jobs.c.payload,
            jobs.c.attempts,
            jobs.c.max_attempts,
            jobs.c.run_at,
        )
    )


# The claim loop's connection on PostgreSQL. Every job leaves entries for its pending and running rows in the
# partial indexes until a vacuum (the planner cannot see them): a bitmap scan, which the planner prefers for the
# few rows it expects, reads all of them on every claim (at 100 orders/s, 440 buffers and 5 ms a claim after 30 s).
# An ordered index scan reads them once and marks them dead, and the next scans skip them.
CLAIM_SESSION_SETTINGS = {"enable_bitmapscan": "off"}

# Claim order of kinds (JobKind.priority): every due job of a lower priority number is claimed before any of a
# higher one (within a priority, the earliest due first). Finding a courier is urgent; a customer's message or a
# POS webhook can wait for the next free slot when a worker falls behind.
URGENT = 0
NORMAL = 1

# prebuilt statements by set of kinds (a worker has one set; tests a few)
_CLAIM_STATEMENTS: dict[tuple[tuple[str, ...], ...], Any] = {}  # by kinds grouped by priority
_NEXT_DUE_STATEMENTS: dict[tuple[str, ...], Any] = {}
_CACHE_LIMIT = 64


def _cached(cache: dict[Any, Any], kinds: Any, build: Any) -> Any:
    stmt = cache.get(kinds)
    if stmt is None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        stmt = cache[kinds] = build(kinds)
    return stmt


def claim(
    conn: Connection,
    *,
    worker_id: str,
    kinds: dict[str, float],
    limit: int,
    now: datetime | None = None,
    priorities: Mapping[str, int] | None = None,
) -> list[ClaimedJob]:
    """Lease up to `limit` due jobs of the given kinds (name -> lease seconds): most urgent, then oldest run_at first.

    A job is due when it is pending and its run_at has come, or running with an expired lease (its
    worker died). PostgreSQL skips rows other workers are claiming (FOR UPDATE SKIP LOCKED); SQLite
    runs this inside its single-writer transaction (BEGIN IMMEDIATE), so claims never overlap there.
    priorities: kind -> priority (registry.URGENT, NORMAL...; lower first); kinds not in it are NORMAL.
    """
    if not kinds or limit <= 0:
        return []
    now = now or utcnow()
    names = tuple(sorted(kinds))
    lease_ends = {name: now + timedelta(seconds=seconds) for name, seconds in kinds.items()}
    params: dict[str, Any] = {
        "claim_now": now,
        "claim_limit": limit,
        "claim_worker": worker_id,
        "claim_lease_max": max(lease_ends.values()),
    }
    for i, name in enumerate(names):
        params[f"claim_lease_{i}"] = lease_ends[name]
    rank_of = {name: (priorities or {}).get(name, NORMAL) for name in names}
    levels = sorted(set(rank_of.values()))
    ranks = tuple(tuple(name for name in names if rank_of[name] == level) for level in levels)
    stmt = _cached(_CLAIM_STATEMENTS, ranks, lambda ranks: Prepared(_claim_statement(names, ranks)))
    claimed = [
        ClaimedJob(
            id=int(row["id"]),
            kind=row["kind"],
            key=row["key"],
            payload=row["payload"],
            attempts=int(row["attempts"]),
            max_attempts=int(row["max_attempts"]),
            run_at=row["run_at"],
            leased_until=lease_ends[row["kind"]],
            worker_id=worker_id,
            claimed_at=now,
        )
        for row in stmt.rows(conn, params)
    ]
    # RETURNING gives no order guarantee; hand jobs out most urgent first, then in the order they were due
    claimed.sort(key=lambda job: (rank_of[job.kind], job.run_at, job.id))
    return claimed


# Only the current lease holder may change a running job: same worker and same attempt.
_FENCED = sa.and_(
    jobs.c.id == sa.bindparam("fence_id", type_=jobs.c.id.type),
    jobs.c.status == "running",
    jobs.c.leased_by == sa.bindparam("fence_worker", type_=jobs.c.leased_by.type),
    jobs.c.attempts == sa.bindparam("fence_attempts", type_=jobs.c.attempts.type),
)
_RENEW = sa.update(jobs).where(_FENCED)
# a claimed job's own row: never one the transaction inserted (so it may go with inserts of jobs)
_COMPLETE = Prepared(sa.update(jobs).where(_FENCED).values(status="done", leased_until=None), known_rows_only=True)
_FAIL_DEAD = sa.update(jobs).where(_FENCED).values(status="dead", leased_until=None)
_FAIL_RETRY = sa.update(jobs).where(_FENCED).values(status="pending", leased_by=None, leased_until=None)


def _fence(job: ClaimedJob) -> dict[str, Any]:
    return {"fence_id": job.id, "fence_worker": job.worker_id, "fence_attempts": job.attempts}


def renew(conn: Connection, *, job: ClaimedJob, lease_seconds: float, now: datetime | None = None) -> bool:
    """Extend the lease of a running job (heartbeat); False when the lease was lost to another worker."""
    now = now or utcnow()
    result = conn.execute(
        _RENEW, {**_fence(job), "leased_until": now + timedelta(seconds=lease_seconds), "updated_at": now}
    )
    return result.rowcount == 1


def complete(conn: Connection, *, job: ClaimedJob, now: datetime | None = None) -> bool:
    """Mark the job done; False when this worker no longer holds its lease (nothing changes)."""
    return complete_fenced(conn, job_id=job.id, worker_id=job.worker_id, attempts=job.attempts, now=now)


def complete_fenced(
    conn: Connection, *, job_id: int, worker_id: str, attempts: int, now: datetime | None = None
) -> bool:
    """Mark the job done if (worker_id, attempts) still hold its lease; False otherwise (nothing changes)."""
    now = now or utcnow()
    fence = {"fence_id": job_id, "fence_worker": worker_id, "fence_attempts": attempts}
    return _COMPLETE.run(conn, {**fence, "finished_at": now, "updated_at": now}) == 1


def complete_fenced_later(
    conn: Connection, *, job_id: int, worker_id: str, attempts: int, then: Callable[[bool], None]
) -> None:
    """complete_fenced() as a deferred write (prepared.deferred_writes): then(done) once it ran."""
    now = utcnow()
    fence = {"fence_id": job_id, "fence_worker": worker_id, "fence_attempts": attempts}
    _COMPLETE.defer(conn, {**fence, "finished_at": now, "updated_at": now}, then=lambda count, _rows: then(count == 1))


def fail(
    conn: Connection,
    *,
    job: ClaimedJob,
    error: str,
    retry_in: float | None,
    now: datetime | None = None,
) -> str | None:
    """Record a failed attempt: pending again in `retry_in` seconds, or dead when None.

    Returns the new status, or None when this worker no longer holds the lease (nothing changes).
    """
    now = now or utcnow()
    params: dict[str, Any] = {**_fence(job), "last_error": error[:MAX_ERROR_CHARS], "updated_at": now}
    if retry_in is None:
        status, stmt = "dead", _FAIL_DEAD
        params["finished_at"] = now
    else:
        status, stmt = "pending", _FAIL_RETRY
        params["run_at"] = now + timedelta(seconds=retry_in)
    result = conn.execute(stmt, params)
    if result.rowcount != 1:
        return None
    return status


def _next_due_statement(kinds: tuple[str, ...]) -> Any:
    # ORDER BY ... LIMIT 1, not min(): with the statistics of a young jobs table (a few rows estimated) PostgreSQL
    # computed min() by reading every pending job (thousands of scheduled checks); the ordered index scan stops
    # at the first one whatever the estimate
    pending = (
        sa.select(jobs.c.run_at)
        .where(jobs.c.status == PENDING, in_values(jobs.c.kind, kinds))
        .order_by(jobs.c.run_at)
        .limit(ONE)
        .scalar_subquery()
    )
    lease_end = (
        sa.select(jobs.c.leased_until)
        .where(jobs.c.status == RUNNING, in_values(jobs.c.kind, kinds))
        .order_by(jobs.c.leased_until)
        .limit(ONE)
        .scalar_subquery()
    )
    # typed so that both come back as aware datetimes (UTCDateTime)
    return sa.select(sa.type_coerce(pending, jobs.c.run_at.type), sa.type_coerce(lease_end, jobs.c.leased_until.type))


def next_due(conn: Connection, *, kinds: list[str]) -> datetime | None:
    """The earliest moment a job of these kinds becomes claimable: a pending run_at or a lease end."""
    if not kinds:
        return None
    stmt = _cached(_NEXT_DUE_STATEMENTS, tuple(sorted(kinds)), lambda names: Prepared(_next_due_statement(names)))
    row = stmt.first(conn)
    assert row is not None  # a SELECT of two subqueries: always one row
    candidates = [moment for moment in row.values() if moment is not None]
    return min(candidates) if candidates else None


def _row(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


def list_jobs(
    conn: Connection, *, status: str | None = None, kind: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Jobs, newest first, optionally filtered by status and kind."""
    query = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit)
    if status is not None:
        query = query.where(jobs.c.status == status)
    if kind is not None:
        query = query.where(jobs.c.kind == kind)
    return [_row(row) for row in conn.execute(query)]


def get_job(conn: Connection, *, job_id: int) -> dict[str, Any] | None:
    """One job by id."""
    row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
    return _row(row) if row is not None else None


def retry_dead(conn: Connection, *, job_id: int, now: datetime | None = None) -> dict[str, Any]:
    """Put a dead job back to pending, due now, with a fresh set of attempts (its last error is kept)."""
    now = now or utcnow()
    job = get_job(conn, job_id=job_id)
    if job is None:
        raise JobError("job_not_found", f"no job {job_id}")
    if job["status"] != "dead":
        raise JobError("job_not_dead", f"job {job_id} is {job['status']}; only a dead job can be retried")
    if job["key"] is not None:
        active = conn.execute(
            sa.select(jobs.c.id).where(
                jobs.c.kind == job["kind"], jobs.c.key == job["key"], jobs.c.status.in_(("pending", "running"))
            )
        ).first()
        if active is not None:
            raise JobError(
                "job_duplicate",
                f"job {active.id} of kind {job['kind']} with key {job['key']} is already active",
            )
    conn.execute(
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == "dead")
        .values(
            status="pending",
            run_at=now,
            attempts=0,
            leased_by=None,
            leased_until=None,
            finished_at=None,
            updated_at=now,
        )
    )
    return get_job(conn, job_id=job_id) or job


def stats(conn: Connection, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per kind: how many jobs in each status, and how late the oldest due pending job is."""
    now = now or utcnow()
    counts = conn.execute(
        sa.select(jobs.c.kind, jobs.c.status, sa.func.count()).group_by(jobs.c.kind, jobs.c.status)
    ).all()
    oldest_due = dict(
        conn.execute(
            sa.select(jobs.c.kind, sa.func.min(jobs.c.run_at))
            .where(jobs.c.status == "pending", jobs.c.run_at <= now)
            .group_by(jobs.c.kind)
        ).all()
    )
    by_kind: dict[str, dict[str, Any]] = {}
    for kind, status, count in counts:
        entry = by_kind.setdefault(kind, {"kind": kind, **{s: 0 for s in JOB_STATUSES}, "oldest_due_lag_seconds": None})
        entry[status] = int(count)
    for kind, oldest in oldest_due.items():
        if oldest is not None and kind in by_kind:
            by_kind[kind]["oldest_due_lag_seconds"] = round((now - oldest).total_seconds(), 3)
    return [by_kind[kind] for kind in sorted(by_kind)]
