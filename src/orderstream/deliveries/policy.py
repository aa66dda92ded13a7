"""Pure dispatch rules: the policy, ranking quotes, attempt ids, monotonic statuses, what the order follows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from orderstream.deliveries.protocol import DeliveryStatus as DS
from orderstream.deliveries.protocol import Quote
from orderstream.orders.domain import FulfillmentType, OrderStatus

OWN_DRIVERS = "own_drivers"


class Strategy(StrEnum):
    """How to choose among acceptable quotes."""

    CHEAPEST = "cheapest"
    FASTEST = "fastest"  # earliest pickup ETA
    PREFERRED = "preferred"  # the order of allowed_providers


@dataclass(frozen=True)
class Policy:
    """A location's dispatch policy."""

    allowed_providers: tuple[str, ...]
    strategy: Strategy = Strategy.CHEAPEST
    max_fee: int | None = None
    max_pickup_eta_minutes: int | None = None
    acceptance_timeout_seconds: Mapping[str, float] = field(default_factory=dict)
    redispatch_window_minutes: float | None = None
    own_drivers_only: bool = False  # a merchant-managed order's policy (for_fulfillment), never stored

    def acceptance_timeout(self, provider: str, default: float) -> float | None:
        """Seconds to wait for a courier to accept at provider; None: wait for an operator, nobody to fall back to."""
        if self.own_drivers_only:
            return None
        return float(self.acceptance_timeout_seconds.get(provider, default))

    def candidates(self, *, only: str | None, exclude: Sequence[str]) -> list[str]:
        """The providers a dispatch round asks: the operator's choice, else the allowed ones not given up on."""
        if self.own_drivers_only:
            return list(self.allowed_providers)  # even after a driver gave up: there is nobody else to ask
        if only:
            return [only]
        return [p for p in self.allowed_providers if p not in exclude]

    def as_dict(self) -> dict[str, Any]:
        """JSON form for APIs and the CLI."""
        return {
            "allowed_providers": list(self.allowed_providers),
            "strategy": self.strategy.value,
            "max_fee": self.max_fee,
            "max_pickup_eta_minutes": self.max_pickup_eta_minutes,
            "acceptance_timeout_seconds": dict(self.acceptance_timeout_seconds),
            "redispatch_window_minutes": self.redispatch_window_minutes,
        }


def for_fulfillment(policy: Policy, fulfillment: FulfillmentType) -> Policy:
    """The policy one order is dispatched by: a merchant-managed order goes to the location's own drivers only.

    The merchant runs those deliveries, so the location's caps on courier fee and pickup ETA do not apply.
    """
    if fulfillment is not FulfillmentType.MERCHANT_MANAGED_DELIVERY:
        return policy
    return replace(
        policy, allowed_providers=(OWN_DRIVERS,), max_fee=None, max_pickup_eta_minutes=None, own_drivers_only=True
    )


@dataclass(frozen=True)
class Rejection:
    """Why a quote was left out."""

    provider: str
    reason: str


def rank_quotes(quotes: Sequence[Quote], policy: Policy, *, now: datetime) -> tuple[list[Quote], list[Rejection]]:
    """The quotes within the caps, best first by the strategy; and the ones over a cap, with the reason."""
    kept: list[Quote] = []
    rejected: list[Rejection] = []
    for quote in quotes:
        if policy.max_fee is not None and quote.fee > policy.max_fee:
            rejected.append(Rejection(quote.provider, f"fee {quote.fee} over the maximum {policy.max_fee}"))
            continue
        if policy.max_pickup_eta_minutes is not None and quote.pickup_eta is not None:
            minutes = (quote.pickup_eta - now).total_seconds() / 60
            if minutes > policy.max_pickup_eta_minutes:
                rejected.append(
                    Rejection(
                        quote.provider,
                        f"pickup in {minutes:.0f} min, over the maximum {policy.max_pickup_eta_minutes} min",
                    )
                )
                continue
        kept.append(quote)
    order = {name: i for i, name in enumerate(policy.allowed_providers)}
    far = datetime.max.replace(tzinfo=now.tzinfo)

    def preference(q: Quote) -> int:
        return order.get(q.provider, len(order))

    if policy.strategy is Strategy.CHEAPEST:
        kept.sort(key=lambda q: (q.fee, preference(q)))
    elif policy.strategy is Strategy.FASTEST:
        kept.sort(key=lambda q: (q.pickup_eta or far, q.fee, preference(q)))
    else:
        kept.sort(key=preference)
    return kept, rejected


def external_id(order_id: str, number: int) -> str:
    """The idempotency key of attempt `number` of an order at its provider."""
    return f"os-{order_id}-{number}"


