"""Dispatch use cases on the database: policies, attempts, applying provider truth, cancel and re-dispatch requests.

Nothing here calls a provider: jobs call providers outside any transaction and record the result here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Connection

from orderstream.config import Settings, load_settings
from orderstream.db import Database, LockedSelect, in_values, insert_ignoring, prefixed, unprefixed, utcnow
from orderstream.deliveries import policy as rules
from orderstream.deliveries.models import delivery_attempts, dispatch_policies, provider_webhook_events
from orderstream.deliveries.protocol import (
    Address,
    CancelOutcome,
    Contact,
    DeliveryRequest,
    DeliverySnapshot,
    DeliveryStatus,
    Item,
    Quote,
    WebhookUpdate,
)
from orderstream.jobs.models import jobs
from orderstream.jobs.outbox import batch, enqueue
from orderstream.orders import domain
from orderstream.orders import service as orders_service
from orderstream.orders.events import DeliveryStatusChanged, OrderStatusChanged
from orderstream.orders.handlers import publish
from orderstream.orders.models import order_history, order_line_items, orders
from orderstream.prepared import Prepared, Row
from orderstream.tenancy.models import locations

log = logging.getLogger("orderstream.deliveries")

DISPATCH_KIND = "dispatch"
ACCEPTANCE_KIND = "dispatch.acceptance"
CANCEL_KIND = "dispatch.cancel"
RECONCILE_KIND = "dispatch.reconcile"
FAIL_KIND = "dispatch.fail"

BOOKING, BOOKED, ENDED = "booking", "booked", "ended"

# Prebuilt statements for the dispatch path, values passed apart: building a statement (and its cache
# key) per call cost more CPU than running it. Bound parameter names start with `b_` (an UPDATE
# reserves the column names for its SET clause).
_ORDER_ID = sa.bindparam("b_order_id", type_=orders.c.id.type)
_ATTEMPT_ID = sa.bindparam("b_attempt_id", type_=delivery_attempts.c.id.type)
_SELECT_POLICY = sa.select(dispatch_policies).where(
    dispatch_policies.c.location_id == sa.bindparam("b_location_id", type_=dispatch_policies.c.location_id.type)
)
_SELECT_ORDER = sa.select(orders).where(orders.c.id == _ORDER_ID)
# what is_dispatchable() needs, the order row locked (PostgreSQL)
_SELECT_DISPATCHABLE_LOCKED = LockedSelect(
    sa.select(orders.c.id, orders.c.fulfillment_type, orders.c.status).where(orders.c.id == _ORDER_ID)
)
_SELECT_LINE_ITEMS = (
    sa.select(order_line_items.c.name, order_line_items.c.quantity, order_line_items.c.price_amount)
    .where(order_line_items.c.order_id == _ORDER_ID)
    .order_by(order_line_items.c.position)
)
_SELECT_ATTEMPT = sa.select(delivery_attempts).where(delivery_attempts.c.id == _ATTEMPT_ID)
# (SQLite's compiler leaves FOR UPDATE out: a single writer there anyway)
_SELECT_ATTEMPT_LOCKED = Prepared(_SELECT_ATTEMPT.with_for_update())
_SELECT_ACTIVE_ATTEMPT = sa.select(delivery_attempts).where(delivery_attempts.c.active_order_id == _ORDER_ID)
_SELECT_LAST_NUMBER = sa.select(sa.func.max(delivery_attempts.c.number)).where(
    delivery_attempts.c.order_id == _ORDER_ID
)
_SELECT_ORDER_OF = sa.select(delivery_attempts.c.order_id).where(delivery_attempts.c.id == _ATTEMPT_ID)
# PostgreSQL: the order's line items as one JSON array of [name, quantity, price_amount], in their order
_LINE_ITEMS_JSON = (
    sa.select(
        sa.func.json_agg(
            aggregate_order_by(
                sa.func.json_build_array(
                    order_line_items.c.name, order_line_items.c.quantity, order_line_items.c.price_amount
                ),
                order_line_items.c.position,
            ),
            type_=sa.JSON(),
        )
    )
    .where(order_line_items.c.order_id == orders.c.id)
    .scalar_subquery()
    .label("line_items")
)
# a dispatch round's reads in one statement: the order, its location and policy, its attempts' last number and
# the active one (location and policy columns are prefixed, see dispatch_facts); on PostgreSQL its line items too
_SELECT_DISPATCH_FACTS_SQLITE = (
    sa.select(
        orders,
        *prefixed(locations, "location"),
        *prefixed(dispatch_policies, "policy"),
        sa.select(sa.func.max(delivery_attempts.c.number))
        .where(delivery_attempts.c.order_id == orders.c.id)
        .scalar_subquery()
        .label("last_attempt_number"),
        sa.select(delivery_attempts.c.id)
        .where(delivery_attempts.c.active_order_id == orders.c.id)
        .scalar_subquery()
        .label("active_attempt_id"),
    )
    .select_from(
        orders.join(locations, locations.c.id == orders.c.location_id).outerjoin(
            dispatch_policies, dispatch_policies.c.location_id == orders.c.location_id
        )
    )
    .where(orders.c.id == _ORDER_ID)
)
_SELECT_DISPATCH_FACTS = {
    "sqlite": Prepared(_SELECT_DISPATCH_FACTS_SQLITE),
    "postgresql": Prepared(_SELECT_DISPATCH_FACTS_SQLITE.add_columns(_LINE_ITEMS_JSON)),
}
# the order and one of its attempts, both locked (not the location), with the location's POS id: what recording
# a change of the attempt needs, in one statement (attempt columns prefixed). PostgreSQL locks the rows in the
# FROM list's order, the order first, as every other writer of an order does.
_SELECT_ORDER_AND_ATTEMPT_LOCKED = Prepared(
    sa.select(orders, locations.c.external_id.label("location_external_id"), *prefixed(delivery_attempts, "attempt"))
    .select_from(
        orders.join(locations, locations.c.id == orders.c.location_id).join(
            delivery_attempts, delivery_attempts.c.order_id == orders.c.id
        )
    )
    .where(orders.c.id == _ORDER_ID, delivery_attempts.c.id == _ATTEMPT_ID)
    .with_for_update(of=[orders, delivery_attempts])
)
_ORDER_WITH_STORE_KEYS = (*orders.c.keys(), "location_external_id")
# losing the race for the one active attempt (or any other unique key) inserts nothing and aborts nothing
_INSERT_ATTEMPT = {
    dialect: insert_ignoring(dialect, delivery_attempts).returning(*delivery_attempts.c)
    for dialect in ("postgresql", "sqlite")
}
_UPDATE_ATTEMPT = sa.update(delivery_attempts).where(delivery_attempts.c.id == _ATTEMPT_ID)
_UPDATE_ORDER = sa.update(orders).where(orders.c.id == _ORDER_ID)


class DispatchError(Exception):
    """An operator request that cannot be done; code and status for the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class UnknownDelivery(DispatchError):
    """A provider update for a delivery we never booked."""

    def __init__(self, provider: str, external_id: str) -> None:
        super().__init__(404, "unknown_delivery", f"no {provider} delivery {external_id!r} here")


