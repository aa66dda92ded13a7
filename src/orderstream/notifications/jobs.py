"""Worker side of notifications: plan what an order event sends, and send one message without repeating it."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from orderstream.config import Settings
from orderstream.db import utcnow
from orderstream.jobs.registry import JobContext, JobKind, JobRegistry, RetryableError, RetryPolicy
from orderstream.notifications import domain, planner, service
from orderstream.notifications.channels.smtp import Email, EmailError, LogSender, SmtpConfig, SmtpSender
from orderstream.notifications.channels.twilio.client import TwilioClient, TwilioConfig, TwilioError
from orderstream.notifications.domain import Channel, Status
from orderstream.notifications.handlers import PLAN_KIND
from orderstream.notifications.service import SEND_KIND, SEND_MAX_ATTEMPTS
from orderstream.prepared import Row, deferred_writes

log = logging.getLogger("orderstream.notifications")

SEND_RETRY = RetryPolicy(max_attempts=SEND_MAX_ATTEMPTS, base_seconds=5.0, cap_seconds=1800.0)
SERVICE_KEY = "notifications"
ENDED_STATUSES = ("canceled", "failed", "completed")
SANDBOX_PROVIDERS = frozenset({"twilio-simulator", "log"})
_lock = threading.Lock()
_EMAIL_IN_FLIGHT = threading.Lock()


@dataclass
class Channels:
    """The SMS and e-mail senders of this process (and the in-process Twilio simulator, when it runs one)."""

    sms: TwilioClient
    email: SmtpSender | LogSender
    simulator: Any = None
    http: httpx.Client | None = None

    def close(self) -> None:
        """Stop what this object started."""
        if self.simulator is not None:
            self.simulator.stop()
        if self.http is not None:
            self.http.close()


def build_channels(settings: Settings) -> Channels:
    """Twilio (or the in-process simulator, the sandbox default) and SMTP (or the log sink)."""
    http = httpx.Client(
        timeout=httpx.Timeout(settings.http_timeout_seconds, connect=settings.http_connect_timeout_seconds)
    )
    simulator = None
    base_url = settings.twilio_base_url
    token = settings.twilio_auth_token.get_secret_value()
    if settings.notifications_sms_backend == "simulator":
        from orderstream.notifications.channels.twilio import simulator as sim

        simulator = sim.start_in_thread(sim.SimulatorConfig(account_sid=settings.twilio_account_sid, auth_token=token))
        base_url = simulator.base_url
        log.info("twilio simulator started in process", extra={"base_url": base_url})
    sms = TwilioClient(
        http,
        TwilioConfig(
            base_url=base_url,
            account_sid=settings.twilio_account_sid,
            auth_token=token,
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
        ),
    )
    email: SmtpSender | LogSender
    if settings.notifications_email_backend == "smtp":
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        email = SmtpSender(
            SmtpConfig(
                host=settings.smtp_host,
                port=settings.smtp_port,
                security=settings.smtp_security,
                username=settings.smtp_username,
                password=password,
                timeout=settings.smtp_timeout_seconds,
            )
        )
    else:
        email = LogSender()
    return Channels(sms=sms, email=email, simulator=simulator, http=http)


def channels_for(ctx: JobContext) -> Channels:
    """This process's channels, built on first use and closed with the other services."""
    with _lock:
        found = ctx.services.get(SERVICE_KEY)
        if found is None:
            found = build_channels(ctx.settings)
            ctx.services[SERVICE_KEY] = found
        return found


# --- plan -----------------------------------------------------------------------------------------


def plan_job(ctx: JobContext) -> None:
    """Queue the messages an order event calls for.

    On PostgreSQL without a transaction: each kind's messages, their send jobs and history entries go in as one
    statement, and a run cut short is completed by the next (what went in is not queued again).
    """
    with ctx.db.atomic_statements() as conn:
        planner.plan(conn, ctx.settings, ctx.payload, utcnow())
        ctx.finish_in(conn)


# --- send -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    row: Row  # the notification, as read by service.send_view()
    recipient: str
    was_in_flight: bool  # an earlier attempt marked it sending and never recorded an outcome


def _finish(
    ctx: JobContext,
    row: Row,
    *,
    status: Status,
    reason: str | None = None,
    provider: str | None = None,
    message_id: str | None = None,
    error: str | None = None,
    history: bool = False,
    done: bool = False,
) -> None:
    """Record the outcome unless a status callback already moved the message further; `done` ends the job too."""
    entry = None
    if history or status is not Status.QUEUED:
        entry = service.history_row(
            {**row, "provider_message_id": message_id or row["provider_message_id"]}, status.value, reason
        )
    outcome = service.Outcome(
        status=status.value, reason=reason, provider=provider, message_id=message_id, error=error, at=utcnow()
    )
    # one statement on PostgreSQL: the outcome, its history entry and (with done) the job's end
    with ctx.db.atomic_statements() as conn, deferred_writes(conn):
        service.defer_outcome(conn, row["id"], outcome, history=entry)
        if done:
            ctx.finish_in(conn)
    log.info(
        "notification %s %s/%s of %s %s%s",
        row["id"],
        row["kind"],
        row["channel"],
        row["order_id"],
        status.value,
        f" ({reason})" if reason else "",
        extra={
            "notification_id": row["id"],
            "order_id": row["order_id"],
            "kind": row["kind"],
            "channel": row["channel"],
            "recipient": row["recipient_masked"],
            "reason": reason,
            "provider_message_id": message_id,
        },  # fmt: skip
    )


