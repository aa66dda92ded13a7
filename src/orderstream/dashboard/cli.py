"""`orderstream users`: dashboard users (admins see everything, merchants their locations)."""

from __future__ import annotations

import json
import sys

import typer

from orderstream import cli_support
from orderstream.dashboard import users as users_service

users_app = typer.Typer(help="Dashboard users and their locations.", no_args_is_help=True)


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
    db = cli_support.open_db()
    try:
        with db.write() as conn:
            user = users_service.add_user(conn, email=email, password=password, role=role, location_refs=refs)
    except users_service.UserError as err:
        cli_support.fail(err.code, str(err))
        return
    finally:
        db.dispose()
    out = {"id": user.id, "email": user.email, "role": user.role.value, "locations": refs}
    typer.echo(json.dumps(out) if as_json else f"added {user.email} ({user.role.value})")


@users_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """List dashboard users."""
    db = cli_support.open_db()
    with db.read() as conn:
        rows = users_service.list_users(conn)
    db.dispose()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    for row in rows:
        typer.echo(f"{row['email']}  {row['role']}  {','.join(row['locations']) or '-'}")  # type: ignore[arg-type]
