"""Queueing notifications inside the caller's transaction: once per (order, kind, channel), with every skip recorded."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from orderstream.config import Settings
from orderstream.db import (
    in_values,
    insert_ignoring,
    json_ready,
    pg_insert_json_rows,
    pg_json_rows,
    prefixed,
    unprefixed,
    utcnow,
)
from orderstream.ids import new_id
from orderstream.jobs import outbox
from orderstream.jobs.outbox import batch, enqueue
from orderstream.notifications import domain
from orderstream.notifications.domain import Channel, Kind, Status
from orderstream.notifications.models import (
    notification_opt_outs,
    notification_settings,
    notifications,
)
from orderstream.notifications.render import display_phone, local_datetime, local_time, money, render
from orderstream.orders import service as orders_service
from orderstream.orders.models import order_history, orders
from orderstream.prepared import Prepared, Row
from orderstream.tenancy.models import locations

log = logging.getLogger("orderstream.notifications")

SEND_KIND = "notifications.send"

# Prebuilt statements, values passed apart (a statement built per call cost more CPU than running it).
# the order, its location and the location's settings in one statement (location and settings columns prefixed)
_SELECT_VIEW = Prepared(
    sa.select(
        orders,
        *prefixed(locations, "location"),
        *prefixed(notification_settings, "prefs"),
    )
    .select_from(
        orders.join(locations, locations.c.id == orders.c.location_id).outerjoin(
            notification_settings, notification_settings.c.location_id == orders.c.location_id
        )
    )
    .where(orders.c.id == sa.bindparam("b_order_id", type_=orders.c.id.type))
)
_SELECT_OPT_OUT = sa.select(notification_opt_outs.c.id).where(
    notification_opt_outs.c.channel == sa.bindparam("b_channel", type_=notification_opt_outs.c.channel.type),
    notification_opt_outs.c.contact_hash == sa.bindparam("b_hash", type_=notification_opt_outs.c.contact_hash.type),
)
_INSERT_KEY = ["order_id", "kind", "channel", "seq"]
_SQLITE_INSERT = insert_ignoring("sqlite", notifications, index_elements=_INSERT_KEY).returning(notifications.c.id)
_ROW_COLUMNS = (
    "id", "order_id", "partner_id", "location_id", "kind", "channel", "seq", "recipient_hash", "recipient_masked",
    "status", "reason", "facts", "send_after", "created_at", "updated_at", "subject", "body_text", "body_html",
)  # fmt: skip


def _pg_queue_statement() -> Prepared:
    """PostgreSQL: the new rows, the send jobs of those queued and the history of those skipped, in one statement.

    Rows, jobs and history entries go as JSON parameters (`rows`, `jobs`, `history`: one compiled statement for
    any number of each); a row already there (the plan job run again) inserts nothing, and neither do its job
    and history entry. Returns the inserted ids and the kinds of the jobs that went in (their NOTIFY sent).
    """
    inserted = (
        pg_insert_json_rows(notifications, _ROW_COLUMNS)
        .on_conflict_do_nothing(index_elements=_INSERT_KEY)
        .returning(notifications.c.id)
        .cte("new_notification")
    )
    new_ids = sa.select(inserted.c.id)
    names = orders_service.HISTORY_COLUMNS
    entry = pg_json_rows("history", order_history, names, "skip_history_row", many=True)
    history = sa.insert(order_history).from_select(
        list(names),
        sa.select(*entry.c).select_from(entry).where(entry.c.details["notification_id"].as_string().in_(new_ids)),
    )
    new_jobs = outbox.pg_insert_rows(keys_in=new_ids)
    return Prepared(
        sa.select(
            sa.select(sa.func.array_agg(inserted.c.id)).scalar_subquery().label("inserted"),
            outbox.pg_notify_kinds(new_jobs).label("kinds"),
        ).add_cte(history.cte("skip_history"))
    )


_PG_QUEUE = _pg_queue_statement()
SEND_MAX_ATTEMPTS = 8


@dataclass(frozen=True)
class OrderView:
    """An order with its location and the location's notification settings."""

    order: Mapping[Any, Any]
    location: Mapping[Any, Any]
    prefs: Mapping[Any, Any] | None

    @property
    def locale(self) -> str | None:
        """The location's locale, if it set one."""
        return self.prefs["locale"] if self.prefs is not None else None


