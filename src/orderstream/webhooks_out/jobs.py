"""Worker entry point of outbound webhooks: send one delivery, record the attempt, schedule the next step."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from orderstream import __version__
from orderstream.config import Settings
from orderstream.db import utcnow
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry, RetryableError, RetryPolicy
from orderstream.metrics import WEBHOOK_ATTEMPTS
from orderstream.webhooks_out import sender
from orderstream.webhooks_out.domain import (
    DeliveryState,
    Health,
    Outcome,
    RetrySchedule,
    classify,
    parse_retry_after,
)
from orderstream.webhooks_out.models import outbound_events, webhook_attempts, webhook_deliveries, webhook_endpoints
from orderstream.webhooks_out.service import (
    DELIVER_KIND,
    active_endpoint_secrets,
    endpoint_health,
    fail_pending_deliveries,
    has_older_pending,
    lock_partner_stream,
    wake_next,
)
from orderstream.webhooks_out.signing import signature_headers
from orderstream.webhooks_out.ssrf import Resolver

log = logging.getLogger("orderstream.webhooks_out")

USER_AGENT = f"orderstream-webhooks/{__version__}"


def retry_schedule(settings: Settings) -> RetrySchedule:
    """The delivery retry schedule under these settings."""
    return RetrySchedule(scale=settings.webhook_retry_scale, jitter=settings.webhook_retry_jitter)


def claim_seconds(settings: Settings) -> float:
    """How long one attempt holds its delivery: the request timeout plus room to record the result."""
    return settings.webhook_timeout_seconds + 20.0


@dataclass(frozen=True)
class _Send:
    """Everything needed to make one attempt, read in the claiming transaction."""

    delivery_id: str
    endpoint_id: str
    partner_id: int
    order_id: str | None
    url: str
    event_id: str
    body: bytes
    secrets: list[str]
    attempts: int


def _load(conn: Connection, delivery_id: str) -> RowMapping | None:
    return conn.execute(sa.select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)).mappings().first()


def _finish(conn: Connection, *, delivery: RowMapping, state: DeliveryState, error: str | None, now: datetime) -> None:
    conn.execute(
        sa.update(webhook_deliveries)
        .where(webhook_deliveries.c.id == delivery["id"])
        .values(
            status=state.value,
            last_error=error,
            next_attempt_at=None,
            claimed_until=None,
            claimed_by=None,
            updated_at=now,
            completed_at=now,
        )
    )
    wake_next(conn, endpoint_id=delivery["endpoint_id"], order_id=delivery["order_id"])


def _claim(ctx: JobContext, delivery_id: str) -> _Send | float | None:
    """Claim the delivery for one attempt; a float is seconds to wait first, None means nothing to do."""
    with ctx.db.write() as conn:
        first = _load(conn, delivery_id)
        if first is None:
            return None
        lock_partner_stream(conn, partner_id=first["partner_id"])
        delivery = _load(conn, delivery_id)
        if delivery is None or delivery["status"] != DeliveryState.PENDING.value:
            return None
        now = utcnow()
        endpoint = (
            conn.execute(sa.select(webhook_endpoints).where(webhook_endpoints.c.id == delivery["endpoint_id"]))
            .mappings()
            .one()
        )
        if endpoint["status"] != "enabled":
            _finish(conn, delivery=delivery, state=DeliveryState.FAILED, error="endpoint disabled", now=now)
            return None
        if has_older_pending(conn, delivery=delivery):
            return None  # the older delivery wakes this one when it is done
        claimed = delivery["claimed_until"] is not None and delivery["claimed_until"] > now
        if claimed and delivery["claimed_by"] != str(ctx.job_id):
            # another job's attempt is in flight; look again when its claim ends, in case its worker died
            return max(0.5, float((delivery["claimed_until"] - now).total_seconds()))
        waits: list[float] = [
            (t - now).total_seconds()
            for t in (endpoint["paused_until"], delivery["next_attempt_at"])
            if t is not None and t > now
        ]
        if waits:
            return max(waits)
        secrets = active_endpoint_secrets(conn, endpoint_id=endpoint["id"], now=now)
        body = conn.execute(
            sa.select(outbound_events.c.body).where(outbound_events.c.id == delivery["event_id"])
        ).scalar_one()
        conn.execute(
            sa.update(webhook_deliveries)
            .where(webhook_deliveries.c.id == delivery_id)
            .values(
                claimed_until=now + timedelta(seconds=claim_seconds(ctx.settings)),
                claimed_by=str(ctx.job_id),
                updated_at=now,
            )
        )
        return _Send(
            delivery_id=delivery_id,
            endpoint_id=endpoint["id"],
            partner_id=delivery["partner_id"],
            order_id=delivery["order_id"],
            url=endpoint["url"],
            event_id=delivery["event_id"],
            body=body.encode("utf-8"),
            secrets=secrets,
            attempts=delivery["attempts"],
        )


def _update_health(conn: Connection, *, endpoint: RowMapping, now: datetime, settings: Settings) -> None:
    """Pause the endpoint for the cool-down past the pause rate; log an alert past the alert rate."""
    since = now - timedelta(seconds=settings.webhook_health_window_seconds)
    if endpoint["health_since"] is not None and endpoint["health_since"] > since:
        since = endpoint["health_since"]
    health = endpoint_health(conn, endpoint_id=endpoint["id"], since=since, settings=settings)
    total, failed, verdict = health.attempts, health.failed, health.verdict
    facts = {"endpoint_id": endpoint["id"], "partner_id": endpoint["partner_id"], "attempts": total, "failed": failed}
    if verdict is Health.PAUSE:
        until = now + timedelta(seconds=settings.webhook_pause_seconds)
        conn.execute(
            sa.update(webhook_endpoints)
            .where(webhook_endpoints.c.id == endpoint["id"])
            .values(paused_until=until, health_since=until, alerted_at=now, updated_at=now)
        )
        log.error(
            "webhook endpoint paused: failure rate %d/%d; resumes at %s",
            failed,
            total,
            until.isoformat(),
            extra={"event": "webhook_endpoint_paused", "paused_until": until.isoformat(), **facts},
        )
    elif verdict is Health.ALERT and (endpoint["alerted_at"] is None or endpoint["alerted_at"] < since):
        conn.execute(
            sa.update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint["id"]).values(alerted_at=now)
        )
        log.warning(
            "webhook endpoint failing: failure rate %d/%d",
            failed,
            total,
            extra={"event": "webhook_endpoint_alert", **facts},
        )


def _record(
    ctx: JobContext,
    send: _Send,
    *,
    started_at: datetime,
    request_headers: dict[str, str],
    result: sender.AttemptResult,
) -> float | None:
    """Record the attempt and move the delivery on; returns seconds until a retry, or None when it is settled."""
    settings = ctx.settings
    outcome = classify(result.status_code, error_kind=result.error_kind)
    now = utcnow()
    with ctx.db.write() as conn:
        lock_partner_stream(conn, partner_id=send.partner_id)
        number = (
            int(
                conn.execute(
                    sa.select(sa.func.count()).where(webhook_attempts.c.delivery_id == send.delivery_id)
                ).scalar_one()
            )
            + 1
        )
        conn.execute(
            sa.insert(webhook_attempts).values(
                delivery_id=send.delivery_id,
                endpoint_id=send.endpoint_id,
                number=number,
                started_at=started_at,
                url=send.url,
                address=result.address,
                request_headers=request_headers,
                response_status=result.status_code,
                response_headers=result.response_headers or None,
                response_excerpt=result.excerpt,
                duration_ms=result.duration_ms,
                outcome=outcome.value,
                error=result.error,
            )
        )
        delivery = _load(conn, send.delivery_id)
        endpoint = (
            conn.execute(sa.select(webhook_endpoints).where(webhook_endpoints.c.id == send.endpoint_id))
            .mappings()
            .one()
        )
        if delivery is None:
            return None
        attempts = delivery["attempts"] + 1
        error = result.error or (f"HTTP {result.status_code}" if outcome is not Outcome.SUCCEEDED else None)
        common = {
            "attempts": attempts,
            "last_status_code": result.status_code,
            "claimed_until": None,
            "updated_at": now,
        }
        ok = outcome is Outcome.SUCCEEDED
        conn.execute(
            sa.update(webhook_endpoints)
            .where(webhook_endpoints.c.id == send.endpoint_id)
            .values(
                last_success_at=now if ok else endpoint["last_success_at"],
                last_failure_at=endpoint["last_failure_at"] if ok else now,
                consecutive_failures=0 if ok else endpoint["consecutive_failures"] + 1,
                updated_at=now,
            )
        )
        delay: float | None = None
        if delivery["status"] != DeliveryState.PENDING.value:
            pass  # settled meanwhile (a duplicate run, or the endpoint was disabled): keep its state
        elif ok:
            conn.execute(
                sa.update(webhook_deliveries).where(webhook_deliveries.c.id == send.delivery_id).values(**common)
            )
            _finish(conn, delivery=delivery, state=DeliveryState.SUCCEEDED, error=None, now=now)
        elif outcome is Outcome.GONE:
            conn.execute(
                sa.update(webhook_deliveries).where(webhook_deliveries.c.id == send.delivery_id).values(**common)
            )
            _finish(conn, delivery=delivery, state=DeliveryState.FAILED, error="410 Gone: endpoint disabled", now=now)
            conn.execute(
                sa.update(webhook_endpoints)
                .where(webhook_endpoints.c.id == send.endpoint_id)
                .values(status="disabled", disabled_reason="the endpoint answered 410 Gone", updated_at=now)
            )
            fail_pending_deliveries(conn, endpoint_id=send.endpoint_id, reason="endpoint disabled (410 Gone)")
            log.warning(
                "webhook endpoint disabled: it answered 410 Gone",
                extra={"event": "webhook_endpoint_disabled", "endpoint_id": send.endpoint_id},
            )
        else:
            if outcome is Outcome.RETRY:
                retry_after = (
                    parse_retry_after(result.retry_after, now=now) if result.status_code in (429, 503) else None
                )
                delay = retry_schedule(settings).next_delay(attempts, retry_after=retry_after, rng=random.Random())
            if delay is None:
                conn.execute(
                    sa.update(webhook_deliveries).where(webhook_deliveries.c.id == send.delivery_id).values(**common)
                )
                _finish(conn, delivery=delivery, state=DeliveryState.FAILED, error=error, now=now)
            else:
                conn.execute(
                    sa.update(webhook_deliveries)
                    .where(webhook_deliveries.c.id == send.delivery_id)
                    .values(last_error=error, next_attempt_at=now + timedelta(seconds=delay), **common)
                )
        if outcome is not Outcome.GONE:
            _update_health(conn, endpoint=endpoint, now=now, settings=settings)
    WEBHOOK_ATTEMPTS.labels(outcome.value).inc()
    log.info(
        "webhook attempt",
        extra={
            "event": "webhook_attempt",
            "delivery_id": send.delivery_id,
            "event_id": send.event_id,
            "endpoint_id": send.endpoint_id,
            "attempt": number,
            "status_code": result.status_code,
            "outcome": outcome.value,
            "duration_ms": result.duration_ms,
            "retry_in_s": delay,
        },
    )
    return delay


def deliver(ctx: JobContext) -> None:
    """Job `webhooks.deliver`: one attempt of one delivery, in order behind older deliveries of its order."""
    delivery_id = str(ctx.payload["delivery_id"])
    claimed = _claim(ctx, delivery_id)
    if claimed is None:
        return
    if isinstance(claimed, float):
        raise RetryableError("webhook delivery not due yet", retry_after=claimed)
    send = claimed
    if ctx.lease_lost.is_set():
        return  # another worker now runs this job; it will make the attempt (same claim, same job id)
    settings = ctx.settings
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **signature_headers(send.secrets, msg_id=send.event_id, timestamp=timestamp, body=send.body),
    }
    client: httpx.Client = ctx.services.get("webhooks_http") or sender.default_client()
    resolver: Resolver | None = ctx.services.get("webhooks_resolver")
    started_at = utcnow()
    result = sender.post(
        client,
        url=send.url,
        body=send.body,
        headers=headers,
        timeout=settings.webhook_timeout_seconds,
        allow_private=settings.allow_private_webhook_targets,
        resolver=resolver,
    )
    delay = _record(ctx, send, started_at=started_at, request_headers=headers, result=result)
    if delay is not None:
        raise RetryableError(f"webhook attempt failed: {result.error or result.status_code}", retry_after=delay)


def register_jobs(registry: JobRegistry) -> None:
    """Register the job kinds of outbound webhooks."""
    registry.register(
        JobKind(
            name=DELIVER_KIND,
            handler=deliver,
            # the delivery row keeps the real schedule and passes it as retry_after; this policy only
            # has to keep the job alive long enough (see service.DELIVER_JOB_MAX_ATTEMPTS)
            retry=RetryPolicy(max_attempts=1000, schedule=(1.0,), jitter=0.0),
        )
    )
