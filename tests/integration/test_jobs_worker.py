"""The worker in-process, on SQLite and PostgreSQL: outcomes, backoff, run_at, heartbeats, wake-ups."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from orderstream.app import create_app
from orderstream.db import Database, utcnow
from orderstream.jobs import runtime
from orderstream.jobs.models import jobs
from orderstream.jobs.outbox import enqueue
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry, PermanentError, RetryableError, RetryPolicy
from orderstream.jobs.worker import Worker
from tests.jobs_helpers import (
    job_row,
    job_status,
    listener_pids,
    running_worker,
    unique_kind,
    wait_for,
    worker_settings,
)


class Recorder:
    """Collects (job id, attempt, wall time) for each handler call, thread-safely."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float]] = []
        self._lock = threading.Lock()

    def record(self, ctx: JobContext) -> None:
        with self._lock:
            self.calls.append((ctx.job_id, ctx.attempts, time.time()))

    def times(self, job_id: int) -> list[float]:
        with self._lock:
            return [at for jid, _attempt, at in self.calls if jid == job_id]


def _enqueue(db: Database, kind: str, **kwargs: Any) -> int:
    with db.write() as conn:
        job_id = enqueue(conn, kind=kind, payload=kwargs.pop("payload", {}), **kwargs)
    assert job_id is not None
    return job_id


def _metric(name: str, kind: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"kind": kind})


def test_worker_runs_a_job_and_marks_it_done(db: Database, db_url: str) -> None:
    kind, seen = unique_kind("ok"), Recorder()
    registry = JobRegistry()
    payloads: list[dict[str, Any]] = []

    def handler(ctx: JobContext) -> None:
        payloads.append(ctx.payload)
        assert ctx.services == {"marker": 1}
        seen.record(ctx)

    registry.register(JobKind(kind, handler))
    with running_worker(db, worker_settings(db_url), registry, services={"marker": 1}):
        job_id = _enqueue(db, kind, payload={"order_id": "o-1"})
        wait_for(lambda: job_status(db, job_id) == "done")
    assert payloads == [{"order_id": "o-1"}]
    row = job_row(db, job_id)
    assert (row["attempts"], row["last_error"]) == (1, None)
    assert _metric("orderstream_jobs_claimed_total", kind) == 1
    assert _metric("orderstream_jobs_succeeded_total", kind) == 1
    assert _metric("orderstream_job_run_seconds_count", kind) == 1
    assert _metric("orderstream_job_queue_lag_seconds_count", kind) == 1


def test_job_cpu_counts_the_handler_thread_cpu_not_its_waits(db: Database, db_url: str) -> None:
    busy, idle = unique_kind("busy"), unique_kind("idle")
    registry = JobRegistry()

    def burn(ctx: JobContext) -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass

    registry.register(JobKind(busy, burn))
    registry.register(JobKind(idle, lambda ctx: time.sleep(0.3)))
    with running_worker(db, worker_settings(db_url), registry):
        ids = [_enqueue(db, busy), _enqueue(db, idle)]
        wait_for(lambda: all(job_status(db, job_id) == "done" for job_id in ids))
    busy_cpu, idle_cpu = (
        _metric("orderstream_job_cpu_seconds_total", busy),
        _metric("orderstream_job_cpu_seconds_total", idle),
    )
    assert busy_cpu is not None
    assert 0.2 <= busy_cpu < 1.0
    assert idle_cpu is not None
    assert idle_cpu < 0.1


