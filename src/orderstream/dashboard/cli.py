"""`orderstream users`: dashboard users (admins see everything, merchants their locations)."""

from __future__ import annotations

import json
import sys

import typer

from orderstream.config import load_settings
from orderstream.dashboard import users as users_service
from orderstream.db import Database

users_app = typer.Typer(help="Dashboard users and their locations.", no_args_is_help=True)


def _db() -> Database:
    from orderstream.migrate import upgrade

    settings = load_settings()
    if settings.is_sqlite:
        upgrade(settings.database_url)
    return Database.from_url(settings.database_url, pool_size=2)


def _fail(code: str, message: str) -> None:
    typer.echo(json.dumps({"error": {"code": code, "message": message}}), err=True)
    raise typer.Exit(code=1)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("add")
def add_command(
    email: str,
    role: users_service.Role = typer.Option(..., "--role", help="admin (everything) or merchant (its locations)"),
    locations: str = typer.Option("", "--locations", help="merchant only: PARTNER_SLUG/LOCATION_ID, comma-separated"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="read the password from the first line of stdin"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add a dashboard user; the password comes from a prompt or --password-stdin (never an argument)."""
    refs = [r.strip() for r in locations.split(",") if r.strip()]
    password = _read_password(password_stdin)
    db = _db()
    try:
        with db.write() as conn:
            user = users_service.add_user(conn, email=email, password=password, role=role, location_refs=refs)
    except users_service.UserError as err:
        _fail(err.code, str(err))
        return
    finally:
        db.dispose()
    out = {"id": user.id, "email": user.email, "role": user.role.value, "locations": refs}
    typer.echo(json.dumps(out) if as_json else f"added {user.email} ({user.role.value})")


@users_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """List dashboard users."""
    db = _db()
    with db.read() as conn:
        rows = users_service.list_users(conn)
    db.dispose()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(f"{row['email']}  {row['role']}  {','.join(row['locations']) or '-'}")  # type: ignore[arg-type]