# -- policy --------------------------------------------------------------------------------------


def default_policy(settings: Settings) -> rules.Policy:
    """The policy of a location that has none of its own."""
    names = tuple(p.strip() for p in settings.dispatch_providers.split(",") if p.strip())
    return rules.Policy(allowed_providers=names, strategy=rules.Strategy(settings.dispatch_strategy))


def get_policy(conn: Connection, *, location_id: int, settings: Settings) -> rules.Policy:
    """The location's policy, or the default one."""
    found = conn.execute(_SELECT_POLICY, {"b_location_id": location_id}).mappings().first()
    return default_policy(settings) if found is None else _policy(found)


def _policy(found: Row) -> rules.Policy:
    return rules.Policy(
        allowed_providers=tuple(found["allowed_providers"]),
        strategy=rules.Strategy(found["strategy"]),
        max_fee=found["max_fee"],
        max_pickup_eta_minutes=found["max_pickup_eta_minutes"],
        acceptance_timeout_seconds={k: float(v) for k, v in (found["acceptance_timeout_seconds"] or {}).items()},
        redispatch_window_minutes=found["redispatch_window_minutes"],
    )


def set_policy(conn: Connection, *, location_id: int, policy: rules.Policy) -> None:
    """Store (replace) a location's policy."""
    values = {
        "allowed_providers": list(policy.allowed_providers),
        "strategy": policy.strategy.value,
        "max_fee": policy.max_fee,
        "max_pickup_eta_minutes": policy.max_pickup_eta_minutes,
        "acceptance_timeout_seconds": dict(policy.acceptance_timeout_seconds),
        "redispatch_window_minutes": policy.redispatch_window_minutes,
        "updated_at": utcnow(),
    }
    done = conn.execute(
        sa.update(dispatch_policies).where(dispatch_policies.c.location_id == location_id).values(**values)
    )
    if done.rowcount == 0:
        conn.execute(sa.insert(dispatch_policies).values(location_id=location_id, **values))


# -- reading an order for dispatch ---------------------------------------------------------------


@dataclass(frozen=True)
class DispatchFacts:
    """What a dispatch round needs to know about an order before it calls a provider."""

    order: Row
    location: Row
    policy: rules.Policy  # the location's (or the default), narrowed by the order's fulfillment type
    next_number: int
    active_attempt_id: int | None
    items: tuple[Item, ...] | None = None  # read with the facts on PostgreSQL; None: delivery_request reads them


def dispatch_facts(conn: Connection, order_id: str, *, settings: Settings) -> DispatchFacts | None:
    """The order, its location, policy and attempt numbers in one statement; None when there is no such order."""
    row = _SELECT_DISPATCH_FACTS[conn.dialect.name].first(conn, {"b_order_id": order_id})
    if row is None:
        return None
    order = {name: row[name] for name in orders.c.keys()}
    location = unprefixed(row, locations, "location")
    assert location is not None  # an inner join
    found = unprefixed(row, dispatch_policies, "policy")
    policy = default_policy(settings) if found is None else _policy(found)
    return DispatchFacts(
        order=order,
        location=location,
        policy=rules.for_fulfillment(policy, domain.FulfillmentType(order["fulfillment_type"])),
        next_number=int(row["last_attempt_number"] or 0) + 1,
        active_attempt_id=row["active_attempt_id"],
        items=_items(row["line_items"] or []) if "line_items" in row else None,
    )


def _items(rows: Sequence[Sequence[Any]]) -> tuple[Item, ...]:
    return tuple(Item(name=str(name), quantity=int(quantity), price=int(price)) for name, quantity, price in rows)


def get_order(conn: Connection, order_id: str) -> Row | None:
    """The order row."""
    return conn.execute(_SELECT_ORDER, {"b_order_id": order_id}).mappings().first()


def lock_dispatchable(conn: Connection, order_id: str) -> bool:
    """Lock the order row (PostgreSQL) and tell whether it is still dispatchable; False when it does not exist."""
    order = conn.execute(_SELECT_DISPATCHABLE_LOCKED.on(conn), {"b_order_id": order_id}).mappings().first()
    return order is not None and is_dispatchable(order)


def is_dispatchable(order: Row) -> bool:
    """A delivery order that is not finished."""
    return domain.is_dispatched(domain.FulfillmentType(order["fulfillment_type"])) and (
        domain.OrderStatus(order["status"]) not in domain.TERMINAL
    )


