"""`orderstream drivers ...`: the merchant's own drivers from the command line (add, list, deactivate, assign)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from sqlalchemy.engine import Connection, RowMapping

from orderstream import cli_support
from orderstream.config import Settings, load_settings
from orderstream.deliveries.protocol import WebhookUpdate
from orderstream.deliveries.providers.own_drivers import service

drivers_app = typer.Typer(help="The merchant's own drivers: add, list, deactivate, assign.", no_args_is_help=True)

PARTNER = typer.Option(..., "--partner", help="partner slug")
LOCATION = typer.Option(..., "--location", help="the partner's location id")
AS_JSON = typer.Option(False, "--json", help="print JSON")


@contextmanager
def _location(partner: str, location: str, *, write: bool) -> Iterator[tuple[Connection, RowMapping, Settings]]:
    """A transaction and the location; a DriversError ends the command with its code (exit 1)."""
    settings = load_settings()
    db = cli_support.open_db(settings)
    try:
        with db.write() if write else db.read() as conn:
            yield conn, service.partner_location(conn, partner_slug=partner, external_id=location), settings
    except service.DriversError as err:
        cli_support.fail(err.code, err.message)
    finally:
        db.dispose()


@drivers_app.command("add")
def add(
    partner: str = PARTNER,
    location: str = LOCATION,
    name: str = typer.Option(...),
    phone: str = typer.Option(..., help="E.164, or national in the location's country"),
    vehicle: str = typer.Option(None, help='free text, e.g. "car" or "e-bike"'),
    on_shift: bool = typer.Option(False, "--on-shift", help="available for automatic assignment now"),
    as_json: bool = AS_JSON,
) -> None:
    """Add a driver; prints their token for the status API (shown only now)."""
    with _location(partner, location, write=True) as (conn, loc, _settings):
        driver, token = service.add_driver(conn, loc=loc, name=name, phone=phone, vehicle=vehicle, on_shift=on_shift)
    cli_support.out({**driver, "token": token}, as_json)


@drivers_app.command("list")
def list_(
    partner: str = PARTNER,
    location: str = LOCATION,
    include_inactive: bool = typer.Option(False, "--all", help="include deactivated drivers"),
    as_json: bool = AS_JSON,
) -> None:
    """List a location's drivers and their open deliveries."""
    with _location(partner, location, write=False) as (conn, loc, _settings):
        cli_support.out(service.list_drivers(conn, loc=loc, include_inactive=include_inactive), as_json)


@drivers_app.command("shift")
def shift(
    driver_id: str,
    partner: str = PARTNER,
    location: str = LOCATION,
    on: bool = typer.Option(..., "--on/--off", help="on or off shift"),
    as_json: bool = AS_JSON,
) -> None:
    """Put a driver on or off shift."""
    with _location(partner, location, write=True) as (conn, loc, _settings):
        cli_support.out(service.set_shift(conn, loc=loc, driver_id=driver_id, on_shift=on), as_json)


@drivers_app.command("deactivate")
def deactivate(driver_id: str, partner: str = PARTNER, location: str = LOCATION, as_json: bool = AS_JSON) -> None:
    """Deactivate a driver (refused while they have open deliveries)."""
    with _location(partner, location, write=True) as (conn, loc, _settings):
        cli_support.out(service.deactivate_driver(conn, loc=loc, driver_id=driver_id), as_json)


@drivers_app.command("deliveries")
def deliveries(
    partner: str = PARTNER,
    location: str = LOCATION,
    status: str = typer.Option(None, help="e.g. unassigned: waiting for an operator"),
    as_json: bool = AS_JSON,
) -> None:
    """List a location's own-driver deliveries, newest first."""
    with _location(partner, location, write=False) as (conn, loc, _settings):
        cli_support.out(service.list_deliveries(conn, loc=loc, status=status), as_json)


@drivers_app.command("assign")
def assign(
    delivery_id: str,
    partner: str = PARTNER,
    location: str = LOCATION,
    driver: str = typer.Option(..., "--driver", help="driver id (drv_...)"),
    as_json: bool = AS_JSON,
) -> None:
    """Give a delivery to a driver of the location; the delivery attempt and the order follow."""
    from orderstream.deliveries import service as dispatch

    with _location(partner, location, write=True) as (conn, loc, settings):

        def apply(c: Connection, update: WebhookUpdate) -> None:
            dispatch.apply_update(c, update, actor="operator", settings=settings)

        try:
            out = service.assign(conn, loc=loc, delivery_id=delivery_id, driver_id=driver, apply=apply)
        except dispatch.DispatchError as err:
            raise service.DriversError(err.status, err.code, err.message) from err
    cli_support.out(out, as_json)


@drivers_app.command("fleet")
def fleet(
    partner: str = PARTNER,
    location: str = LOCATION,
    fee: int = typer.Option(None, help="delivery fee in minor units"),
    auto_assign: bool = typer.Option(None, "--auto-assign/--manual", help="assign drivers automatically or not"),
    as_json: bool = AS_JSON,
) -> None:
    """Show, or change, a location's own-driver fee and automatic assignment."""
    from orderstream.deliveries.providers.own_drivers.settings import OwnDriversSettings

    defaults = OwnDriversSettings()
    with _location(partner, location, write=fee is not None or auto_assign is not None) as (conn, loc, _settings):
        if fee is not None or auto_assign is not None:
            service.set_fleet(conn, loc=loc, fee=fee, auto_assign=auto_assign)
        out = service.fleet_dict(
            conn, loc=loc, default_fee=defaults.default_fee, default_auto_assign=defaults.default_auto_assign
        )
    cli_support.out(out, as_json)
