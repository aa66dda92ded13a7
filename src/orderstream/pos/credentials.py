"""Who is calling: a partner's settings and signing secrets, with a short in-process cache.

A cached partner only saves the lookup before the signature check. Whatever it let through is
confirmed inside the request's own write transaction (`confirm`), so a rotated-out secret or a
changed setting takes effect at once, and a new secret is found by asking the database again when
the cached ones do not match.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.pos.models import LOCATION_COLUMNS
from orderstream.prepared import Prepared, Row
from orderstream.tenancy.models import locations, partner_secrets, partners


@dataclass(frozen=True)
class PartnerAuth:
    """What the webhook needs to know about a partner: its settings and its unexpired secrets."""

    id: int
    slug: str
    require_standard_webhooks: bool
    rate_limit_per_minute: int | None
    secret_expiry: tuple[tuple[str, datetime | None], ...]  # newest first; None = no end

    def secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets that verify at this moment."""
        return tuple(s for s, ends in self.secret_expiry if ends is None or ends > now)


_EXPIRES = partner_secrets.c.expires_at
_PARTNER_WITH_SECRETS = (
    sa.select(
        partners.c.id,
        partners.c.slug,
        partners.c.require_standard_webhooks,
        partners.c.rate_limit_per_minute,
        partner_secrets.c.secret,
        _EXPIRES,
    )
    .select_from(
        partners.outerjoin(
            partner_secrets,
            sa.and_(
                partner_secrets.c.partner_id == partners.c.id,
                sa.or_(_EXPIRES.is_(None), _EXPIRES > sa.bindparam("now", type_=_EXPIRES.type)),
            ),
        )
    )
    .where(partners.c.slug == sa.bindparam("slug"))
    .order_by(partner_secrets.c.id.desc())
)


@functools.cache
def _credentials_now(secret_count: int) -> tuple[Any, ...]:
    """What `confirm` compares: the partner's settings and how many of the given secrets are still active.

    One statement per number of secrets (nearly always 1): an expanding IN would be rewritten on every execution.
    """
    secrets = [sa.bindparam(f"secret_{i}", type_=partner_secrets.c.secret.type) for i in range(secret_count)]
    return (
        partners.c.require_standard_webhooks,
        partners.c.rate_limit_per_minute,
        sa.select(sa.func.count())
        .where(partner_secrets.c.partner_id == partners.c.id)
        .where(partner_secrets.c.secret.in_(secrets))
        .where(sa.or_(_EXPIRES.is_(None), _EXPIRES > sa.bindparam("now", type_=_EXPIRES.type)))
        .scalar_subquery()
        .label("active_secrets"),
    )


@functools.cache
def _still_valid(secret_count: int) -> Prepared:
    return Prepared(sa.select(*_credentials_now(secret_count)).where(partners.c.id == sa.bindparam("partner_id")))


@functools.cache
def _still_valid_at_location(secret_count: int) -> Prepared:
    # the same, and the partner's location by its own id, in one round trip (the hot path of order.created)
    return Prepared(
        sa.select(*_credentials_now(secret_count), *LOCATION_COLUMNS)
        .select_from(
            partners.outerjoin(
                locations,
                sa.and_(
                    locations.c.partner_id == partners.c.id, locations.c.external_id == sa.bindparam("external_id")
                ),
            )
        )
        .where(partners.c.id == sa.bindparam("partner_id"))
    )


def _secret_params(used: list[str]) -> dict[str, str]:
    return {f"secret_{i}": secret for i, secret in enumerate(used)}


def load_partner(conn: Connection, *, slug: str, now: datetime) -> PartnerAuth | None:
    """The partner with its unexpired secrets, in one query; None for an unknown slug."""
    rows = conn.execute(_PARTNER_WITH_SECRETS, {"slug": slug, "now": now}).all()
    if not rows:
        return None
    first = rows[0]
    return PartnerAuth(
        id=int(first.id),
        slug=str(first.slug),
        require_standard_webhooks=bool(first.require_standard_webhooks),
        rate_limit_per_minute=first.rate_limit_per_minute,
        secret_expiry=tuple((r.secret, r.expires_at) for r in rows if r.secret is not None),
    )


def _unchanged(row: Any, partner: PartnerAuth, used: list[str]) -> bool:
    # row: the credential columns (`_credentials_now`) of the partner, None when it is gone
    return (
        row is not None
        and row["active_secrets"] == len(used)
        and bool(row["require_standard_webhooks"]) == partner.require_standard_webhooks
        and row["rate_limit_per_minute"] == partner.rate_limit_per_minute
    )


def confirm(conn: Connection, partner: PartnerAuth, *, secrets: Iterable[str], now: datetime) -> bool:
    """True when the secrets that verified are all still active and the partner's settings are unchanged."""
    used = sorted(set(secrets))
    params = {"partner_id": partner.id, "now": now, **_secret_params(used)}
    return _unchanged(_still_valid(len(used)).first(conn, params), partner, used)


def confirm_at_location(
    conn: Connection, partner: PartnerAuth, *, secrets: Iterable[str], now: datetime, external_id: str
) -> tuple[bool, Row | None]:
    """`confirm`, and the partner's location with that external id (None when it has none), in one query."""
    used = sorted(set(secrets))
    params = {"partner_id": partner.id, "now": now, "external_id": external_id, **_secret_params(used)}
    row = _still_valid_at_location(len(used)).first(conn, params)
    location = row if row is not None and row["id"] is not None else None
    return _unchanged(row, partner, used), location


class PartnerCache:
    """Partners by slug for `ttl` seconds (unknown slugs are never cached)."""

    def __init__(self, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, PartnerAuth]] = {}

    def get(self, slug: str) -> PartnerAuth | None:
        """The cached partner, unless it is missing or too old."""
        with self._lock:
            entry = self._entries.get(slug)
        if entry is None or self._clock() - entry[0] > self._ttl:
            return None
        return entry[1]

    def put(self, partner: PartnerAuth) -> None:
        """Remember a partner just read from the database."""
        with self._lock:
            self._entries[partner.slug] = (self._clock(), partner)

    def evict(self, slug: str) -> None:
        """Forget a partner (its cached credentials proved stale)."""
        with self._lock:
            self._entries.pop(slug, None)
