"""Web plumbing for the dashboard: templates, the session cookie, CSRF checks and HTML error pages."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Form, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from orderstream.app_state import db_of, settings_of
from orderstream.dashboard import board, detail, late, security
from orderstream.dashboard.users import User, get_user

SESSION_COOKIE = "os_session"
SIGNIN_CSRF_COOKIE = "os_signin_csrf"

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals["late_labels"] = late.LATE_LABELS
templates.env.filters["local"] = detail.local
templates.env.globals["money"] = lambda amount, currency: board.money(amount, (currency or "").lower())
templates.env.filters["query"] = lambda params: urlencode(params)


class PageError(Exception):
    """An error answered with an HTML page: 404 for anything the user may not see, 403 for a bad CSRF token."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class SignInRequired(Exception):
    """No valid session: pages redirect to sign-in, the event stream answers 401."""


def not_found() -> PageError:
    """The one answer for missing and forbidden objects alike: nothing to learn by guessing URLs."""
    return PageError(404, "not_found", "There is nothing here, or you may not see it.")


def error_page(request: Request, err: PageError) -> Response:
    """Render an error page."""
    response = templates.TemplateResponse(
        request,
        "error.html",
        {"status": err.status, "code": err.code, "message": err.message, "user": None},
        status_code=err.status,
        headers=err.headers,
    )
    return _harden(response)


def _harden(response: Response) -> Response:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


class PageRoute(APIRoute):
    """A route whose errors are HTML pages, not the API's JSON errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                if request.url.path.endswith("/events"):
                    return Response("sign in first", status_code=401, media_type="text/plain")
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/dashboard/signin?" + urlencode({"next": target}), status_code=303)
            except PageError as err:
                return error_page(request, err)
            except RequestValidationError as exc:
                fields = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in exc.errors())
                return error_page(request, PageError(422, "validation_error", f"Check these fields: {fields}"))
            return _harden(response)

        return route


def client_ip(request: Request) -> str:
    """The peer address (a proxy in front should be the only peer; it is what the rate limit keys on)."""
    return request.client.host if request.client else "unknown"


def is_https(request: Request) -> bool:
    """True when the browser talks HTTPS to us (directly, or per the configured public URL)."""
    return request.url.scheme == "https" or settings_of(request).public_base_url.startswith("https://")


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    """A cookie that scripts cannot read, not sent on cross-site subrequests, Secure over HTTPS."""
    response.set_cookie(
        name, value, max_age=max_age, path="/dashboard", httponly=True, samesite="lax", secure=is_https(request)
    )


class Context:
    """The signed-in user and their session, for one request."""

    def __init__(self, session: security.Session, user: User) -> None:
        self.session = session
        self.user = user

    def check_csrf(self, token: str | None) -> None:
        """Refuse a form post without this session's CSRF token."""
        if not security.tokens_equal(self.session.csrf_token, token):
            raise PageError(403, "csrf_failed", "The form was stale or not sent from this dashboard. Reload and retry.")

    def require_admin(self) -> None:
        """Admin pages do not exist for merchant users."""
        if not self.user.is_admin:
            raise not_found()


def current(request: Request) -> Context:
    """FastAPI dependency: the session from the cookie, or SignInRequired."""
    token = request.cookies.get(SESSION_COOKIE)
    with db_of(request).read() as conn:
        session = security.load_session(conn, token=token)
        if session is None:
            raise SignInRequired()
        user = get_user(conn, user_id=session.user_id)
    return Context(session, user)


def session_lifetime(request: Request) -> timedelta:
    """How long a new session lasts."""
    return timedelta(hours=settings_of(request).dashboard_session_hours)


Ctx = Annotated[Context, Depends(current)]
Csrf = Annotated[str, Form()]


def page(request: Request, name: str, ctx: Context | None, status_code: int = 200, **values: Any) -> HTMLResponse:
    """Render a page with the user and the session's CSRF token available to the template."""
    values.setdefault("user", ctx.user if ctx else None)
    values.setdefault("csrf_token", ctx.session.csrf_token if ctx else "")
    return templates.TemplateResponse(request, name, values, status_code=status_code)
