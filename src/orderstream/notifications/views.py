"""Twilio webhooks (delivery status, inbound STOP/START) and the e-mail unsubscribe link."""

from __future__ import annotations

import html
import logging
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.engine import Connection

from orderstream.app_state import db_of, settings_of
from orderstream.db import utcnow
from orderstream.errors import ERROR_RESPONSES, ApiError
from orderstream.notifications import domain, service
from orderstream.notifications.channels.twilio.signature import verify
from orderstream.notifications.domain import Channel, Status
from orderstream.notifications.models import notifications

log = logging.getLogger("orderstream.notifications")
router = APIRouter(tags=["notifications"], responses=ERROR_RESPONSES)

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_WORDS = frozenset({"START", "YES", "UNSTOP", "OPTIN"})
# Twilio's MessageStatus -> ours; others (queued, sending, accepted, scheduled) change nothing
CALLBACK_STATUSES = {"sent": Status.SENT, "delivered": Status.DELIVERED, "read": Status.DELIVERED,
                     "undelivered": Status.FAILED, "failed": Status.FAILED}  # fmt: skip


async def _signed_form(request: Request) -> dict[str, str]:
    """The form fields of a Twilio webhook whose X-Twilio-Signature is valid for our public URL (401 otherwise)."""
    settings = settings_of(request)
    form = await request.form()
    params = {key: str(value) for key, value in form.items()}
    url = settings.public_base_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    token = settings.twilio_auth_token.get_secret_value()
    if not verify(token, url, params, request.headers.get("x-twilio-signature")):
        raise ApiError(401, "invalid_signature", "X-Twilio-Signature does not match this request")
    return params


def apply_status(
    conn: Connection, *, notification_id: str | None, sid: str, status: str, error_code: str | None
) -> bool:
    """Move a message to the state Twilio reports (never backwards); True when something changed."""
    target = CALLBACK_STATUSES.get(status)
    if target is None:
        return False
    query = sa.select(notifications)
    if notification_id:
        query = query.where(notifications.c.id == notification_id)
    else:
        query = query.where(notifications.c.provider_message_id == sid)
    row = conn.execute(query).mappings().first()
    if row is None or (row["provider_message_id"] not in (None, sid)):
        return False
    current = Status(row["status"])
    if current in (Status.SKIPPED, Status.FAILED, Status.DELIVERED) or (
        current is Status.SENT and target is Status.SENT
    ):
        return False  # final, or nothing new: callbacks may arrive twice and out of order
    now = utcnow()
    values: dict[str, Any] = {"status": target.value, "provider_message_id": sid, "provider_status": status,
                              "updated_at": now}  # fmt: skip
    reason = None
    if target is Status.DELIVERED:
        values["delivered_at"] = now
    elif target is Status.SENT:
        values["sent_at"] = row["sent_at"] or now
    else:
        reason = f"twilio {status}" + (f" (error {error_code})" if error_code else "")
        values["reason"] = reason
    conn.execute(sa.update(notifications).where(notifications.c.id == row["id"]).values(**values))
    if target is not Status.SENT:
        service.record_history(conn, row={**row, **values}, status=target.value, reason=reason)
    return True


@router.post("/notifications/twilio/status", status_code=204, summary="Twilio message status callback")
async def twilio_status(request: Request) -> Response:
    """Twilio reports a message's delivery state (signed); the message's status follows."""
    params = await _signed_form(request)
    sid = params.get("MessageSid") or params.get("SmsSid")
    status = params.get("MessageStatus") or params.get("SmsStatus")
    if not sid or not status:
        raise ApiError(422, "validation_error", "MessageSid and MessageStatus are required",
                       [{"path": "MessageSid" if not sid else "MessageStatus", "message": "required"}])  # fmt: skip
    db = db_of(request)
    notification_id = request.query_params.get("n")
    with db.write() as conn:
        changed = apply_status(
            conn, notification_id=notification_id, sid=sid, status=status, error_code=params.get("ErrorCode")
        )
    log.info("twilio status callback %s %s for %s (changed: %s)", sid, status, notification_id, changed)
    return Response(status_code=204)


@router.post("/notifications/twilio/inbound", summary="Inbound SMS (STOP / START)")
async def twilio_inbound(request: Request) -> Response:
    """STOP-like words opt the sender out of SMS; START-like words opt them back in. Answers empty TwiML."""
    params = await _signed_form(request)
    sender, _ = domain.sms_recipient(params.get("From"), params.get("From"))
    word = (params.get("Body") or "").strip().upper()
    if sender is None:
        raise ApiError(422, "validation_error", "From is not a valid phone number",
                       [{"path": "From", "message": "invalid phone number"}])  # fmt: skip
    db = db_of(request)
    if word in STOP_WORDS or word in START_WORDS:
        with db.write() as conn:
            service.set_opt_out(conn, channel=Channel.SMS, contact=sender, source="sms_stop",
                                opted_out=word in STOP_WORDS)  # fmt: skip
        log.info("sms opt-out changed", extra={"recipient": domain.mask_phone(sender), "opted_out": word in STOP_WORDS})
    return Response('<?xml version="1.0" encoding="UTF-8"?><Response></Response>', media_type="application/xml")


def _unsubscribe_target(request: Request, token: str) -> tuple[str, str]:
    """(e-mail address, location name) for a valid unsubscribe token; 404 otherwise."""
    notification_id = service.check_unsubscribe_token(settings_of(request), token)
    db = db_of(request)
    view = None
    with db.read() as conn:
        order_id = conn.execute(
            sa.select(notifications.c.order_id).where(notifications.c.id == (notification_id or ""))
        ).scalar()
        if order_id is not None:
            view = service.load(conn, order_id)
    if view is None or not view.order["customer_email"]:
        raise ApiError(404, "not_found", "this unsubscribe link is not valid")
    return str(view.order["customer_email"]), str(view.location["name"])


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem">'
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )


@router.get("/notifications/unsubscribe/{token}", response_class=HTMLResponse, summary="Unsubscribe page")
def unsubscribe_page(request: Request, token: str) -> HTMLResponse:
    """A confirmation button (a GET never unsubscribes: mail scanners follow links)."""
    _, location = _unsubscribe_target(request, token)
    form = (
        f"<p>Stop e-mails about your orders from {html.escape(location)}?</p>"
        f'<form method="post"><button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(_page("Unsubscribe", form))


@router.post("/notifications/unsubscribe/{token}", response_class=HTMLResponse, summary="Unsubscribe (one click)")
def unsubscribe(request: Request, token: str) -> HTMLResponse:
    """Opt the e-mail address out (RFC 8058 one-click POST, or the page's button)."""
    email, _ = _unsubscribe_target(request, token)
    db = db_of(request)
    with db.write() as conn:
        service.set_opt_out(conn, channel=Channel.EMAIL, contact=email, source="email_link", opted_out=True)
    log.info("email opt-out", extra={"recipient": domain.mask_email(email)})
    return HTMLResponse(_page("Unsubscribed", "<p>You will get no more e-mails about your orders.</p>"))
