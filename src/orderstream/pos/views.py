"""The POS webhook route: `POST /pos/{partner_slug}/webhook` (size, type, signature, rate, JSON, schema, store)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from orderstream import metrics
from orderstream.app_state import settings_of
from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.errors import ApiError, ErrorBody
from orderstream.pos import credentials, mapping, schemas, service, signing
from orderstream.pos.credentials import PartnerAuth, PartnerCache
from orderstream.pos.ratelimit import RateLimiter, retry_after_header
from orderstream.pos.schemas import EventType, InvalidEvent, Problem

router = APIRouter(tags=["pos"])
WEBHOOK_PATH = "/pos/{partner_slug}/webhook"

_state_lock = threading.Lock()


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": 'accepted: `{"accepted": true, "duplicate": false, "order": {...}}`'},
    400: _error("the body is not JSON (or not UTF-8)"),
    401: _error("unknown partner, missing or bad signature, stale webhook-timestamp"),
    404: _error("a status or cancel event for an order we do not have"),
    409: _error("same order id with different content, or an illegal status transition"),
    413: _error("the body is larger than 256 KiB"),
    415: _error("the Content-Type is not JSON"),
    422: _error("schema or meaning errors; details list every problem with its JSON path"),
    429: _error("too many requests for this partner; see Retry-After"),
}


@dataclass
class _PosState:
    limiter: RateLimiter = field(default_factory=RateLimiter)
    partners: PartnerCache = field(default_factory=PartnerCache)


def _state(app: FastAPI) -> _PosState:
    state: _PosState | None = getattr(app.state, "pos", None)
    if state is None:
        with _state_lock:
            state = getattr(app.state, "pos", None)
            if state is None:
                state = app.state.pos = _PosState()
    return state


def check_content_length(headers: Mapping[str, str], limit: int) -> None:
    """413 from the declared length alone, before reading anything."""
    declared = headers.get("content-length")
    if declared is None:
        return
    if not declared.isascii() or not declared.strip().isdigit():
        raise ApiError(400, "invalid_content_length", "Content-Length is not a number")
    if int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes")


def check_content_type(headers: Mapping[str, str]) -> None:
    """415 unless the body is declared as JSON (`application/json` or a `+json` type)."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(415, "unsupported_media_type", "send the event as Content-Type: application/json")


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it grows past the limit (a missing or lying Content-Length changes nothing)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _bad_string(value: Any, path: str) -> Problem | None:
    # NUL and lone surrogates cannot be stored as text (PostgreSQL refuses them), so they are refused here
    if isinstance(value, str):
        if "\x00" in value:
            return Problem(path, "invalid_character", "text must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return Problem(path, "invalid_character", "text must not contain unpaired surrogates")
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            here = schemas.join_path(path, [key])
            if found := _bad_string(key, here) or _bad_string(item, here):
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if found := _bad_string(item, f"{path}[{i}]"):
                return found
    return None


def parse_json(body: bytes) -> tuple[str, Any]:
    """The body as text and as JSON; 400 when it is not UTF-8 JSON, 422 for text we cannot store."""
    try:
        text = body.decode("utf-8")
        data = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {str(err)[:200]}") from err
    if "\\u" in text and (problem := _bad_string(data, "")):
        raise ApiError(422, "validation_error", "the event is not valid", details=[problem.as_dict()])
    return text, data


class _StaleCredentials(Exception):
    """Cached credentials let a request through that the database no longer agrees with."""


@dataclass(frozen=True)
class _Caller:
    partner: PartnerAuth
    verified: signing.Verified
    from_cache: bool
    now: datetime


@contextmanager
def _write(db: Database, caller: _Caller) -> Iterator[Connection]:
    """The request's one write transaction; it first re-checks credentials that came from the cache."""
    with db.write() as conn:
        if caller.from_cache and not credentials.confirm(
            conn, caller.partner, secrets=caller.verified.secrets, now=caller.now
        ):
            raise _StaleCredentials
        yield conn


def _create(
    db: Database, settings: Settings, caller: _Caller, delivery: service.Delivery, order: schemas.OrderIn
) -> service.Outcome:
    """order.created in one write transaction; the credentials re-check also reads the order's location."""
    content_hash, base_url = mapping.content_hash(order), settings.public_base_url
    if order.location_id is None:  # the partner's only location: looked up by create_order
        with _write(db, caller) as conn:
            return service.create_order(conn, delivery, order, content_hash=content_hash, base_url=base_url)
    with db.write() as conn:
        unchanged, location = credentials.confirm_at_location(
            conn, caller.partner, secrets=caller.verified.secrets, now=caller.now, external_id=order.location_id
        )
        if caller.from_cache and not unchanged:
            raise _StaleCredentials
        return service.create_order(
            conn,
            delivery,
            order,
            content_hash=content_hash,
            base_url=base_url,
            known_location=service.KnownLocation(location),
        )


def _apply(db: Database, settings: Settings, caller: _Caller, delivery: service.Delivery) -> service.Outcome:
    envelope = delivery.envelope
    if envelope.event is EventType.ORDER_CREATED:
        order = schemas.validate(schemas.OrderIn, envelope)
        problems = mapping.check_order(
            order, prefix=envelope.prefix, now=delivery.received_at, max_days=settings.requested_for_max_days
        )
        if problems:
            raise InvalidEvent(problems)
        return _create(db, settings, caller, delivery, order)
    if envelope.event in (EventType.ORDER_STATUS_UPDATED, EventType.ORDER_CANCELED):
        change: schemas.StatusUpdateIn | schemas.CancelIn
        if envelope.event is EventType.ORDER_STATUS_UPDATED:
            change = schemas.validate(schemas.StatusUpdateIn, envelope)
        else:
            change = schemas.validate(schemas.CancelIn, envelope)
        with _write(db, caller) as conn:
            return service.change_order_status(conn, delivery, change)
    location = schemas.validate(schemas.LocationStatusIn, envelope)
    with _write(db, caller) as conn:
        return service.update_location_status(conn, delivery, location)


def _verify(
    settings: Settings, partner: PartnerAuth, headers: Mapping[str, str], body: bytes, now: datetime
) -> signing.Verified:
    return signing.verify(
        headers,
        body,
        partner.secrets(now),
        require_standard=partner.require_standard_webhooks,
        now=int(now.timestamp()),
        tolerance=settings.webhook_tolerance_seconds,
    )


def authenticate(app: FastAPI, slug: str, headers: Mapping[str, str], body: bytes, *, use_cache: bool) -> _Caller:
    """The calling partner, or 401. Cached credentials are tried first; on a mismatch the database decides."""
    settings: Settings = app.state.settings
    cache = _state(app).partners
    now = utcnow()
    cached = cache.get(slug) if use_cache else None
    if cached is not None:
        try:
            return _Caller(cached, _verify(settings, cached, headers, body, now), True, now)
        except signing.SignatureError:
            pass  # perhaps a new secret or setting: ask the database
    db: Database = app.state.db
    with db.read() as conn:
        partner = credentials.load_partner(conn, slug=slug, now=now)
    if partner is None:
        cache.evict(slug)
        raise ApiError(401, "unknown_partner", "no partner with this slug")
    cache.put(partner)
    try:
        return _Caller(partner, _verify(settings, partner, headers, body, now), False, now)
    except signing.SignatureError as err:
        raise ApiError(401, err.code, err.message) from err


def _handle(app: FastAPI, slug: str, headers: Mapping[str, str], body: bytes, *, use_cache: bool) -> service.Outcome:
    settings: Settings = app.state.settings
    caller = authenticate(app, slug, headers, body, use_cache=use_cache)
    partner = caller.partner
    per_minute = partner.rate_limit_per_minute or settings.default_rate_limit_per_minute
    wait = _state(app).limiter.acquire(partner.id, per_minute)
    if wait is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"more than {per_minute} requests per minute for this partner",
            headers={"Retry-After": retry_after_header(wait)},
        )
    text, data = parse_json(body)
    try:
        envelope = schemas.unwrap(data)
        delivery = service.Delivery(
            partner=partner, envelope=envelope, raw=text, webhook_id=caller.verified.webhook_id, received_at=caller.now
        )
        return _apply(app.state.db, settings, caller, delivery)
    except InvalidEvent as err:
        raise ApiError(
            422, "validation_error", "the event is not valid", details=[p.as_dict() for p in err.problems]
        ) from err


