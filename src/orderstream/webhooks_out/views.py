"""Routes of outbound webhooks: a partner's endpoints, deliveries and events feed; operator replay."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Connection

from orderstream.app_state import db_of, settings_of
from orderstream.auth import PartnerPrincipal, require_partner_key
from orderstream.errors import ERROR_RESPONSES, ApiError
from orderstream.tenancy import service as tenancy
from orderstream.webhooks_out import service
from orderstream.webhooks_out.schemas import (
    BulkReplay,
    BulkReplayResult,
    DeliveryDetail,
    DeliveryList,
    Endpoint,
    EndpointCreate,
    EndpointUpdate,
    EndpointWithSecret,
    EventPage,
    RotateSecret,
    SecretRotation,
)
from orderstream.webhooks_out.ssrf import Resolver

router = APIRouter(tags=["webhooks"], responses=ERROR_RESPONSES)
admin_router = APIRouter(prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES)

Principal = Annotated[PartnerPrincipal, Depends(require_partner_key)]
EndpointId = Annotated[str, Path(max_length=40, pattern=r"^we_[0-9a-z]+$")]
DeliveryId = Annotated[str, Path(max_length=40, pattern=r"^whd_[0-9a-z]+$")]

_admin_bearer = HTTPBearer(auto_error=False, description="The operator token (ORDERSTREAM_ADMIN_TOKEN).")


async def require_admin(request: Request) -> None:
    """FastAPI dependency: the bearer token must be the configured admin token (401 otherwise, or when unset)."""
    settings = settings_of(request)
    credentials: HTTPAuthorizationCredentials | None = await _admin_bearer(request)
    expected = settings.admin_token.get_secret_value() if settings.admin_token else ""
    given = credentials.credentials if credentials else ""
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(
            401, "invalid_admin_token", "an operator token is required", headers={"WWW-Authenticate": "Bearer"}
        )


def _resolver(request: Request) -> Resolver | None:
    return getattr(request.app.state, "webhooks_resolver", None)


@contextmanager
def _write(request: Request) -> Iterator[Connection]:
    db = db_of(request)
    try:
        with db.write() as conn:
            yield conn
    except service.WebhooksError as err:
        raise ApiError(err.status, err.code, err.message) from err


@contextmanager
def _read(request: Request) -> Iterator[Connection]:
    db = db_of(request)
    try:
        with db.read() as conn:
            yield conn
    except service.WebhooksError as err:
        raise ApiError(err.status, err.code, err.message) from err


# --- partner API ----------------------------------------------------------------------------------


@router.get("/v1/events", response_model=EventPage, summary="Poll events in order")
def list_events(
    request: Request,
    principal: Principal,
    after: Annotated[str, Query(pattern=r"^[0-9]{1,18}$", description="next_cursor of the previous page")] = "0",
    limit: Annotated[int, Query(ge=1, le=service.PAGE_MAX)] = 100,
) -> dict[str, Any]:
    """The partner's events after a cursor, oldest first: the same bodies the webhooks carry, plus `sequence`."""
    with _read(request) as conn:
        return service.list_events(conn, partner_id=principal.partner_id, after=int(after), limit=limit)


@router.get("/v1/webhook-endpoints", response_model=list[Endpoint], summary="List webhook endpoints")
def list_endpoints(request: Request, principal: Principal) -> list[dict[str, Any]]:
    """The partner's endpoints."""
    with _read(request) as conn:
        return service.list_endpoints(conn, partner_id=principal.partner_id)


@router.post("/v1/webhook-endpoints", response_model=EndpointWithSecret, status_code=201, summary="Add an endpoint")
def create_endpoint(request: Request, principal: Principal, body: EndpointCreate) -> dict[str, Any]:
    """Add an endpoint; the answer holds its signing secret, shown only this once."""
    with _write(request) as conn:
        endpoint, secret = service.create_endpoint(
            conn,
            partner_id=principal.partner_id,
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            allow_private=settings_of(request).allow_private_webhook_targets,
            resolver=_resolver(request),
        )
    return {**endpoint, "secret": secret}


@router.get("/v1/webhook-endpoints/{endpoint_id}", response_model=Endpoint, summary="Fetch an endpoint")
def get_endpoint(request: Request, principal: Principal, endpoint_id: EndpointId) -> dict[str, Any]:
    """One of the partner's endpoints."""
    with _read(request) as conn:
        return service.endpoint_dict(
            service.get_endpoint_row(conn, endpoint_id=endpoint_id, partner_id=principal.partner_id)
        )