def delivery_request(
    conn: Connection,
    *,
    order: Row,
    location: Row,
    external_id: str,
    pickup_ready_at: datetime | None,
    dropoff_deadline: datetime | None,
    items: tuple[Item, ...] | None = None,
) -> DeliveryRequest:
    """What providers need to quote or book one attempt of this order (items: the order's, when already read)."""
    address = order["delivery_address"] or {}
    if items is None:
        items = _items(conn.execute(_SELECT_LINE_ITEMS, {"b_order_id": order["id"]}).all())
    amounts = order["amounts"] or {}
    tip = amounts.get("driver_tip") or amounts.get("tip_amount") or 0
    total = int(order["total_amount"] or 0)
    return DeliveryRequest(
        external_id=external_id,
        order_id=order["id"],
        pickup_address=Address(
            street=location["street"],
            city=location["city"],
            state=location["state"],
            postal_code=location["postal_code"],
            country=location["country"],
        ),
        pickup_contact=Contact(name=location["name"], phone=location["phone"], business_name=location["name"]),
        dropoff_address=Address(
            street=str(address.get("street") or address.get("address_line_1") or ""),
            city=str(address.get("city") or ""),
            state=str(address.get("state") or ""),
            postal_code=str(address.get("postal_code") or address.get("zip") or ""),
            country=str(address.get("country") or location["country"]),
            unit=address.get("unit") or address.get("address_line_2"),
        ),
        dropoff_contact=Contact(
            name=order["customer_name"] or "Customer",
            phone=order["customer_phone_e164"] or order["customer_phone"] or location["phone"],
        ),
        order_value=total,
        currency=str(order["currency"]).lower(),
        items=items,
        dropoff_instructions=order["fulfillment_instructions"],
        tip=int(tip) if isinstance(tip, int | float) else 0,
        cash_to_collect=total if order["unpaid"] else None,
        pickup_ready_at=pickup_ready_at,
        dropoff_deadline=dropoff_deadline,
        external_store_id=location["external_id"],
    )


def planned_times(order: Row, settings: Settings) -> tuple[datetime | None, datetime | None]:
    """Pickup ready time and drop-off deadline for the provider: None for ASAP orders."""
    if not order["is_future_order"] or order["requested_for"] is None:
        return None, None
    return rules.future_times(order["requested_for"], travel_minutes=settings.dispatch_courier_travel_minutes)


def dispatch_time(order: Row, location: Row, settings: Settings) -> datetime | None:
    """When a future order's courier should be booked; None for ASAP orders."""
    if not order["is_future_order"] or order["requested_for"] is None:
        return None
    prep = order["prep_time_minutes"] or location["prep_time_minutes"] or 0
    return rules.dispatch_at(
        order["requested_for"], prep_minutes=float(prep), travel_minutes=settings.dispatch_courier_travel_minutes
    )


# -- attempts ------------------------------------------------------------------------------------


def get_attempt(conn: Connection, attempt_id: int) -> Row | None:
    """One attempt by id."""
    return conn.execute(_SELECT_ATTEMPT, {"b_attempt_id": attempt_id}).mappings().first()


def active_attempt(conn: Connection, order_id: str) -> Row | None:
    """The order's active attempt (booking or booked), if any."""
    return conn.execute(_SELECT_ACTIVE_ATTEMPT, {"b_order_id": order_id}).mappings().first()


def list_attempts(conn: Connection, order_id: str) -> list[Row]:
    """Every attempt of an order, oldest first."""
    return list(
        conn.execute(
            sa.select(delivery_attempts)
            .where(delivery_attempts.c.order_id == order_id)
            .order_by(delivery_attempts.c.number)
        ).mappings()
    )


def next_number(conn: Connection, order_id: str) -> int:
    """The number of the order's next attempt."""
    top = conn.execute(_SELECT_LAST_NUMBER, {"b_order_id": order_id}).scalar()
    return int(top or 0) + 1


def attempt_values(
    *, order_id: str, number: int, provider: str, quote: Quote | None, request: DeliveryRequest, context: dict[str, Any]
) -> dict[str, Any]:
    """The columns of attempt `number` of an order, starting (state `booking`) with this quote and request."""
    now = utcnow()
    return {
        "order_id": order_id,
        "number": number,
        "active_order_id": order_id,
        "provider": provider,
        "external_id": request.external_id,
        "state": BOOKING,
        "delivery_status": DeliveryStatus.PENDING.value,
        "quote_id": quote.quote_id if quote else None,
        "quote_expires_at": quote.expires_at if quote else None,
        "fee": quote.fee if quote else None,
        "currency": quote.currency.lower()[:3] if quote else request.currency,
        "pickup_eta": quote.pickup_eta if quote else None,
        "dropoff_eta": quote.dropoff_eta if quote else None,
        "tip": request.tip,
        "pickup_ready_at": request.pickup_ready_at,
        "dropoff_deadline": request.dropoff_deadline,
        "context": context,
        "created_at": now,
        "updated_at": now,
    }


def _booking_history(values: dict[str, Any]) -> dict[str, Any]:
    """The history entry of an attempt starting (history_entry(), without order_id)."""
    return orders_service.history_entry(
        actor=str(values["context"].get("actor") or domain.Actor.SYSTEM.value),
        kind="delivery",
        reason="delivery booking",
        details={
            "attempt": values["number"],
            "provider": values["provider"],
            "fee": values["fee"],
            "external_id": values["external_id"],
        },
    )


def insert_attempt(conn: Connection, values: dict[str, Any]) -> Row | None:
    """Insert an attempt (attempt_values()) with its history line; None when the order already has an active one."""
    row = conn.execute(_INSERT_ATTEMPT[conn.dialect.name], values).mappings().first()
    if row is None:
        return None
    orders_service.insert_history(conn, _booking_history(values), order_id=values["order_id"], inbound_event_id=None)
    return row


@cache
def _start_attempt_statement(names: tuple[str, ...], history_names: tuple[str, ...]) -> Prepared:
    """PostgreSQL: lock the order if still dispatchable, insert the attempt and its history line; one statement.

    names: the attempt's columns (attempt_values), history_names: the history entry's (_booking_history).
    """
    order_id = sa.bindparam("order_id", type_=orders.c.id.type)
    dispatchable = (
        sa.select(orders.c.id)
        .where(
            orders.c.id == order_id,
            in_values(orders.c.fulfillment_type, sorted(t.value for t in domain.DISPATCHED_TYPES)),
            sa.not_(in_values(orders.c.status, sorted(s.value for s in domain.TERMINAL))),
        )
        .with_for_update()
        .cte("dispatchable_order")
    )
    attempt = (
        insert_ignoring("postgresql", delivery_attempts)
        .from_select(
            list(names),
            sa.select(*[sa.bindparam(name, type_=delivery_attempts.c[name].type) for name in names]).select_from(
                dispatchable
            ),
        )
        .returning(*delivery_attempts.c)
        .cte("new_attempt")
    )
    history = sa.insert(order_history).from_select(
        ["order_id", *history_names],
        sa.select(
            attempt.c.order_id,
            *[sa.bindparam(f"h_{name}", type_=order_history.c[name].type) for name in history_names],
        ),
    )
    return Prepared(sa.select(*attempt.c).add_cte(history.cte("attempt_history")))


