"""The live order board: today's orders of the user's locations (in each location's time zone), as cards."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from orderstream.dashboard import bridges, late, scope
from orderstream.dashboard.users import User
from orderstream.orders.domain import FulfillmentType, OrderStatus
from orderstream.orders.models import orders

# board columns, left to right; canceled and failed share the last one
COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("scheduled", "Scheduled", ("scheduled",)),
    ("received", "New", ("received",)),
    ("preparing", "Preparing", ("preparing",)),
    ("ready_for_pickup", "Ready", ("ready_for_pickup",)),
    ("out_for_delivery", "Out for delivery", ("out_for_delivery",)),
    ("completed", "Done", ("completed",)),
    ("closed", "Canceled / failed", ("canceled", "failed")),
)
COLUMN_OF_STATUS = {status: key for key, _label, statuses in COLUMNS for status in statuses}


@dataclass(frozen=True)
class BoardFilters:
    """What the board can be narrowed to (all optional)."""

    location_id: int | None = None
    fulfillment_type: str | None = None
    provider: str | None = None

    def query(self) -> dict[str, str]:
        """The filters as query parameters (for links and the event stream URL)."""
        out: dict[str, str] = {}
        if self.location_id is not None:
            out["location"] = str(self.location_id)
        if self.fulfillment_type:
            out["fulfillment_type"] = self.fulfillment_type
        if self.provider:
            out["provider"] = self.provider
        return out


@dataclass
class Card:
    """One order on the board."""

    id: str
    column: str
    status: str
    fulfillment_type: str
    location_name: str
    source_order_id: str
    customer: str
    total: str
    due_local: str
    provider: str | None
    delivery_status: str | None
    late: list[str] = field(default_factory=list)

    def fingerprint(self) -> tuple[Any, ...]:
        """Equal fingerprints render equal cards: the event stream sends only changed ones."""
        return (
            self.column,
            self.status,
            self.delivery_status,
            self.provider,
            tuple(self.late),
            self.due_local,
            self.customer,
            self.total,
        )


def local_day_bounds(tz_name: str, now: datetime) -> tuple[datetime, datetime]:
    """Start and end (UTC-aware) of the calendar day containing now, in the time zone."""
    tz = ZoneInfo(tz_name)
    day = now.astimezone(tz).date()
    # in UTC: arithmetic between two times of one ZoneInfo ignores a clock change in between
    start = datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz).astimezone(UTC)
    return start, end


def short_name(name: str | None) -> str:
    """First name and last initial: enough to call out an order, not a full name on a wall screen."""
    if not name:
        return "guest"
    parts = name.split()
    return parts[0] if len(parts) == 1 else f"{parts[0]} {parts[-1][0]}."


def money(amount: int | None, currency: str) -> str:
    """Minor units as a plain amount with the currency code."""
    if amount is None:
        return "—"
    return f"{amount / 100:,.2f} {currency}"


def _card(row: RowMapping, info: bridges.DeliveryInfo | None, now: datetime, courier_lead: timedelta) -> Card:
    tz = ZoneInfo(row["location_timezone"])
    placed = row["placed_at"] or row["created_at"]
    prep = row["prep_time_minutes"] if row["prep_time_minutes"] is not None else row["location_prep_time_minutes"]
    ready_at = late.ready_time(
        placed_at=placed,
        prep_time_minutes=int(prep),
        requested_for=row["requested_for"],
        is_future=row["is_future_order"],
    )
    promised = info.promised_at if info is not None and info.promised_at else row["requested_for"]
    times = late.OrderTimes(
        fulfillment_type=FulfillmentType(row["fulfillment_type"]),
        status=OrderStatus(row["status"]),
        delivery_status=row["delivery_status"],
        ready_at=ready_at,
        promised_at=promised if FulfillmentType(row["fulfillment_type"]) in late.DELIVERY_TYPES else None,
        pickup_eta=info.pickup_eta if info is not None else None,
        courier_assigned=info.courier_assigned if info is not None else None,
    )
    return Card(
        id=row["id"],
        column=COLUMN_OF_STATUS.get(row["status"], "received"),
        status=row["status"],
        fulfillment_type=row["fulfillment_type"],
        location_name=row["location_name"],
        source_order_id=row["source_order_id"],
        customer=short_name(row["customer_name"]),
        total=money(row["total_amount"], row["currency"]),
        due_local=ready_at.astimezone(tz).strftime("%H:%M"),
        provider=info.provider if info is not None else None,
        delivery_status=row["delivery_status"],
        late=late.late_reasons(times, now=now, courier_lead=courier_lead),
    )


def today_select(
    conn: Connection, user: User, *, now: datetime, location_id: int | None = None
) -> sa.Select[tuple[object, ...]] | None:
    """The user's orders due today (requested, else created) in each location's own day; None: no location."""
    day = sa.func.coalesce(orders.c.requested_for, orders.c.created_at)
    day_clauses = []
    for loc in scope.visible_locations(conn, user):
        if location_id is not None and loc["id"] != location_id:
            continue
        start, end = local_day_bounds(loc["timezone"], now)
        day_clauses.append(sa.and_(orders.c.location_id == loc["id"], day >= start, day < end))
    return scope.orders_select(user).where(sa.or_(*day_clauses)) if day_clauses else None


def today_cards(
    conn: Connection, user: User, filters: BoardFilters, *, now: datetime, courier_lead: timedelta
) -> list[Card]:
    """Today's orders the user may see, filtered, oldest first; 'today' is each location's own day."""
    today = today_select(conn, user, now=now, location_id=filters.location_id)
    if today is None:
        return []
    stmt = today.order_by(orders.c.created_at, orders.c.id)
    if filters.fulfillment_type:
        stmt = stmt.where(orders.c.fulfillment_type == filters.fulfillment_type)
    rows = list(conn.execute(stmt).mappings())
    infos = bridges.delivery_info(conn, [r["id"] for r in rows])
    cards = [_card(r, infos.get(r["id"]), now, courier_lead) for r in rows]
    if filters.provider:
        cards = [c for c in cards if c.provider == filters.provider]
    return cards