@router.patch("/v1/webhook-endpoints/{endpoint_id}", response_model=Endpoint, summary="Change an endpoint")
def update_endpoint(
    request: Request, principal: Principal, endpoint_id: EndpointId, body: EndpointUpdate
) -> dict[str, Any]:
    """Change the URL, the event types or the description; enable or disable the endpoint."""
    with _write(request) as conn:
        return service.update_endpoint(
            conn,
            endpoint_id=endpoint_id,
            partner_id=principal.partner_id,
            url=body.url,
            event_types=body.event_types,
            description=body.description,
            enabled=body.enabled,
            allow_private=settings_of(request).allow_private_webhook_targets,
            resolver=_resolver(request),
        )


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=204, summary="Remove an endpoint")
def delete_endpoint(request: Request, principal: Principal, endpoint_id: EndpointId) -> Response:
    """Remove an endpoint with its delivery records (events stay in the feed)."""
    with _write(request) as conn:
        service.delete_endpoint(conn, endpoint_id=endpoint_id, partner_id=principal.partner_id)
    return Response(status_code=204)


@router.post(
    "/v1/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=SecretRotation, summary="Rotate the secret"
)
def rotate_secret(
    request: Request, principal: Principal, endpoint_id: EndpointId, body: RotateSecret | None = None
) -> dict[str, Any]:
    """Issue a new secret; webhooks carry a signature with each active secret until the overlap ends."""
    hours = body.overlap_hours if body is not None else float(settings_of(request).secret_overlap_hours)
    with _write(request) as conn:
        return service.rotate_endpoint_secret(
            conn, endpoint_id=endpoint_id, partner_id=principal.partner_id, overlap=timedelta(hours=hours)
        )


@router.get("/v1/webhook-deliveries", response_model=DeliveryList, summary="List deliveries")
def list_deliveries(
    request: Request,
    principal: Principal,
    endpoint_id: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(pattern=r"^(pending|succeeded|failed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=service.PAGE_MAX)] = 100,
) -> dict[str, Any]:
    """The partner's deliveries, newest first."""
    with _read(request) as conn:
        rows = service.list_deliveries(
            conn, partner_id=principal.partner_id, endpoint_id=endpoint_id, status=status, limit=limit
        )
    return {"data": rows}


@router.get("/v1/webhook-deliveries/{delivery_id}", response_model=DeliveryDetail, summary="Fetch a delivery")
def get_delivery(request: Request, principal: Principal, delivery_id: DeliveryId) -> dict[str, Any]:
    """A delivery with every attempt: request headers, response status and excerpt, duration."""
    with _read(request) as conn:
        return service.get_delivery(conn, delivery_id=delivery_id, partner_id=principal.partner_id)


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/replay", response_model=DeliveryDetail, summary="Send a delivery again"
)
def replay_delivery(request: Request, principal: Principal, delivery_id: DeliveryId) -> dict[str, Any]:
    """Queue a finished delivery again (same event and webhook-id), behind any older pending one of its order."""
    with _write(request) as conn:
        return service.replay_delivery(conn, delivery_id=delivery_id, partner_id=principal.partner_id)


# --- operator API ---------------------------------------------------------------------------------


@admin_router.post(
    "/webhook-deliveries/{delivery_id}/replay",
    response_model=DeliveryDetail,
    dependencies=[Depends(require_admin)],
    summary="Send any delivery again",
)
def admin_replay_delivery(request: Request, delivery_id: DeliveryId) -> dict[str, Any]:
    """Queue any partner's finished delivery again."""
    with _write(request) as conn:
        return service.replay_delivery(conn, delivery_id=delivery_id)


@admin_router.post(
    "/webhook-deliveries/replay",
    response_model=BulkReplayResult,
    dependencies=[Depends(require_admin)],
    summary="Replay a partner's failed deliveries",
)
def admin_replay_failed(request: Request, body: BulkReplay) -> dict[str, Any]:
    """Queue again every failed delivery of a partner created in [since, until), oldest first."""
    if body.until <= body.since:
        raise ApiError(422, "validation_error", "until must be after since")
    with _write(request) as conn:
        try:
            partner = tenancy.require_partner(conn, slug=body.partner)
        except tenancy.TenancyError as err:
            raise ApiError(404, err.code, str(err)) from err
        result = service.replay_failed(
            conn, partner_id=int(partner["id"]), since=body.since, until=body.until, endpoint_id=body.endpoint_id
        )
    return result.as_dict()
