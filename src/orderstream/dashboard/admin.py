"""Admin reads and writes: partners with their secrets, API keys, outbound endpoint health, dead jobs."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.config import Settings
from orderstream.db import utcnow
from orderstream.tenancy.models import api_keys, partner_secrets, partners
from orderstream.webhooks_out import service as webhooks_service
from orderstream.webhooks_out.domain import Outcome, evaluate_health
from orderstream.webhooks_out.models import webhook_attempts, webhook_endpoints


def _without_partner(row: Any) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "partner_id"}


def partners_overview(conn: Connection, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every partner with its secrets (never their values) and API keys (prefix only)."""
    now = now or utcnow()
    # three queries whatever the number of partners
    secrets: dict[int, list[dict[str, Any]]] = defaultdict(list)
    stmt = sa.select(
        partner_secrets.c.partner_id, partner_secrets.c.id, partner_secrets.c.created_at, partner_secrets.c.expires_at
    ).order_by(partner_secrets.c.id.desc())
    for row in conn.execute(stmt).mappings():
        secret = _without_partner(row)
        secrets[row["partner_id"]].append({**secret, "state": secret_state(row["expires_at"], now)})
    keys: dict[int, list[dict[str, Any]]] = defaultdict(list)
    stmt = sa.select(
        api_keys.c.partner_id,
        api_keys.c.id,
        api_keys.c.prefix,
        api_keys.c.name,
        api_keys.c.created_at,
        api_keys.c.revoked_at,
    ).order_by(api_keys.c.id.desc())
    for row in conn.execute(stmt).mappings():
        keys[row["partner_id"]].append(_without_partner(row))
    return [
        {"partner": partner, "secrets": secrets[partner["id"]], "api_keys": keys[partner["id"]]}
        for partner in conn.execute(sa.select(partners).order_by(partners.c.slug)).mappings()
    ]


def secret_state(expires_at: datetime | None, now: datetime) -> str:
    """current, overlap (an older secret still accepted until expires_at) or expired."""
    if expires_at is None:
        return "current"
    return "overlap" if expires_at > now else "expired"


def revoke_api_key(conn: Connection, *, key_id: int, now: datetime | None = None) -> bool:
    """Revoke a key at once; False when it does not exist or was already revoked."""
    result = conn.execute(
        sa.update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
    return bool(result.rowcount)


def endpoints_health(conn: Connection, *, settings: Settings, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every outbound endpoint with its failure rate over the health window and the verdict it gives."""
    now = now or utcnow()
    since = now - timedelta(seconds=settings.webhook_health_window_seconds)
    rows = conn.execute(
        sa.select(webhook_endpoints, partners.c.slug.label("partner_slug"))
        .join(partners, partners.c.id == webhook_endpoints.c.partner_id)
        .order_by(partners.c.slug, webhook_endpoints.c.created_at)
    ).mappings()
    out = []
    for row in rows:
        endpoint = {**webhooks_service.endpoint_dict(row, now=now), "partner": row["partner_slug"]}
        counts = (
            conn.execute(
                sa.select(
                    sa.func.count().label("total"),
                    sa.func.count().filter(webhook_attempts.c.outcome != Outcome.SUCCEEDED.value).label("failed"),
                ).where(webhook_attempts.c.endpoint_id == endpoint["id"], webhook_attempts.c.started_at >= since)
            )
            .mappings()
            .one()
        )
        total, failed = int(counts["total"]), int(counts["failed"])
        verdict = evaluate_health(
            attempts=total,
            failures=failed,
            min_attempts=settings.webhook_health_min_attempts,
            alert_rate=settings.webhook_alert_failure_rate,
            pause_rate=settings.webhook_pause_failure_rate,
        )
        out.append({**endpoint, "attempts_in_window": total, "failed_in_window": failed, "health": verdict.value})
    return out
