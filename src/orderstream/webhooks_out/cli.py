"""`orderstream webhooks ...`: endpoints, secrets, deliveries and replay from the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer

from orderstream import cli_support
from orderstream.config import Settings, load_settings
from orderstream.db import Database
from orderstream.tenancy import service as tenancy
from orderstream.webhooks_out import service
from orderstream.webhooks_out.domain import EVENT_TYPES

webhooks_app = typer.Typer(help="Signed webhooks to the POS: endpoints, deliveries, replay.", no_args_is_help=True)


def _partner_id(settings: Settings, db: Database, slug: str) -> int:
    with db.read() as conn:
        try:
            return int(tenancy.require_partner(conn, slug=slug)["id"])
        except tenancy.TenancyError as err:
            cli_support.fail(err.code, str(err))
            raise


def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        cli_support.fail("invalid_time", f"--{name} must be an ISO 8601 time, e.g. 2026-11-26T18:00:00Z")
        raise
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@webhooks_app.command("add")
def add(
    partner: str = typer.Option(..., "--partner", help="partner slug"),
    url: str = typer.Option(..., "--url", help="the POS's webhook URL (http or https)"),
    events: str = typer.Option(",".join(EVENT_TYPES), "--events", help="comma-separated event types"),
    description: str = typer.Option(None, "--description"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add a webhook endpoint for a partner; prints its signing secret (shown only now)."""
    settings = load_settings()
    db = cli_support.open_db(settings)
    partner_id = _partner_id(settings, db, partner)
    try:
        with db.write() as conn:
            endpoint, secret = service.create_endpoint(
                conn,
                partner_id=partner_id,
                url=url,
                event_types=[e for e in events.split(",") if e.strip()],
                description=description,
                allow_private=settings.allow_private_webhook_targets,
            )
    except service.WebhooksError as err:
        cli_support.fail(err.code, err.message)
        return
    cli_support.out({**endpoint, "secret": secret}, as_json)


@webhooks_app.command("list")
def list_(
    partner: str = typer.Option(None, "--partner", help="only this partner's endpoints"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List webhook endpoints with their state."""
    settings = load_settings()
    db = cli_support.open_db(settings)
    partner_id = _partner_id(settings, db, partner) if partner else None
    with db.read() as conn:
        rows = service.list_endpoints(conn, partner_id=partner_id)
    cli_support.out(rows, as_json)


@webhooks_app.command("rotate-secret")
def rotate_secret(
    endpoint_id: str,
    overlap_hours: float = typer.Option(None, help="how long older secrets keep signing (default 24)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Issue a new signing secret for an endpoint; webhooks carry both signatures during the overlap."""
    settings = load_settings()
    db = cli_support.open_db(settings)
    hours = settings.secret_overlap_hours if overlap_hours is None else overlap_hours
    try:
        with db.write() as conn:
            out = service.rotate_endpoint_secret(conn, endpoint_id=endpoint_id, overlap=timedelta(hours=hours))
    except service.WebhooksError as err:
        cli_support.fail(err.code, err.message)
        return
    cli_support.out(out, as_json)


@webhooks_app.command("enable")
def enable(endpoint_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Enable an endpoint again (after a 410 or a manual disable); clears its pause and health window."""
    _set_enabled(endpoint_id, True, as_json)


@webhooks_app.command("disable")
def disable(endpoint_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Disable an endpoint; its pending deliveries are failed (they can be replayed later)."""
    _set_enabled(endpoint_id, False, as_json)


def _set_enabled(endpoint_id: str, enabled: bool, as_json: bool) -> None:
    settings = load_settings()
    db = cli_support.open_db(settings)
    try:
        with db.write() as conn:
            out = service.update_endpoint(
                conn, endpoint_id=endpoint_id, enabled=enabled, allow_private=settings.allow_private_webhook_targets
            )
    except service.WebhooksError as err:
        cli_support.fail(err.code, err.message)
        return
    cli_support.out(out, as_json)


@webhooks_app.command("deliveries")
def deliveries(
    partner: str = typer.Option(None, "--partner"),
    endpoint_id: str = typer.Option(None, "--endpoint"),
    status: str = typer.Option(None, "--status", help="pending, succeeded or failed"),
    since: str = typer.Option(None, "--since", help="ISO 8601 time"),
    until: str = typer.Option(None, "--until", help="ISO 8601 time"),
    delivery_id: str = typer.Option(None, "--id", help="show one delivery with every attempt"),
    limit: int = typer.Option(50, "--limit"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List deliveries (newest first), or show one with its attempts."""
    settings = load_settings()
    db = cli_support.open_db(settings)
    if delivery_id is not None:
        try:
            with db.read() as conn:
                cli_support.out(service.get_delivery(conn, delivery_id=delivery_id), as_json)
        except service.WebhooksError as err:
            cli_support.fail(err.code, err.message)
        return
    partner_id = _partner_id(settings, db, partner) if partner else None
    with db.read() as conn:
        rows = service.list_deliveries(
            conn,
            partner_id=partner_id,
            endpoint_id=endpoint_id,
            status=status,
            since=_when(since, "since"),
            until=_when(until, "until"),
            limit=limit,
        )
    cli_support.out(rows, as_json)


@webhooks_app.command("replay")
def replay(
    delivery_id: str = typer.Argument(None, help="one delivery to send again"),
    partner: str = typer.Option(None, "--partner", help="replay this partner's failed deliveries"),
    since: str = typer.Option(None, "--since", help="ISO 8601 time (default: 24 h ago)"),
    until: str = typer.Option(None, "--until", help="ISO 8601 time (default: now)"),
    endpoint_id: str = typer.Option(None, "--endpoint"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Send one delivery again, or every failed delivery of a partner in a time range (oldest first)."""
    settings = load_settings()
    db = cli_support.open_db(settings)
    if (delivery_id is None) == (partner is None):
        cli_support.fail("bad_arguments", "give either a delivery id or --partner")
    try:
        if delivery_id is not None:
            with db.write() as conn:
                cli_support.out(service.replay_delivery(conn, delivery_id=delivery_id), as_json)
            return
        partner_id = _partner_id(settings, db, partner)
        end = _when(until, "until") or datetime.now(UTC)
        start = _when(since, "since") or end - timedelta(hours=24)
        with db.write() as conn:
            result = service.replay_failed(conn, partner_id=partner_id, since=start, until=end, endpoint_id=endpoint_id)
        cli_support.out(result.as_dict(), as_json)
    except service.WebhooksError as err:
        cli_support.fail(err.code, err.message)
