"""The live board page and its server-sent event stream."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from orderstream.app_state import db_of, settings_of
from orderstream.dashboard import board, bridges, scope, security
from orderstream.dashboard.users import User
from orderstream.dashboard.web import (
    SESSION_COOKIE,
    Ctx,
    PageRoute,
    current,
    page,
    templates,
)
from orderstream.db import utcnow
from orderstream.orders.domain import FulfillmentType

router = APIRouter(route_class=PageRoute)


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
