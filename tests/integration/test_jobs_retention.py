"""Retention of finished jobs on SQLite and PostgreSQL: what is deleted, by a worker, by the CLI."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from orderstream.cli import app
from orderstream.db import Database, utcnow
from orderstream.jobs import retention, runtime
from orderstream.jobs.models import jobs
from orderstream.jobs.outbox import enqueue
from orderstream.jobs.registry import JobRegistry
from tests.jobs_helpers import running_worker, unique_kind, wait_for, worker_settings

runner = CliRunner()


def _job(db: Database, kind: str, *, status: str, age: timedelta) -> int:
    """A job of this kind in this status whose run (and finish, when it ended) was `age` ago."""
    with db.write() as conn:
        job_id = enqueue(conn, kind=kind, payload={})
    assert job_id is not None
    if status != "pending":
        with db.write() as conn:
            [job] = runtime.claim(conn, worker_id="w1", kinds={kind: 30}, limit=1)
            assert job.id == job_id, "a job of this kind was due before it: make pending ones last"
            if status == "done":
                assert runtime.complete(conn, job=job)
            else:
                runtime.fail(conn, job=job, error="PermanentError: gone", retry_in=None)
    at = utcnow() - age
    finished = at if status in ("done", "dead") else None
    with db.write() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(run_at=at, finished_at=finished))
    return job_id


def _left(db: Database, kind: str) -> set[int]:
    with db.read() as conn:
        return set(conn.execute(sa.select(jobs.c.id).where(jobs.c.kind == kind)).scalars())


def _jobs_of_every_kind(db: Database, kind: str) -> tuple[set[int], set[int]]:
    """(old done jobs, every other job): recent done, old dead, old pending."""
    old = timedelta(days=10)
    old_done = {_job(db, kind, status="done", age=old) for _ in range(5)}
    kept = {
        _job(db, kind, status="done", age=timedelta(minutes=5)),
        _job(db, kind, status="dead", age=old),
        _job(db, kind, status="pending", age=old),
    }
    return old_done, kept


def test_prune_deletes_only_done_jobs_past_the_retention_in_batches(db: Database) -> None:
    kind = unique_kind("retention")
    old_done, kept = _jobs_of_every_kind(db, kind)
    deleted = retention.prune(db, older_than=retention.cutoff(24), batch=2)
    assert deleted >= len(old_done)  # done jobs other tests left 10 days back would go too
    assert _left(db, kind) == kept
    assert retention.prune(db, older_than=retention.cutoff(24), batch=2) == 0


def test_a_worker_prunes_every_interval(db: Database, db_url: str) -> None:
    kind = unique_kind("retention_worker")
    old_done, kept = _jobs_of_every_kind(db, kind)
    before = REGISTRY.get_sample_value("orderstream_jobs_pruned_total") or 0.0
    settings = worker_settings(db_url, jobs_done_retention_hours=24, jobs_prune_interval_seconds=0.2)
    with running_worker(db, settings, JobRegistry()):
        wait_for(lambda: _left(db, kind) == kept)
        later = unique_kind("retention_worker_later")
        _job(db, later, status="done", age=timedelta(days=2))  # the next round takes this one too
        wait_for(lambda: not _left(db, later))
    pruned = (REGISTRY.get_sample_value("orderstream_jobs_pruned_total") or 0.0) - before
    assert pruned >= len(old_done) + 1


def test_retention_zero_keeps_every_job(db: Database, db_url: str) -> None:
    settings = worker_settings(db_url, jobs_done_retention_hours=0, jobs_prune_interval_seconds=0.1)
    with running_worker(db, settings, JobRegistry()) as worker:
        assert "job-pruner" not in {thread.name for thread in worker._threads}


def test_jobs_prune_cli(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSTREAM_DATABASE_URL", db_url)
    kind = unique_kind("retention_cli")
    old_done, kept = _jobs_of_every_kind(db, kind)
    monkeypatch.setenv("ORDERSTREAM_JOBS_DONE_RETENTION_HOURS", "0")
    result = runner.invoke(app, ["jobs", "prune"])
    assert result.exit_code == 1
    assert json.loads(result.stderr)["error"]["code"] == "retention_off"
    assert _left(db, kind) == old_done | kept
    result = runner.invoke(app, ["jobs", "prune", "--older-than-hours", "24", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["deleted"] >= len(old_done)
    assert _left(db, kind) == kept
    monkeypatch.setenv("ORDERSTREAM_JOBS_DONE_RETENTION_HOURS", "300")  # 12.5 days: the 10-day-old jobs stay
    kind = unique_kind("retention_cli")
    old_done, kept = _jobs_of_every_kind(db, kind)
    result = runner.invoke(app, ["jobs", "prune"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("deleted ")
    assert _left(db, kind) == old_done | kept
