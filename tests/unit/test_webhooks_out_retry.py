"""The outbound webhook retry schedule, Retry-After parsing, attempt outcomes and the health verdict, as tables."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from orderstream.webhooks_out.domain import (
    DEFAULT_SCHEDULE,
    Health,
    Outcome,
    RetrySchedule,
    classify,
    evaluate_health,
    parse_retry_after,
)

NO_JITTER = RetrySchedule(jitter=0.0)


@pytest.mark.parametrize(
    ("attempts_made", "delay"),
    [
        (1, 5.0),  # after the first (immediate) attempt: 5 s
        (2, 300.0),  # 5 min
        (3, 1800.0),  # 30 min
        (4, 7200.0),  # 2 h
        (5, 18000.0),  # 5 h
        (6, 36000.0),  # 10 h
        (7, 36000.0),  # 10 h
        (8, None),  # eight attempts made: the delivery is failed
        (9, None),
    ],
)
def test_schedule(attempts_made: int, delay: float | None) -> None:
    assert NO_JITTER.next_delay(attempts_made) == delay


def test_schedule_has_eight_attempts_over_about_27_hours() -> None:
    assert NO_JITTER.max_attempts == 8
    assert DEFAULT_SCHEDULE[0] == 0
    assert sum(DEFAULT_SCHEDULE) == 5 + 300 + 1800 + 7200 + 18000 + 36000 + 36000


def test_jitter_only_adds_up_to_its_fraction() -> None:
    schedule = RetrySchedule(jitter=0.1)
    rng = random.Random(7)
    delays = [schedule.next_delay(2, rng=rng) for _ in range(200)]
    assert all(d is not None and 300.0 <= d <= 330.0 for d in delays)
    assert len({round(d or 0, 3) for d in delays}) > 100  # actually random


def test_scale_shortens_every_delay() -> None:
    assert RetrySchedule(scale=0.01, jitter=0.0).next_delay(2) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("attempts_made", "retry_after", "delay"),
    [
        (1, 60.0, 60.0),  # longer than the schedule: honoured
        (2, 60.0, 300.0),  # shorter than the schedule: the schedule wins
        (1, 10 * 86400.0, 86400.0),  # capped at one day
        (1, -5.0, 5.0),
        (8, 60.0, None),  # exhausted stays exhausted
    ],
)
def test_retry_after(attempts_made: int, retry_after: float, delay: float | None) -> None:
    assert NO_JITTER.next_delay(attempts_made, retry_after=retry_after) == delay


NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("Thu, 26 Nov 2026 12:01:30 GMT", 90.0),
        ("Thu, 26 Nov 2026 11:00:00 GMT", 0.0),  # in the past: now
        ("soon", None),
        ("", None),
        (None, None),
        ("-5", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    ("status", "error_kind", "outcome"),
    [
        (200, None, Outcome.SUCCEEDED),
        (204, None, Outcome.SUCCEEDED),
        (299, None, Outcome.SUCCEEDED),
        (301, None, Outcome.FAILED),  # redirects are not followed and not retried
        (302, None, Outcome.FAILED),
        (400, None, Outcome.FAILED),
        (401, None, Outcome.FAILED),
        (404, None, Outcome.FAILED),
        (408, None, Outcome.RETRY),
        (409, None, Outcome.FAILED),
        (410, None, Outcome.GONE),
        (422, None, Outcome.FAILED),
        (429, None, Outcome.RETRY),
        (500, None, Outcome.RETRY),
        (502, None, Outcome.RETRY),
        (503, None, Outcome.RETRY),
        (504, None, Outcome.RETRY),
        (None, "timeout", Outcome.RETRY),
        (None, "network", Outcome.RETRY),
        (None, "blocked", Outcome.FAILED),  # the SSRF guard refused the target
    ],
)
def test_classify(status: int | None, error_kind: str | None, outcome: Outcome) -> None:
    assert classify(status, error_kind=error_kind) is outcome


@pytest.mark.parametrize(
    ("attempts", "failures", "health"),
    [
        (0, 0, Health.OK),
        (19, 19, Health.OK),  # too few attempts to judge
        (20, 1, Health.OK),
        (20, 2, Health.ALERT),  # 10 %
        (20, 9, Health.ALERT),
        (20, 10, Health.PAUSE),  # 50 %
        (100, 100, Health.PAUSE),
    ],
)
def test_health(attempts: int, failures: int, health: Health) -> None:
    verdict = evaluate_health(attempts=attempts, failures=failures, min_attempts=20, alert_rate=0.1, pause_rate=0.5)
    assert verdict is health