def start_attempt(db: Database, values: dict[str, Any]) -> Row | None:
    """Start an attempt (attempt_values()) if its order is still dispatchable and has no active attempt.

    Returns the attempt, or None (not dispatchable any more, or another attempt is active). On PostgreSQL the
    lock, the attempt and its history line are one self-committing statement; on SQLite one transaction.
    """
    if db.is_sqlite:
        with db.write() as conn:
            return insert_attempt(conn, values) if lock_dispatchable(conn, values["order_id"]) else None
    entry = _booking_history(values)
    stmt = _start_attempt_statement(tuple(values), tuple(entry))
    with db.atomic_statements() as conn:
        return stmt.first(conn, {**values, **{f"h_{name}": value for name, value in entry.items()}})


def stored_quote(attempt: Row) -> Quote | None:
    """The quote an attempt was started with, as the provider adapter takes it."""
    if attempt["quote_id"] is None:
        return None
    return Quote(
        provider=attempt["provider"],
        external_id=attempt["external_id"],
        quote_id=attempt["quote_id"],
        fee=int(attempt["fee"] or 0),
        currency=attempt["currency"] or "usd",
        pickup_eta=attempt["pickup_eta"],
        dropoff_eta=attempt["dropoff_eta"],
        expires_at=attempt["quote_expires_at"],
    )


def courier_dict(snapshot: DeliverySnapshot) -> dict[str, Any] | None:
    """The courier as we store and publish it: the phone masked."""
    courier = snapshot.courier
    if courier is None:
        return None
    out = {
        "name": courier.name,
        "phone": rules.mask_phone(courier.phone),
        "vehicle_type": courier.vehicle_type,
        "vehicle_make": courier.vehicle_make,
        "vehicle_model": courier.vehicle_model,
        "vehicle_color": courier.vehicle_color,
        "license_plate": courier.license_plate,
        "latitude": courier.latitude,
        "longitude": courier.longitude,
        "picture_url": courier.picture_url,
    }
    return {k: v for k, v in out.items() if v is not None} or None


def record_booked(
    conn: Connection,
    *,
    order: Row,
    attempt: Row,
    snapshot: DeliverySnapshot,
    accept_within: float | None,
    settings: Settings,
) -> None:
    """The provider took the booking: store its truth, start the acceptance check (unless None) and the reconciler.

    order, attempt: both as read and locked by lock_order_and_attempt in this transaction.
    """
    now = utcnow()
    deadline = now + timedelta(seconds=accept_within) if accept_within is not None else None
    booking = {
        "state": BOOKED,
        "provider_delivery_id": snapshot.provider_delivery_id or None,
        "booked_at": now,
        "accept_deadline": deadline,
    }
    _apply_snapshot(
        conn,
        attempt=attempt,
        snapshot=snapshot,
        actor=domain.Actor.SYSTEM.value,
        settings=settings,
        force_event=True,
        also=booking,
        order=order,
    )
    with batch(conn):  # both checks in one statement
        if deadline is not None:
            enqueue(
                conn,
                kind=ACCEPTANCE_KIND,
                key=f"attempt:{attempt['id']}",
                payload={"attempt_id": int(attempt["id"])},
                run_at=deadline,
            )
        schedule_reconcile(conn, attempt_id=int(attempt["id"]), seq=1, settings=settings)
    # the order is locked since it was read, and nothing above cancels an order: its status is still current
    if order["status"] == domain.OrderStatus.CANCELED.value:
        # canceled while we were booking: the courier must not come
        request_cancel(conn, order_id=attempt["order_id"], actor=domain.Actor.SYSTEM.value, reason="order canceled")


def schedule_reconcile(conn: Connection, *, attempt_id: int, seq: int, settings: Settings) -> None:
    """The next silence check of an active attempt."""
    enqueue(
        conn,
        kind=RECONCILE_KIND,
        key=f"attempt:{attempt_id}:{seq}",
        payload={"attempt_id": attempt_id, "seq": seq},
        run_at=utcnow() + timedelta(seconds=settings.dispatch_reconcile_seconds),
    )


def end_attempt(
    conn: Connection,
    *,
    attempt: Row,
    outcome: rules.Ending,
    reason: str | None,
    actor: str,
    cancel_fee: int | None = None,
) -> bool:
    """End an attempt (it stops being the active one); False when it had already ended."""
    now = utcnow()
    values: dict[str, Any] = {
        "state": ENDED,
        "active_order_id": None,
        "outcome": outcome.value,
        "outcome_reason": reason,
        "ended_at": now,
        "updated_at": now,
    }
    if cancel_fee is not None:
        values["cancel_fee"] = cancel_fee
    done = conn.execute(
        sa.update(delivery_attempts)
        .where(delivery_attempts.c.id == attempt["id"], delivery_attempts.c.state != ENDED)
        .values(**values)
    )
    if done.rowcount == 0:
        return False
    orders_service.record_history(
        conn,
        order_id=attempt["order_id"],
        actor=actor,
        kind="delivery",
        reason=f"delivery attempt {attempt['number']} ended: {outcome.value}" + (f" ({reason})" if reason else ""),
        details={
            "attempt": attempt["number"],
            "provider": attempt["provider"],
            "outcome": outcome.value,
            "cancel_fee": cancel_fee,
        },
    )
    log.info(
        "delivery attempt ended",
        extra={
            "order_id": attempt["order_id"],
            "provider": attempt["provider"],
            "attempt": attempt["number"],
            "outcome": outcome.value,
            "reason": reason,
        },
    )
    return True


