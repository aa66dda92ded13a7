"""`orderstream notifications ...`: location settings, an order's messages, opt-outs; `simulate twilio`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from orderstream import cli_support
from orderstream.notifications import domain, service
from orderstream.notifications.domain import Channel
from orderstream.tenancy import service as tenancy

notifications_app = typer.Typer(help="Customer notifications: settings, messages, opt-outs.", no_args_is_help=True)

SHOWN = ("id", "kind", "channel", "seq", "status", "reason", "recipient_masked", "provider", "provider_message_id",
         "attempts", "created_at", "sent_at", "delivered_at", "body_text")  # fmt: skip


def _fail(code: str, message: str, path: str | None = None) -> None:
    cli_support.fail(code, message, details=[{"path": path, "message": message}] if path else [])


@notifications_app.command("settings")
def settings_cmd(
    partner: str = typer.Option(..., "--partner", help="partner slug"),
    location_id: str = typer.Option(..., "--id", help="the partner's location id"),
    sms: bool = typer.Option(None, "--sms/--no-sms", help="send SMS for this location"),
    email: bool = typer.Option(None, "--email/--no-email", help="send e-mail for this location"),
    disable_kinds: str = typer.Option(None, help="comma-separated kinds not to send (empty string: none)"),
    overrides_file: Path = typer.Option(None, help='JSON {kind: {sms|email: {"text", "subject"}}}'),
    from_email: str = typer.Option(None, help="sender address of this location's e-mails"),
    locale: str = typer.Option(None, help="e.g. en_US, fr_CA"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a location's notification settings, changing the ones given."""
    overrides = None
    if overrides_file is not None:
        try:
            overrides = json.loads(overrides_file.read_text())
        except (OSError, ValueError) as err:
            _fail("invalid_overrides_file", f"cannot read {overrides_file}: {err}", "overrides_file")
    kinds = None if disable_kinds is None else [k.strip() for k in disable_kinds.split(",") if k.strip()]
    db = cli_support.open_db()
    try:
        with db.write() as conn:
            owner = tenancy.get_partner(conn, slug=partner)
            location = tenancy.get_location(conn, partner_id=owner["id"], external_id=location_id) if owner else None
            if location is None:
                _fail("location_not_found", f"no location {location_id} for partner {partner}", "id")
                return
            out = service.update_location_settings(
                conn,
                location_id=int(location["id"]),
                sms_enabled=sms,
                email_enabled=email,
                disabled_kinds=kinds,
                overrides=overrides,
                from_email=from_email,
                locale=locale,
            )
    except service.SettingsError as err:
        _fail(err.code, str(err), err.path)
        return
    cli_support.out(out, as_json, one_line=True, nested=True)


@notifications_app.command("list")
def list_cmd(
    order: str = typer.Option(..., "--order", help="order id (ord_...)"), as_json: bool = typer.Option(False, "--json")
) -> None:
    """An order's messages, oldest first (recipients masked)."""
    db = cli_support.open_db()
    with db.read() as conn:
        rows = service.notifications_of(conn, order)
    cli_support.out([{k: row[k] for k in SHOWN} for row in rows], as_json, one_line=True, nested=True)


@notifications_app.command("opt-out")
def opt_out_cmd(
    phone: str = typer.Option(None, help="E.164 phone number"),
    email: str = typer.Option(None, help="e-mail address"),
    undo: bool = typer.Option(False, help="lift the opt-out instead"),
) -> None:
    """Record (or lift) an opt-out on behalf of a customer."""
    if bool(phone) == bool(email):
        _fail("validation_error", "give exactly one of --phone and --email", "phone")
    if phone:
        contact, reason = domain.sms_recipient(phone, phone)
        channel = Channel.SMS
    else:
        contact, reason = domain.email_recipient(email)
        channel = Channel.EMAIL
    if contact is None:
        _fail(reason or "validation_error", "not a usable contact", "phone" if phone else "email")
        return
    db = cli_support.open_db()
    with db.write() as conn:
        service.set_opt_out(conn, channel=channel, contact=contact, source="operator", opted_out=not undo)
    typer.echo(json.dumps({"channel": channel.value, "opted_out": not undo}))


def simulate_twilio(
    port: int = typer.Option(8720, help="port to listen on"),
    host: str = typer.Option("127.0.0.1"),
    account_sid: str = typer.Option(None, help="the Account SID to accept (default: the sandbox SID)"),
    auth_token: str = typer.Option(None, help="basic-auth password and signing key (default: the sandbox token)"),
    callback_delay_seconds: float = typer.Option(0.5, help="seconds before each status callback"),
    request_delay_seconds: float = typer.Option(0.0, help="every send answers this much later (crash tests)"),
) -> None:
    """Run the Twilio Messages API simulator (sends signed status callbacks)."""
    from orderstream.notifications.channels.twilio import simulator

    config = simulator.SimulatorConfig(
        callback_delay_seconds=callback_delay_seconds, request_delay_seconds=request_delay_seconds
    )
    if account_sid:
        config.account_sid = account_sid
    if auth_token:
        config.auth_token = auth_token
    typer.echo(f"Twilio simulator on http://{host}:{port}", err=True)
    simulator.serve(config, host=host, port=port)