def test_retryable_error_backs_off_then_succeeds(db: Database, db_url: str) -> None:
    kind, seen = unique_kind("retry"), Recorder()

    def flaky(ctx: JobContext) -> None:
        seen.record(ctx)
        if ctx.attempts == 1:
            raise RetryableError("provider 503")
        if ctx.attempts == 2:
            raise RetryableError("provider 429", retry_after=0.8)

    registry = JobRegistry()
    registry.register(JobKind(kind, flaky, retry=RetryPolicy(max_attempts=5, base_seconds=0.3, jitter=0)))
    with running_worker(db, worker_settings(db_url), registry):
        job_id = _enqueue(db, kind)
        wait_for(lambda: job_status(db, job_id) == "done")
    first, second, third = seen.times(job_id)
    assert second - first >= 0.3  # base backoff
    assert third - second >= 0.8  # Retry-After beat the 0.6 s backoff
    assert second - first < 0.3 + 1.0  # and no idle-poll wait on top (idle poll is 30 s)
    row = job_row(db, job_id)
    assert (row["attempts"], row["last_error"]) == (3, "RetryableError: provider 429")
    assert _metric("orderstream_jobs_retried_total", row["kind"]) == 2
    assert _metric("orderstream_jobs_succeeded_total", row["kind"]) == 1


def _run_until(
    db: Database, db_url: str, handler: Any, *, retry: RetryPolicy, until: str, **enqueue_kwargs: Any
) -> tuple[int, Recorder]:
    """Run one job of a fresh kind whose handler records each call, until it reaches `until`."""
    kind, seen = unique_kind("run"), Recorder()

    def recorded(ctx: JobContext) -> None:
        seen.record(ctx)
        handler(ctx)

    registry = JobRegistry()
    registry.register(JobKind(kind, recorded, retry=retry))
    with running_worker(db, worker_settings(db_url), registry):
        job_id = _enqueue(db, kind, **enqueue_kwargs)
        wait_for(lambda: job_status(db, job_id) == until)
    return job_id, seen


def _raise(error: Exception) -> Any:
    def handler(ctx: JobContext) -> None:
        raise error

    return handler


def test_unexpected_exception_is_retried_then_dead_lettered(db: Database, db_url: str) -> None:
    policy = RetryPolicy(max_attempts=3, base_seconds=0.05, jitter=0)
    job_id, seen = _run_until(db, db_url, _raise(ValueError("bad data")), retry=policy, until="dead")
    row = job_row(db, job_id)
    assert (row["attempts"], row["last_error"]) == (3, "ValueError: bad data")
    assert row["finished_at"] is not None
    assert _metric("orderstream_jobs_dead_total", row["kind"]) == 1
    assert _metric("orderstream_jobs_retried_total", row["kind"]) == 2
    assert len(seen.times(job_id)) == 3


def test_job_row_max_attempts_caps_the_policy(db: Database, db_url: str) -> None:
    policy = RetryPolicy(max_attempts=10, base_seconds=0.05, jitter=0)
    job_id, seen = _run_until(db, db_url, _raise(RetryableError("nope")), retry=policy, until="dead", max_attempts=2)
    assert len(seen.times(job_id)) == 2


def test_permanent_error_dead_letters_at_once(db: Database, db_url: str) -> None:
    error = PermanentError("provider rejected: invalid address")
    job_id, seen = _run_until(db, db_url, _raise(error), retry=RetryPolicy(max_attempts=5), until="dead")
    row = job_row(db, job_id)
    assert (row["attempts"], row["last_error"]) == (1, "PermanentError: provider rejected: invalid address")
    assert len(seen.times(job_id)) == 1


def test_scheduled_job_starts_on_time_not_before(db: Database, db_url: str) -> None:
    kind, seen = unique_kind("sched"), Recorder()
    registry = JobRegistry()
    registry.register(JobKind(kind, seen.record))
    with running_worker(db, worker_settings(db_url, worker_idle_poll_seconds=30.0), registry):
        run_at = utcnow() + timedelta(seconds=1.5)
        job_id = _enqueue(db, kind, run_at=run_at)
        later_id = _enqueue(db, kind, run_at=run_at + timedelta(seconds=0.7))
        wait_for(lambda: job_status(db, later_id) == "done", timeout=10)
    for jid, due in ((job_id, run_at), (later_id, run_at + timedelta(seconds=0.7))):
        [started] = seen.times(jid)
        error = started - due.timestamp()
        print(f"scheduled start error ({db.engine.dialect.name}): {error * 1000:.1f} ms")
        assert error >= 0, "started before run_at"
        assert error < 0.75, f"started {error:.3f} s late"  # typically a few ms; generous for a loaded CI box


