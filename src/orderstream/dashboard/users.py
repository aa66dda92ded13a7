"""Dashboard users: create, look up by e-mail, and the locations a merchant user may see."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.dashboard.models import dashboard_user_locations, dashboard_users
from orderstream.dashboard.security import MIN_PASSWORD_LENGTH, hash_password
from orderstream.db import utcnow
from orderstream.tenancy.models import locations, partners


class Role(StrEnum):
    """What a user may see: admin everything, merchant only their locations."""

    ADMIN = "admin"
    MERCHANT = "merchant"


class UserError(Exception):
    """A user request that cannot be carried out."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class User:
    """A dashboard user and the internal ids of the locations they may see (None: all)."""

    id: int
    email: str
    role: Role
    location_ids: frozenset[int] | None

    @property
    def is_admin(self) -> bool:
        """True for an admin user."""
        return self.role is Role.ADMIN


def normalize_email(email: str) -> str:
    """E-mail addresses compare case-insensitively here."""
    return email.strip().lower()


def resolve_locations(conn: Connection, refs: list[str]) -> list[int]:
    """Internal location ids for `partner_slug/location_id` references, or a UserError naming the unknown one."""
    out: list[int] = []
    for ref in refs:
        slug, sep, external_id = ref.partition("/")
        if not sep or not slug or not external_id:
            raise UserError("invalid_location", f"{ref!r}: write locations as PARTNER_SLUG/LOCATION_ID")
        row = conn.execute(
            sa.select(locations.c.id)
            .join(partners, partners.c.id == locations.c.partner_id)
            .where(partners.c.slug == slug, locations.c.external_id == external_id)
        ).first()
        if row is None:
            raise UserError("location_not_found", f"no location {external_id!r} for partner {slug!r}")
        out.append(int(row.id))
    return out


def add_user(conn: Connection, *, email: str, password: str, role: Role, location_refs: list[str]) -> User:
    """Create a user; a merchant needs at least one location, an admin none."""
    email = normalize_email(email)
    if "@" not in email or len(email) > 320:
        raise UserError("invalid_email", "give an e-mail address")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError("password_too_short", f"passwords have at least {MIN_PASSWORD_LENGTH} characters")
    if role is Role.MERCHANT and not location_refs:
        raise UserError("locations_required", "a merchant user needs --locations")
    if role is Role.ADMIN and location_refs:
        raise UserError("locations_not_allowed", "an admin user sees every location; drop --locations")
    if conn.execute(sa.select(dashboard_users.c.id).where(dashboard_users.c.email == email)).first() is not None:
        raise UserError("user_exists", f"a user {email} already exists")
    location_ids = resolve_locations(conn, location_refs)
    user_id = conn.execute(
        sa.insert(dashboard_users)
        .values(email=email, password_hash=hash_password(password), role=role.value, created_at=utcnow())
        .returning(dashboard_users.c.id)
    ).scalar_one()
    for location_id in sorted(set(location_ids)):
        conn.execute(sa.insert(dashboard_user_locations).values(user_id=user_id, location_id=location_id))
    return get_user(conn, user_id=int(user_id))


def get_user(conn: Connection, *, user_id: int) -> User:
    """A user by id, with their locations."""
    row = conn.execute(sa.select(dashboard_users).where(dashboard_users.c.id == user_id)).mappings().one()
    role = Role(row["role"])
    location_ids: frozenset[int] | None = None
    if role is Role.MERCHANT:
        location_ids = frozenset(
            int(v)
            for v in conn.execute(
                sa.select(dashboard_user_locations.c.location_id).where(dashboard_user_locations.c.user_id == user_id)
            ).scalars()
        )
    return User(id=int(row["id"]), email=row["email"], role=role, location_ids=location_ids)


def find_for_signin(conn: Connection, *, email: str) -> tuple[int, str] | None:
    """(user id, password hash) of an enabled user by e-mail, or None."""
    row = conn.execute(
        sa.select(dashboard_users.c.id, dashboard_users.c.password_hash).where(
            dashboard_users.c.email == normalize_email(email), dashboard_users.c.disabled_at.is_(None)
        )
    ).first()
    return (int(row.id), str(row.password_hash)) if row is not None else None


def list_users(conn: Connection) -> list[dict[str, object]]:
    """Every user with their role and location references."""
    out: list[dict[str, object]] = []
    for row in conn.execute(sa.select(dashboard_users).order_by(dashboard_users.c.email)).mappings():
        refs = conn.execute(
            sa.select(partners.c.slug, locations.c.external_id)
            .join(locations, locations.c.partner_id == partners.c.id)
            .join(dashboard_user_locations, dashboard_user_locations.c.location_id == locations.c.id)
            .where(dashboard_user_locations.c.user_id == row["id"])
            .order_by(partners.c.slug, locations.c.external_id)
        ).all()
        out.append(
            {
                "id": row["id"],
                "email": row["email"],
                "role": row["role"],
                "locations": [f"{r.slug}/{r.external_id}" for r in refs],
                "disabled": row["disabled_at"] is not None,
            }
        )
    return out
