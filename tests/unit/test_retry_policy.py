"""RetryPolicy: the delay before the next attempt, or None to dead-letter."""

from __future__ import annotations

import random

import pytest

from orderstream.jobs.registry import JobKind, JobRegistry, RetryPolicy

STANDARD_WEBHOOKS = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)


class _Fixed(random.Random):
    """An rng whose random() is always the given value (0 = no jitter, 1 = full jitter)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(
    ("policy", "attempts", "retry_after", "rng_value", "expected"),
    [
        # first failure: the base delay
        (RetryPolicy(base_seconds=2, jitter=0), 1, None, 0.0, 2.0),
        # second failure doubles it
        (RetryPolicy(base_seconds=2, jitter=0), 2, None, 0.0, 4.0),
        # fifth failure: 2 * 2^4
        (RetryPolicy(base_seconds=2, jitter=0), 5, None, 0.0, 32.0),
        # exponential growth stops at the cap
        (RetryPolicy(base_seconds=2, cap_seconds=60, jitter=0), 9, None, 0.0, 60.0),
        # jitter adds at most `jitter` of the delay: full jitter draw
        (RetryPolicy(base_seconds=10, jitter=0.1), 1, None, 1.0, 11.0),
        # half a jitter draw
        (RetryPolicy(base_seconds=10, jitter=0.1), 1, None, 0.5, 10.5),
        # the last allowed attempt failed: give up (dead-letter)
        (RetryPolicy(max_attempts=3), 3, None, 0.0, None),
        # beyond the last attempt (a reclaimed lease): still give up
        (RetryPolicy(max_attempts=3), 4, None, 0.0, None),
        # one attempt only: never retry
        (RetryPolicy(max_attempts=1), 1, None, 0.0, None),
        # Retry-After longer than the backoff wins
        (RetryPolicy(base_seconds=2, jitter=0), 1, 120.0, 0.0, 120.0),
        # Retry-After shorter than the backoff does not shorten it
        (RetryPolicy(base_seconds=30, jitter=0), 1, 5.0, 0.0, 30.0),
        # Retry-After cannot revive a job that used its last attempt
        (RetryPolicy(max_attempts=2), 2, 10.0, 0.0, None),
        # schedule: the first entry is the delay before attempt 2
        (RetryPolicy(max_attempts=10, schedule=STANDARD_WEBHOOKS, jitter=0), 1, None, 0.0, 5.0),
        # schedule: delay before attempt 4 (after 3 failures) is 30 min
        (RetryPolicy(max_attempts=10, schedule=STANDARD_WEBHOOKS, jitter=0), 3, None, 0.0, 1800.0),
        # schedule: before the 10th and last attempt, 24 h
        (RetryPolicy(max_attempts=10, schedule=STANDARD_WEBHOOKS, jitter=0), 9, None, 0.0, 86400.0),
        # schedule: the 10th attempt failed, give up
        (RetryPolicy(max_attempts=10, schedule=STANDARD_WEBHOOKS, jitter=0), 10, None, 0.0, None),
        # schedule shorter than the attempts: its last entry repeats
        (RetryPolicy(max_attempts=6, schedule=(1, 2), jitter=0), 4, None, 0.0, 2.0),
        # schedule with jitter
        (RetryPolicy(max_attempts=10, schedule=(100,), jitter=0.2), 1, None, 1.0, 120.0),
        # Retry-After beats a schedule entry
        (RetryPolicy(max_attempts=10, schedule=(5, 300), jitter=0), 1, 60.0, 0.0, 60.0),
        # attempts 0 (never ran) is treated as the first failure, not as an index from the end
        (RetryPolicy(max_attempts=10, schedule=(5, 300), jitter=0), 0, None, 0.0, 5.0),
    ],
)
def test_next_delay(
    policy: RetryPolicy, attempts: int, retry_after: float | None, rng_value: float, expected: float | None
) -> None:
    assert policy.next_delay(attempts, retry_after=retry_after, rng=_Fixed(rng_value)) == expected


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(base_seconds=10, jitter=0.25)
    rng = random.Random(7)
    delays = [policy.next_delay(1, rng=rng) for _ in range(500)]
    assert all(d is not None and 10.0 <= d <= 12.5 for d in delays)
    assert len({round(d or 0, 6) for d in delays}) > 100  # really random


def test_registry_lists_and_replaces_kinds() -> None:
    registry = JobRegistry()
    registry.register(JobKind("b", lambda ctx: None))
    registry.register(JobKind("a", lambda ctx: None, retry=RetryPolicy(max_attempts=3)))
    registry.register(JobKind("a", lambda ctx: None, retry=RetryPolicy(max_attempts=5)))
    assert registry.names() == ["a", "b"]
    kind = registry.get("a")
    assert kind is not None
    assert kind.retry.max_attempts == 5
    assert registry.get("missing") is None