def load(conn: Connection, order_id: str) -> OrderView | None:
    """The order, its location and that location's notification settings."""
    row = _SELECT_VIEW.first(conn, {"b_order_id": order_id})
    if row is None:
        return None
    location = unprefixed(row, locations, "location")
    assert location is not None  # an inner join
    return OrderView(
        {name: row[name] for name in orders.c.keys()}, location, unprefixed(row, notification_settings, "prefs")
    )


def tracking_url(settings: Settings, token: str) -> str:
    """The public tracking link of an order."""
    return f"{settings.public_base_url.rstrip('/')}/t/{token}"


def unsubscribe_token(settings: Settings, notification_id: str) -> str:
    """An unguessable token naming the notification whose recipient wants no more e-mail."""
    key = settings.api_key_pepper.get_secret_value().encode()
    mac = hmac.new(key, f"unsubscribe:{notification_id}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{notification_id}.{mac}"


def unsubscribe_url(settings: Settings, notification_id: str) -> str:
    """The link in an e-mail that stops further e-mail to its recipient."""
    token = unsubscribe_token(settings, notification_id)
    return f"{settings.public_base_url.rstrip('/')}/notifications/unsubscribe/{token}"


def check_unsubscribe_token(settings: Settings, token: str) -> str | None:
    """The notification id named by a valid unsubscribe token, else None."""
    notification_id, _, _ = token.partition(".")
    expected = unsubscribe_token(settings, notification_id)
    return notification_id if hmac.compare_digest(expected, token) else None


def context(view: OrderView, settings: Settings, facts: dict[str, Any], notification_id: str) -> dict[str, Any]:
    """Everything a template may use, formatted for the location's locale and time zone."""
    order, location = view.order, view.location
    locale = view.locale or settings.notifications_default_locale
    tz = location["timezone"]
    eta = facts.get("dropoff_eta")
    eta_at = datetime.fromisoformat(eta) if isinstance(eta, str) else None
    address = f"{location['street']}, {location['city']}"
    return {
        "lang": locale.split("_")[0],
        "location_name": location["name"],
        "location_phone": display_phone(location["phone"], location["country"]),
        "order_ref": f"#{order['source_order_id']}",
        "customer_first_name": domain.first_name(order["customer_name"]),
        "fulfillment_type": order["fulfillment_type"],
        "total": money(order["total_amount"], order["currency"], locale),
        "requested_for": local_datetime(order["requested_for"], tz, locale) if order["is_future_order"] else None,
        "eta": local_time(eta_at, tz, locale),
        "courier_first_name": facts.get("courier_first_name"),
        "vehicle": facts.get("vehicle"),
        "why": facts.get("why"),
        "tracking_url": tracking_url(settings, order["tracking_token"]),
        "pickup_address": address,
        "pickup_instructions": order["fulfillment_instructions"],
        "unsubscribe_url": unsubscribe_url(settings, notification_id),
    }


def record_history(conn: Connection, *, row: Row, status: str, reason: str | None) -> None:
    """An order-history entry for a message outcome (recipient masked)."""
    orders_service.insert_histories(conn, [history_row(row, status, reason)])


def history_row(row: Row, status: str, reason: str | None) -> dict[str, Any]:
    """The order-history row of a message outcome (recipient masked)."""
    entry = orders_service.history_entry(
        kind="notification",
        actor="system",
        reason=f"{row['channel']} {row['kind']} {status}" + (f": {reason}" if reason else ""),
        details={
            "notification_id": row["id"],
            "kind": row["kind"],
            "channel": row["channel"],
            "status": status,
            "reason": reason,
            "recipient": row["recipient_masked"],
            "provider_message_id": row.get("provider_message_id"),
        },
    )
    return {**entry, "order_id": row["order_id"], "inbound_event_id": None}


def is_opted_out(conn: Connection, channel: Channel, recipient_hash: str) -> bool:
    """True when this phone / e-mail asked for no more messages on the channel."""
    found = conn.execute(_SELECT_OPT_OUT, {"b_channel": channel.value, "b_hash": recipient_hash}).first()
    return found is not None


def set_opt_out(conn: Connection, *, channel: Channel, contact: str, source: str, opted_out: bool) -> None:
    """Record (or lift) an opt-out for a phone / e-mail on a channel."""
    digest = domain.contact_hash(contact)
    where = (notification_opt_outs.c.channel == channel.value, notification_opt_outs.c.contact_hash == digest)
    if not opted_out:
        conn.execute(sa.delete(notification_opt_outs).where(*where))
        return
    if conn.execute(sa.select(notification_opt_outs.c.id).where(*where)).first() is None:
        conn.execute(
            sa.insert(notification_opt_outs).values(
                channel=channel.value, contact_hash=digest, source=source, created_at=utcnow()
            )
        )


# messages sent to a recipient in the last hour, counted up to the cap only: whether the cap is reached is all
# that matters, and a recipient far over it (one phone on every order) would otherwise cost a longer count each time
_SELECT_RECENT_COUNT = sa.select(sa.func.count()).select_from(
    sa.select(notifications.c.id)
    .where(
        notifications.c.recipient_hash == sa.bindparam("b_hash", type_=notifications.c.recipient_hash.type),
        notifications.c.created_at > sa.bindparam("b_since", type_=notifications.c.created_at.type),
        in_values(notifications.c.status, sorted(s.value for s in domain.COUNTED_STATUSES)),
    )
    .limit(sa.bindparam("b_cap", type_=sa.Integer()))
    .subquery()
)


# whether the recipient opted out of the channel, and how many messages it was sent in the last hour
_SELECT_RECIPIENT_STATE = Prepared(
    sa.select(sa.exists(_SELECT_OPT_OUT).label("opted_out"), _SELECT_RECENT_COUNT.scalar_subquery().label("recent"))
)


def _recipient_state(
    conn: Connection, channel: Channel, recipient_hash: str, now: datetime, cap: int
) -> tuple[bool, int]:
    """(opted out, messages in the last hour up to cap)."""
    params = {"b_channel": channel.value, "b_hash": recipient_hash, "b_since": now - timedelta(hours=1), "b_cap": cap}
    row = _SELECT_RECIPIENT_STATE.first(conn, params)
    assert row is not None  # a SELECT of two subqueries: always one row
    return bool(row["opted_out"]), int(row["recent"])


def _insert_new(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """SQLite: insert the rows whose (order, kind, channel, seq) is new, in one statement; the ids that went in."""
    if not rows:
        return set()
    return set(conn.execute(_SQLITE_INSERT, rows).scalars())


def _send_job(conn: Connection, values: dict[str, Any]) -> None:
    enqueue(
        conn,
        kind=SEND_KIND,
        key=values["id"],
        payload={"notification_id": values["id"]},
        run_at=values["send_after"],
        max_attempts=SEND_MAX_ATTEMPTS,
    )


def _pg_insert(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """PostgreSQL: the rows, their send jobs and skip history in one statement (_PG_QUEUE); the ids that went in."""
    with outbox.collect(conn) as pending:
        for values in rows:
            if values["reason"] is None:
                _send_job(conn, values)
    history = [history_row(values, Status.SKIPPED.value, values["reason"]) for values in rows if values["reason"]]
    params = {
        "rows": [json_ready(values) for values in rows],
        "jobs": outbox.json_rows(pending),
        "history": [json_ready(entry) for entry in history],
        "channel": outbox.NOTIFY_CHANNEL,
    }
    found = _PG_QUEUE.first(conn, params)
    assert found is not None  # a SELECT of two subqueries: always one row
    outbox.note_enqueued(conn, found["kinds"] or (), outbox.earliest_due(pending))
    return set(found["inserted"] or ())


def _log_queued(order_id: str, kind: Kind, values: dict[str, Any]) -> None:
    reason = values["reason"]
    log.info(
        "notification %s %s/%s of %s %s%s",
        values["id"],
        kind.value,
        values["channel"],
        order_id,
        values["status"],
        f" ({reason})" if reason else "",
        extra={
            "notification_id": values["id"],
            "order_id": order_id,
            "kind": kind.value,
            "channel": values["channel"],
            "recipient": values["recipient_masked"],
            "reason": reason,
        },  # fmt: skip
    )


def recipient_of(channel: Channel, order: Mapping[Any, Any]) -> tuple[str | None, str | None]:
    """(the order's phone or e-mail for this channel, None), or (None, why it cannot get a message)."""
    if channel is Channel.SMS:
        return domain.sms_recipient(order["customer_phone_e164"], order["customer_phone"])
    return domain.email_recipient(order["customer_email"])


def _masked(channel: Channel, recipient: str | None) -> str | None:
    return domain.mask_phone(recipient) if channel is Channel.SMS else domain.mask_email(recipient)


def _skip_reason(
    conn: Connection,
    settings: Settings,
    view: OrderView,
    kind: Kind,
    channel: Channel,
    recipient_hash: str | None,
    now: datetime,
) -> str | None:
    prefs = view.prefs
    if prefs is not None:
        if not prefs["sms_enabled" if channel is Channel.SMS else "email_enabled"]:
            return "channel_disabled"
        if kind.value in (prefs["disabled_kinds"] or []):
            return "kind_disabled"
    if recipient_hash is None:
        return None
    opted_out, recent = _recipient_state(conn, channel, recipient_hash, now, settings.notifications_cap_per_hour)
    if opted_out:
        return "opted_out"
    if recent >= settings.notifications_cap_per_hour:
        return "rate_capped"
    return None


def queue(
    conn: Connection,
    settings: Settings,
    *,
    order_id: str,
    kind: Kind,
    facts: dict[str, Any] | None = None,
    seq: int = 0,
    send_after: datetime | None = None,
) -> list[str]:
    """Queue this kind on every channel (once each), or record why a channel is skipped; returns queued ids."""
    if not settings.notifications_enabled:
        return []
    view = load(conn, order_id)
    if view is None:
        return []
    facts = dict(facts or {})
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for channel in Channel:
        recipient, reason = recipient_of(channel, view.order)
        recipient_hash = domain.contact_hash(recipient) if recipient else None
        reason = reason or _skip_reason(conn, settings, view, kind, channel, recipient_hash, now)
        nid = new_id("ntf")
        values: dict[str, Any] = {
            "id": nid,
            "order_id": order_id,
            "partner_id": view.order["partner_id"],
            "location_id": view.location["id"],
            "kind": kind.value,
            "channel": channel.value,
            "seq": seq,
            "recipient_hash": recipient_hash,
            "recipient_masked": _masked(channel, recipient),
            "status": Status.SKIPPED.value if reason else Status.QUEUED.value,
            "reason": reason,
            "facts": facts,
            "send_after": send_after or now,
            "created_at": now,
            "updated_at": now,
            "subject": None,
            "body_text": None,
            "body_html": None,
        }
        if reason is None:
            overrides = (view.prefs["overrides"] if view.prefs is not None else None) or {}
            message = render(
                channel,
                kind,
                view.order["fulfillment_type"],
                context(view, settings, facts, nid),
                override=(overrides.get(kind.value) or {}).get(channel.value),
            )
            values.update(subject=message.subject, body_text=message.text, body_html=message.html)
        rows.append(values)
    if conn.dialect.name == "postgresql":
        inserted = _pg_insert(conn, rows)
        for values in rows:
            if values["id"] in inserted:
                _log_queued(order_id, kind, values)
        return [values["id"] for values in rows if values["id"] in inserted and values["reason"] is None]
    inserted = _insert_new(conn, rows)
    queued: list[str] = []
    skips: list[dict[str, Any]] = []
    with batch(conn):
        for values in rows:
            if values["id"] not in inserted:
                continue  # queued before (a job run again)
            _log_queued(order_id, kind, values)
            if values["reason"] is not None:
                skips.append(history_row(values, Status.SKIPPED.value, values["reason"]))
                continue
            _send_job(conn, values)
            queued.append(values["id"])
    orders_service.insert_histories(conn, skips)
    return queued


# --- sending one message ---------------------------------------------------------------------------

_NOTIFICATION_ID = sa.bindparam("b_id", type_=notifications.c.id.type)
_UNSETTLED = in_values(notifications.c.status, [Status.QUEUED.value, Status.SENDING.value])
# a message, its order's contact and status, whether its recipient opted out of its channel and its location's
# sender address: what a send needs, in one statement
_SELECT_SEND_VIEW = Prepared(
    sa.select(
        notifications,
        orders.c.customer_phone_e164,
        orders.c.customer_phone,
        orders.c.customer_email,
        orders.c.status.label("order_status"),
        sa.exists(
            sa.select(notification_opt_outs.c.id).where(
                notification_opt_outs.c.channel == notifications.c.channel,
                notification_opt_outs.c.contact_hash == notifications.c.recipient_hash,
            )
        ).label("opted_out"),
        notification_settings.c.from_email,
    )
    .select_from(
        notifications.join(orders, orders.c.id == notifications.c.order_id).outerjoin(
            notification_settings, notification_settings.c.location_id == notifications.c.location_id
        )
    )
    .where(notifications.c.id == _NOTIFICATION_ID)
)
_MARK_SENDING = Prepared(
    sa.update(notifications)
    .where(notifications.c.id == _NOTIFICATION_ID, _UNSETTLED)
    .values(
        status=Status.SENDING.value,
        attempts=notifications.c.attempts + 1,
        sending_at=sa.bindparam("b_sending_at", type_=notifications.c.sending_at.type),
        updated_at=sa.bindparam("b_now", type_=notifications.c.updated_at.type),
    )
)
# the outcome of a send, unless a status callback settled the message first (one statement shape for every outcome)
_UPDATE_OUTCOME = (
    sa.update(notifications)
    .where(notifications.c.id == _NOTIFICATION_ID, _UNSETTLED)
    .values(
        status=sa.bindparam("b_status", type_=notifications.c.status.type),
        reason=sa.bindparam("b_reason", type_=notifications.c.reason.type),
        last_error=sa.bindparam("b_error", type_=notifications.c.last_error.type),
        updated_at=sa.bindparam("b_now", type_=notifications.c.updated_at.type),
        provider=sa.func.coalesce(
            sa.bindparam("b_provider", type_=notifications.c.provider.type), notifications.c.provider
        ),
        provider_message_id=sa.func.coalesce(
            sa.bindparam("b_message_id", type_=notifications.c.provider_message_id.type),
            notifications.c.provider_message_id,
        ),
        sent_at=sa.func.coalesce(
            sa.bindparam("b_sent_at", type_=notifications.c.sent_at.type), notifications.c.sent_at
        ),
    )
)
_SQLITE_OUTCOME = Prepared(_UPDATE_OUTCOME)


def _pg_outcome_statement() -> Prepared:
    """PostgreSQL: the outcome and its history row (given as JSON, none or one) in one statement."""
    changed = _UPDATE_OUTCOME.returning(notifications.c.id).cte("changed_notification")
    names = orders_service.HISTORY_COLUMNS
    entry = pg_json_rows("b_history", order_history, names, "outcome_history_row", many=True)
    history = sa.insert(order_history).from_select(
        list(names), sa.select(*entry.c).select_from(entry).where(sa.exists(sa.select(changed.c.id)))
    )
    return Prepared(sa.select(sa.func.count()).select_from(changed).add_cte(history.cte("outcome_history")))


_PG_OUTCOME = _pg_outcome_statement()


@dataclass(frozen=True)
class Outcome:
    """What became of one attempt to send a message."""

    status: str
    reason: str | None
    provider: str | None
    message_id: str | None
    error: str | None
    at: datetime


def send_view(conn: Connection, notification_id: str) -> Row | None:
    """The message with what sending it needs (see _SELECT_SEND_VIEW), or None."""
    return _SELECT_SEND_VIEW.first(conn, {"b_id": notification_id})


def mark_sending(conn: Connection, notification_id: str, *, sending_at: datetime) -> bool:
    """Mark a queued (or in-flight) message `sending`, one more attempt; False when it was settled meanwhile."""
    return _MARK_SENDING.run(conn, {"b_id": notification_id, "b_sending_at": sending_at, "b_now": utcnow()}) == 1


def record_outcome(conn: Connection, notification_id: str, outcome: Outcome, *, history: dict[str, Any] | None) -> bool:
    """Record a send's outcome and its history row, unless the message was settled meanwhile; whether it was."""
    params = _outcome_params(notification_id, outcome)
    if conn.dialect.name == "postgresql":
        rows = [json_ready(history)] if history is not None else []
        return bool(_PG_OUTCOME.scalar(conn, {**params, "b_history": rows}))
    changed = _SQLITE_OUTCOME.run(conn, params) == 1
    if changed and history is not None:
        orders_service.insert_histories(conn, [history])
    return changed


def defer_outcome(conn: Connection, notification_id: str, outcome: Outcome, *, history: dict[str, Any] | None) -> None:
    """record_outcome() for a caller that needs no answer: inside prepared.deferred_writes() sent with the rest."""
    if conn.dialect.name != "postgresql":
        record_outcome(conn, notification_id, outcome, history=history)
        return
    rows = [json_ready(history)] if history is not None else []
    _PG_OUTCOME.defer(conn, {**_outcome_params(notification_id, outcome), "b_history": rows})


def _outcome_params(notification_id: str, outcome: Outcome) -> dict[str, Any]:
    return {
        "b_id": notification_id,
        "b_status": outcome.status,
        "b_reason": outcome.reason,
        "b_error": outcome.error,
        "b_now": outcome.at,
        "b_provider": outcome.provider or None,
        "b_message_id": outcome.message_id or None,
        "b_sent_at": outcome.at if outcome.status == Status.SENT.value else None,
    }


def notifications_of(conn: Connection, order_id: str) -> list[dict[str, Any]]:
    """Every message of an order, oldest first."""
    rows = conn.execute(
        sa.select(notifications)
        .where(notifications.c.order_id == order_id)
        .order_by(notifications.c.created_at, notifications.c.channel.desc())
    ).mappings()
    return [dict(r) for r in rows]


class SettingsError(Exception):
    """Location notification settings that cannot be stored: a stable code and the field path."""

    def __init__(self, code: str, message: str, path: str) -> None:
        super().__init__(message)
        self.code = code
        self.path = path


def _check_overrides(overrides: dict[str, Any]) -> None:
    from jinja2 import TemplateSyntaxError

    from orderstream.notifications.render import check_override

    for kind, by_channel in overrides.items():
        if kind not in {k.value for k in Kind}:
            raise SettingsError("unknown_kind", f"no notification kind {kind!r}", f"overrides.{kind}")
        if not isinstance(by_channel, dict):
            raise SettingsError("invalid_override", "expected {channel: {text, subject}}", f"overrides.{kind}")
        for channel, parts in by_channel.items():
            path = f"overrides.{kind}.{channel}"
            if channel not in {c.value for c in Channel} or not isinstance(parts, dict):
                raise SettingsError("invalid_override", "expected sms or email with {text, subject}", path)
            for part, text in parts.items():
                if part not in ("text", "subject") or not isinstance(text, str):
                    raise SettingsError("invalid_override", "only text and subject strings", f"{path}.{part}")
                try:
                    check_override(text)
                except TemplateSyntaxError as err:
                    raise SettingsError("invalid_template", f"template error: {err.message}", f"{path}.{part}") from err


def location_settings(conn: Connection, *, location_id: int) -> dict[str, Any]:
    """A location's notification settings (the defaults when it never set any)."""
    row = (
        conn.execute(sa.select(notification_settings).where(notification_settings.c.location_id == location_id))
        .mappings()
        .first()
    )
    if row is None:
        return {"location_id": location_id, "sms_enabled": True, "email_enabled": True, "disabled_kinds": [],
                "overrides": {}, "from_email": None, "locale": None}  # fmt: skip
    return {k: v for k, v in dict(row).items() if k != "updated_at"}


def update_location_settings(conn: Connection, *, location_id: int, **changes: Any) -> dict[str, Any]:
    """Change some of a location's notification settings; raises SettingsError."""
    current = location_settings(conn, location_id=location_id)
    changes = {k: v for k, v in changes.items() if v is not None}
    for kind in changes.get("disabled_kinds", []):
        if kind not in {k.value for k in Kind}:
            raise SettingsError("unknown_kind", f"no notification kind {kind!r}", "disabled_kinds")
    if "overrides" in changes:
        _check_overrides(changes["overrides"])
    if "locale" in changes:
        from babel import Locale, UnknownLocaleError

        try:
            Locale.parse(changes["locale"])
        except (UnknownLocaleError, ValueError) as err:
            raise SettingsError("invalid_locale", f"unknown locale {changes['locale']!r}", "locale") from err
    if "from_email" in changes and domain.email_recipient(changes["from_email"])[1] is not None:
        raise SettingsError("invalid_email", "not an e-mail address", "from_email")
    merged = {**current, **changes, "updated_at": utcnow()}
    exists = conn.execute(
        sa.select(notification_settings.c.location_id).where(notification_settings.c.location_id == location_id)
    ).first()
    if exists is None:
        conn.execute(sa.insert(notification_settings).values(**merged))
    else:
        values = {k: v for k, v in merged.items() if k != "location_id"}
        conn.execute(
            sa.update(notification_settings).where(notification_settings.c.location_id == location_id).values(**values)
        )
    return location_settings(conn, location_id=location_id)