def test_unregistered_kind_waits_while_registered_ones_run(db: Database, db_url: str) -> None:
    kind, absent = unique_kind("here"), unique_kind("dispatch")
    registry = JobRegistry()
    registry.register(JobKind(kind, lambda ctx: None))
    with running_worker(db, worker_settings(db_url), registry):
        waiting = _enqueue(db, absent)
        job_id = _enqueue(db, kind)
        wait_for(lambda: job_status(db, job_id) == "done")
        time.sleep(0.2)
    row = job_row(db, waiting)
    assert (row["status"], row["attempts"]) == ("pending", 0)


def test_long_job_keeps_its_lease_and_runs_once(db: Database, db_url: str) -> None:
    kind, seen = unique_kind("long"), Recorder()

    def slow(ctx: JobContext) -> None:
        seen.record(ctx)
        time.sleep(2.5)
        assert not ctx.lease_lost.is_set()

    registry = JobRegistry()
    registry.register(JobKind(kind, slow, lease_seconds=1))
    settings = worker_settings(db_url, worker_idle_poll_seconds=0.2)
    with running_worker(db, settings, registry), running_worker(db, settings, registry):
        job_id = _enqueue(db, kind)
        wait_for(lambda: job_status(db, job_id) == "done", timeout=15)
    assert len(seen.times(job_id)) == 1
    assert job_row(db, job_id)["attempts"] == 1


def test_job_of_a_lost_worker_is_dead_after_its_last_attempt(db: Database, db_url: str) -> None:
    """A job whose last attempt's lease expired (the worker died) is dead-lettered, not run again."""
    kind, seen = unique_kind("poison"), Recorder()
    registry = JobRegistry()
    registry.register(JobKind(kind, seen.record, retry=RetryPolicy(max_attempts=1), lease_seconds=30))
    job_id = _enqueue(db, kind)
    from orderstream.jobs import runtime

    with db.write() as conn:
        runtime.claim(conn, worker_id="dead-worker", kinds={kind: 0.2}, limit=1)
    with running_worker(db, worker_settings(db_url, worker_idle_poll_seconds=0.1), registry):
        wait_for(lambda: job_status(db, job_id) == "dead")
    assert seen.times(job_id) == []
    assert "worker lost" in job_row(db, job_id)["last_error"]


def _started_blocking_job(db: Database, db_url: str, release: threading.Event) -> tuple[Worker, str, int]:
    """A started worker running one job that blocks until `release` is set (at most 10 s)."""
    kind = unique_kind("blocking")
    started = threading.Event()

    def blocking(ctx: JobContext) -> None:
        started.set()
        release.wait(10)

    registry = JobRegistry()
    registry.register(JobKind(kind, blocking))
    worker = Worker(db, worker_settings(db_url), registry)
    worker.start()
    job_id = _enqueue(db, kind)
    assert started.wait(10)
    return worker, kind, job_id


def test_stop_waits_for_running_jobs(db: Database, db_url: str) -> None:
    release = threading.Event()
    worker, kind, job_id = _started_blocking_job(db, db_url, release)
    threading.Timer(1.0, release.set).start()
    assert worker.stop(timeout=10) is True
    assert job_status(db, job_id) == "done"
    # stopped: nothing is claimed any more
    later = _enqueue(db, kind)
    time.sleep(0.3)
    assert job_status(db, later) == "pending"


def test_stop_timeout_leaves_the_job_leased_for_another_worker(db: Database, db_url: str) -> None:
    release = threading.Event()
    worker, _kind, job_id = _started_blocking_job(db, db_url, release)
    assert worker.stop(timeout=0.2) is False
    row = job_row(db, job_id)
    assert (row["status"], row["leased_by"]) == ("running", worker.worker_id)
    release.set()


