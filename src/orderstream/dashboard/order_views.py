"""The order page and its actions (reveal, cancel, mark ready, replay, re-dispatch, driver, re-send)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from orderstream.app_state import db_of, settings_of
from orderstream.dashboard import actions, audit, bridges, detail, scope
from orderstream.dashboard.users import User
from orderstream.dashboard.web import (
    Context,
    Csrf,
    Ctx,
    PageRoute,
    not_found,
    page,
)

router = APIRouter(route_class=PageRoute)


def _order_or_404(request: Request, user: User, order_id: str) -> Any:
    with db_of(request).read() as conn:
        row = scope.get_order(conn, user, order_id)
    if row is None:
        raise not_found()
    return row


def _order_page(
    request: Request,
    ctx: Context,
    order_id: str,
    *,
    revealed: bool = False,
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    order = _order_or_404(request, ctx.user, order_id)
    with db_of(request).read() as conn:
        data = detail.load(conn, order, revealed=revealed)
    return page(
        request,
        "order.html",
        ctx,
        status_code,
        d=data,
        o=order,
        revealed=revealed,
        notice=notice,
        error=error,
        cancel_reasons=actions.CANCEL_REASONS,
    )


@router.get("/orders/{order_id}")
def order_page(request: Request, ctx: Ctx, order_id: str, done: str | None = None) -> HTMLResponse:
    """One order: items, customer (masked), history, deliveries, notifications, webhooks, actions."""
    notice = ACTION_NOTICES.get(done or "")
    return _order_page(request, ctx, order_id, notice=notice)


@router.post("/orders/{order_id}/reveal")
def reveal_customer(request: Request, ctx: Ctx, order_id: str, csrf_token: Csrf = "") -> HTMLResponse:
    """Show the customer's phone, e-mail and address once; the reveal is logged with the user."""
    ctx.check_csrf(csrf_token)
    order = _order_or_404(request, ctx.user, order_id)
    with db_of(request).write() as conn:
        audit.record(conn, user=ctx.user, action="reveal_customer", order_id=order["id"])
    return _order_page(request, ctx, order_id, revealed=True)


ACTION_NOTICES = {
    "redispatch": "Looking for a courier again.",
    "choose_provider": "Booking with the chosen provider.",
    "resend_notification": "The notification is queued again.",
    "assign_driver": "The driver is assigned.",
    "cancel": "The order was canceled.",
    "mark_ready": "The order is marked ready.",
    "replay_webhook": "The webhook will be sent again.",
}


def _confirm_page(
    request: Request, ctx: Context, order: Any, action: str, title: str, fields: dict[str, str]
) -> HTMLResponse:
    return page(request, "confirm.html", ctx, o=order, action=action, title=title, fields=fields)


def _run_action(request: Request, ctx: Context, order_id: str, name: str, fn: Any) -> Response:
    try:
        with db_of(request).write() as conn:
            fn(conn)
    except actions.ActionRefused as exc:
        return _order_page(request, ctx, order_id, error=f"{exc} ({exc.code})", status_code=exc.status)
    except bridges.FeatureMissing as exc:
        return _order_page(request, ctx, order_id, error=str(exc), status_code=409)
    return RedirectResponse(f"/dashboard/orders/{order_id}?done={name}", status_code=303)