def _skip_reason(row: Row, recipient: str | None, reason: str | None) -> str | None:
    """Why the message must not go out now (None: send it)."""
    if recipient is not None and domain.contact_hash(recipient) != row["recipient_hash"]:
        return "contact_changed"
    if reason is None and row["opted_out"]:
        return "opted_out"
    if reason is None and row["kind"] == domain.Kind.REMINDER.value and row["order_status"] in ENDED_STATUSES:
        return "order_ended"
    if reason is None and recipient is None:
        return "no_recipient"
    return reason


def _claim(ctx: JobContext, notification_id: str) -> _Claim | None:
    """Mark the message `sending` in a statement committed on its own, or settle it without sending."""
    with ctx.db.read() as conn:
        row = service.send_view(conn, notification_id)
    if row is None or row["status"] not in (Status.QUEUED.value, Status.SENDING.value):
        return None
    recipient, reason = service.recipient_of(Channel(row["channel"]), row)
    pending = _skip_reason(row, recipient, reason)
    if pending is not None:
        _finish(ctx, row, status=Status.SKIPPED, reason=pending, history=True, done=True)
        return None
    assert recipient is not None
    with ctx.db.atomic_statements() as conn:
        if not service.mark_sending(conn, notification_id, sending_at=row["sending_at"] or utcnow()):
            return None  # settled meanwhile
    return _Claim(row=row, recipient=recipient, was_in_flight=row["status"] == Status.SENDING.value)


def _status_callback_url(settings: Settings, notification_id: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/notifications/twilio/status?n={notification_id}"


def _send_sms(ctx: JobContext, claim: _Claim, channels: Channels) -> str:
    row = claim.row
    if claim.was_in_flight:
        since = (row["sending_at"] or row["created_at"]) - timedelta(seconds=5)
        found = channels.sms.find_sent(to=claim.recipient, body=row["body_text"], since=since)
        if found is not None:
            return found.sid
    sent = channels.sms.send(
        to=claim.recipient,
        body=row["body_text"],
        status_callback=_status_callback_url(ctx.settings, row["id"]),
        idempotency_key=row["id"],
    )
    return sent.sid


def _send_email(ctx: JobContext, claim: _Claim, channels: Channels) -> str:
    row = claim.row
    sender = row["from_email"] or ctx.settings.notifications_from_email
    email = Email(
        notification_id=row["id"],
        sender=sender,
        to=claim.recipient,
        subject=row["subject"] or "",
        text=row["body_text"] or "",
        html=row["body_html"],
        unsubscribe_url=service.unsubscribe_url(ctx.settings, row["id"]),
    )
    return channels.email.send(email)


def _provider_name(channel: Channel, channels: Channels) -> str:
    if channel is Channel.SMS:
        return "twilio-simulator" if channels.simulator is not None else "twilio"
    return channels.email.name


def _deliver(ctx: JobContext, claim: _Claim, channels: Channels) -> None:
    """The provider call and the recording of its outcome."""
    channel = Channel(claim.row["channel"])
    provider = _provider_name(channel, channels)
    try:
        message_id = _send_sms(ctx, claim, channels) if channel is Channel.SMS else _send_email(ctx, claim, channels)
    except (TwilioError, EmailError) as err:
        error = domain.redact(str(err), claim.recipient)
        if err.permanent:
            _finish(ctx, claim.row, status=Status.FAILED, reason=error, provider=provider, error=error)
            if isinstance(err, TwilioError) and err.opted_out:
                with ctx.db.write() as conn:
                    service.set_opt_out(
                        conn, channel=Channel.SMS, contact=claim.recipient, source="carrier", opted_out=True
                    )
            return
        if ctx.attempts >= SEND_MAX_ATTEMPTS:
            _finish(ctx, claim.row, status=Status.FAILED, reason=f"retries exhausted: {error}", error=error)
            return
        if not err.unknown:
            # the provider said no: nothing went out, so the next attempt need not look for a copy
            _finish(ctx, claim.row, status=Status.QUEUED, error=error)
        retry_after = err.retry_after if isinstance(err, TwilioError) else None
        raise RetryableError(error, retry_after=retry_after) from None
    _finish(ctx, claim.row, status=Status.SENT, provider=provider, message_id=message_id, done=True)
    if provider in SANDBOX_PROVIDERS:
        # the sandbox has no phone or mailbox to look at: the text goes to the log (recipient masked)
        log.info(
            "sandbox %s %s to %s: %s",
            channel.value,
            claim.row["kind"],
            claim.row["recipient_masked"],
            claim.row["subject"] or claim.row["body_text"],
        )


def send_job(ctx: JobContext) -> None:
    """Send one message: `sending` is committed before the provider call, the outcome after it."""
    notification_id = str(ctx.payload["notification_id"])
    if ctx.lease_lost.is_set():
        return
    claim = _claim(ctx, notification_id)
    if claim is None:
        return
    channels = channels_for(ctx)
    if claim.row["channel"] == Channel.SMS.value:
        _deliver(ctx, claim, channels)  # a cut-off SMS is found again (idempotency token, lookup): no lock needed
        return
    # SMTP has no idempotency key: one e-mail between "handed over" and "recorded" per process, so a
    # crash can repeat at most one e-mail
    with _EMAIL_IN_FLIGHT:
        _deliver(ctx, claim, channels)


def register_jobs(registry: JobRegistry) -> None:
    """The notification job kinds."""
    registry.register(JobKind(PLAN_KIND, plan_job, retry=RetryPolicy(max_attempts=5, base_seconds=2.0)))
    registry.register(JobKind(SEND_KIND, send_job, retry=SEND_RETRY))
