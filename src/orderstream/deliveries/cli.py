"""`orderstream dispatch ...`: list attempts, re-dispatch, cancel a delivery, show or set a location's policy."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import typer

from orderstream.config import Settings, load_settings
from orderstream.db import Database
from orderstream.deliveries import policy as rules
from orderstream.deliveries import service
from orderstream.deliveries.registry import FACTORIES
from orderstream.deliveries.schemas import attempt_from_row
from orderstream.orders.domain import Actor
from orderstream.tenancy import service as tenancy

dispatch_app = typer.Typer(help="Couriers: delivery attempts, re-dispatch, cancel, policies.", no_args_is_help=True)


def _settings() -> Settings:
    return load_settings()


def _db(settings: Settings) -> Database:
    from orderstream.migrate import upgrade

    if settings.is_sqlite:
        upgrade(settings.database_url)
    return Database.from_url(settings.database_url, pool_size=2)


def _fail(code: str, message: str) -> None:
    typer.echo(json.dumps({"error": {"code": code, "message": message}}), err=True)
    raise typer.Exit(code=1)


def _out(obj: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(obj, default=str))
        return
    rows = obj if isinstance(obj, list) else [obj]
    for item in rows:
        typer.echo("  ".join(f"{k}={v}" for k, v in item.items() if v is not None and not isinstance(v, dict | list)))


def _attempts(db: Database, order_id: str) -> list[dict[str, Any]]:
    with db.read() as conn:
        if service.get_order(conn, order_id) is None:
            _fail("order_not_found", f"no order {order_id}")
        return [attempt_from_row(r).model_dump(mode="json") for r in service.list_attempts(conn, order_id)]


def _check_provider(name: str | None) -> None:
    if name is not None and name not in FACTORIES:
        _fail("unknown_provider", f"no provider {name!r}; known: {', '.join(sorted(FACTORIES))}")


@dispatch_app.command("attempts")
def attempts(order_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """List an order's delivery attempts (provider, status, outcome, fee, courier)."""
    _out(_attempts(_db(_settings()), order_id), as_json)


@dispatch_app.command("redispatch")
def redispatch(
    order_id: str,
    provider: str = typer.Option(None, help="book only this provider"),
    exclude: list[str] = typer.Option([], "--exclude", help="skip this provider (repeatable)"),
    reason: str = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Find a courier again for an order without an active delivery (the worker does the booking)."""
    _check_provider(provider)
    db = _db(_settings())
    try:
        with db.write() as conn:
            job = service.request_redispatch(
                conn, order_id=order_id, actor=Actor.OPERATOR.value, reason=reason, exclude=exclude, only=provider
            )
    except service.DispatchError as err:
        _fail(err.code, err.message)
        return
    _out({"order_id": order_id, "job_id": job, "provider": provider, "exclude": exclude}, as_json)


@dispatch_app.command("cancel")
def cancel(
    order_id: str,
    reason: str = typer.Option(None),
    redispatch: bool = typer.Option(False, help="book again once the cancel is confirmed (another provider)"),
    provider: str = typer.Option(None, help="with --redispatch: book this provider"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cancel the order's active delivery with its provider (through the worker)."""
    _check_provider(provider)
    db = _db(_settings())
    try:
        with db.write() as conn:
            row = service.request_cancel(
                conn,
                order_id=order_id,
                actor=Actor.OPERATOR.value,
                reason=reason,
                then_dispatch=redispatch,
                only=provider,
            )
    except service.DispatchError as err:
        _fail(err.code, err.message)
        return
    _out(attempt_from_row(row).model_dump(mode="json"), as_json)


@dispatch_app.command("policy")
def policy(
    partner: str = typer.Option(..., "--partner", help="partner slug"),
    location_id: str = typer.Option(..., "--location", help="the partner's location id"),
    providers: list[str] = typer.Option([], "--provider", help="allowed provider, in preference order (repeatable)"),
    strategy: rules.Strategy = typer.Option(None, help="cheapest, fastest or preferred"),
    max_fee: int = typer.Option(None, min=0, help="minor units"),
    max_pickup_eta_minutes: int = typer.Option(None, min=1),
    acceptance_timeout: list[str] = typer.Option([], help="PROVIDER=SECONDS (repeatable)"),
    redispatch_window_minutes: float = typer.Option(None, min=0),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a location's dispatch policy; with any option, change it (unset options keep their value)."""
    settings = _settings()
    db = _db(settings)
    for name in providers:
        _check_provider(name)
    timeouts: dict[str, float] = {}
    for item in acceptance_timeout:
        name, _, seconds = item.partition("=")
        try:
            timeouts[name] = float(seconds)
        except ValueError:
            _fail("invalid_acceptance_timeout", f"expected PROVIDER=SECONDS, got {item!r}")
        _check_provider(name)
    with db.write() as conn:
        try:
            location = tenancy.require_location(conn, partner_slug=partner, external_id=location_id)
        except tenancy.TenancyError:
            _fail("location_not_found", f"no location {location_id} for partner {partner}")
            return
        current = service.get_policy(conn, location_id=int(location["id"]), settings=settings)
        changes: dict[str, Any] = {
            "allowed_providers": tuple(providers) or None,
            "strategy": strategy,
            "max_fee": max_fee,
            "max_pickup_eta_minutes": max_pickup_eta_minutes,
            "acceptance_timeout_seconds": timeouts or None,
            "redispatch_window_minutes": redispatch_window_minutes,
        }
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes:
            current = dataclasses.replace(current, **changes)
            service.set_policy(conn, location_id=int(location["id"]), policy=current)
    _out(current.as_dict(), as_json)