# How far along a delivery is; a status of lower rank never replaces a higher one.
_RANK: dict[DS, int] = {
    DS.PENDING: 0,
    DS.PENDING_DRIVER_CONFIRMATION: 1,
    DS.ENROUTE_TO_PICKUP: 2,
    DS.ARRIVED_AT_PICKUP: 3,
    DS.ENROUTE_TO_DROPOFF: 4,
    DS.ARRIVED_AT_DROPOFF: 5,
    DS.ENROUTE_TO_RETURN: 6,
    DS.ARRIVED_AT_RETURN: 7,
}
FINAL_STATUSES: frozenset[DS] = frozenset(
    {
        DS.COMPLETED,
        DS.FAILED_TO_ASSIGN_DRIVER,
        DS.FAILED_TO_DELIVER,
        DS.FAILED_TO_PICKUP,
        DS.FAILED,
        DS.MERCHANT_CANCELED,
        DS.RETURNED,
    }
)
PICKED_UP: frozenset[DS] = frozenset(
    {
        DS.ENROUTE_TO_DROPOFF,
        DS.ARRIVED_AT_DROPOFF,
        DS.COMPLETED,
        DS.ENROUTE_TO_RETURN,
        DS.ARRIVED_AT_RETURN,
        DS.RETURNED,
    }
)
COURIER_ASSIGNED: frozenset[DS] = frozenset({DS.ENROUTE_TO_PICKUP, DS.ARRIVED_AT_PICKUP}) | PICKED_UP


def rank(status: DS) -> int:
    """The progress rank of a status; every final status outranks every other."""
    return 100 if status in FINAL_STATUSES else _RANK[status]


def moves_forward(current: DS, new: DS) -> bool:
    """True when new may replace current: never out of a final status, never backwards."""
    if current in FINAL_STATUSES:
        return False
    return rank(new) > rank(current)


def order_status_for(status: DS) -> OrderStatus | None:
    """The order status a delivery status implies: picked up -> out_for_delivery, delivered -> completed."""
    if status is DS.COMPLETED:
        return OrderStatus.COMPLETED
    if status in (DS.ENROUTE_TO_DROPOFF, DS.ARRIVED_AT_DROPOFF):
        return OrderStatus.OUT_FOR_DELIVERY
    return None


class Ending(StrEnum):
    """How an attempt ended (its `outcome`)."""

    DELIVERED = "delivered"
    CANCELED = "canceled"  # we canceled it
    BOOKING_FAILED = "booking_failed"
    NO_COURIER = "no_courier"  # nobody accepted (provider said so, or our acceptance timeout)
    COURIER_CANCELED = "courier_canceled"  # the courier or provider canceled before pickup
    FAILED_AFTER_PICKUP = "failed_after_pickup"
    RETURNED = "returned"


def ending_for(status: DS, *, canceled_by_us: bool) -> Ending | None:
    """The outcome a final provider status means for an attempt, or None while it is not final."""
    if status not in FINAL_STATUSES:
        return None
    if status is DS.COMPLETED:
        return Ending.DELIVERED
    if status is DS.MERCHANT_CANCELED or canceled_by_us:
        return Ending.CANCELED
    if status is DS.FAILED_TO_ASSIGN_DRIVER:
        return Ending.NO_COURIER
    if status is DS.FAILED_TO_PICKUP:
        return Ending.COURIER_CANCELED
    if status is DS.RETURNED:
        return Ending.RETURNED
    return Ending.FAILED_AFTER_PICKUP if status is DS.FAILED_TO_DELIVER else Ending.COURIER_CANCELED


REDISPATCHABLE: frozenset[Ending] = frozenset({Ending.NO_COURIER, Ending.COURIER_CANCELED})


def dispatch_at(requested_for: datetime, *, prep_minutes: float, travel_minutes: float) -> datetime:
    """When to book a future order's courier: requested_for minus the pickup lead (prep time plus travel)."""
    return requested_for - timedelta(minutes=prep_minutes + travel_minutes)


def future_times(requested_for: datetime, *, travel_minutes: float) -> tuple[datetime, datetime]:
    """Pickup ready time and drop-off deadline sent to the provider for a future order."""
    pickup = requested_for - timedelta(minutes=travel_minutes)
    return pickup, requested_for + timedelta(minutes=travel_minutes)


def mask_phone(phone: str | None) -> str | None:
    """A phone number with all but the last four digits hidden."""
    if not phone:
        return None
    if "*" in phone:
        return phone  # masked already (own drivers mask their own): again would leave a digit or two
    digits = [c for c in phone if c.isdigit()]
    if len(digits) <= 4:
        return "*" * len(digits)
    return ("+" if phone.startswith("+") else "") + "*" * (len(digits) - 4) + "".join(digits[-4:])
