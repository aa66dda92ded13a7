"""Per-partner rate limit: a token bucket per partner, in this process."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """A bucket of `per_minute` tokens per partner, refilled continuously; a request takes one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[int, tuple[float, float]] = {}  # partner id -> (tokens, last refill)

    def acquire(self, partner_id: int, per_minute: int) -> float | None:
        """Take a token: None when allowed, else the seconds until one is available (for Retry-After)."""
        if per_minute <= 0:
            return 60.0
        rate = per_minute / 60.0
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(partner_id, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[partner_id] = (tokens - 1.0, now)
                return None
            self._buckets[partner_id] = (tokens, now)
            return (1.0 - tokens) / rate


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1 (Retry-After takes integers)."""
    return str(max(1, math.ceil(seconds)))
