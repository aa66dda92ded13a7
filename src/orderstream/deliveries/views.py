"""Routes of dispatch: provider webhooks, the partner's view of deliveries, and operator actions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Connection

from orderstream.auth import PartnerPrincipal, require_partner_key
from orderstream.config import Settings
from orderstream.db import Database
from orderstream.deliveries import policy as rules
from orderstream.deliveries import service
from orderstream.deliveries.protocol import WebhookRejected
from orderstream.deliveries.registry import UnknownProvider, providers
from orderstream.deliveries.schemas import (
    AttemptList,
    CancelDelivery,
    PolicyBody,
    Redispatch,
    attempt_from_row,
)
from orderstream.errors import ERROR_RESPONSES, ApiError
from orderstream.orders.domain import Actor
from orderstream.tenancy import service as tenancy
from orderstream.webhooks_out.views import require_admin

log = logging.getLogger("orderstream.deliveries")

router = APIRouter(tags=["deliveries"], responses=ERROR_RESPONSES)
admin_router = APIRouter(prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES)

Principal = Annotated[PartnerPrincipal, Depends(require_partner_key)]
OrderId = Annotated[str, Path(max_length=40, pattern=r"^[a-z]{1,8}_[0-9a-z]{1,40}$")]
ProviderName = Annotated[str, Path(max_length=40, pattern=r"^[a-z0-9_]+$")]
MAX_PROVIDER_BODY = 256 * 1024


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@contextmanager
def _write(request: Request) -> Iterator[Connection]:
    try:
        with _db(request).write() as conn:
            yield conn
    except service.DispatchError as err:
        raise ApiError(err.status, err.code, err.message) from err


def _attempts(conn: Connection, order_id: str) -> AttemptList:
    order = service.get_order(conn, order_id)
    assert order is not None
    rows = service.list_attempts(conn, order_id)
    return AttemptList(
        order_id=order_id, delivery_status=order["delivery_status"], data=[attempt_from_row(r) for r in rows]
    )


@router.post(
    "/providers/{provider}/webhook",
    summary="Delivery provider webhooks (DoorDash Drive, Uber Direct, ...)",
    responses={400: {"description": "unreadable"}, 401: {"description": "bad signature"}},
)
async def provider_webhook(request: Request, provider: ProviderName) -> JSONResponse:
    """Verify, deduplicate and apply a provider's delivery update (monotonic: late events never move back)."""
    body = await request.body()
    if len(body) > MAX_PROVIDER_BODY:
        raise ApiError(413, "payload_too_large", "webhook body too large")
    try:
        adapter = providers(request.app.state.services, _settings(request), _db(request)).get(provider)
    except UnknownProvider:
        raise ApiError(404, "unknown_provider", f"no provider {provider!r}") from None
    try:
        update = adapter.parse_webhook(body, dict(request.headers))
    except WebhookRejected as err:
        if err.status == 200:  # signed, but an event kind we do not use
            return JSONResponse({"result": "ignored"})
        log.warning("provider webhook rejected", extra={"provider": provider, "code": err.code})
        raise ApiError(err.status, err.code, str(err)) from None
    return JSONResponse(await _apply(request, update))


async def _apply(request: Request, update: Any) -> dict[str, Any]:
    import asyncio

    def run() -> dict[str, Any]:
        try:
            with _db(request).write() as conn:
                result = service.apply_update(conn, update, actor=Actor.COURIER.value, settings=_settings(request))
        except service.UnknownDelivery as err:
            log.warning(
                "provider webhook for an unknown delivery",
                extra={
                    "provider": update.provider,
                    "external_id": update.snapshot.external_id,
                    "event": update.event_name,
                },
            )
            raise ApiError(404, err.code, err.message) from None
        log.info(
            "provider webhook",
            extra={
                "provider": update.provider,
                "event": update.event_name,
                "order_id": result.order_id,
                "result": result.result,
                "delivery_status": result.delivery_status,
            },
        )
        return {"result": result.result, "delivery_status": result.delivery_status}

    return await asyncio.to_thread(run)


