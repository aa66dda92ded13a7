"""What the application keeps on `app.state`, typed, for request handlers of every feature."""

from __future__ import annotations

from starlette.requests import Request

from orderstream.config import Settings
from orderstream.db import Database


def settings_of(request: Request) -> Settings:
    """The application's settings."""
    settings: Settings = request.app.state.settings
    return settings


def db_of(request: Request) -> Database:
    """The application's database."""
    db: Database = request.app.state.db
    return db