# -- applying provider truth ---------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyResult:
    """What apply_update did: applied, duplicate, stale (older than what we know) or ended (attempt over)."""

    result: str
    attempt_id: int | None = None
    order_id: str | None = None
    delivery_status: str | None = None


def _claim_event(conn: Connection, *, provider: str, event_id: str) -> bool:
    """Remember a provider event id; False when it was seen before."""
    values = {"provider": provider, "event_id": event_id[:200], "result": "applied", "received_at": utcnow()}
    stmt = insert_ignoring(conn.dialect.name, provider_webhook_events).values(**values)
    return conn.execute(stmt.returning(provider_webhook_events.c.id)).first() is not None


def find_attempt(conn: Connection, *, provider: str, external_id: str, provider_delivery_id: str) -> Row | None:
    """The attempt a provider update is about: by our external id, else by the provider's delivery id."""
    if external_id:
        row = (
            conn.execute(
                sa.select(delivery_attempts).where(
                    delivery_attempts.c.external_id == external_id, delivery_attempts.c.provider == provider
                )
            )
            .mappings()
            .first()
        )
        if row is not None:
            return row
    if provider_delivery_id:
        return (
            conn.execute(
                sa.select(delivery_attempts).where(
                    delivery_attempts.c.provider == provider,
                    delivery_attempts.c.provider_delivery_id == provider_delivery_id,
                )
            )
            .mappings()
            .first()
        )
    return None


def lock_attempt(conn: Connection, attempt_id: int, *, order_id: str | None = None) -> Row | None:
    """The attempt, with its order and then itself locked (PostgreSQL): every writer takes them in this order.

    order_id: the attempt's order when the caller knows it (it never changes), saving the look-up.
    """
    orders_service.lock_order(conn, order_id=order_id or _order_of(conn, attempt_id))
    return _lock_attempt(conn, attempt_id)


def lock_order_and_attempt(conn: Connection, attempt_id: int, *, order_id: str) -> tuple[Row, Row] | None:
    """(order, attempt), both read and locked in one statement, the order first; None when either is gone.

    The order row comes with `location_external_id`, its location's POS id.
    """
    row = _SELECT_ORDER_AND_ATTEMPT_LOCKED.first(conn, {"b_order_id": order_id, "b_attempt_id": attempt_id})
    if row is None:
        return None
    attempt = unprefixed(row, delivery_attempts, "attempt")
    assert attempt is not None  # an inner join
    return {key: row[key] for key in _ORDER_WITH_STORE_KEYS}, attempt


def _lock_attempt(conn: Connection, attempt_id: int) -> Row | None:
    return _SELECT_ATTEMPT_LOCKED.first(conn, {"b_attempt_id": attempt_id})


def apply_update(
    conn: Connection, update: WebhookUpdate, *, actor: str, settings: Settings | None = None
) -> ApplyResult:
    """Apply a canonical provider update to its attempt: deduplicated, monotonic, and the order follows.

    Raises UnknownDelivery when no attempt matches. settings default to the environment's.
    """
    settings = settings or load_settings()
    snap = update.snapshot
    found = find_attempt(
        conn, provider=update.provider, external_id=snap.external_id, provider_delivery_id=snap.provider_delivery_id
    )
    if found is None:
        raise UnknownDelivery(update.provider, snap.external_id or snap.provider_delivery_id)
    # lock the order first (the same order as every other writer of this order), then the attempt
    locked = lock_order_and_attempt(conn, int(found["id"]), order_id=found["order_id"])
    assert locked is not None
    order, attempt = locked
    if not _claim_event(conn, provider=update.provider, event_id=update.event_id):
        return ApplyResult("duplicate", int(attempt["id"]), attempt["order_id"], attempt["delivery_status"])
    result, status = _apply_snapshot(conn, attempt=attempt, snapshot=snap, actor=actor, settings=settings, order=order)
    conn.execute(
        sa.update(provider_webhook_events)
        .where(
            provider_webhook_events.c.provider == update.provider,
            provider_webhook_events.c.event_id == update.event_id[:200],
        )
        .values(result=result, attempt_id=attempt["id"])
    )
    return ApplyResult(result, int(attempt["id"]), attempt["order_id"], status)


def _is_newer(attempt: Row, snapshot: DeliverySnapshot) -> bool:
    known = attempt["provider_updated_at"]
    return known is None or snapshot.updated_at is None or snapshot.updated_at >= known