def test_embedded_worker_wakes_on_the_request_commit(db: Database, db_url: str) -> None:
    """serve's embedded worker starts a job enqueued in-process right after the commit (idle poll 30 s)."""
    kind, seen = unique_kind("embedded"), Recorder()
    registry = JobRegistry()
    registry.register(JobKind(kind, seen.record))
    settings = worker_settings(db_url, embedded_worker=True, worker_idle_poll_seconds=30.0)
    app = create_app(settings, db=db, registry=registry)
    latencies = []
    with TestClient(app):
        assert app.state.worker is not None
        time.sleep(0.3)  # the worker is idle, sleeping for up to 30 s
        for _ in range(5):
            job_id = _enqueue(db, kind)
            committed = time.time()
            wait_for(lambda jid=job_id: seen.times(jid), timeout=5, interval=0.002)  # type: ignore[misc]
            latencies.append(seen.times(job_id)[0] - committed)
    assert app.state.worker.busy == 0
    print(f"embedded wake latency ({db.engine.dialect.name}): max {max(latencies) * 1000:.1f} ms")
    assert max(latencies) < 0.5


def test_app_without_embedded_worker_starts_none(db: Database, db_url: str) -> None:
    app = create_app(worker_settings(db_url), db=db)
    with TestClient(app):
        assert app.state.worker is None
        assert "http" in app.state.services


@contextmanager
def _idle_worker_and_other_database(pg_url: str, kind: str, seen: Recorder) -> Iterator[Database]:
    """A worker running `kind` (idle poll 30 s) on a database of its own; yields another one to act through."""
    worker_db, other_db = Database.from_url(pg_url, pool_size=5), Database.from_url(pg_url, pool_size=2)
    registry = JobRegistry()
    registry.register(JobKind(kind, seen.record))
    try:
        with running_worker(worker_db, worker_settings(pg_url, worker_idle_poll_seconds=30.0), registry):
            yield other_db
    finally:
        worker_db.dispose()
        other_db.dispose()


def _terminate(db: Database, pids: set[int]) -> None:
    with db.write() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM unnest(ARRAY{sorted(pids)}) AS pid")


@pytest.mark.postgres
def test_listener_reconnects_after_its_connection_dies(pg_url: str) -> None:
    """Jobs enqueued through another engine (no in-process signal) still wake the worker after a reconnect."""
    kind, seen = unique_kind("relisten"), Recorder()
    with _idle_worker_and_other_database(pg_url, kind, seen) as other_db:
        old = wait_for(lambda: listener_pids(other_db))
        _terminate(other_db, old)
        wait_for(lambda: listener_pids(other_db) - old, timeout=15)
        time.sleep(0.3)  # the reconnect's own catch-up wake has passed
        job_id = _enqueue(other_db, kind)
        committed = time.time()
        wait_for(lambda: seen.times(job_id), timeout=5, interval=0.005)
        assert seen.times(job_id)[0] - committed < 1.0


def _claimer_pids(db: Database) -> set[int]:
    """PostgreSQL server processes whose last statement was a claim or a next-due query (the claim loops')."""
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND (query LIKE 'UPDATE jobs SET status=%%CASE WHEN%%' OR query LIKE 'SELECT (SELECT jobs.run_at%%')"
        ).all()
    return {int(pid) for (pid,) in rows}


@pytest.mark.postgres
def test_claim_loop_keeps_its_connection_and_replaces_a_dead_one(pg_url: str) -> None:
    """One connection round after round; killed, the loop claims again on a new one (after its retry delay)."""
    kind, seen = unique_kind("heldclaim"), Recorder()
    with _idle_worker_and_other_database(pg_url, kind, seen) as other_db:
        first = _enqueue(other_db, kind)
        wait_for(lambda: seen.times(first), timeout=5)
        claimers = wait_for(lambda: _claimer_pids(other_db), timeout=5)
        second = _enqueue(other_db, kind)
        wait_for(lambda: seen.times(second), timeout=5)
        assert _claimer_pids(other_db) == claimers
        _terminate(other_db, claimers)
        third = _enqueue(other_db, kind)
        wait_for(lambda: seen.times(third), timeout=15)
        assert wait_for(lambda: _claimer_pids(other_db) - claimers, timeout=5)


