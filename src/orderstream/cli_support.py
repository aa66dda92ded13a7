"""Helpers every command-line group shares: the database, printing a result, failing with a code."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer

from orderstream.config import Settings, load_settings
from orderstream.db import Database


def open_db(config: Settings | None = None, *, pool_size: int = 2) -> Database:
    """The database of config (the environment's by default), migrated first when it is a SQLite file."""
    from orderstream.migrate import upgrade

    config = config or load_settings()
    if config.is_sqlite:
        upgrade(config.database_url)
    return Database.from_url(config.database_url, pool_size=pool_size)


def fail(code: str, message: str, *, details: list[dict[str, Any]] | None = None) -> NoReturn:
    """Print the error as JSON on stderr and exit 1; details are printed only when given."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    typer.echo(json.dumps({"error": error}), err=True)
    raise typer.Exit(code=1)


def out(obj: Any, as_json: bool, *, one_line: bool = False, skip_none: bool = False, nested: bool = False) -> None:
    """Print a record or a list of records: JSON, or one `k=v` line per record (a lone record as `key: value` lines
    unless one_line); nested values are left out of `k=v` lines unless nested, None values when skip_none."""
    if as_json:
        typer.echo(json.dumps(obj, default=str))
        return
    if isinstance(obj, dict) and not one_line:
        for key, value in obj.items():
            typer.echo(f"{key}: {value}")
        return
    for item in obj if isinstance(obj, list) else [obj]:
        shown = (
            (k, v)
            for k, v in item.items()
            if (nested or not isinstance(v, dict | list)) and not (skip_none and v is None)
        )
        typer.echo("  ".join(f"{k}={v}" for k, v in shown))
