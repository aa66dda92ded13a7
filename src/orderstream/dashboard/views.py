"""Dashboard pages: sign-in, the live board and its event stream, and the order page with its actions."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse

from orderstream.dashboard import actions, audit, board, bridges, detail, pages, scope, security
from orderstream.dashboard.users import User, find_for_signin, normalize_email
from orderstream.dashboard.web import (
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    Context,
    Csrf,
    Ctx,
    PageError,
    PageRoute,
    current,
    db_of,
    not_found,
    page,
    session_lifetime,
    set_cookie,
    settings_of,
    templates,
)
from orderstream.db import utcnow
from orderstream.orders.domain import FulfillmentType

router = APIRouter(prefix="/dashboard", route_class=PageRoute, include_in_schema=False)

STATIC = Path(__file__).parent / "static"


@router.get("/static/dashboard.css")
def stylesheet() -> FileResponse:
    """The one stylesheet."""
    return FileResponse(STATIC / "dashboard.css", media_type="text/css", headers={"Cache-Control": "max-age=300"})


@router.get("")
def home() -> RedirectResponse:
    """The board is the home page."""
    return RedirectResponse("/dashboard/board", status_code=303)


# --- sign-in ---------------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    # only our own pages: never an open redirect to another site
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard/board"


def _signin_page(
    request: Request, *, next_url: str, error: str | None, status_code: int = 200, headers: dict[str, str] | None = None
) -> HTMLResponse:
    token = security.new_token()
    response = page(request, "signin.html", None, status_code, next=next_url, error=error, signin_csrf=token)
    set_cookie(request, response, SIGNIN_CSRF_COOKIE, token, max_age=3600)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


@router.get("/signin")
def signin_form(request: Request, next: str | None = None) -> HTMLResponse:  # noqa: A002 - the query name
    """The sign-in form."""
    return _signin_page(request, next_url=_safe_next(next), error=None)


@router.post("/signin")
def signin(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",  # noqa: A002
) -> Response:
    """Check the password (rate-limited per client IP and e-mail) and start a session."""
    settings = settings_of(request)
    next_url = _safe_next(next)
    if not security.tokens_equal(request.cookies.get(SIGNIN_CSRF_COOKIE), csrf_token):
        raise PageError(403, "csrf_failed", "The sign-in form was stale. Reload the page and try again.")
    ip = request.client.host if request.client else "unknown"
    key_email = normalize_email(email)[:320]
    window = timedelta(seconds=settings.dashboard_signin_window_seconds)
    db = db_of(request)
    with db.read() as conn:
        failures = security.recent_failures(conn, ip=ip, email=key_email, window=window)
    if failures >= settings.dashboard_signin_max_failures:
        return _signin_page(
            request,
            next_url=next_url,
            error="Too many failed sign-ins. Wait a few minutes and try again.",
            status_code=429,
            headers={"Retry-After": str(settings.dashboard_signin_window_seconds)},
        )
    with db.read() as conn:
        found = find_for_signin(conn, email=key_email)
    ok = security.verify_password(found[1] if found else None, password)
    with db.write() as conn:
        security.record_attempt(conn, ip=ip, email=key_email, succeeded=ok)
        if not ok or found is None:
            token = None
        else:
            security.purge_expired(conn, older_than=window)
            token = security.create_session(conn, user_id=found[0], lifetime=session_lifetime(request))
    if token is None:
        return _signin_page(request, next_url=next_url, error="Wrong e-mail or password.", status_code=401)
    response = RedirectResponse(next_url, status_code=303)
    set_cookie(request, response, SESSION_COOKIE, token, max_age=int(session_lifetime(request).total_seconds()))
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/dashboard")
    return response


@router.post("/signout")
def signout(request: Request, ctx: Ctx, csrf_token: Csrf = "") -> RedirectResponse:
    """End the session."""
    ctx.check_csrf(csrf_token)
    with db_of(request).write() as conn:
        security.delete_session(conn, token=request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/dashboard/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/dashboard")
    return response


# --- board -----------------------------------------------------------------------------------------


def _filters(location: str | None, fulfillment_type: str | None, provider: str | None) -> board.BoardFilters:
    location_id = int(location) if location and location.isdigit() else None
    ftype = fulfillment_type if fulfillment_type in {f.value for f in FulfillmentType} else None
    return board.BoardFilters(location_id=location_id, fulfillment_type=ftype, provider=provider or None)


FilterQuery = Annotated[str | None, Query(max_length=100)]


def _cards(request: Request, user: User, filters: board.BoardFilters) -> list[board.Card]:
    lead = timedelta(minutes=settings_of(request).dashboard_courier_late_minutes)
    with db_of(request).read() as conn:
        return board.today_cards(conn, user, filters, now=utcnow(), courier_lead=lead)


@router.get("/board")
def board_page(
    request: Request,
    ctx: Ctx,
    location: FilterQuery = None,
    fulfillment_type: FilterQuery = None,
    provider: FilterQuery = None,
) -> HTMLResponse:
    """Today's orders by status, updated live."""
    filters = _filters(location, fulfillment_type, provider)
    cards = _cards(request, ctx.user, filters)
    with db_of(request).read() as conn:
        locations = scope.visible_locations(conn, ctx.user)
        providers = bridges.providers(conn)
    return page(
        request,
        "board.html",
        ctx,
        columns=board.COLUMNS,
        cards=cards,
        filters=filters,
        locations=locations,
        providers=providers,
        fulfillment_types=[f.value for f in FulfillmentType],
    )


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@router.get("/board/events")
async def board_events(
    request: Request,
    location: FilterQuery = None,
    fulfillment_type: FilterQuery = None,
    provider: FilterQuery = None,
) -> StreamingResponse:
    """Server-sent events: a `card` event whenever an order of the board appears or changes."""
    ctx = await asyncio.to_thread(current, request)
    filters = _filters(location, fulfillment_type, provider)
    settings = settings_of(request)
    card_template = templates.env.get_template("_card.html")

    async def stream() -> AsyncIterator[str]:
        sent: dict[str, tuple[Any, ...]] = {}
        started = time.monotonic()
        first = True
        yield "retry: 2000\n\n"
        while time.monotonic() - started < settings.dashboard_sse_max_seconds:
            if await request.is_disconnected() or server_stopping():
                return
            # the session may end (sign-out, expiry) while the stream is open
            still = await asyncio.to_thread(_still_signed_in, request)
            if not still:
                yield _sse("signout", {})
                return
            cards = await asyncio.to_thread(_cards, request, ctx.user, filters)
            for card in cards:
                fingerprint = card.fingerprint()
                if sent.get(card.id) == fingerprint:
                    continue
                sent[card.id] = fingerprint
                if first:
                    continue  # the page already shows the state at load time
                html = card_template.render(card=card, late_labels=templates.env.globals["late_labels"])
                yield _sse("card", {"id": card.id, "column": card.column, "html": html})
            current_ids = {c.id for c in cards}
            for gone in [i for i in sent if i not in current_ids]:
                del sent[gone]
                yield _sse("remove", {"id": gone})
            if first:
                yield _sse("ready", {"orders": len(cards)})
                first = False
            await asyncio.sleep(settings.dashboard_sse_poll_seconds)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )


def server_stopping() -> bool:
    """True once uvicorn was asked to stop.

    uvicorn waits for open responses before it exits and gives them no signal, so an event stream
    would hold a restart for its whole lifetime. Its SIGTERM handler is a bound method of the server,
    whose should_exit flag we read (False under any other server or in tests).
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


def _still_signed_in(request: Request) -> bool:
    with db_of(request).read() as conn:
        return security.load_session(conn, token=request.cookies.get(SESSION_COOKIE)) is not None


# --- order page ------------------------------------------------------------------------------------


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
        return _order_page(request, ctx, order_id, error=str(exc), status_code=409)
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


router.include_router(pages.router)
