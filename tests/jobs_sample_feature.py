"""A stand-in feature module for bootstrap tests: registers one job kind via register_jobs()."""

from __future__ import annotations

from orderstream.jobs.registry import JobContext, JobKind, JobRegistry, RetryPolicy

KIND = "sample_feature_ping"


def _ping(ctx: JobContext) -> None:
    """Does nothing."""


def register_jobs(registry: JobRegistry) -> None:
    """Register the sample kind."""
    registry.register(JobKind(KIND, _ping, retry=RetryPolicy(max_attempts=4)))
