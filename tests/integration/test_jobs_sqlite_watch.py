"""SQLite: a separate worker hears about jobs other processes enqueue (PRAGMA data_version), not only by polling."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from orderstream.db import Database
from orderstream.jobs.outbox import enqueue
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry
from orderstream.jobs.worker import Worker
from tests.jobs_helpers import job_status, unique_kind, wait_for, worker_settings


@pytest.fixture
def other_process(sqlite_url: str) -> Iterator[Database]:
    """A second engine on the same file: its commits never reach the worker's in-process listener."""
    other = Database.from_url(sqlite_url, pool_size=2)
    yield other
    other.dispose()


def _enqueue(db: Database, kind: str) -> int:
    with db.write() as conn:
        job_id = enqueue(conn, kind=kind, payload={})
    assert job_id is not None
    return job_id


@pytest.mark.parametrize("watch", [True, False])
def test_a_job_from_another_process_starts_at_once_only_with_the_watcher(
    sqlite_url: str, other_process: Database, watch: bool
) -> None:
    kind = unique_kind("watched")
    started: list[float] = []
    registry = JobRegistry()

    def handler(_ctx: JobContext) -> None:
        started.append(time.monotonic())

    registry.register(JobKind(kind, handler))
    db = Database.from_url(sqlite_url, pool_size=5)
    settings = worker_settings(sqlite_url, worker_idle_poll_seconds=30.0, worker_sqlite_watch_seconds=0.02)
    worker = Worker(db, settings, registry, watch_other_processes=watch)
    worker.start()
    try:
        time.sleep(0.3)  # the claim loop is asleep on its 30 s idle poll
        enqueued = time.monotonic()
        job_id = _enqueue(other_process, kind)
        if watch:
            wait_for(lambda: job_status(db, job_id) == "done", timeout=5)
            assert started[0] - enqueued < 1.0
        else:
            time.sleep(1.5)
            assert job_status(db, job_id) == "pending"  # it would wait for the idle poll
            worker.wake()
            wait_for(lambda: job_status(db, job_id) == "done", timeout=5)
    finally:
        assert worker.stop(timeout=10)
        db.dispose()


def test_the_watcher_is_off_when_its_interval_is_zero(sqlite_url: str) -> None:
    db = Database.from_url(sqlite_url, pool_size=2)
    try:
        settings = worker_settings(sqlite_url, worker_sqlite_watch_seconds=0)
        worker = Worker(db, settings, JobRegistry(), watch_other_processes=True)
        worker.start()
        assert "job-watcher" not in [t.name for t in worker._threads]
        assert worker.stop(timeout=5)
        watching = Worker(db, worker_settings(sqlite_url), JobRegistry(), watch_other_processes=True)
        watching.start()
        assert "job-watcher" in [t.name for t in watching._threads]
        assert watching.stop(timeout=5)
    finally:
        db.dispose()
