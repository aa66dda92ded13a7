"""Prometheus collectors of the job runtime (default registry; /metrics exposes them)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from prometheus_client import Counter, Histogram

JOBS_CLAIMED = Counter("orderstream_jobs_claimed_total", "Jobs leased by a worker (each attempt)", ["kind"])
JOBS_SUCCEEDED = Counter("orderstream_jobs_succeeded_total", "Jobs whose handler returned", ["kind"])
JOBS_FAILED = Counter("orderstream_jobs_failed_total", "Attempts that raised (retried or dead-lettered)", ["kind"])
JOBS_RETRIED = Counter("orderstream_jobs_retried_total", "Failed attempts scheduled to run again", ["kind"])
JOBS_DEAD = Counter("orderstream_jobs_dead_total", "Jobs dead-lettered: permanent error or no attempts left", ["kind"])
JOBS_LEASE_LOST = Counter(
    "orderstream_jobs_lease_lost_total", "Attempts whose lease expired or was taken before they finished", ["kind"]
)
JOBS_PRUNED = Counter("orderstream_jobs_pruned_total", "Done jobs deleted after their retention (this process)")
JOB_RUN_SECONDS = Histogram(
    "orderstream_job_run_seconds",
    "Handler run time",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
JOB_CPU_SECONDS = Counter(
    "orderstream_job_cpu_seconds_total", "CPU time of job handlers (their threads; waits excluded)", ["kind"]
)
JOB_QUEUE_LAG_SECONDS = Histogram(
    "orderstream_job_queue_lag_seconds",
    "Delay from a job's run_at to the start of its attempt",
    ["kind"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


@lru_cache(maxsize=1024)
def of_kind(metric: Any, kind: str) -> Any:
    """The metric's child for a job kind, looked up once (labels() validates and locks on every call)."""
    return metric.labels(kind)
