"""A worker process for the runtime's process tests: test-only job kinds, run by run_worker().

Usage: python jobs_worker_proc.py DB_URL PREFIX [--concurrency N] [--lease S] [--idle S]
Kinds: PREFIX_record (records one run), PREFIX_slow (records start, sleeps payload seconds, records done).
Effects go to the table test_job_runs (created by the test).
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import sqlalchemy as sa

from orderstream.config import Settings
from orderstream.db import Database
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry, RetryPolicy
from orderstream.jobs.worker import run_worker

RUNS_DDL = (
    "CREATE TABLE IF NOT EXISTS test_job_runs ("
    " job_id BIGINT NOT NULL, phase VARCHAR(16) NOT NULL, worker VARCHAR(120) NOT NULL, at DOUBLE PRECISION NOT NULL)"
)


def _record(ctx: JobContext, phase: str) -> None:
    with ctx.db.write() as conn:
        conn.execute(
            sa.text("INSERT INTO test_job_runs (job_id, phase, worker, at) VALUES (:j, :p, :w, :a)"),
            {"j": ctx.job_id, "p": phase, "w": ctx.worker_id, "a": time.time()},
        )


def _record_run(ctx: JobContext) -> None:
    _record(ctx, "run")
    time.sleep(float(ctx.payload.get("seconds", 0)))


def _slow(ctx: JobContext) -> None:
    _record(ctx, "start")
    time.sleep(float(ctx.payload["seconds"]))
    _record(ctx, "done")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_url")
    parser.add_argument("prefix")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=30)
    parser.add_argument("--idle", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(
        database_url=args.db_url,
        embedded_worker=False,
        worker_concurrency=args.concurrency,
        job_lease_seconds=int(max(1, args.lease)),
        worker_idle_poll_seconds=args.idle,
        worker_shutdown_timeout_seconds=20,
    )
    registry = JobRegistry()
    registry.register(JobKind(f"{args.prefix}_record", _record_run, retry=RetryPolicy(max_attempts=3)))
    registry.register(JobKind(f"{args.prefix}_slow", _slow, lease_seconds=args.lease))
    db = Database.from_url(args.db_url, pool_size=args.concurrency + 3)
    print(f"worker pid {os.getpid()} ready", flush=True)
    run_worker(settings=settings, db=db, registry=registry, concurrency=args.concurrency)
    db.dispose()
    print("worker stopped", flush=True)


if __name__ == "__main__":
    main()
