"""Test helpers for the job runtime: unique kinds, a running worker, waiting for a condition."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from orderstream.config import Settings
from orderstream.db import Database
from orderstream.jobs.models import jobs
from orderstream.jobs.registry import JobRegistry
from orderstream.jobs.worker import Worker


def unique_kind(name: str) -> str:
    """A job kind no other test uses, so concurrent tests never run each other's jobs."""
    return f"t_{name}_{uuid.uuid4().hex[:10]}"


def wait_for(condition: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll until condition() is truthy and return it; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def job_row(db: Database, job_id: int) -> dict[str, Any]:
    """The job's current row."""
    with db.read() as conn:
        return dict(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()._mapping)


def job_status(db: Database, job_id: int) -> str:
    """The job's current status."""
    return str(job_row(db, job_id)["status"])


def worker_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings for a worker under test: no embedded worker, short leases unless overridden."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "embedded_worker": False,
        "log_json": False,
        "worker_concurrency": 4,
        "job_lease_seconds": 30,
        "worker_idle_poll_seconds": 30.0,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def running_worker(db: Database, settings: Settings, registry: JobRegistry, **kwargs: Any) -> Iterator[Worker]:
    """A started worker, stopped (waiting for its jobs) on exit."""
    worker = Worker(db, settings, registry, **kwargs)
    worker.start()
    try:
        yield worker
    finally:
        assert worker.stop(timeout=15.0), "worker did not finish its jobs"


def listener_pids(db: Database) -> set[int]:
    """PostgreSQL server processes of the database's LISTEN connections (the workers' listeners)."""
    with db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
        ).all()
    return {int(row[0]) for row in rows}
