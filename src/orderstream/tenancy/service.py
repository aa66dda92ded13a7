"""Use cases for partners, their signing secrets and API keys, and their locations."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from orderstream.db import utcnow
from orderstream.tenancy.models import api_keys, locations, partner_secrets, partners

API_KEY_PREFIX = "osk_"


class TenancyError(Exception):
    """A tenancy request that cannot be carried out (unknown partner, duplicate slug, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class NewPartner:
    """A partner just created, with the only copy of its first secret and API key."""

    partner: dict[str, Any]
    secret: str
    api_key: str


def new_signing_secret() -> str:
    """A Standard Webhooks secret: whsec_ + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def hash_api_key(key: str) -> str:
    """The stored form of an API key (keys are long random strings, so a plain SHA-256 suffices)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _partner_dict(row: RowMapping) -> dict[str, Any]:
    return {
        "id": row["id"],
        "slug": row["slug"],
        "name": row["name"],
        "require_standard_webhooks": row["require_standard_webhooks"],
        "rate_limit_per_minute": row["rate_limit_per_minute"],
        "created_at": row["created_at"].isoformat(),
    }


def get_partner(conn: Connection, *, slug: str) -> RowMapping | None:
    """The partner with this slug, or None."""
    return conn.execute(sa.select(partners).where(partners.c.slug == slug)).mappings().first()


def require_partner(conn: Connection, *, slug: str) -> RowMapping:
    """The partner with this slug, or a TenancyError."""
    row = get_partner(conn, slug=slug)
    if row is None:
        raise TenancyError("partner_not_found", f"no partner with slug {slug!r}")
    return row


def create_partner(
    conn: Connection,
    *,
    slug: str,
    name: str | None = None,
    require_standard_webhooks: bool = False,
    rate_limit_per_minute: int | None = None,
) -> NewPartner:
    """Create a partner with one signing secret and one API key."""
    if get_partner(conn, slug=slug) is not None:
        raise TenancyError("partner_exists", f"a partner with slug {slug!r} already exists")
    now = utcnow()
    partner_id = conn.execute(
        sa.insert(partners)
        .values(
            slug=slug,
            name=name or slug,
            require_standard_webhooks=require_standard_webhooks,
            rate_limit_per_minute=rate_limit_per_minute,
            settings={},
            created_at=now,
        )
        .returning(partners.c.id)
    ).scalar_one()
    secret = new_signing_secret()
    conn.execute(sa.insert(partner_secrets).values(partner_id=partner_id, secret=secret, created_at=now))
    api_key = create_api_key(conn, partner_id=partner_id)
    row = conn.execute(sa.select(partners).where(partners.c.id == partner_id)).mappings().one()
    return NewPartner(partner=_partner_dict(row), secret=secret, api_key=api_key)


def update_partner(
    conn: Connection,
    *,
    slug: str,
    require_standard_webhooks: bool | None = None,
    rate_limit_per_minute: int | None = None,
) -> dict[str, Any]:
    """Change a partner's settings."""
    partner = require_partner(conn, slug=slug)
    values: dict[str, Any] = {}
    if require_standard_webhooks is not None:
        values["require_standard_webhooks"] = require_standard_webhooks
    if rate_limit_per_minute is not None:
        values["rate_limit_per_minute"] = rate_limit_per_minute
    if values:
        conn.execute(sa.update(partners).where(partners.c.id == partner["id"]).values(**values))
    return _partner_dict(require_partner(conn, slug=slug))


def list_partners(conn: Connection) -> list[dict[str, Any]]:
    """Every partner, by slug."""
    rows = conn.execute(sa.select(partners).order_by(partners.c.slug)).mappings().all()
    return [_partner_dict(r) for r in rows]


def active_secrets(conn: Connection, *, partner_id: int, now: datetime | None = None) -> list[str]:
    """The partner's signing secrets that still verify: the current one and any in its overlap."""
    now = now or utcnow()
    rows = conn.execute(
        sa.select(partner_secrets.c.secret)
        .where(partner_secrets.c.partner_id == partner_id)
        .where(sa.or_(partner_secrets.c.expires_at.is_(None), partner_secrets.c.expires_at > now))
        .order_by(partner_secrets.c.id.desc())
    ).scalars()
    return list(rows)


def rotate_secret(
    conn: Connection, *, slug: str, overlap: timedelta = timedelta(hours=24), now: datetime | None = None
) -> dict[str, Any]:
    """Issue a new signing secret; older ones keep verifying until the end of the overlap."""
    now = now or utcnow()
    partner = require_partner(conn, slug=slug)
    ends = now + overlap
    conn.execute(
        sa.update(partner_secrets)
        .where(partner_secrets.c.partner_id == partner["id"])
        .where(sa.or_(partner_secrets.c.expires_at.is_(None), partner_secrets.c.expires_at > ends))
        .values(expires_at=ends)
    )
    secret = new_signing_secret()
    conn.execute(sa.insert(partner_secrets).values(partner_id=partner["id"], secret=secret, created_at=now))
    return {"partner": partner["slug"], "secret": secret, "previous_secrets_valid_until": ends.isoformat()}


def create_api_key(conn: Connection, *, partner_id: int, name: str = "default") -> str:
    """Create an API key for the order API; only its hash is stored."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        sa.insert(api_keys).values(
            partner_id=partner_id, prefix=key[:12], key_hash=hash_api_key(key), name=name, created_at=utcnow()
        )
    )
    return key


def partner_for_api_key(conn: Connection, *, key: str) -> RowMapping | None:
    """The partner owning a live API key, or None."""
    return (
        conn.execute(
            sa.select(partners)
            .join(api_keys, api_keys.c.partner_id == partners.c.id)
            .where(api_keys.c.key_hash == hash_api_key(key))
            .where(api_keys.c.revoked_at.is_(None))
        )
        .mappings()
        .first()
    )


LOCATION_FIELDS = (
    "name",
    "street",
    "city",
    "state",
    "postal_code",
    "country",
    "phone",
    "timezone",
    "prep_time_minutes",
    "status",
    "allow_unpaid_delivery",
)


def _check_location_values(values: dict[str, Any]) -> None:
    if "timezone" in values:
        try:
            ZoneInfo(values["timezone"])
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise TenancyError("invalid_timezone", f"unknown IANA time zone {values['timezone']!r}") from exc
    if "status" in values and values["status"] not in ("active", "paused"):
        raise TenancyError("invalid_status", "status must be active or paused")
    if "country" in values:
        values["country"] = str(values["country"]).upper()
        if len(values["country"]) != 2:
            raise TenancyError("invalid_country", "country must be a two-letter ISO code")
    if "prep_time_minutes" in values and not 0 <= int(values["prep_time_minutes"]) <= 24 * 60:
        raise TenancyError("invalid_prep_time", "prep time must be between 0 and 1440 minutes")


def location_dict(row: RowMapping, partner_slug: str | None = None) -> dict[str, Any]:
    """A location as shown by the CLI and the API."""
    out = {
        "id": row["external_id"],
        "name": row["name"],
        "address": {
            "street": row["street"],
            "city": row["city"],
            "state": row["state"],
            "postal_code": row["postal_code"],
            "country": row["country"],
        },
        "phone": row["phone"],
        "timezone": row["timezone"],
        "prep_time_minutes": row["prep_time_minutes"],
        "status": row["status"],
        "paused_until": row["paused_until"].isoformat() if row["paused_until"] else None,
        "allow_unpaid_delivery": row["allow_unpaid_delivery"],
    }
    if partner_slug is not None:
        out["partner"] = partner_slug
    return out


def add_location(conn: Connection, *, partner_slug: str, external_id: str, **values: Any) -> dict[str, Any]:
    """Add a location for a partner; its id is the partner's own location id."""
    partner = require_partner(conn, slug=partner_slug)
    if get_location(conn, partner_id=partner["id"], external_id=external_id) is not None:
        raise TenancyError("location_exists", f"location {external_id!r} already exists for {partner_slug}")
    values = {k: v for k, v in values.items() if k in LOCATION_FIELDS and v is not None}
    _check_location_values(values)
    now = utcnow()
    conn.execute(
        sa.insert(locations).values(
            partner_id=partner["id"], external_id=external_id, settings={}, created_at=now, updated_at=now, **values
        )
    )
    row = get_location(conn, partner_id=partner["id"], external_id=external_id)
    assert row is not None
    return location_dict(row, partner_slug)


def update_location(conn: Connection, *, partner_slug: str, external_id: str, **values: Any) -> dict[str, Any]:
    """Change some fields of a location."""
    partner = require_partner(conn, slug=partner_slug)
    row = get_location(conn, partner_id=partner["id"], external_id=external_id)
    if row is None:
        raise TenancyError("location_not_found", f"no location {external_id!r} for {partner_slug}")
    values = {k: v for k, v in values.items() if k in LOCATION_FIELDS and v is not None}
    _check_location_values(values)
    if values:
        conn.execute(sa.update(locations).where(locations.c.id == row["id"]).values(updated_at=utcnow(), **values))
    row = get_location(conn, partner_id=partner["id"], external_id=external_id)
    assert row is not None
    return location_dict(row, partner_slug)


def get_location(conn: Connection, *, partner_id: int, external_id: str) -> RowMapping | None:
    """A partner's location by the partner's own id, or None."""
    return (
        conn.execute(
            sa.select(locations)
            .where(locations.c.partner_id == partner_id)
            .where(locations.c.external_id == external_id)
        )
        .mappings()
        .first()
    )


def require_location(conn: Connection, *, partner_slug: str, external_id: str) -> RowMapping:
    """A location by partner slug and the partner's own location id (operator tools), or a TenancyError."""
    partner = require_partner(conn, slug=partner_slug)
    row = get_location(conn, partner_id=int(partner["id"]), external_id=external_id)
    if row is None:
        raise TenancyError("location_not_found", f"no location {external_id!r} for partner {partner_slug!r}")
    return row


def list_locations(conn: Connection, *, partner_slug: str | None = None) -> list[dict[str, Any]]:
    """Every location, or a partner's."""
    stmt = sa.select(locations, partners.c.slug).join(partners, partners.c.id == locations.c.partner_id)
    if partner_slug is not None:
        stmt = stmt.where(partners.c.slug == partner_slug)
    rows = conn.execute(stmt.order_by(partners.c.slug, locations.c.external_id)).mappings().all()
    return [location_dict(r, r["slug"]) for r in rows]
