"""The dashboard's router: the stylesheet, the home redirect and every page's router under /dashboard."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from orderstream.dashboard import board_views, order_views, pages, signin_views
from orderstream.dashboard.web import PageRoute

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


for _module in (signin_views, board_views, order_views, pages):
    router.include_router(_module.router)