@router.post("/orders/{order_id}/cancel")
def cancel_order(
    request: Request,
    ctx: Ctx,
    order_id: str,
    csrf_token: Csrf = "",
    reason: Annotated[str, Form(max_length=64)] = "customer_request",
    note: Annotated[str, Form(max_length=500)] = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """Cancel the order (after a confirmation)."""
    ctx.check_csrf(csrf_token)
    order = _order_or_404(request, ctx.user, order_id)
    if confirmed != "yes":
        return _confirm_page(request, ctx, order, "cancel", "Cancel this order?", {"reason": reason, "note": note})
    return _run_action(
        request,
        ctx,
        order_id,
        "cancel",
        lambda conn: actions.cancel(conn, user=ctx.user, order_id=order_id, reason=reason, note=note),
    )


@router.post("/orders/{order_id}/mark-ready")
def mark_ready(
    request: Request, ctx: Ctx, order_id: str, csrf_token: Csrf = "", confirmed: Annotated[str, Form()] = ""
) -> Response:
    """Mark the order ready for pickup (after a confirmation)."""
    ctx.check_csrf(csrf_token)
    order = _order_or_404(request, ctx.user, order_id)
    if confirmed != "yes":
        return _confirm_page(request, ctx, order, "mark-ready", "Mark this order ready?", {})
    return _run_action(
        request, ctx, order_id, "mark_ready", lambda conn: actions.mark_ready(conn, user=ctx.user, order_id=order_id)
    )


@router.post("/orders/{order_id}/webhooks/{delivery_id}/replay")
def replay_webhook(
    request: Request,
    ctx: Ctx,
    order_id: str,
    delivery_id: str,
    csrf_token: Csrf = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """Send one of the order's webhooks to the POS again (after a confirmation)."""
    ctx.check_csrf(csrf_token)
    order = _order_or_404(request, ctx.user, order_id)
    if confirmed != "yes":
        return _confirm_page(
            request, ctx, order, f"webhooks/{delivery_id}/replay", "Send this webhook to the POS again?", {}
        )
    return _run_action(
        request,
        ctx,
        order_id,
        "replay_webhook",
        lambda conn: actions.replay_webhook(conn, user=ctx.user, order=order, delivery_id=delivery_id),
    )


@router.post("/orders/{order_id}/redispatch")
def redispatch(
    request: Request,
    ctx: Ctx,
    order_id: str,
    csrf_token: Csrf = "",
    provider: Annotated[str, Form(max_length=40)] = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """Find a courier again; with a provider, book with that one (after a confirmation)."""
    ctx.check_csrf(csrf_token)
    order = _order_or_404(request, ctx.user, order_id)
    if confirmed != "yes":
        title = f"Book with {provider} instead?" if provider else "Find a courier again?"
        return _confirm_page(request, ctx, order, "redispatch", title, {"provider": provider})
    return _run_action(
        request,
        ctx,
        order_id,
        "choose_provider" if provider else "redispatch",
        lambda conn: actions.redispatch(conn, user=ctx.user, order_id=order_id, provider=provider or None),
    )


@router.post("/orders/{order_id}/assign-driver")
def assign_driver(
    request: Request,
    ctx: Ctx,
    order_id: str,
    csrf_token: Csrf = "",
    driver_id: Annotated[str, Form(max_length=40)] = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """Give the order's own-driver delivery to a driver of its location (after a confirmation)."""
    ctx.check_csrf(csrf_token)
    order = _order_or_404(request, ctx.user, order_id)
    if confirmed != "yes":
        return _confirm_page(request, ctx, order, "assign-driver", "Assign this driver?", {"driver_id": driver_id})
    settings = settings_of(request)
    return _run_action(
        request,
        ctx,
        order_id,
        "assign_driver",
        lambda conn: actions.assign_driver(conn, user=ctx.user, order=order, driver_id=driver_id, settings=settings),
    )


@router.post("/orders/{order_id}/notifications/{notification_id}/resend")
def resend_notification(
    request: Request,
    ctx: Ctx,
    order_id: str,
    notification_id: str,
    csrf_token: Csrf = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """Send a notification to the customer again (after a confirmation)."""
    ctx.check_csrf(csrf_token)
    order = _order_or_404(request, ctx.user, order_id)
    if confirmed != "yes":
        return _confirm_page(
            request, ctx, order, f"notifications/{notification_id}/resend", "Send this notification again?", {}
        )
    settings = settings_of(request)
    return _run_action(
        request,
        ctx,
        order_id,
        "resend_notification",
        lambda conn: actions.resend_notification(
            conn, user=ctx.user, order_id=order_id, notification_id=notification_id, settings=settings
        ),
    )
