"""The `orderstream` command line: serve, worker, migrate, partners and locations."""

from __future__ import annotations

import typer

from orderstream import cli_support
from orderstream.config import Settings, load_settings
from orderstream.dashboard.cli import users_app
from orderstream.db import Database
from orderstream.deliveries.cli import dispatch_app
from orderstream.deliveries.providers.own_drivers.cli import drivers_app
from orderstream.jobs.cli import jobs_app
from orderstream.notifications.cli import notifications_app, simulate_twilio
from orderstream.tenancy import service as tenancy
from orderstream.webhooks_out.cli import webhooks_app

app = typer.Typer(help="orderstream: an order hub for restaurants.", no_args_is_help=True, add_completion=False)
partners_app = typer.Typer(help="POS integrators and their secrets.", no_args_is_help=True)
locations_app = typer.Typer(help="Restaurant locations of a partner.", no_args_is_help=True)
app.add_typer(partners_app, name="partners")
app.add_typer(locations_app, name="locations")
simulate_app = typer.Typer(help="Local simulators of the delivery providers.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")
app.add_typer(jobs_app, name="jobs")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(dispatch_app, name="dispatch")
app.add_typer(notifications_app, name="notifications")
simulate_app.command("twilio")(simulate_twilio)
app.add_typer(users_app, name="users")
app.add_typer(drivers_app, name="drivers")


def _configure_logging(settings: Settings) -> None:
    from orderstream import logs

    logs.configure(settings.log_level, "json" if settings.log_json else "text")


@app.command()
def migrate() -> None:
    """Apply every database migration."""
    from orderstream.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    typer.echo("database is up to date")


@app.command()
def serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000)) -> None:
    """Run the HTTP service (and an embedded worker); migrates the embedded SQLite default."""
    import uvicorn

    from orderstream.app import create_app
    from orderstream.migrate import upgrade

    settings = load_settings()
    if "public_base_url" not in settings.model_fields_set:
        # links in messages and provider webhooks must reach this very process unless told otherwise
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        settings = settings.model_copy(update={"public_base_url": f"http://{local}:{port}"})
    _configure_logging(settings)
    if settings.is_sqlite:
        upgrade(settings.database_url)
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)


@app.command()
def worker(
    concurrency: int = typer.Option(None, "--concurrency", min=1, help="handler threads (default: settings)"),
    metrics_port: int = typer.Option(None, "--metrics-port", help="serve /metrics on this port (0: off)"),
) -> None:
    """Run a job worker until SIGTERM/SIGINT; run several, on several machines, against one PostgreSQL."""
    from orderstream import bootstrap
    from orderstream.jobs.worker import run_worker
    from orderstream.metrics import start_metrics_server
    from orderstream.migrate import upgrade

    settings = load_settings()
    _configure_logging(settings)
    if settings.is_sqlite:
        upgrade(settings.database_url)
    threads = concurrency or settings.worker_concurrency
    db = Database.from_url(settings.database_url, pool_size=threads + 3)
    port = settings.worker_metrics_port if metrics_port is None else metrics_port
    if port > 0:
        start_metrics_server(db, port, host=settings.worker_metrics_host)
    services = bootstrap.build_services(settings)
    try:
        run_worker(
            settings=settings,
            db=db,
            registry=bootstrap.build_registry(settings),
            services=services,
            concurrency=threads,
        )
    finally:
        bootstrap.close_services(services)
        db.dispose()


@partners_app.command("add")
def partners_add(
    slug: str,
    name: str = typer.Option(None, help="display name"),
    require_standard_webhooks: bool = typer.Option(False, help="refuse webhooks without webhook-* headers"),
    as_json: bool = typer.Option(False, "--json", help="print the record as one JSON object"),
) -> None:
    """Add a partner; prints its signing secret and API key (shown only now)."""
    db = cli_support.open_db()
    try:
        with db.write() as conn:
            created = tenancy.create_partner(
                conn, slug=slug, name=name, require_standard_webhooks=require_standard_webhooks
            )
    except tenancy.TenancyError as err:
        cli_support.fail(err.code, str(err))
        return
    cli_support.out({**created.partner, "secret": created.secret, "api_key": created.api_key}, as_json)


