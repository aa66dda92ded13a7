"""The worker: claims due jobs with a lease, runs their handlers on threads, records the outcome.

Waking up without busy polling:
- in-process: a `Database.on_commit` listener sees that the committed transaction enqueued a job
  (the embedded worker of `serve` starts the job right after the request's commit);
- PostgreSQL: a dedicated connection LISTENs on the outbox channel, so jobs enqueued by any
  process wake every worker at once;
- SQLite, `orderstream worker`: a watcher reads `PRAGMA data_version` every
  `worker_sqlite_watch_seconds` and wakes the claim loop when another connection committed, so a
  job enqueued by another process (the `serve` next to it) starts within that interval;
- otherwise the worker sleeps until the earliest future run_at or lease end, capped by
  `worker_idle_poll_seconds`. That cap is the only signal to the embedded worker of `serve` on
  SQLite about jobs enqueued by another process (e.g. the `orderstream` CLI).
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.jobs import metrics, retention, runtime
from orderstream.jobs.outbox import ENQUEUED_DUE_KEY, ENQUEUED_FLAG, NOTIFY_CHANNEL, REQUEST_ID_KEY, read_notice
from orderstream.jobs.registry import CURRENT_JOB, JobContext, JobKind, JobRegistry, PermanentError, RetryableError
from orderstream.jobs.runtime import ClaimedJob
from orderstream.logs import log_context

log = logging.getLogger(__name__)

T = TypeVar("T")

# Leave time for a late heartbeat: renew when a third of the lease has passed.
HEARTBEAT_FRACTION = 1 / 3
# How long a wait may run past its target: guards against a hot loop when due rows are locked elsewhere.
MIN_WAIT_SECONDS = 0.005
LISTEN_PING_SECONDS = 30.0
PRUNE_FIRST_SECONDS = 60.0  # the first pruning after a start: not in the way of the start itself
OUTCOME_RETRIES = (0.2, 1.0, 3.0)


def make_worker_id() -> str:
    """A lease owner name unique to this worker instance: host, pid and a random suffix."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"


