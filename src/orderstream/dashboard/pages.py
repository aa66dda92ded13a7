"""Dashboard pages beyond the board: location settings, admin (partners, keys, endpoints, jobs) and the numbers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from orderstream.dashboard import admin, bridges, charts, features, scope
from orderstream.dashboard.audit import record
from orderstream.dashboard.web import (
    Context,
    Csrf,
    Ctx,
    PageError,
    PageRoute,
    current,
    db_of,
    not_found,
    page,
    settings_of,
)
from orderstream.db import utcnow
from orderstream.jobs import runtime as jobs_runtime
from orderstream.tenancy import service as tenancy

router = APIRouter(route_class=PageRoute)


# --- locations -------------------------------------------------------------------------------------


@router.get("/locations")
def locations_page(request: Request, ctx: Ctx) -> HTMLResponse:
    """The locations the user may see."""
    with db_of(request).read() as conn:
        rows = scope.visible_locations(conn, ctx.user)
    return page(request, "locations.html", ctx, locations=rows)


def _location_or_404(request: Request, ctx: Context, location_id: int) -> Any:
    with db_of(request).read() as conn:
        row = scope.get_location(conn, ctx.user, location_id)
    if row is None:
        raise not_found()
    return row


@router.get("/locations/{location_id}")
def location_page(request: Request, ctx: Ctx, location_id: int, done: str | None = None) -> HTMLResponse:
    """One location's settings: prep time, pause/resume, dispatch policy, notifications."""
    location = _location_or_404(request, ctx, location_id)
    with db_of(request).read() as conn:
        policy = bridges.dispatch_policy(conn, location_id=location_id, settings=settings_of(request))
        notify = bridges.notification_settings(conn, location_id=location_id)
        providers = bridges.providers(conn)
        kinds = bridges.notification_kinds(conn)
    return page(
        request,
        "location.html",
        ctx,
        loc=location,
        notice=LOCATION_NOTICES.get(done or ""),
        policy=policy,
        providers=providers,
        notify=notify,
        kinds=kinds,
        dispatch_missing=features.missing_text(features.DISPATCH),
        notifications_missing=features.missing_text(features.NOTIFICATIONS),
    )


LOCATION_NOTICES = {
    "saved": "Saved.",
    "paused": "Paused.",
    "resumed": "Resumed.",
    "policy": "Dispatch policy saved.",
    "notifications": "Notification settings saved.",
}


