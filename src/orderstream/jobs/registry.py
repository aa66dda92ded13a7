"""Job kinds: what runs for each kind of job, and how it retries."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from orderstream.config import Settings
from orderstream.db import Database, after_commit
from orderstream.jobs import runtime


class RetryableError(Exception):
    """The job failed but may succeed later; retry_after (seconds) overrides the backoff."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """The job can never succeed: dead-letter it now."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, or an explicit schedule; None means: give up.

    A job stops after min(policy.max_attempts, the job row's max_attempts) attempts.
    """

    max_attempts: int = 10
    base_seconds: float = 2.0
    cap_seconds: float = 3600.0
    schedule: tuple[float, ...] | None = None  # delay before attempt 2, 3, ... (overrides base/cap)
    jitter: float = 0.1  # fraction of the delay added at random

    def next_delay(
        self, attempts: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds to wait before the next attempt after `attempts` failed ones, or None to stop."""
        if attempts >= self.max_attempts:
            return None
        rng = rng or random.Random()
        attempts = max(attempts, 1)
        if self.schedule is not None:
            delay = self.schedule[min(attempts - 1, len(self.schedule) - 1)]
        else:
            delay = min(self.cap_seconds, self.base_seconds * (2 ** (attempts - 1)))
        delay += delay * self.jitter * rng.random()
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


@dataclass
class JobContext:
    """What a handler gets: the job and the shared services of the process."""

    job_id: int
    kind: str
    key: str | None
    payload: dict[str, Any]
    attempts: int  # including this one
    db: Database
    settings: Settings
    services: dict[str, Any] = field(default_factory=dict)  # e.g. "http": httpx.Client, "providers": registry
    run_at: datetime | None = None  # when the job was due (scheduled jobs: the planned time)
    worker_id: str = ""
    # set by the runtime when the lease could not be renewed: another worker may now run this job
    lease_lost: threading.Event = field(default_factory=threading.Event)
    # finish_in(): None until a handler transaction that marked the job done committed; then whether
    # this worker still held the lease (True: done, recorded) or not (False: the new holder decides)
    finished: bool | None = None

    def finish_in(self, conn: Connection) -> None:
        """Mark the job done in the handler's own last write transaction: the worker then needs none.

        Call it in the transaction after which the handler returns; anything that could still fail
        afterwards would find the job already done. When that transaction rolls back, nothing is
        marked and the worker records the outcome as usual.
        """

        def _marked(done: bool) -> None:
            def _committed() -> None:
                self.finished = done

            after_commit(conn, _committed)

        runtime.complete_fenced_later(
            conn, job_id=self.job_id, worker_id=self.worker_id, attempts=self.attempts, then=_marked
        )


# the job whose handler runs on this thread (handlers read it to do in-transaction what a job would do later)
CURRENT_JOB: ContextVar[JobContext | None] = ContextVar("orderstream_current_job", default=None)


JobHandler = Callable[[JobContext], None]


@dataclass(frozen=True)
class JobKind:
    """A kind of job: its handler, its retry policy and its claim priority."""

    name: str
    handler: JobHandler
    retry: RetryPolicy = RetryPolicy()
    lease_seconds: float | None = None  # None: the runtime's default
    priority: int = runtime.NORMAL  # runtime.URGENT kinds are claimed first


class JobRegistry:
    """The kinds a worker can run; jobs of kinds not registered wait, visible, until one is."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: JobKind) -> None:
        """Add or replace a kind."""
        self._kinds[kind.name] = kind

    def get(self, name: str) -> JobKind | None:
        """The kind with this name, if registered."""
        return self._kinds.get(name)

    def names(self) -> list[str]:
        """Every registered kind name."""
        return sorted(self._kinds)
