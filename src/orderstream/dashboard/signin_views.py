"""Sign-in and sign-out pages: the password check, the rate limit and the session cookie."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from orderstream.app_state import db_of, settings_of
from orderstream.dashboard import security
from orderstream.dashboard.users import find_for_signin, normalize_email
from orderstream.dashboard.web import (
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    Csrf,
    Ctx,
    PageError,
    PageRoute,
    page,
    session_lifetime,
    set_cookie,
)

router = APIRouter(route_class=PageRoute)


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