def _apply_snapshot(
    conn: Connection,
    *,
    attempt: Row,
    snapshot: DeliverySnapshot,
    actor: str,
    settings: Settings,
    force_event: bool = False,
    also: dict[str, Any] | None = None,
    order: Row | None = None,
) -> tuple[str, str]:
    """Store a provider snapshot on the attempt when it moves forward; follow with the order.

    Returns the result and the attempt's delivery status after it (nothing later in the transaction changes it).

    also: more attempt columns to set in the same UPDATE (a booking's state, id and times).
    order: the attempt's order when the caller already read it locked in this transaction (else read here).
    """
    now = utcnow()
    current = DeliveryStatus(attempt["delivery_status"])
    new = snapshot.status
    if new is DeliveryStatus.MERCHANT_CANCELED and (attempt["context"] or {}).get("cancel_purpose") == "no_courier":
        new = DeliveryStatus.FAILED_TO_ASSIGN_DRIVER  # we canceled only because nobody accepted
    forward = rules.moves_forward(current, new)
    details: dict[str, Any] = {**(also or {}), "last_event_at": now, "updated_at": now}
    if attempt["state"] == ENDED and not (forward and new in rules.FINAL_STATUSES):
        conn.execute(_UPDATE_ATTEMPT, {"b_attempt_id": attempt["id"], **details})
        return "ended", current.value
    if not forward and not (new == current and _is_newer(attempt, snapshot)):
        conn.execute(_UPDATE_ATTEMPT, {"b_attempt_id": attempt["id"], **details})
        return "stale", current.value
    courier = courier_dict(snapshot)
    if courier is not None:
        details["courier"] = courier
    for name in ("pickup_eta", "dropoff_eta", "tracking_url", "fee"):
        value = getattr(snapshot, name)
        if value is not None:
            details[name] = value
    if snapshot.proof_of_delivery:
        details["proof_of_delivery"] = dict(snapshot.proof_of_delivery)
    if snapshot.updated_at is not None:
        details["provider_updated_at"] = snapshot.updated_at
    if snapshot.provider_delivery_id and not attempt["provider_delivery_id"]:
        details["provider_delivery_id"] = snapshot.provider_delivery_id
    if forward:
        details["delivery_status"] = new.value
        details["provider_status"] = snapshot.provider_status
        if new in rules.PICKED_UP and attempt["picked_up_at"] is None:
            details["picked_up_at"] = now
    if not forward and not force_event:
        conn.execute(_UPDATE_ATTEMPT, {"b_attempt_id": attempt["id"], **details})
        return "applied", current.value
    if order is None:
        order = orders_service.get_order_for_update(conn, order_id=attempt["order_id"])
        assert order is not None
    history = None
    if forward:
        history = orders_service.history_entry(
            actor=actor,
            kind="delivery",
            from_status=current.value,
            to_status=new.value,
            reason=snapshot.cancellation_reason,
            details={"attempt": attempt["number"], "provider": attempt["provider"]},
        )
    _store_progress(
        conn,
        attempt_id=int(attempt["id"]),
        details=details,
        order_id=order["id"],
        delivery_status=new.value,
        history=history,
    )
    log.info(
        "delivery status changed",
        extra={
            "order_id": order["id"],
            "provider": attempt["provider"],
            "attempt": attempt["number"],
            "from_status": current.value,
            "to_status": new.value,
        },
    )
    publish(
        conn,
        DeliveryStatusChanged(
            order_id=order["id"],
            partner_id=order["partner_id"],
            attempt_id=int(attempt["id"]),
            provider=attempt["provider"],
            from_status=current.value if current != new else None,
            to_status=new.value,
            courier=courier or attempt["courier"],
            pickup_eta=snapshot.pickup_eta or attempt["pickup_eta"],
            dropoff_eta=snapshot.dropoff_eta or attempt["dropoff_eta"],
            tracking_url=snapshot.tracking_url or attempt["tracking_url"],
            at=now,
            order_ref=_pos_ref(order, delivery_status=new.value),
        ),
    )
    _order_follows(conn, order=order, status=new)
    if new in rules.FINAL_STATUSES:
        _finish_attempt(conn, attempt=attempt, order=order, snapshot=snapshot, actor=actor, settings=settings)
    return "applied", new.value if forward else current.value


def _pos_ref(order: Row, *, delivery_status: str) -> dict[str, Any] | None:
    """The order's POS reference for its events (webhooks_out's _order_ref columns), when read with its store's id."""
    if "location_external_id" not in order:
        return None
    held = {name: order[name] for name in ("source_order_id", "status", "cancel_reason", "currency")}
    return {**held, "delivery_status": delivery_status, "external_id": order["location_external_id"]}


def _store_progress(
    conn: Connection,
    *,
    attempt_id: int,
    details: dict[str, Any],
    order_id: str,
    delivery_status: str,
    history: dict[str, Any] | None,
) -> None:
    """The attempt's new columns, the order's delivery status and the history line (when given) in one write.

    details: the attempt's columns, `updated_at` among them. One statement on PostgreSQL, three on SQLite.
    """
    order_values = {"delivery_status": delivery_status, "updated_at": details["updated_at"]}
    if conn.dialect.name != "postgresql":
        conn.execute(_UPDATE_ATTEMPT, {"b_attempt_id": attempt_id, **details})
        conn.execute(_UPDATE_ORDER, {"b_order_id": order_id, **order_values})
        if history is not None:
            orders_service.insert_history(conn, history, order_id=order_id, inbound_event_id=None)
        return
    stmt = _progress_statement(tuple(details), tuple(order_values), tuple(history or ()))
    params = {"p_attempt_id": attempt_id, "p_order_id": order_id}
    params.update({f"a_{name}": value for name, value in details.items()})
    params.update({f"o_{name}": value for name, value in order_values.items()})
    params.update({f"h_{name}": value for name, value in (history or {}).items()})
    stmt.defer(conn, params)


@cache
def _progress_statement(
    attempt_columns: tuple[str, ...], order_columns: tuple[str, ...], history_columns: tuple[str, ...]
) -> Prepared:
    """PostgreSQL: _store_progress's three writes as one statement (built once per set of columns)."""
    attempt_update = (
        sa.update(delivery_attempts)
        .where(delivery_attempts.c.id == sa.bindparam("p_attempt_id", type_=delivery_attempts.c.id.type))
        .values({name: sa.bindparam(f"a_{name}", type_=delivery_attempts.c[name].type) for name in attempt_columns})
        .cte("attempt_progress")
    )
    order_update = (
        sa.update(orders)
        .where(orders.c.id == sa.bindparam("p_order_id", type_=orders.c.id.type))
        .values({name: sa.bindparam(f"o_{name}", type_=orders.c[name].type) for name in order_columns})
    )
    if not history_columns:
        return Prepared(order_update.add_cte(attempt_update))
    changed = order_update.returning(orders.c.id).cte("order_progress")
    return Prepared(
        sa.insert(order_history)
        .from_select(
            ["order_id", *history_columns],
            sa.select(
                changed.c.id, *[sa.bindparam(f"h_{name}", type_=order_history.c[name].type) for name in history_columns]
            ),
        )
        .add_cte(attempt_update)
    )


def _order_follows(conn: Connection, *, order: Row, status: DeliveryStatus) -> None:
    target = rules.order_status_for(status)
    if target is None:
        return
    fulfillment = domain.FulfillmentType(order["fulfillment_type"])
    current = domain.OrderStatus(order["status"])
    if current == target or not domain.can_transition(fulfillment, current, target):
        return
    orders_service.change_status(conn, order=order, target=target, actor=domain.Actor.COURIER, reason=status.value)