def _optional_int(value: str, name: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit():
        raise PageError(422, "validation_error", f"{name}: a whole number, or empty for none")
    return int(value)


@contextmanager
def _feature_errors() -> Iterator[None]:
    """A feature's refusal (422) or absence (409) as the page's error."""
    try:
        yield
    except bridges.BridgeRefused as exc:
        raise PageError(422, exc.code, str(exc)) from exc
    except bridges.FeatureMissing as exc:
        raise PageError(409, "feature_missing", str(exc)) from exc


@router.post("/locations/{location_id}/dispatch-policy")
async def set_dispatch_policy(request: Request, location_id: int) -> Response:
    """Replace the location's dispatch policy (providers, strategy, caps, timeouts)."""
    form = await request.form()
    return await run_in_threadpool(_save_policy, request, location_id, form)


def _save_policy(request: Request, location_id: int, form: Any) -> Response:
    ctx = current(request)
    ctx.check_csrf(str(form.get("csrf_token", "")))
    _location_or_404(request, ctx, location_id)
    allowed = [str(p) for p in form.getlist("allowed_providers")]
    timeouts = {}
    for provider in allowed:
        raw = _optional_int(str(form.get(f"timeout_{provider}", "")), f"timeout_{provider}")
        if raw is not None:
            timeouts[provider] = float(raw)
    window = _optional_int(str(form.get("redispatch_window_minutes", "")), "redispatch_window_minutes")
    values = {
        "allowed_providers": allowed,
        "strategy": str(form.get("strategy", "cheapest")),
        "max_fee": _optional_int(str(form.get("max_fee", "")), "max_fee"),
        "max_pickup_eta_minutes": _optional_int(str(form.get("max_pickup_eta_minutes", "")), "max_pickup_eta_minutes"),
        "acceptance_timeout_seconds": timeouts,
        "redispatch_window_minutes": float(window) if window is not None else None,
    }
    if not allowed:
        raise PageError(422, "validation_error", "allowed_providers: choose at least one provider")
    with _feature_errors(), db_of(request).write() as conn:
        known = set(bridges.providers(conn))
        unknown = [p for p in allowed if p not in known]
        if unknown:
            raise PageError(422, "unknown_provider", f"allowed_providers: unknown {', '.join(unknown)}")
        bridges.set_dispatch_policy(conn, location_id=location_id, values=values)
        record(conn, user=ctx.user, action="dispatch_policy", details={"location_id": location_id, **values})
    return RedirectResponse(f"/dashboard/locations/{location_id}?done=policy", status_code=303)


@router.post("/locations/{location_id}/notifications")
async def set_notifications(request: Request, location_id: int) -> Response:
    """Turn notification channels and kinds on or off, and override their texts."""
    form = await request.form()
    return await run_in_threadpool(_save_notifications, request, location_id, form)


def _save_notifications(request: Request, location_id: int, form: Any) -> Response:
    ctx = current(request)
    ctx.check_csrf(str(form.get("csrf_token", "")))
    _location_or_404(request, ctx, location_id)
    with db_of(request).read() as conn:
        kinds = bridges.notification_kinds(conn)
    enabled = {str(k) for k in form.getlist("enabled_kinds")}
    overrides: dict[str, dict[str, dict[str, str]]] = {}
    for kind in kinds:
        for channel in ("sms", "email"):
            text = str(form.get(f"text_{kind}_{channel}", "")).strip()
            if text:
                overrides.setdefault(kind, {})[channel] = {"text": text}
    with _feature_errors(), db_of(request).write() as conn:
        bridges.set_notification_settings(
            conn,
            location_id=location_id,
            sms_enabled=form.get("sms_enabled") == "on",
            email_enabled=form.get("email_enabled") == "on",
            disabled_kinds=[k for k in kinds if k not in enabled],
            overrides=overrides,
        )
        record(conn, user=ctx.user, action="notification_settings", details={"location_id": location_id})
    return RedirectResponse(f"/dashboard/locations/{location_id}?done=notifications", status_code=303)


def _update_location(request: Request, ctx: Context, location_id: int, done: str, **values: Any) -> Response:
    location = _location_or_404(request, ctx, location_id)
    try:
        with db_of(request).write() as conn:
            tenancy.update_location(
                conn, partner_slug=location["partner_slug"], external_id=location["external_id"], **values
            )
            record(conn, user=ctx.user, action=f"location_{done}", details={"location_id": location_id, **values})
    except tenancy.TenancyError as exc:
        raise PageError(422, exc.code, str(exc)) from exc
    return RedirectResponse(f"/dashboard/locations/{location_id}?done={done}", status_code=303)


@router.post("/locations/{location_id}/prep-time")
def set_prep_time(
    request: Request, ctx: Ctx, location_id: int, prep_time_minutes: Annotated[int, Form()], csrf_token: Csrf = ""
) -> Response:
    """Change the location's default prep time."""
    ctx.check_csrf(csrf_token)
    return _update_location(request, ctx, location_id, "saved", prep_time_minutes=prep_time_minutes)


@router.post("/locations/{location_id}/pause")
def pause_location(request: Request, ctx: Ctx, location_id: int, csrf_token: Csrf = "") -> Response:
    """Stop taking orders at the location (the POS webhook refuses them while paused)."""
    ctx.check_csrf(csrf_token)
    return _update_location(request, ctx, location_id, "paused", status="paused")


@router.post("/locations/{location_id}/resume")
def resume_location(request: Request, ctx: Ctx, location_id: int, csrf_token: Csrf = "") -> Response:
    """Take orders at the location again."""
    ctx.check_csrf(csrf_token)
    return _update_location(request, ctx, location_id, "resumed", status="active")


# --- admin -----------------------------------------------------------------------------------------


def _admin_page(request: Request, ctx: Context, **extra: Any) -> HTMLResponse:
    with db_of(request).read() as conn:
        overview = admin.partners_overview(conn)
        endpoints = admin.endpoints_health(conn, settings=settings_of(request))
        dead = jobs_runtime.list_jobs(conn, status="dead", limit=100)
    return page(
        request, "admin.html", ctx, partners=overview, endpoints=endpoints, dead_jobs=dead, now=utcnow(), **extra
    )


@router.get("/admin")
def admin_page(request: Request, ctx: Ctx) -> HTMLResponse:
    """Partners and secrets, API keys, outbound endpoints and their health, dead-lettered jobs."""
    ctx.require_admin()
    return _admin_page(request, ctx)


def _partner_or_404(conn: Any, slug: str) -> Any:
    row = tenancy.get_partner(conn, slug=slug)
    if row is None:
        raise not_found()
    return row


@router.post("/admin/partners/{slug}/rotate-secret")
def rotate_secret(
    request: Request,
    ctx: Ctx,
    slug: str,
    overlap_hours: Annotated[float, Form(ge=0, le=24 * 30)] = 24.0,
    csrf_token: Csrf = "",
) -> HTMLResponse:
    """Issue a new signing secret; the old ones keep verifying for the overlap. The new one is shown once."""
    ctx.require_admin()
    ctx.check_csrf(csrf_token)
    with db_of(request).write() as conn:
        _partner_or_404(conn, slug)
        out = tenancy.rotate_secret(conn, slug=slug, overlap=timedelta(hours=overlap_hours))
        record(conn, user=ctx.user, action="rotate_secret", details={"partner": slug, "overlap_hours": overlap_hours})
    return _admin_page(
        request,
        ctx,
        shown_once={
            "title": f"New signing secret of {slug}",
            "value": out["secret"],
            "note": f"Older secrets stay valid until {out['previous_secrets_valid_until']}.",
        },
    )


@router.post("/admin/partners/{slug}/api-keys")
def create_api_key(
    request: Request,
    ctx: Ctx,
    slug: str,
    name: Annotated[str, Form(min_length=1, max_length=100)] = "dashboard",
    csrf_token: Csrf = "",
) -> HTMLResponse:
    """Create an API key for the partner; shown once."""
    ctx.require_admin()
    ctx.check_csrf(csrf_token)
    with db_of(request).write() as conn:
        partner = _partner_or_404(conn, slug)
        key = tenancy.create_api_key(conn, partner_id=partner["id"], name=name)
        record(conn, user=ctx.user, action="create_api_key", details={"partner": slug, "name": name})
    return _admin_page(request, ctx, shown_once={"title": f"New API key of {slug} ({name})", "value": key, "note": ""})


@router.post("/admin/api-keys/{key_id}/revoke")
def revoke_api_key(request: Request, ctx: Ctx, key_id: int, csrf_token: Csrf = "") -> Response:
    """Revoke an API key at once."""
    ctx.require_admin()
    ctx.check_csrf(csrf_token)
    with db_of(request).write() as conn:
        if not admin.revoke_api_key(conn, key_id=key_id):
            raise not_found()
        record(conn, user=ctx.user, action="revoke_api_key", details={"key_id": key_id})
    return RedirectResponse("/dashboard/admin#keys", status_code=303)


@router.post("/admin/jobs/{job_id}/retry")
def retry_job(request: Request, ctx: Ctx, job_id: int, csrf_token: Csrf = "") -> Response:
    """Put a dead-lettered job back in the queue with a fresh set of attempts."""
    ctx.require_admin()
    ctx.check_csrf(csrf_token)
    try:
        with db_of(request).write() as conn:
            jobs_runtime.retry_dead(conn, job_id=job_id)
            record(conn, user=ctx.user, action="retry_job", details={"job_id": job_id})
    except jobs_runtime.JobError as exc:
        status = 404 if exc.code == "job_not_found" else 409
        raise PageError(status, exc.code, str(exc)) from exc
    return RedirectResponse("/dashboard/admin#jobs", status_code=303)


# --- numbers ---------------------------------------------------------------------------------------


@router.get("/charts")
def charts_page(request: Request, ctx: Ctx, location: str | None = None) -> HTMLResponse:
    """Orders per hour today, on-time delivery rate, average courier fee by provider, re-dispatch rate."""
    location_id = int(location) if location and location.isdigit() else None
    with db_of(request).read() as conn:
        figures = charts.figures(conn, ctx.user, now=utcnow(), location_id=location_id)
        locations = scope.visible_locations(conn, ctx.user)
    return page(
        request,
        "charts.html",
        ctx,
        f=figures,
        charts=charts,
        locations=locations,
        location_id=location_id,
        dispatch_missing=features.missing_text(features.DISPATCH),
    )