@router.get("/v1/orders/{order_id}/deliveries", response_model=AttemptList, summary="Delivery attempts of an order")
def order_deliveries(request: Request, principal: Principal, order_id: OrderId) -> AttemptList:
    """Every courier booking tried for the order: provider, fee, courier, tracking, outcome."""
    with _db(request).read() as conn:
        order = service.get_order(conn, order_id)
        if order is None or int(order["partner_id"]) != principal.partner_id:
            raise ApiError(404, "order_not_found", "no such order")
        return _attempts(conn, order_id)


def _order_or_404(conn: Connection, order_id: str) -> None:
    if service.get_order(conn, order_id) is None:
        raise ApiError(404, "order_not_found", "no such order")


def _check_provider(request: Request, name: str | None, path: str) -> None:
    if name is None:
        return
    if name not in providers(request.app.state.services, _settings(request), _db(request)).names():
        raise ApiError(
            422,
            "validation_error",
            "the request is not valid",
            details=[{"path": path, "code": "unknown_provider", "message": f"no provider {name!r}"}],
        )


@admin_router.get("/orders/{order_id}/deliveries", response_model=AttemptList, dependencies=[Depends(require_admin)])
def admin_attempts(request: Request, order_id: OrderId) -> AttemptList:
    """Operator: every delivery attempt of any order."""
    with _db(request).read() as conn:
        _order_or_404(conn, order_id)
        return _attempts(conn, order_id)


@admin_router.post(
    "/orders/{order_id}/redispatch",
    response_model=AttemptList,
    status_code=202,
    dependencies=[Depends(require_admin)],
)
def admin_redispatch(request: Request, order_id: OrderId, body: Redispatch) -> AttemptList:
    """Operator: find a courier again (the order must have no active delivery), optionally one provider only."""
    _check_provider(request, body.provider, "body.provider")
    with _write(request) as conn:
        _order_or_404(conn, order_id)
        service.request_redispatch(
            conn,
            order_id=order_id,
            actor=Actor.OPERATOR.value,
            reason=body.reason,
            exclude=body.exclude,
            only=body.provider,
        )
        return _attempts(conn, order_id)


@admin_router.post(
    "/orders/{order_id}/deliveries/cancel",
    response_model=AttemptList,
    status_code=202,
    dependencies=[Depends(require_admin)],
)
def admin_cancel(request: Request, order_id: OrderId, body: CancelDelivery) -> AttemptList:
    """Operator: cancel the active delivery with its provider; with redispatch, book again (another provider)."""
    _check_provider(request, body.provider, "body.provider")
    with _write(request) as conn:
        _order_or_404(conn, order_id)
        service.request_cancel(
            conn,
            order_id=order_id,
            actor=Actor.OPERATOR.value,
            reason=body.reason,
            then_dispatch=body.redispatch,
            only=body.provider,
        )
        return _attempts(conn, order_id)


@admin_router.get("/partners/{slug}/locations/{location_id}/dispatch-policy", dependencies=[Depends(require_admin)])
def admin_get_policy(request: Request, slug: str, location_id: str) -> dict[str, Any]:
    """Operator: a location's dispatch policy (the default when it has none)."""
    with _db(request).read() as conn:
        location = _location(conn, slug, location_id)
        return service.get_policy(conn, location_id=int(location["id"]), settings=_settings(request)).as_dict()


@admin_router.put("/partners/{slug}/locations/{location_id}/dispatch-policy", dependencies=[Depends(require_admin)])
def admin_put_policy(request: Request, slug: str, location_id: str, body: PolicyBody) -> dict[str, Any]:
    """Operator: replace a location's dispatch policy."""
    for i, name in enumerate(body.allowed_providers):
        _check_provider(request, name, f"body.allowed_providers[{i}]")
    policy = rules.Policy(
        allowed_providers=tuple(body.allowed_providers),
        strategy=body.strategy,
        max_fee=body.max_fee,
        max_pickup_eta_minutes=body.max_pickup_eta_minutes,
        acceptance_timeout_seconds=body.acceptance_timeout_seconds,
        redispatch_window_minutes=body.redispatch_window_minutes,
    )
    with _write(request) as conn:
        location = _location(conn, slug, location_id)
        service.set_policy(conn, location_id=int(location["id"]), policy=policy)
    return policy.as_dict()


def _location(conn: Connection, slug: str, location_id: str) -> Any:
    try:
        return tenancy.require_location(conn, partner_slug=slug, external_id=location_id)
    except tenancy.TenancyError as err:
        raise ApiError(404, err.code, str(err)) from err