def handle(app: FastAPI, slug: str, headers: Mapping[str, str], body: bytes) -> service.Outcome:
    """Everything after the body is read, in a worker thread: authenticate, limit, parse, validate, store."""
    try:
        return _handle(app, slug, headers, body, use_cache=True)
    except _StaleCredentials:
        # rolled back, nothing stored: start again from the database's view of the partner
        _state(app).partners.evict(slug)
        return _handle(app, slug, headers, body, use_cache=False)


@router.post(
    WEBHOOK_PATH,
    summary="Receive a POS event (Stream-compatible in-store orders, status updates, cancels, location status)",
    responses=RESPONSES,
    openapi_extra={
        # the path parameter is read from the request (FastAPI's per-request validation of it costs more)
        "parameters": [
            {
                "name": "partner_slug",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "title": "Partner Slug"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": 'legacy {"event", "data": {"order"}} or current {"type", "object"}; '
                        "see docs/pos-webhook.md",
                    }
                }
            },
        },
    },
)
async def pos_webhook(request: Request) -> JSONResponse:
    """Answers 200 only after the event and everything it causes are committed in one transaction."""
    settings = settings_of(request)
    partner_slug: str = request.path_params["partner_slug"]
    try:
        check_content_length(request.headers, settings.max_body_bytes)
        check_content_type(request.headers)
        body = await read_capped(request, settings.max_body_bytes)
        outcome = await run_in_threadpool(handle, request.app, partner_slug, request.headers, body)
    except ApiError as err:
        metrics.ORDERS.labels("rejected", err.code).inc()
        raise
    if outcome.intake is not None:
        metrics.ORDERS.labels(outcome.intake, "").inc()
    return JSONResponse(outcome.body, status_code=outcome.status)


class _PlainRoute(Route):
    """A Starlette route that, like FastAPI's, names itself in the scope (logs and metrics use its template)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle the request, the route in its scope."""
        scope["route"] = self
        await super().handle(scope, receive, send)


def add_plain_route(app: FastAPI) -> None:
    """Serve the webhook by a plain Starlette route matched before FastAPI's own, which stays for the docs.

    The endpoint takes only the Request, so FastAPI's per-request layer (dependency solving, its route
    wrappers) would cost CPU on the busiest route for nothing (~5 % of the request); errors still reach the
    app's handlers.
    """
    app.router.routes.append(_PlainRoute(WEBHOOK_PATH, pos_webhook, methods=["POST"], include_in_schema=False))