def _count_completes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Job ids the worker marks done in a transaction of its own (runtime.complete, spied, still run)."""
    calls: list[int] = []
    real = runtime.complete

    def spy(conn: Any, *, job: Any, now: Any = None) -> bool:
        calls.append(job.id)
        return real(conn, job=job, now=now)

    monkeypatch.setattr(runtime, "complete", spy)
    return calls


def test_finish_in_marks_the_job_done_in_the_handlers_transaction(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    follow_up = unique_kind("follow")
    completes = _count_completes(monkeypatch)

    def handler(ctx: JobContext) -> None:
        with ctx.db.write() as conn:
            enqueue(conn, kind=follow_up, payload={"from": ctx.job_id})
            ctx.finish_in(conn)

    job_id, _seen = _run_until(db, db_url, handler, retry=RetryPolicy(), until="done")
    row = job_row(db, job_id)
    wait_for(lambda: _metric("orderstream_jobs_succeeded_total", row["kind"]) == 1)
    assert (row["status"], row["attempts"], row["leased_until"]) == ("done", 1, None)
    assert row["finished_at"] is not None
    assert completes == []  # no transaction of the worker's own for the outcome
    with db.read() as conn:
        [payload] = conn.execute(sa.select(jobs.c.payload).where(jobs.c.kind == follow_up)).scalars()
    assert payload["from"] == job_id


def test_finish_in_a_rolled_back_transaction_marks_nothing(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    follow_up = unique_kind("follow")
    completes = _count_completes(monkeypatch)

    def handler(ctx: JobContext) -> None:
        with ctx.db.write() as conn:
            enqueue(conn, kind=follow_up, payload={"attempt": ctx.attempts})
            ctx.finish_in(conn)
            if ctx.attempts == 1:
                raise RetryableError("rolled back after finish_in")

    policy = RetryPolicy(max_attempts=3, base_seconds=0.05, jitter=0)
    job_id, _seen = _run_until(db, db_url, handler, retry=policy, until="done")
    row = job_row(db, job_id)
    assert (row["attempts"], row["last_error"]) == (2, "RetryableError: rolled back after finish_in")
    assert completes == []
    with db.read() as conn:
        payloads = conn.execute(sa.select(jobs.c.payload).where(jobs.c.kind == follow_up)).scalars().all()
    assert [p["attempt"] for p in payloads] == [2]  # the first attempt's change went with its rollback
    # nothing of the rolled-back transaction lingers on the pooled connection for the next one
    with db.write() as conn:
        assert conn.info == {}


def test_finish_in_after_the_lease_was_taken_over_leaves_the_job_to_the_new_holder(db: Database, db_url: str) -> None:
    kind = unique_kind("stolen")

    def handler(ctx: JobContext) -> None:
        with ctx.db.write() as conn:  # another worker took the lease over (this one looked dead)
            conn.execute(sa.update(jobs).where(jobs.c.id == ctx.job_id).values(leased_by="someone-else"))
        with ctx.db.write() as conn:
            ctx.finish_in(conn)

    registry = JobRegistry()
    registry.register(JobKind(kind, handler))
    with running_worker(db, worker_settings(db_url), registry):
        job_id = _enqueue(db, kind)
        wait_for(lambda: _metric("orderstream_jobs_lease_lost_total", kind) == 1)
    row = job_row(db, job_id)
    assert (row["status"], row["leased_by"]) == ("running", "someone-else")
    assert _metric("orderstream_jobs_succeeded_total", kind) is None
