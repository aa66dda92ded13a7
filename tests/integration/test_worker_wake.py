"""The in-process worker wakes after a commit only for job kinds it runs (no claim round-trip per request)."""

from __future__ import annotations

import time

from orderstream.db import Database
from orderstream.jobs.outbox import enqueue
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry
from tests.jobs_helpers import job_status, running_worker, unique_kind, wait_for, worker_settings


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
