"""Public identifiers: a prefix plus a time-ordered, unguessable ULID-style string."""

from __future__ import annotations

import os
import secrets
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A sortable id such as ``ord_01hx...``: 48 bits of milliseconds, 80 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(millis, 10)}{_encode(rand, 16)}"


def new_token(nbytes: int = 24) -> str:
    """An unguessable URL-safe token (tracking links, API keys)."""
    return secrets.token_urlsafe(nbytes)