def _finish_attempt(
    conn: Connection,
    *,
    attempt: Row,
    order: Row,
    snapshot: DeliverySnapshot,
    actor: str,
    settings: Settings,
) -> None:
    """A final provider status ends the attempt; recover (re-dispatch) or fail the order as it implies."""
    purpose = (attempt["context"] or {}).get("cancel_purpose")
    canceled_by_us = attempt["cancel_requested_at"] is not None and purpose != "no_courier"
    ending = rules.ending_for(snapshot.status, canceled_by_us=canceled_by_us)
    if ending is None:
        return
    reason = snapshot.cancellation_reason or snapshot.provider_status
    if purpose == "no_courier":
        ending = rules.Ending.NO_COURIER
        reason = "no courier accepted within the acceptance timeout"
    fee = snapshot.fee if ending is rules.Ending.CANCELED else None
    if not end_attempt(conn, attempt=attempt, outcome=ending, reason=reason, actor=actor, cancel_fee=fee):
        return
    if purpose is not None or ending in (rules.Ending.DELIVERED, rules.Ending.CANCELED):
        return  # the job that asked for the cancel decides what follows
    current = get_order(conn, order["id"])
    if current is None or domain.OrderStatus(current["status"]) in domain.TERMINAL:
        return
    if ending in rules.REDISPATCHABLE:
        if within_redispatch_window(conn, order=order, settings=settings):
            request_redispatch(
                conn,
                order_id=order["id"],
                actor=domain.Actor.SYSTEM.value,
                reason=f"{attempt['provider']}: {ending.value} ({reason})",
                exclude=[*excluded(attempt), attempt["provider"]],
                automatic=True,
            )
            return
        reason = f"{ending.value} at {attempt['provider']}, too late to re-dispatch"
        schedule_failure(conn, order_id=order["id"], reason=reason, settings=settings)
        return
    fail_order(conn, order_id=order["id"], reason=f"delivery {ending.value} ({reason})", actor=domain.Actor.COURIER)


def excluded(attempt: Row) -> list[str]:
    """Providers the dispatch round of this attempt had already given up on."""
    return [str(p) for p in (attempt["context"] or {}).get("exclude", [])]


def within_redispatch_window(conn: Connection, *, order: Row, settings: Settings) -> bool:
    """True while an automatic re-dispatch is still allowed: within the window after the first booking."""
    window = get_policy(conn, location_id=order["location_id"], settings=settings).redispatch_window_minutes
    minutes = window if window is not None else settings.dispatch_redispatch_window_minutes
    first = conn.execute(
        sa.select(sa.func.min(delivery_attempts.c.booked_at)).where(delivery_attempts.c.order_id == order["id"])
    ).scalar()
    return first is None or bool(utcnow() - first <= timedelta(minutes=minutes))


# -- requests: re-dispatch, cancel, fail ---------------------------------------------------------


def request_redispatch(
    conn: Connection,
    *,
    order_id: str,
    actor: str,
    reason: str | None,
    exclude: list[str] | None = None,
    only: str | None = None,
    automatic: bool = False,
) -> int | None:
    """Enqueue a dispatch round for an order without an active attempt; returns the job id (None if one is queued)."""
    order = get_order(conn, order_id)
    if order is None:
        raise DispatchError(404, "order_not_found", "no such order")
    if not is_dispatchable(order):
        raise DispatchError(
            409, "order_not_dispatchable", f"a {order['status']} {order['fulfillment_type']} order is not dispatched"
        )
    if active_attempt(conn, order_id) is not None:
        raise DispatchError(409, "delivery_active", "the order has an active delivery; cancel it first")
    _check_only(order, only)
    number = next_number(conn, order_id)
    orders_service.record_history(
        conn,
        order_id=order_id,
        actor=actor,
        kind="delivery",
        reason=("automatic re-dispatch" if automatic else "re-dispatch") + (f": {reason}" if reason else ""),
        details={"exclude": exclude or [], "only": only},
    )
    log.info("re-dispatch requested", extra={"order_id": order_id, "actor": actor, "exclude": exclude, "only": only})
    return enqueue(
        conn,
        kind=DISPATCH_KIND,
        key=f"{order_id}:{number}",
        payload={"order_id": order_id, "exclude": sorted(set(exclude or [])), "only": only, "actor": actor},
    )


def _check_only(order: Row, only: str | None) -> None:
    """A merchant-managed order is only ever given to the location's own drivers."""
    fulfillment = domain.FulfillmentType(order["fulfillment_type"])
    if (
        only is not None
        and only != rules.OWN_DRIVERS
        and fulfillment is domain.FulfillmentType.MERCHANT_MANAGED_DELIVERY
    ):
        raise DispatchError(
            409, "provider_not_allowed", f"a merchant-managed delivery goes to the location's own drivers, not {only}"
        )


def request_cancel(
    conn: Connection,
    *,
    order_id: str,
    actor: str,
    reason: str | None,
    then_dispatch: bool = False,
    exclude: list[str] | None = None,
    only: str | None = None,
) -> Row:
    """Ask (through a job) the provider to cancel the order's active attempt; optionally dispatch again after.

    Dispatching again without a chosen provider (only) skips the canceled attempt's provider unless exclude is given.
    """
    attempt = active_attempt(conn, order_id)
    if attempt is None:
        raise DispatchError(409, "no_active_delivery", "the order has no active delivery")
    if exclude is None:
        exclude = [attempt["provider"]] if then_dispatch and only is None else []
    order = get_order(conn, order_id)
    if then_dispatch and order is not None:
        _check_only(order, only)
    context = dict(attempt["context"] or {})
    context["cancel"] = {
        "actor": actor,
        "reason": reason,
        "then_dispatch": then_dispatch,
        "exclude": exclude,
        "only": only,
    }
    context.setdefault("cancel_purpose", "redirect" if then_dispatch else "cancel")
    now = utcnow()
    conn.execute(
        sa.update(delivery_attempts)
        .where(delivery_attempts.c.id == attempt["id"])
        .values(cancel_requested_at=now, context=context, updated_at=now)
    )
    orders_service.record_history(
        conn,
        order_id=order_id,
        actor=actor,
        kind="delivery",
        reason="delivery cancel requested" + (f": {reason}" if reason else ""),
        details={"attempt": attempt["number"], "provider": attempt["provider"]},
    )
    enqueue(conn, kind=CANCEL_KIND, key=f"attempt:{attempt['id']}", payload={"attempt_id": int(attempt["id"])})
    updated = get_attempt(conn, int(attempt["id"]))
    assert updated is not None
    return updated


