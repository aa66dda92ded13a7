"""The public tracking page `/t/{token}` and its live updates (server-sent events)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from orderstream.app_state import db_of, settings_of
from orderstream.notifications import tracking
from orderstream.notifications.render import TEMPLATES_DIR

router = APIRouter(tags=["tracking"])
_pages = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(), undefined=StrictUndefined)

REFRESH_SECONDS = 30  # without JavaScript the page reloads itself this often
POLL_SECONDS = 1.0  # how often an open stream looks for a change
STREAM_SECONDS = 25.0  # a stream ends after this; EventSource reconnects (keeps shutdowns and proxies happy)
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def _state(request: Request, token: str) -> dict[str, Any]:
    settings = settings_of(request)
    db = db_of(request)
    if len(token) > 64:
        return {"found": False}
    with db.read() as conn:
        return tracking.state(
            conn, token, link_days=settings.tracking_link_days, locale=settings.notifications_default_locale
        )


@router.get("/t/{token}", response_class=HTMLResponse, summary="Tracking page (public, by unguessable token)")
async def tracking_page(request: Request, token: str) -> HTMLResponse:
    """The order's progress for the customer: 404 for an unknown token, 410 once the link has expired."""
    s = await asyncio.to_thread(_state, request, token)
    settings = settings_of(request)
    page = _pages.get_template("tracking/page.html").render(
        s=s, lang=settings.notifications_default_locale.split("_")[0], refresh_seconds=REFRESH_SECONDS
    )
    status = 404 if not s["found"] else 410 if s.get("expired") else 200
    return HTMLResponse(page, status_code=status, headers=NO_STORE)


@router.get("/t/{token}/events", summary="Live updates of the tracking page (text/event-stream)")
async def tracking_events(request: Request, token: str) -> StreamingResponse:
    """An `update` event with the page's state now and after every change, for up to STREAM_SECONDS."""

    async def stream() -> AsyncIterator[str]:
        deadline = time.monotonic() + STREAM_SECONDS
        last: dict[str, Any] | None = None
        yield f"retry: {int(POLL_SECONDS * 1000)}\n\n"
        while time.monotonic() < deadline and not await request.is_disconnected():
            current = await asyncio.to_thread(_state, request, token)
            if current != last:
                yield f"event: update\ndata: {json.dumps(current, separators=(',', ':'))}\n\n"
                last = current
                if not current["found"] or current.get("expired"):
                    return
            else:
                yield ": keep-alive\n\n"
            await asyncio.sleep(POLL_SECONDS)

    headers = {**NO_STORE, "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