@partners_app.command("list")
def partners_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List partners."""
    db = cli_support.open_db()
    with db.read() as conn:
        rows = tenancy.list_partners(conn)
    cli_support.out(rows, as_json)


@partners_app.command("rotate-secret")
def partners_rotate_secret(
    slug: str,
    overlap_hours: float = typer.Option(None, help="how long older secrets stay valid (default 24)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Issue a new signing secret; older ones stay valid for the overlap window."""
    from datetime import timedelta

    settings = load_settings()
    db = cli_support.open_db(settings)
    hours = settings.secret_overlap_hours if overlap_hours is None else overlap_hours
    try:
        with db.write() as conn:
            out = tenancy.rotate_secret(conn, slug=slug, overlap=timedelta(hours=hours))
    except tenancy.TenancyError as err:
        cli_support.fail(err.code, str(err))
        return
    cli_support.out(out, as_json)


@locations_app.command("add")
def locations_add(
    partner: str = typer.Option(..., "--partner", help="partner slug"),
    location_id: str = typer.Option(..., "--id", help="the partner's own location id"),
    name: str = typer.Option(...),
    street: str = typer.Option(...),
    city: str = typer.Option(...),
    state: str = typer.Option(...),
    postal_code: str = typer.Option(...),
    country: str = typer.Option(...),
    phone: str = typer.Option(...),
    timezone: str = typer.Option(..., help="IANA time zone, e.g. America/Los_Angeles"),
    prep_time_minutes: int = typer.Option(15),
    allow_unpaid_delivery: bool = typer.Option(False),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add a location for a partner."""
    db = cli_support.open_db()
    try:
        with db.write() as conn:
            out = tenancy.add_location(
                conn,
                partner_slug=partner,
                external_id=location_id,
                name=name,
                street=street,
                city=city,
                state=state,
                postal_code=postal_code,
                country=country,
                phone=phone,
                timezone=timezone,
                prep_time_minutes=prep_time_minutes,
                allow_unpaid_delivery=allow_unpaid_delivery,
            )
    except tenancy.TenancyError as err:
        cli_support.fail(err.code, str(err))
        return
    cli_support.out(out, as_json)


@locations_app.command("update")
def locations_update(
    partner: str = typer.Option(..., "--partner"),
    location_id: str = typer.Option(..., "--id"),
    name: str = typer.Option(None),
    street: str = typer.Option(None),
    city: str = typer.Option(None),
    state: str = typer.Option(None),
    postal_code: str = typer.Option(None),
    country: str = typer.Option(None),
    phone: str = typer.Option(None),
    timezone: str = typer.Option(None),
    prep_time_minutes: int = typer.Option(None),
    status: str = typer.Option(None, help="active or paused"),
    allow_unpaid_delivery: bool = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Change a location."""
    db = cli_support.open_db()
    try:
        with db.write() as conn:
            out = tenancy.update_location(
                conn,
                partner_slug=partner,
                external_id=location_id,
                name=name,
                street=street,
                city=city,
                state=state,
                postal_code=postal_code,
                country=country,
                phone=phone,
                timezone=timezone,
                prep_time_minutes=prep_time_minutes,
                status=status,
                allow_unpaid_delivery=allow_unpaid_delivery,
            )
    except tenancy.TenancyError as err:
        cli_support.fail(err.code, str(err))
        return
    cli_support.out(out, as_json)


@locations_app.command("list")
def locations_list(
    partner: str = typer.Option(None, "--partner"), as_json: bool = typer.Option(False, "--json")
) -> None:
    """List locations."""
    db = cli_support.open_db()
    with db.read() as conn:
        rows = tenancy.list_locations(conn, partner_slug=partner)
    cli_support.out(rows, as_json)


@simulate_app.command("doordash")
def simulate_doordash(
    port: int = typer.Option(8710, help="port to listen on"),
    host: str = typer.Option("127.0.0.1"),
    webhook_url: str = typer.Option(None, help="where to POST delivery webhooks"),
    step_seconds: float = typer.Option(8.0, help="seconds between lifecycle steps"),
    quote_ttl_seconds: float = typer.Option(300.0, help="how long a quote can be accepted"),
    fault: list[str] = typer.Option([], "--fault", help="fault mode for every delivery (repeatable)"),
    event_key: str = typer.Option("event_name", help="event_name (Drive v2 samples) or event_type"),
    fee: int = typer.Option(975, help="quoted fee in cents"),
    webhook_authorization: str = typer.Option(None, help="Authorization header value sent with webhooks"),
    developer_id: str = typer.Option(None),
    key_id: str = typer.Option(None),
    signing_secret: str = typer.Option(None, help="base64url signing secret"),
) -> None:
    """Run a DoorDash Drive v2 simulator (see the simulator module for fault modes)."""
    from orderstream.deliveries.providers.doordash.simulator import SimulatorConfig, serve

    config = SimulatorConfig(
        webhook_url=webhook_url,
        step_seconds=step_seconds,
        quote_ttl_seconds=quote_ttl_seconds,
        faults=frozenset(fault),
        event_key=event_key,
        fee=fee,
    )
    for name, value in (
        ("webhook_authorization", webhook_authorization),
        ("developer_id", developer_id),
        ("key_id", key_id),
        ("signing_secret", signing_secret),
    ):
        if value is not None:
            setattr(config, name, value)
    typer.echo(f"DoorDash simulator on http://{host}:{port}", err=True)
    serve(config, host=host, port=port)


@simulate_app.command("uber")
def simulate_uber(
    port: int = typer.Option(8300, help="port to listen on"),
    host: str = typer.Option("127.0.0.1"),
    webhook_url: str = typer.Option(
        None, help="where signed webhooks go, e.g. http://127.0.0.1:8000/providers/uber/webhook"
    ),
    step_seconds: float = typer.Option(8.0, help="seconds between lifecycle steps"),
    fault: list[str] = typer.Option([], help="fault mode for every delivery or call (repeatable)"),
    duplicate_rate: float = typer.Option(0.0, help="probability that a webhook is sent twice"),
    out_of_order_rate: float = typer.Option(0.0, help="probability that a status webhook arrives after the next"),
    quote_ttl_seconds: float = typer.Option(900.0),
    token_ttl_seconds: float = typer.Option(30 * 24 * 3600.0),
    webhook_retry_seconds: float = typer.Option(1.0, help="first webhook retry delay (doubles)"),
    courier_updates: bool = typer.Option(True, help="send event.courier_update between steps"),
    customer_id: str = typer.Option(None),
    client_id: str = typer.Option(None),
    client_secret: str = typer.Option(None),
    signing_key: str = typer.Option(None, help="webhook signing key"),
    seed: int = typer.Option(None, help="random seed for couriers and webhook disorder"),
) -> None:
    """Run the Uber Direct simulator (OAuth, quotes, deliveries, lifecycle webhooks, faults)."""
    from orderstream.deliveries.providers.uber import simulator

    config = simulator.SimulatorConfig(
        webhook_url=webhook_url,
        step_seconds=step_seconds,
        faults=tuple(fault),
        duplicate_rate=duplicate_rate,
        out_of_order_rate=out_of_order_rate,
        quote_ttl_seconds=quote_ttl_seconds,
        token_ttl_seconds=token_ttl_seconds,
        webhook_retry_seconds=webhook_retry_seconds,
        courier_updates=courier_updates,
        seed=seed,
    )
    for name, value in {"customer_id": customer_id, "client_id": client_id, "client_secret": client_secret,
                        "signing_key": signing_key}.items():  # fmt: skip
        if value is not None:
            setattr(config, name, value)
    unknown = [f for f in fault if f not in simulator.FAULT_MODES]
    if unknown:
        raise typer.BadParameter(f"unknown fault modes {unknown}; known: {sorted(simulator.FAULT_MODES)}")
    typer.echo(f"Uber Direct simulator on http://{host}:{port}", err=True)
    simulator.run(config, host=host, port=port)


def main() -> None:
    """Entry point of the `orderstream` script."""
    app()
