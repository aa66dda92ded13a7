"""The in-process worker wakes after a commit only for job kinds it runs (no claim round-trip per request)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orderstream.db import Database
from orderstream.jobs.outbox import enqueue
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry
from tests.jobs_helpers import job_status, listener_pids, running_worker, unique_kind, wait_for, worker_settings


def test_commit_of_a_foreign_kind_does_not_wake_the_worker(db: Database, db_url: str) -> None:
    mine, foreign = unique_kind("mine"), unique_kind("foreign")
    registry = JobRegistry()
    ran: list[int] = []

    def handler(ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    registry.register(JobKind(mine, handler))
    with running_worker(db, worker_settings(db_url, worker_idle_poll_seconds=30.0), registry) as worker:
        time.sleep(0.3)  # let the first claim pass find nothing and go to sleep
        worker._wake.clear()
        with db.write() as conn:
            foreign_id = enqueue(conn, kind=foreign, payload={})
        assert not worker._wake.is_set()
        with db.write() as conn:
            mine_id = enqueue(conn, kind=mine, payload={})
        wait_for(lambda: ran == [mine_id], timeout=5)
    assert job_status(db, mine_id) == "done"
    assert foreign_id is not None
    assert job_status(db, foreign_id) == "pending"


def _counting_claims(worker: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many jobs each claim of the worker took (its _claim spied, still run)."""
    claims: list[int] = []
    real = worker._claim

    def spy(limit: int) -> Any:
        claimed, due = real(limit)
        claims.append(len(claimed))
        return claimed, due

    monkeypatch.setattr(worker, "_claim", spy)
    return claims


def test_a_commit_of_a_job_due_later_than_the_next_wake_costs_no_claim(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An acceptance check or reconcile poll due in minutes does not wake the worker: its next wake sees it.

    A job due before that next wake still wakes it, and runs on time.
    """
    kind, seen = unique_kind("later"), []
    registry = JobRegistry()
    registry.register(JobKind(kind, lambda ctx: seen.append((ctx.job_id, time.time()))))
    with running_worker(db, worker_settings(db_url, worker_idle_poll_seconds=30.0), registry) as worker:
        time.sleep(0.3)  # idle: the next wake is ~30 s away
        claims = _counting_claims(worker, monkeypatch)
        with db.write() as conn:
            enqueue(conn, kind=kind, payload={}, run_at=datetime.now(UTC) + timedelta(hours=1))
        time.sleep(0.5)  # on PostgreSQL the NOTIFY (this process's own) has come and gone by now
        assert claims == []
        soon = datetime.now(UTC) + timedelta(seconds=0.5)
        with db.write() as conn:
            soon_id = enqueue(conn, kind=kind, payload={}, run_at=soon)
        wait_for(lambda: seen, timeout=5, interval=0.005)
    [(job_id, ran_at)] = seen
    assert job_id == soon_id
    assert 0 <= ran_at - soon.timestamp() < 1.0  # the schedule goal; ~10 ms on an idle machine
    assert claims[0] == 0  # the commit's wake looked, found it not due yet, and planned the wait for it


@pytest.mark.postgres
def test_a_commit_of_its_own_process_wakes_it_once_not_twice(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The NOTIFY of a commit made through the worker's own pool is not a second wake; another pool's is, when due."""
    worker_db, other_db = Database.from_url(pg_url, pool_size=5), Database.from_url(pg_url, pool_size=2)
    kind = unique_kind("once")
    registry = JobRegistry()
    registry.register(JobKind(kind, lambda ctx: None))
    try:
        with running_worker(worker_db, worker_settings(pg_url, worker_idle_poll_seconds=30.0), registry) as worker:
            wait_for(lambda: listener_pids(other_db))
            time.sleep(0.3)  # the start's own claims have passed
            claims = _counting_claims(worker, monkeypatch)
            with worker_db.write() as conn:
                enqueue(conn, kind=kind, payload={})
                own_pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            assert own_pid in worker_db.backend_pids
            wait_for(lambda: claims, timeout=5)
            time.sleep(0.5)  # the NOTIFY has arrived by now
            assert claims == [1]
            with other_db.write() as conn:  # due in an hour: the NOTIFY says so, and the worker wakes before
                enqueue(conn, kind=kind, payload={}, run_at=datetime.now(UTC) + timedelta(hours=1))
            time.sleep(0.5)
            assert claims == [1]
            with other_db.write() as conn:  # due now: only the NOTIFY tells this worker of it
                enqueue(conn, kind=kind, payload={})
            wait_for(lambda: len(claims) == 2, timeout=5)
            time.sleep(0.3)
            assert claims == [1, 1]
    finally:
        worker_db.dispose()
        other_db.dispose()
    assert worker_db.backend_pids == set()  # every connection closed, every pid forgotten
