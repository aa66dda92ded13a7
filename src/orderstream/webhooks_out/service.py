"""Use cases of outbound webhooks: endpoints, recording events with their deliveries, replay and the events feed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from orderstream.config import Settings
from orderstream.db import utcnow
from orderstream.ids import new_id
from orderstream.jobs.outbox import enqueue
from orderstream.prepared import Prepared
from orderstream.webhooks_out.domain import EVENT_TYPES, DeliveryState, Health, Outcome, evaluate_health, event_body
from orderstream.webhooks_out.models import (
    outbound_event_counters,
    outbound_events,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoint_secrets,
    webhook_endpoints,
)
from orderstream.webhooks_out.signing import new_endpoint_secret
from orderstream.webhooks_out.ssrf import Resolver, TargetRefused, check_url_syntax, resolve_target

DELIVER_KIND = "webhooks.deliver"
# The job only wakes the delivery; the delivery row keeps its own schedule, so the job may be
# retried (waiting for a cool-down or the next slot) many more times than there are sends.
DELIVER_JOB_MAX_ATTEMPTS = 1000
PAGE_MAX = 500


class WebhooksError(Exception):
    """A request about webhooks that cannot be carried out; status is the HTTP status to answer."""

    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# --- endpoints ------------------------------------------------------------------------------------


def _check_event_types(event_types: list[str]) -> list[str]:
    cleaned: list[str] = []
    for event_type in event_types:
        event_type = event_type.strip()
        if event_type not in EVENT_TYPES:
            raise WebhooksError(
                "unknown_event_type", f"unknown event type {event_type!r}; known: {', '.join(EVENT_TYPES)}", status=422
            )
        if event_type not in cleaned:
            cleaned.append(event_type)
    if not cleaned:
        raise WebhooksError("no_event_types", "subscribe to at least one event type", status=422)
    return cleaned


def check_target(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> None:
    """Refuse a URL that is not http(s) or whose host resolves to a private, loopback or other internal address."""
    try:
        check_url_syntax(url)
        resolve_target(url, allow_private=allow_private, resolver=resolver)
    except TargetRefused as exc:
        raise WebhooksError(f"url_{exc.code}", str(exc), status=422) from exc


def endpoint_dict(row: RowMapping, *, now: datetime | None = None) -> dict[str, Any]:
    """An endpoint as the API and the CLI show it (never its secrets)."""
    now = now or utcnow()
    paused = row["paused_until"] is not None and row["paused_until"] > now
    return {
        "id": row["id"],
        "url": row["url"],
        "description": row["description"],
        "event_types": list(row["event_types"]),
        "status": "paused" if row["status"] == "enabled" and paused else row["status"],
        "disabled_reason": row["disabled_reason"],
        "paused_until": row["paused_until"].isoformat() if paused else None,
        "last_success_at": row["last_success_at"].isoformat() if row["last_success_at"] else None,
        "last_failure_at": row["last_failure_at"].isoformat() if row["last_failure_at"] else None,
        "consecutive_failures": row["consecutive_failures"],
        "created_at": row["created_at"].isoformat(),
    }


def create_endpoint(
    conn: Connection,
    *,
    partner_id: int,
    url: str,
    event_types: list[str],
    description: str | None = None,
    allow_private: bool,
    resolver: Resolver | None = None,
) -> tuple[dict[str, Any], str]:
    """Add an endpoint for a partner; returns it with the only copy of its first signing secret."""
    types = _check_event_types(event_types)
    check_target(url, allow_private=allow_private, resolver=resolver)
    now = utcnow()
    endpoint_id = new_id("we")
    conn.execute(
        sa.insert(webhook_endpoints).values(
            id=endpoint_id,
            partner_id=partner_id,
            url=url,
            description=description,
            event_types=types,
            status="enabled",
            consecutive_failures=0,
            created_at=now,
            updated_at=now,
        )
    )
    secret = new_endpoint_secret()
    conn.execute(sa.insert(webhook_endpoint_secrets).values(endpoint_id=endpoint_id, secret=secret, created_at=now))
    return endpoint_dict(get_endpoint_row(conn, endpoint_id=endpoint_id)), secret


def get_endpoint_row(conn: Connection, *, endpoint_id: str, partner_id: int | None = None) -> RowMapping:
    """The endpoint, or a 404 WebhooksError (also for another partner's endpoint)."""
    stmt = sa.select(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id)
    if partner_id is not None:
        stmt = stmt.where(webhook_endpoints.c.partner_id == partner_id)
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise WebhooksError("endpoint_not_found", f"no webhook endpoint {endpoint_id}", status=404)
    return row


def list_endpoints(conn: Connection, *, partner_id: int | None = None) -> list[dict[str, Any]]:
    """Every endpoint, or a partner's, oldest first."""
    stmt = sa.select(webhook_endpoints).order_by(webhook_endpoints.c.created_at, webhook_endpoints.c.id)
    if partner_id is not None:
        stmt = stmt.where(webhook_endpoints.c.partner_id == partner_id)
    now = utcnow()
    return [endpoint_dict(r, now=now) for r in conn.execute(stmt).mappings()]


def update_endpoint(
    conn: Connection,
    *,
    endpoint_id: str,
    partner_id: int | None = None,
    url: str | None = None,
    event_types: list[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
    allow_private: bool,
    resolver: Resolver | None = None,
) -> dict[str, Any]:
    """Change an endpoint; enabling it again clears the disable reason, the pause and the health window."""
    row = get_endpoint_row(conn, endpoint_id=endpoint_id, partner_id=partner_id)
    # the same lock order as a worker settling a delivery (partner stream, then endpoint and deliveries)
    lock_partner_stream(conn, partner_id=row["partner_id"])
    now = utcnow()
    values: dict[str, Any] = {}
    if url is not None:
        check_target(url, allow_private=allow_private, resolver=resolver)
        values["url"] = url
    if event_types is not None:
        values["event_types"] = _check_event_types(event_types)
    if description is not None:
        values["description"] = description
    if enabled is True:
        values.update(
            status="enabled", disabled_reason=None, paused_until=None, health_since=now, consecutive_failures=0
        )
    elif enabled is False and row["status"] != "disabled":
        values.update(status="disabled", disabled_reason="disabled by request")
    if values:
        conn.execute(
            sa.update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(updated_at=now, **values)
        )
        if values.get("status") == "disabled":
            fail_pending_deliveries(conn, endpoint_id=endpoint_id, reason="endpoint disabled by request")
    return endpoint_dict(get_endpoint_row(conn, endpoint_id=endpoint_id), now=now)


def delete_endpoint(conn: Connection, *, endpoint_id: str, partner_id: int | None = None) -> None:
    """Remove an endpoint with its secrets, deliveries and attempts (the events stay in the feed)."""
    row = get_endpoint_row(conn, endpoint_id=endpoint_id, partner_id=partner_id)
    lock_partner_stream(conn, partner_id=row["partner_id"])
    conn.execute(sa.delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))


def active_endpoint_secrets(conn: Connection, *, endpoint_id: str, now: datetime | None = None) -> list[str]:
    """The endpoint's secrets to sign with, newest first: the current one and those still in their overlap."""
    now = now or utcnow()
    return list(
        conn.execute(
            sa.select(webhook_endpoint_secrets.c.secret)
            .where(webhook_endpoint_secrets.c.endpoint_id == endpoint_id)
            .where(sa.or_(webhook_endpoint_secrets.c.expires_at.is_(None), webhook_endpoint_secrets.c.expires_at > now))
            .order_by(webhook_endpoint_secrets.c.id.desc())
        ).scalars()
    )


def rotate_endpoint_secret(
    conn: Connection,
    *,
    endpoint_id: str,
    partner_id: int | None = None,
    overlap: timedelta = timedelta(hours=24),
    now: datetime | None = None,
) -> dict[str, Any]:
    """Issue a new secret; until the overlap ends every webhook carries signatures with the old and the new one."""
    now = now or utcnow()
    get_endpoint_row(conn, endpoint_id=endpoint_id, partner_id=partner_id)
    ends = now + overlap
    # rotating again inside an overlap shortens (never lengthens) the life of the older secrets
    conn.execute(
        sa.update(webhook_endpoint_secrets)
        .where(webhook_endpoint_secrets.c.endpoint_id == endpoint_id)
        .where(sa.or_(webhook_endpoint_secrets.c.expires_at.is_(None), webhook_endpoint_secrets.c.expires_at > ends))
        .values(expires_at=ends)
    )
    secret = new_endpoint_secret()
    conn.execute(sa.insert(webhook_endpoint_secrets).values(endpoint_id=endpoint_id, secret=secret, created_at=now))
    return {"endpoint_id": endpoint_id, "secret": secret, "previous_secrets_valid_until": ends.isoformat()}


# --- events and deliveries ------------------------------------------------------------------------


def _next_sequence_statement(postgres: bool) -> Any:
    """Take the partner's next event sequence (parameter `partner_id`); named explicitly, so it also works as a CTE."""
    insert: Any = postgresql.insert if postgres else sqlite.insert
    partner = sa.bindparam("partner_id", type_=outbound_event_counters.c.partner_id.type)
    return (
        insert(outbound_event_counters)
        .values(partner_id=partner, last_sequence=1)
        .on_conflict_do_update(
            index_elements=["partner_id"],
            set_={"last_sequence": outbound_event_counters.c.last_sequence + 1},
        )
        .returning(outbound_event_counters.c.last_sequence)
    )


# prebuilt statements of record_event, values passed apart (built per event they cost more than they run)
_SQLITE_NEXT_SEQUENCE = _next_sequence_statement(False)  # PostgreSQL takes it inside _PG_RECORD_EVENT
_INSERT_EVENT = sa.insert(outbound_events)
_SELECT_ENABLED_ENDPOINTS = (
    sa.select(webhook_endpoints.c.id, webhook_endpoints.c.event_types)
    .where(webhook_endpoints.c.partner_id == sa.bindparam("b_partner_id", type_=webhook_endpoints.c.partner_id.type))
    .where(webhook_endpoints.c.status == "enabled")
    .order_by(webhook_endpoints.c.id)
)


def _pg_record_statement() -> Any:
    """PostgreSQL: the partner's next sequence, the event with it, and the partner's enabled endpoints, at once."""
    partner = sa.bindparam("partner_id", type_=outbound_event_counters.c.partner_id.type)
    counter = _next_sequence_statement(True).cte("next_sequence")
    names = ("id", "partner_id", "order_id", "type", "body", "created_at")
    event = (
        sa.insert(outbound_events)
        .from_select(
            [*names, "sequence"],
            sa.select(*(sa.bindparam(n, type_=outbound_events.c[n].type) for n in names), counter.c.last_sequence),
        )
        .returning(outbound_events.c.sequence)
        .cte("new_event")
    )
    endpoint = sa.func.jsonb_build_array(webhook_endpoints.c.id, webhook_endpoints.c.event_types)
    endpoints = (
        sa.select(sa.func.jsonb_agg(postgresql.aggregate_order_by(endpoint, webhook_endpoints.c.id)))
        .where(webhook_endpoints.c.partner_id == partner, webhook_endpoints.c.status == "enabled")
        .scalar_subquery()
    )
    return sa.select(event.c.sequence, endpoints.label("endpoints"))


_PG_RECORD_EVENT = Prepared(_pg_record_statement())


def _sqlite_next_sequence(conn: Connection, *, partner_id: int) -> int:
    """Take the partner's next event sequence (SQLite; PostgreSQL's is part of _PG_RECORD_EVENT)."""
    return int(conn.execute(_SQLITE_NEXT_SEQUENCE, {"partner_id": partner_id}).scalar_one())


def lock_partner_stream(conn: Connection, *, partner_id: int) -> None:
    """Serialize with event creation for this partner (PostgreSQL row lock; SQLite writes are serial anyway).

    Recording an event and finishing a delivery both hold this lock, so the one that finishes a
    delivery always sees every sibling created before it, and a new delivery always sees its older
    sibling's final state: no delivery waits for a wake-up that never comes.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.select(outbound_event_counters.c.partner_id)
            .where(outbound_event_counters.c.partner_id == partner_id)
            .with_for_update()
        )


def _pair_filter(endpoint_id: str, order_id: str | None) -> Any:
    order_cond = (
        webhook_deliveries.c.order_id.is_(None) if order_id is None else webhook_deliveries.c.order_id == order_id
    )
    return sa.and_(webhook_deliveries.c.endpoint_id == endpoint_id, order_cond)


def has_older_pending(conn: Connection, *, delivery: RowMapping) -> bool:
    """True when an older delivery of the same (endpoint, order) is still pending: this one must wait for it."""
    return (
        conn.execute(
            sa.select(webhook_deliveries.c.id)
            .where(_pair_filter(delivery["endpoint_id"], delivery["order_id"]))
            .where(webhook_deliveries.c.sequence < delivery["sequence"])
            .where(webhook_deliveries.c.status == DeliveryState.PENDING.value)
            .limit(1)
        ).first()
        is not None
    )


def enqueue_delivery(conn: Connection, *, delivery_id: str, run_at: datetime | None = None) -> None:
    """Write the job that sends a delivery (in the caller's transaction)."""
    enqueue(
        conn,
        kind=DELIVER_KIND,
        payload={"delivery_id": delivery_id},
        run_at=run_at,
        max_attempts=DELIVER_JOB_MAX_ATTEMPTS,
    )


def wake_next(conn: Connection, *, endpoint_id: str, order_id: str | None) -> str | None:
    """After a delivery of (endpoint, order) finished, queue the oldest pending one of the pair, if any."""
    row = (
        conn.execute(
            sa.select(webhook_deliveries.c.id, webhook_deliveries.c.next_attempt_at)
            .where(_pair_filter(endpoint_id, order_id))
            .where(webhook_deliveries.c.status == DeliveryState.PENDING.value)
            .order_by(webhook_deliveries.c.sequence)
            .limit(1)
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    enqueue_delivery(conn, delivery_id=row["id"], run_at=row["next_attempt_at"])
    return str(row["id"])


def record_event(
    conn: Connection,
    *,
    partner_id: int,
    order_id: str | None,
    event_type: str,
    obj: dict[str, Any],
    at: datetime | None = None,
) -> str:
    """Store an event, and a delivery plus its job for every enabled endpoint subscribed to its type.

    Runs in the caller's transaction (the one that changed the order), so the event exists if and
    only if the change does. Returns the event id, which is the webhook-id of every delivery.
    """
    now = at or utcnow()
    event_id = new_id("evt")
    values = {
        "id": event_id,
        "partner_id": partner_id,
        "order_id": order_id,
        "type": event_type,
        "body": event_body(event_id=event_id, event_type=event_type, created_at=now, obj=obj),
        "created_at": now,
    }
    if conn.dialect.name == "postgresql":

        def _recorded(_count: int, rows: list[dict[str, Any]]) -> None:
            row = rows[0]  # an INSERT ... SELECT of one row
            endpoints = [(str(endpoint_id), types) for endpoint_id, types in row["endpoints"] or []]
            _add_deliveries(conn, event=values, event_type=event_type, sequence=int(row["sequence"]), to=endpoints)

        # inside prepared.deferred_writes() it goes to the database with the transaction's other writes
        _PG_RECORD_EVENT.defer(conn, values, then=_recorded)
        return event_id
    sequence = _sqlite_next_sequence(conn, partner_id=partner_id)
    conn.execute(_INSERT_EVENT, {**values, "sequence": sequence})
    found = conn.execute(_SELECT_ENABLED_ENDPOINTS, {"b_partner_id": partner_id}).all()
    _add_deliveries(conn, event=values, event_type=event_type, sequence=sequence, to=[tuple(row) for row in found])
    return event_id


def _add_deliveries(
    conn: Connection, *, event: dict[str, Any], event_type: str, sequence: int, to: list[tuple[str, list[str]]]
) -> None:
    """A delivery of the event for each endpoint (id, event types) subscribed to its type, with its job when due."""
    now = event["created_at"]
    for endpoint_id, event_types in to:
        if event_type not in event_types:
            continue
        delivery_id = new_id("whd")
        conn.execute(
            sa.insert(webhook_deliveries).values(
                id=delivery_id,
                event_id=event["id"],
                endpoint_id=endpoint_id,
                partner_id=event["partner_id"],
                order_id=event["order_id"],
                sequence=sequence,
                status=DeliveryState.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        delivery = (
            conn.execute(sa.select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)).mappings().one()
        )
        if not has_older_pending(conn, delivery=delivery):
            enqueue_delivery(conn, delivery_id=delivery_id)


def fail_pending_deliveries(conn: Connection, *, endpoint_id: str, reason: str) -> int:
    """Mark every pending delivery of an endpoint failed (it was disabled); they can be replayed later."""
    now = utcnow()
    result = conn.execute(
        sa.update(webhook_deliveries)
        .where(webhook_deliveries.c.endpoint_id == endpoint_id)
        .where(webhook_deliveries.c.status == DeliveryState.PENDING.value)
        .values(
            status=DeliveryState.FAILED.value,
            last_error=reason,
            next_attempt_at=None,
            claimed_until=None,
            claimed_by=None,
            updated_at=now,
            completed_at=now,
        )
    )
    return int(result.rowcount or 0)


@dataclass(frozen=True)
class EndpointHealth:
    """An endpoint's attempts and failed attempts over a window, and the verdict they give."""

    attempts: int
    failed: int
    verdict: Health


def endpoint_health(conn: Connection, *, endpoint_id: str, since: datetime, settings: Settings) -> EndpointHealth:
    """Count the endpoint's attempts (and the ones that did not succeed) since `since` and judge them."""
    counts = (
        conn.execute(
            sa.select(
                sa.func.count().label("total"),
                sa.func.count().filter(webhook_attempts.c.outcome != Outcome.SUCCEEDED.value).label("failed"),
            ).where(webhook_attempts.c.endpoint_id == endpoint_id, webhook_attempts.c.started_at >= since)
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
    return EndpointHealth(attempts=total, failed=failed, verdict=verdict)


def delivery_dict(row: RowMapping) -> dict[str, Any]:
    """A delivery as the API and the CLI show it."""
    return {
        "id": row["id"],
        "event_id": row["event_id"],
        "event_type": row.get("type"),
        "endpoint_id": row["endpoint_id"],
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": row["next_attempt_at"].isoformat() if row["next_attempt_at"] else None,
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "created_at": row["created_at"].isoformat(),
        "completed_at": row["completed_at"].isoformat() if row["completed_at"] else None,
    }


def attempt_dict(row: RowMapping) -> dict[str, Any]:
    """An attempt as the API and the CLI show it."""
    return {
        "number": row["number"],
        "started_at": row["started_at"].isoformat(),
        "url": row["url"],
        "address": row["address"],
        "request_headers": row["request_headers"],
        "response_status": row["response_status"],
        "response_headers": row["response_headers"],
        "response_excerpt": row["response_excerpt"],
        "duration_ms": row["duration_ms"],
        "outcome": row["outcome"],
        "error": row["error"],
    }


def _deliveries_select() -> Any:
    return sa.select(webhook_deliveries, outbound_events.c.type).join(
        outbound_events, outbound_events.c.id == webhook_deliveries.c.event_id
    )


def list_deliveries(
    conn: Connection,
    *,
    partner_id: int | None = None,
    endpoint_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries, newest first, filtered."""
    stmt = _deliveries_select()
    if partner_id is not None:
        stmt = stmt.where(webhook_deliveries.c.partner_id == partner_id)
    if endpoint_id is not None:
        stmt = stmt.where(webhook_deliveries.c.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(webhook_deliveries.c.status == status)
    if since is not None:
        stmt = stmt.where(webhook_deliveries.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(webhook_deliveries.c.created_at < until)
    stmt = stmt.order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id.desc()).limit(
        max(1, min(limit, PAGE_MAX))
    )
    return [delivery_dict(r) for r in conn.execute(stmt).mappings()]


def get_delivery(conn: Connection, *, delivery_id: str, partner_id: int | None = None) -> dict[str, Any]:
    """One delivery with its attempts, or a 404 WebhooksError (also for another partner's)."""
    stmt = _deliveries_select().where(webhook_deliveries.c.id == delivery_id)
    if partner_id is not None:
        stmt = stmt.where(webhook_deliveries.c.partner_id == partner_id)
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise WebhooksError("delivery_not_found", f"no webhook delivery {delivery_id}", status=404)
    attempts = conn.execute(
        sa.select(webhook_attempts).where(webhook_attempts.c.delivery_id == delivery_id).order_by(webhook_attempts.c.id)
    ).mappings()
    return {**delivery_dict(row), "attempt_log": [attempt_dict(a) for a in attempts]}


def order_deliveries(conn: Connection, *, order_id: str, partner_id: int) -> list[dict[str, Any]]:
    """Every delivery of one order of the partner, in stream order, each with its attempts (two queries)."""
    stmt = (
        _deliveries_select()
        .where(webhook_deliveries.c.order_id == order_id, webhook_deliveries.c.partner_id == partner_id)
        .order_by(webhook_deliveries.c.sequence, webhook_deliveries.c.id)
    )
    deliveries = [delivery_dict(r) for r in conn.execute(stmt).mappings()]
    if not deliveries:
        return []
    logs: dict[str, list[dict[str, Any]]] = {d["id"]: [] for d in deliveries}
    attempts = conn.execute(
        sa.select(webhook_attempts)
        .where(webhook_attempts.c.delivery_id.in_(list(logs)))
        .order_by(webhook_attempts.c.id)
    ).mappings()
    for attempt in attempts:
        logs[attempt["delivery_id"]].append(attempt_dict(attempt))
    return [{**d, "attempt_log": logs[d["id"]]} for d in deliveries]


def _requeue(conn: Connection, *, delivery: RowMapping, now: datetime) -> None:
    conn.execute(
        sa.update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery["id"])
        .values(
            status=DeliveryState.PENDING.value,
            attempts=0,  # a replay gets the whole retry schedule again
            next_attempt_at=now,
            claimed_until=None,
            claimed_by=None,
            completed_at=None,
            updated_at=now,
        )
    )


def replay_delivery(conn: Connection, *, delivery_id: str, partner_id: int | None = None) -> dict[str, Any]:
    """Send a delivery again (same event, same webhook-id), after any older pending one of its order."""
    stmt = sa.select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
    if partner_id is not None:
        stmt = stmt.where(webhook_deliveries.c.partner_id == partner_id)
    delivery = conn.execute(stmt).mappings().first()
    if delivery is None:
        raise WebhooksError("delivery_not_found", f"no webhook delivery {delivery_id}", status=404)
    lock_partner_stream(conn, partner_id=delivery["partner_id"])
    endpoint = get_endpoint_row(conn, endpoint_id=delivery["endpoint_id"])
    if endpoint["status"] != "enabled":
        raise WebhooksError("endpoint_disabled", "the endpoint is disabled; enable it before replaying", status=409)
    if delivery["status"] == DeliveryState.PENDING.value:
        raise WebhooksError("delivery_pending", "the delivery is still pending; it will be sent", status=409)
    now = utcnow()
    _requeue(conn, delivery=delivery, now=now)
    fresh = conn.execute(sa.select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)).mappings().one()
    if not has_older_pending(conn, delivery=fresh):
        enqueue_delivery(conn, delivery_id=delivery_id)
    return get_delivery(conn, delivery_id=delivery_id)


@dataclass(frozen=True)
class ReplayResult:
    """What a bulk replay did."""

    replayed: list[str]
    superseded: list[str]  # a newer delivery of the same order already succeeded: resending would go back in time
    endpoint_disabled: list[str]

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-able counts and ids."""
        return {
            "replayed": len(self.replayed),
            "skipped_superseded": len(self.superseded),
            "skipped_endpoint_disabled": len(self.endpoint_disabled),
            "delivery_ids": self.replayed,
        }


def replay_failed(
    conn: Connection,
    *,
    partner_id: int,
    since: datetime,
    until: datetime,
    endpoint_id: str | None = None,
) -> ReplayResult:
    """Send again every failed delivery of a partner created in [since, until), oldest first, in order per order."""
    lock_partner_stream(conn, partner_id=partner_id)
    stmt = (
        sa.select(webhook_deliveries)
        .where(webhook_deliveries.c.partner_id == partner_id)
        .where(webhook_deliveries.c.status == DeliveryState.FAILED.value)
        .where(webhook_deliveries.c.created_at >= since)
        .where(webhook_deliveries.c.created_at < until)
        .order_by(webhook_deliveries.c.sequence)
    )
    if endpoint_id is not None:
        stmt = stmt.where(webhook_deliveries.c.endpoint_id == endpoint_id)
    enabled = {
        r[0]
        for r in conn.execute(
            sa.select(webhook_endpoints.c.id)
            .where(webhook_endpoints.c.partner_id == partner_id)
            .where(webhook_endpoints.c.status == "enabled")
        )
    }
    now = utcnow()
    replayed: list[str] = []
    superseded: list[str] = []
    disabled: list[str] = []
    for delivery in list(conn.execute(stmt).mappings()):
        if delivery["endpoint_id"] not in enabled:
            disabled.append(delivery["id"])
            continue
        newer_succeeded = conn.execute(
            sa.select(webhook_deliveries.c.id)
            .where(_pair_filter(delivery["endpoint_id"], delivery["order_id"]))
            .where(webhook_deliveries.c.sequence > delivery["sequence"])
            .where(webhook_deliveries.c.status == DeliveryState.SUCCEEDED.value)
            .limit(1)
        ).first()
        if newer_succeeded is not None:
            superseded.append(delivery["id"])
            continue
        _requeue(conn, delivery=delivery, now=now)
        replayed.append(delivery["id"])
    for delivery_id in replayed:
        fresh = (
            conn.execute(sa.select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)).mappings().one()
        )
        if not has_older_pending(conn, delivery=fresh):
            enqueue_delivery(conn, delivery_id=delivery_id)
    return ReplayResult(replayed=replayed, superseded=superseded, endpoint_disabled=disabled)


# --- the polling feed -----------------------------------------------------------------------------


def list_events(conn: Connection, *, partner_id: int, after: int = 0, limit: int = 100) -> dict[str, Any]:
    """The partner's events with a sequence above `after`, in order: the same bodies the webhooks carry."""
    limit = max(1, min(limit, PAGE_MAX))
    rows = list(
        conn.execute(
            sa.select(outbound_events.c.sequence, outbound_events.c.body)
            .where(outbound_events.c.partner_id == partner_id)
            .where(outbound_events.c.sequence > after)
            .order_by(outbound_events.c.sequence)
            .limit(limit + 1)
        ).mappings()
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    data = [{"sequence": r["sequence"], **json.loads(r["body"])} for r in rows]
    next_cursor = str(rows[-1]["sequence"]) if rows else str(after)
    return {"data": data, "next_cursor": next_cursor, "has_more": has_more}