def _error_text(err: BaseException) -> str:
    message = str(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


@dataclass
class _Running:
    job: ClaimedJob
    context: JobContext
    lease_seconds: float


class Worker:
    """Runs the registered job kinds with `concurrency` handler threads until stop()."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        registry: JobRegistry,
        services: dict[str, Any] | None = None,
        *,
        concurrency: int | None = None,
        worker_id: str | None = None,
        watch_other_processes: bool = False,
    ) -> None:
        self.db = db
        self.settings = settings
        self.registry = registry
        self.services = services if services is not None else {}
        self.concurrency = max(1, concurrency or settings.worker_concurrency)
        self.worker_id = worker_id or make_worker_id()
        self._kinds: dict[str, JobKind] = {}
        self._leases: dict[str, float] = {}
        self._kind_names: list[str] = []
        self._priorities: dict[str, int] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._halted = threading.Event()
        self._queue: queue.Queue[ClaimedJob | None] = queue.Queue()
        self._lock = threading.Lock()
        self._reserved = 0  # claimed and not yet finished
        # the claim loop waits for a free slot (every slot was busy): the next finishing job wakes it
        self._slot_wanted = False
        # when the claim loop wakes by itself next (None: it is claiming, or about to)
        self._planned_wake: datetime | None = None
        self._running: dict[int, _Running] = {}
        self._claim_statements = db.held(runtime.CLAIM_SESSION_SETTINGS)  # the claim loop's own connection
        self._threads: list[threading.Thread] = []
        self._handlers: list[threading.Thread] = []
        self._started = False
        # SQLite only: poll data_version to hear about commits of other processes (no LISTEN there)
        self._watch = watch_other_processes and db.is_sqlite and settings.worker_sqlite_watch_seconds > 0
        db.on_commit(self._on_commit)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the claim loop, the handler threads, the heartbeat and (PostgreSQL) the listener."""
        if self._started:
            return
        self._started = True
        self._kinds = {name: kind for name in self.registry.names() if (kind := self.registry.get(name))}
        self._leases = {
            name: float(kind.lease_seconds or self.settings.job_lease_seconds) for name, kind in self._kinds.items()
        }
        self._kind_names = sorted(self._leases)
        self._priorities = {name: kind.priority for name, kind in self._kinds.items()}
        self._handlers = [
            threading.Thread(target=self._handle_loop, name=f"job-handler-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        self._threads = [threading.Thread(target=self._claim_loop, name="job-claimer", daemon=True)]
        self._threads.append(threading.Thread(target=self._heartbeat_loop, name="job-heartbeat", daemon=True))
        if self.db.engine.dialect.name == "postgresql":
            self._threads.append(threading.Thread(target=self._listen_loop, name="job-listener", daemon=True))
        if self._watch:
            self._threads.append(threading.Thread(target=self._watch_loop, name="job-watcher", daemon=True))
        if self.settings.jobs_done_retention_hours > 0:
            self._threads.append(threading.Thread(target=self._prune_loop, name="job-pruner", daemon=True))
        for thread in [*self._handlers, *self._threads]:
            thread.start()
        log.info(
            "job worker started",
            extra={"worker_id": self.worker_id, "kinds": sorted(self._kinds), "concurrency": self.concurrency},
        )

    def stop(self, timeout: float | None = None) -> bool:
        """Stop claiming, let running jobs finish (up to timeout seconds); True when all finished.

        Jobs still running after the timeout keep their lease until it expires, then another
        worker runs them again (at-least-once).
        """
        if not self._started or self._halted.is_set():
            return True
        timeout = self.settings.worker_shutdown_timeout_seconds if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        self._threads[0].join(max(0.0, deadline - time.monotonic()))
        for _ in self._handlers:
            self._queue.put(None)
        for thread in self._handlers:
            thread.join(max(0.0, deadline - time.monotonic()))
        unfinished = self.busy
        self._halted.set()
        for thread in self._threads[1:]:
            thread.join(2.0)
        if unfinished:
            log.warning(
                "job worker stopped with jobs still running; they run again once their lease expires",
                extra={"worker_id": self.worker_id, "job_ids": [r.job.id for r in self._snapshot()]},
            )
        else:
            log.info("job worker stopped", extra={"worker_id": self.worker_id})
        return unfinished == 0

    def wake(self) -> None:
        """Look for due jobs now."""
        self._wake.set()

    @property
    def busy(self) -> int:
        """How many claimed jobs have not finished yet."""
        with self._lock:
            return self._reserved

    def _on_commit(self, conn: Connection) -> None:
        kinds = conn.info.get(ENQUEUED_FLAG)
        if not kinds or not self._started or self._stopping.is_set():
            return
        # a job of a kind this worker does not run (e.g. `dispatch` before its feature is installed)
        # must not cost every committing request a claim round-trip
        if self._leases.keys().isdisjoint(kinds):
            return
        due: datetime | None = conn.info.get(ENQUEUED_DUE_KEY)
        if self._due_before_next_wake(None if due is None else due.timestamp()):
            self._wake.set()

    def _wakes_for(self, payload: str) -> bool:
        """Whether a new job's NOTIFY calls for a claim: a kind this worker runs, due before its next wake."""
        kind, due = read_notice(payload)
        return kind in self._leases and self._due_before_next_wake(due)

    def _due_before_next_wake(self, due: float | None) -> bool:
        """Whether a new job (run_at in Unix seconds, None: now) needs a claim before the loop's planned wake.

        One due later (an acceptance check, a reconcile poll) does not: that wake's claim looks again and sees it.
        """
        planned = self._planned_wake
        return due is None or planned is None or due < planned.timestamp()

    def _is_running(self, job: ClaimedJob) -> bool:
        with self._lock:
            return job.id in self._running

    def _snapshot(self) -> list[_Running]:
        with self._lock:
            return list(self._running.values())

    # -- claiming --------------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        try:
            self._claim_rounds()
        finally:
            self._claim_statements.close()

    def _claim_rounds(self) -> None:
        idle = self.settings.worker_idle_poll_seconds
        failures = 0
        while not self._stopping.is_set():
            self._wake.clear()
            self._planned_wake = None  # until the wait below is planned, every commit wakes us
            try:
                with self._lock:
                    free = self.concurrency - self._reserved
                    self._slot_wanted = free <= 0
                if free > 0:
                    claimed, due = self._claim(free)
                    if len(claimed) == free:
                        continue  # maybe more are due: take them once a slot frees up
                    timeout = self._seconds_until(due, idle)
                else:
                    timeout = idle  # the next finishing job wakes us (_slot_wanted)
                failures = 0
            except Exception:  # noqa: BLE001 - the claim loop must outlive a database outage
                failures += 1
                timeout = min(30.0, 0.5 * 2 ** min(failures, 6))
                log.warning("job claim failed; retrying", exc_info=True, extra={"retry_in": timeout})
            self._planned_wake = utcnow() + timedelta(seconds=timeout)
            self._wake.wait(timeout)

    def _claim(self, limit: int) -> tuple[list[ClaimedJob], datetime | None]:
        """Claim up to limit due jobs; when fewer were due, also when the next one will be."""
        if not self._leases:
            return [], None
        due = None
        with self._claim_statements.statements() as conn:
            claimed = runtime.claim(
                conn, worker_id=self.worker_id, kinds=self._leases, limit=limit, priorities=self._priorities
            )
            if len(claimed) < limit:
                due = runtime.next_due(conn, kinds=self._kind_names)
        with self._lock:
            self._reserved += len(claimed)
        for job in claimed:
            metrics.of_kind(metrics.JOBS_CLAIMED, job.kind).inc()
            metrics.of_kind(metrics.JOB_QUEUE_LAG_SECONDS, job.kind).observe(
                max(0.0, (job.claimed_at - job.run_at).total_seconds())
            )
            self._queue.put(job)
        return claimed, due

    @staticmethod
    def _seconds_until(due: datetime | None, idle: float) -> float:
        if due is None:
            return idle
        # +1 ms: never wake a hair before run_at and find nothing
        return min(idle, max(MIN_WAIT_SECONDS, (due - utcnow()).total_seconds() + 0.001))

    # -- running ---------------------------------------------------------------------------------

    def _handle_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            request_id = job.payload.get(REQUEST_ID_KEY) if isinstance(job.payload, dict) else None
            done = False
            try:
                with log_context(request_id=request_id, job_id=job.id, kind=job.kind):
                    done = self._execute(job)
            except Exception:  # noqa: BLE001 - a handler thread must survive anything
                log.exception("job runtime error", extra={"job_id": job.id, "kind": job.kind})
            finally:
                with self._lock:
                    self._reserved -= 1
                    self._running.pop(job.id, None)
                    # A job done changes no due time: claim again only when the loop waits for a slot.
                    # Anything else (a retry scheduled, a lease lost) may: let the loop look again.
                    wake = self._slot_wanted or not done
                    self._slot_wanted = False
                if wake:
                    self._wake.set()

    def _execute(self, job: ClaimedJob) -> bool:
        """Run the job and record its outcome; True when it is done (succeeded and recorded)."""
        kind = self._kinds[job.kind]
        limit = min(kind.retry.max_attempts, job.max_attempts)
        labels = {"job_id": job.id, "kind": job.kind, "attempt": job.attempts}
        if job.attempts > limit:
            # only reachable through an expired lease: the worker running the last attempt died
            self._finish(job, error="lease expired during the last attempt (worker lost)", retry_in=None)
            return False
        context = JobContext(
            job_id=job.id,
            kind=job.kind,
            key=job.key,
            payload=job.payload,
            attempts=job.attempts,
            db=self.db,
            settings=self.settings,
            services=self.services,
            run_at=job.run_at,
            worker_id=self.worker_id,
        )
        with self._lock:
            self._running[job.id] = _Running(job, context, self._leases[job.kind])
        started, cpu_started = time.perf_counter(), time.thread_time()
        failure: Exception | None = None
        token = CURRENT_JOB.set(context)
        try:
            kind.handler(context)
        except Exception as err:  # noqa: BLE001 - an unexpected error is retried like a retryable one
            failure = err
        finally:
            CURRENT_JOB.reset(token)
        metrics.of_kind(metrics.JOB_RUN_SECONDS, job.kind).observe(time.perf_counter() - started)
        metrics.of_kind(metrics.JOB_CPU_SECONDS, job.kind).inc(time.thread_time() - cpu_started)
        with self._lock:
            self._running.pop(job.id, None)  # no more heartbeats: the outcome ends the lease
        if failure is None:
            done = context.finished  # the handler marked it done in its last transaction (finish_in)
            if done is None:
                done = self._record(lambda conn: runtime.complete(conn, job=job))
            if done:
                metrics.of_kind(metrics.JOBS_SUCCEEDED, job.kind).inc()
                return True
            self._lease_lost(job)
            return False
        error = _error_text(failure)
        metrics.of_kind(metrics.JOBS_FAILED, job.kind).inc()
        if isinstance(failure, PermanentError):
            log.warning("job failed permanently", extra={**labels, "error": error})
            self._finish(job, error=error, retry_in=None)
            return False
        retry_after = failure.retry_after if isinstance(failure, RetryableError) else None
        retry_in = None if job.attempts >= limit else kind.retry.next_delay(job.attempts, retry_after=retry_after)
        if isinstance(failure, RetryableError):
            log.info("job failed", extra={**labels, "error": error, "retry_in": retry_in})
        else:
            log.error("job crashed", exc_info=failure, extra={**labels, "retry_in": retry_in})
        self._finish(job, error=error, retry_in=retry_in)
        return False

    def _finish(self, job: ClaimedJob, *, error: str, retry_in: float | None) -> None:
        status = self._record(lambda conn: runtime.fail(conn, job=job, error=error, retry_in=retry_in))
        if status == "dead":
            metrics.of_kind(metrics.JOBS_DEAD, job.kind).inc()
            log.error("job dead-lettered", extra={"job_id": job.id, "kind": job.kind, "error": error})
        elif status == "pending":
            metrics.of_kind(metrics.JOBS_RETRIED, job.kind).inc()
        else:
            self._lease_lost(job)

    def _lease_lost(self, job: ClaimedJob) -> None:
        metrics.of_kind(metrics.JOBS_LEASE_LOST, job.kind).inc()
        log.warning(
            "job lease lost before the outcome was recorded; the new lease holder decides",
            extra={"job_id": job.id, "kind": job.kind, "attempt": job.attempts},
        )

    def _record(self, change: Callable[[Connection], T]) -> T | None:
        """Write an outcome, retrying through a short database outage; None if it never lands."""
        for pause in (*OUTCOME_RETRIES, None):
            try:
                with self.db.atomic_statements() as conn:
                    return change(conn)
            except sa.exc.SQLAlchemyError:
                if pause is None:
                    log.exception("could not record a job outcome; the lease will expire and it runs again")
                    return None
                time.sleep(pause)
        return None

    # -- leases ----------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        shortest = min(self._leases.values(), default=float(self.settings.job_lease_seconds))
        interval = max(0.1, shortest * HEARTBEAT_FRACTION)
        while not self._halted.wait(interval):
            for running in self._snapshot():
                if running.context.lease_lost.is_set() or running.context.finished is not None:
                    continue
                try:
                    with self.db.atomic_statements() as conn:
                        kept = runtime.renew(conn, job=running.job, lease_seconds=running.lease_seconds)
                except Exception:  # noqa: BLE001 - keep renewing the other leases
                    log.warning("lease renewal failed", exc_info=True, extra={"job_id": running.job.id})
                    continue
                if not kept and self._is_running(running.job) and running.context.finished is None:
                    running.context.lease_lost.set()
                    log.warning(
                        "lease lost while the job was running",
                        extra={"job_id": running.job.id, "kind": running.job.kind},
                    )

    def _prune_loop(self) -> None:
        """Delete done jobs past their retention, first soon after the start, then every interval."""
        interval = self.settings.jobs_prune_interval_seconds
        wait = min(interval, PRUNE_FIRST_SECONDS)
        while not self._stopping.wait(wait):
            wait = interval
            try:
                older_than = retention.cutoff(self.settings.jobs_done_retention_hours)
                deleted = retention.prune(self.db, older_than=older_than, stop=self._stopping)
            except Exception:  # noqa: BLE001 - the next round tries again
                log.warning("pruning done jobs failed", exc_info=True, extra={"retry_in": interval})
                continue
            if deleted:
                metrics.JOBS_PRUNED.inc(deleted)
                log.info("done jobs pruned", extra={"deleted": deleted, "finished_before": older_than.isoformat()})

    # -- PostgreSQL LISTEN -----------------------------------------------------------------------

    def _listen_loop(self) -> None:
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        pause = 0.5
        while not self._stopping.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._wake.set()  # anything enqueued while we were not listening
                    pause = 0.5
                    last_ping = time.monotonic()
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            # a commit of this process's own pool woke us already (_on_commit): one
                            # claim per commit, not two
                            if notice.pid not in self.db.backend_pids and self._wakes_for(notice.payload):
                                self._wake.set()
                        if time.monotonic() - last_ping > LISTEN_PING_SECONDS:
                            conn.execute("SELECT 1")  # notice a dead connection
                            last_ping = time.monotonic()
            except Exception:  # noqa: BLE001 - the idle poll covers us while we reconnect
                log.warning("job listener connection lost; reconnecting", exc_info=True, extra={"retry_in": pause})
                self._stopping.wait(pause)
                self._wake.set()
                pause = min(30.0, pause * 2)

    # -- SQLite data_version watcher ---------------------------------------------------------------

    def _watch_loop(self) -> None:
        """Wake the claim loop whenever another connection (any process) committed to the SQLite file.

        `PRAGMA data_version` changes on this connection when someone else commits; reading it costs
        microseconds (no disk I/O). A wake with nothing due costs one empty claim, and wakes within one
        interval collapse into one, so the extra claims are bounded by 1 / interval per second.
        """
        interval = self.settings.worker_sqlite_watch_seconds
        pause = 0.5
        while not self._stopping.is_set():
            try:
                raw = self.db.engine.raw_connection()  # data_version is per connection: keep this one
                try:
                    cursor = raw.cursor()
                    last = cursor.execute("PRAGMA data_version").fetchone()[0]
                    self._wake.set()  # anything committed while we were not watching
                    while not self._stopping.wait(interval):
                        version = cursor.execute("PRAGMA data_version").fetchone()[0]
                        if version != last:
                            last = version
                            self._wake.set()
                finally:
                    raw.close()
            except Exception:  # noqa: BLE001 - the idle poll covers us while we reopen
                log.warning("job watcher failed; reopening", exc_info=True, extra={"retry_in": pause})
                self._stopping.wait(pause)
                pause = min(30.0, pause * 2)


def run_worker(
    *,
    settings: Settings,
    db: Database,
    registry: JobRegistry,
    services: dict[str, Any] | None = None,
    concurrency: int | None = None,
) -> None:
    """Run a worker in the foreground until SIGTERM or SIGINT, then shut down gracefully.

    A second signal stops waiting for running jobs.
    """
    worker = Worker(db, settings, registry, services, concurrency=concurrency, watch_other_processes=True)
    requested = threading.Event()
    signals: list[int] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        signals.append(signum)
        requested.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.start()
        while not requested.wait(0.5):
            pass
        log.info("job worker stopping", extra={"signal": signals[0] if signals else None})
        stopper = threading.Thread(
            target=worker.stop, args=(settings.worker_shutdown_timeout_seconds,), name="job-stop", daemon=True
        )
        stopper.start()
        count = len(signals)
        while stopper.is_alive() and len(signals) == count:
            stopper.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
