"""Passwords, session tokens, CSRF tokens and the sign-in rate limit: pure helpers plus their few queries."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Connection

from orderstream.dashboard.models import dashboard_sessions, dashboard_signin_attempts, dashboard_users
from orderstream.db import utcnow

_hasher = PasswordHasher()
# verified against when the e-mail is unknown, so that a miss costs as much time as a wrong password
_DUMMY_HASH = _hasher.hash("orderstream-no-such-user")

MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    """An argon2id hash (PHC string with its own salt and parameters)."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when the password matches; always does one argon2 verification."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    """A random URL-safe token of 256 bits (session cookies, CSRF tokens)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The stored form of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison; a missing value never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True)
class Session:
    """A signed-in user's session as loaded from the cookie."""

    token_hash: str
    user_id: int
    email: str
    role: str
    csrf_token: str


def create_session(conn: Connection, *, user_id: int, lifetime: timedelta, now: datetime | None = None) -> str:
    """Store a new session and return the cookie value (only its hash is kept)."""
    now = now or utcnow()
    token = new_token()
    conn.execute(
        sa.insert(dashboard_sessions).values(
            token_hash=token_hash(token),
            user_id=user_id,
            csrf_token=new_token(),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def load_session(conn: Connection, *, token: str | None, now: datetime | None = None) -> Session | None:
    """The live session of a cookie value, or None (unknown, expired, or the user disabled)."""
    if not token:
        return None
    now = now or utcnow()
    row = (
        conn.execute(
            sa.select(dashboard_sessions, dashboard_users.c.email, dashboard_users.c.role)
            .join(dashboard_users, dashboard_users.c.id == dashboard_sessions.c.user_id)
            .where(dashboard_sessions.c.token_hash == token_hash(token))
            .where(dashboard_sessions.c.expires_at > now)
            .where(dashboard_users.c.disabled_at.is_(None))
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    return Session(
        token_hash=row["token_hash"],
        user_id=row["user_id"],
        email=row["email"],
        role=row["role"],
        csrf_token=row["csrf_token"],
    )


def delete_session(conn: Connection, *, token: str) -> None:
    """Sign out: the cookie stops working at once."""
    conn.execute(sa.delete(dashboard_sessions).where(dashboard_sessions.c.token_hash == token_hash(token)))


def recent_failures(conn: Connection, *, ip: str, email: str, window: timedelta, now: datetime | None = None) -> int:
    """Failed sign-ins for this client IP and e-mail within the window, since the last success."""
    now = now or utcnow()
    since = now - window
    last_ok = conn.execute(
        sa.select(sa.func.max(dashboard_signin_attempts.c.at)).where(
            dashboard_signin_attempts.c.ip == ip,
            dashboard_signin_attempts.c.email == email,
            dashboard_signin_attempts.c.succeeded.is_(True),
        )
    ).scalar()
    if last_ok is not None and last_ok > since:
        since = last_ok
    count = conn.execute(
        sa.select(sa.func.count()).where(
            dashboard_signin_attempts.c.ip == ip,
            dashboard_signin_attempts.c.email == email,
            dashboard_signin_attempts.c.succeeded.is_(False),
            dashboard_signin_attempts.c.at > since,
        )
    ).scalar_one()
    return int(count)


def record_attempt(conn: Connection, *, ip: str, email: str, succeeded: bool, now: datetime | None = None) -> None:
    """Remember a sign-in attempt (for the rate limit)."""
    conn.execute(
        sa.insert(dashboard_signin_attempts).values(ip=ip, email=email, succeeded=succeeded, at=now or utcnow())
    )


def purge_expired(conn: Connection, *, older_than: timedelta, now: datetime | None = None) -> None:
    """Drop expired sessions and sign-in attempts older than the window (called on sign-in)."""
    now = now or utcnow()
    conn.execute(sa.delete(dashboard_sessions).where(dashboard_sessions.c.expires_at <= now))
    conn.execute(sa.delete(dashboard_signin_attempts).where(dashboard_signin_attempts.c.at < now - older_than))