def schedule_failure(conn: Connection, *, order_id: str, reason: str, settings: Settings) -> None:
    """Fail the order after the grace period, unless an operator re-dispatches before."""
    attempts = next_number(conn, order_id) - 1
    orders_service.record_history(
        conn,
        order_id=order_id,
        actor=domain.Actor.SYSTEM.value,
        kind="delivery",
        reason=f"dispatch exhausted: {reason}",
    )
    log.warning("dispatch exhausted", extra={"order_id": order_id, "reason": reason})
    grace = settings.dispatch_failure_grace_seconds
    enqueue(
        conn,
        kind=FAIL_KIND,
        key=f"{order_id}:{attempts}",
        payload={"order_id": order_id, "reason": reason, "attempts": attempts},
        run_at=utcnow() + timedelta(seconds=grace),
    )


def fail_order(conn: Connection, *, order_id: str, reason: str, actor: domain.Actor = domain.Actor.SYSTEM) -> bool:
    """Move the order to failed with the reason; False when it is already final."""
    order = orders_service.get_order_for_update(conn, order_id=order_id)
    if order is None or domain.OrderStatus(order["status"]) in domain.TERMINAL:
        return False
    orders_service.change_status(conn, order=order, target=domain.OrderStatus.FAILED, actor=actor, reason=reason[:500])
    log.warning("order failed: no delivery", extra={"order_id": order_id, "reason": reason})
    return True


# -- domain event handlers -----------------------------------------------------------------------


def on_order_status_changed(conn: Connection, event: OrderStatusChanged) -> None:
    """A canceled order cancels its active delivery with the provider (through a job)."""
    if event.to_status != domain.OrderStatus.CANCELED.value:
        return
    attempt = active_attempt(conn, event.order_id)
    if attempt is None or attempt["cancel_requested_at"] is not None:
        return
    request_cancel(conn, order_id=event.order_id, actor=event.actor, reason=event.reason or "order canceled")


def mark_cancel_purpose(conn: Connection, *, attempt_id: int, purpose: str | None) -> None:
    """Note that we are canceling an attempt and why (None: the cancel did not happen)."""
    attempt = lock_attempt(conn, attempt_id)
    if attempt is None:
        return
    context = dict(attempt["context"] or {})
    if purpose is None:
        context.pop("cancel_purpose", None)
    else:
        context["cancel_purpose"] = purpose
    now = utcnow()
    conn.execute(
        sa.update(delivery_attempts)
        .where(delivery_attempts.c.id == attempt_id)
        .values(context=context, cancel_requested_at=now if purpose else None, updated_at=now)
    )


def record_cancel_refused(conn: Connection, *, attempt_id: int, reason: str) -> None:
    """The provider would not cancel (e.g. after pickup): the delivery goes on; the refusal is recorded."""
    attempt = lock_attempt(conn, attempt_id)
    if attempt is None:
        return
    context = dict(attempt["context"] or {})
    context["cancel_refused"] = reason
    conn.execute(
        sa.update(delivery_attempts)
        .where(delivery_attempts.c.id == attempt_id)
        .values(context=context, outcome_reason=f"cancel refused: {reason}", updated_at=utcnow())
    )
    orders_service.record_history(
        conn,
        order_id=attempt["order_id"],
        actor=domain.Actor.COURIER.value,
        kind="delivery",
        reason=f"delivery cancel refused: {reason}",
        details={"attempt": attempt["number"], "provider": attempt["provider"]},
    )
    log.warning("delivery cancel refused", extra={"order_id": attempt["order_id"], "reason": reason})


def record_cancel_outcome(conn: Connection, *, attempt_id: int, outcome: CancelOutcome, settings: Settings) -> None:
    """Record what the provider answered to our cancel; dispatch again when the operator asked for it."""
    attempt = lock_attempt(conn, attempt_id)
    if attempt is None:
        return
    if not outcome.canceled:
        record_cancel_refused(conn, attempt_id=attempt_id, reason=outcome.reason or "refused")
        return
    if attempt["state"] != ENDED:
        snapshot = DeliverySnapshot(
            provider=attempt["provider"],
            external_id=attempt["external_id"],
            provider_delivery_id=attempt["provider_delivery_id"] or "",
            status=DeliveryStatus.MERCHANT_CANCELED,
            provider_status="canceled",
            fee=outcome.fee_charged,
            cancellation_reason=outcome.reason or "canceled by us",
        )
        _apply_snapshot(conn, attempt=attempt, snapshot=snapshot, actor=domain.Actor.SYSTEM.value, settings=settings)
    if outcome.fee_charged is not None:
        conn.execute(
            sa.update(delivery_attempts)
            .where(delivery_attempts.c.id == attempt_id)
            .values(cancel_fee=outcome.fee_charged, updated_at=utcnow())
        )
    plan = (attempt["context"] or {}).get("cancel") or {}
    if plan.get("then_dispatch"):
        order = get_order(conn, attempt["order_id"])
        if order is not None and is_dispatchable(order) and active_attempt(conn, order["id"]) is None:
            request_redispatch(
                conn,
                order_id=order["id"],
                actor=str(plan.get("actor") or domain.Actor.OPERATOR.value),
                reason=plan.get("reason"),
                exclude=list(plan.get("exclude") or []),
                only=plan.get("only"),
            )


def _order_of(conn: Connection, attempt_id: int) -> str:
    row = conn.execute(_SELECT_ORDER_OF, {"b_attempt_id": attempt_id}).first()
    return str(row[0]) if row is not None else ""


def dispatch_pending(conn: Connection, order_id: str) -> bool:
    """True while a dispatch job of the order waits (a running one is the round that just gave up)."""
    row = conn.execute(
        sa.select(jobs.c.id).where(
            jobs.c.kind == DISPATCH_KIND,
            sa.or_(jobs.c.key == order_id, jobs.c.key.like(f"{order_id}:%")),
            jobs.c.status == "pending",
        )
    ).first()
    return row is not None
