"""The order state machine: pure, table-driven, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OrderStatus(StrEnum):
    """Where an order is in its life."""

    SCHEDULED = "scheduled"  # a future order, waiting for its time
    RECEIVED = "received"  # stored, not yet in the kitchen
    PREPARING = "preparing"
    READY_FOR_PICKUP = "ready_for_pickup"  # ready for the customer or the courier
    OUT_FOR_DELIVERY = "out_for_delivery"
    COMPLETED = "completed"  # delivered or collected
    CANCELED = "canceled"
    FAILED = "failed"  # could not be fulfilled (e.g. no courier)


class FulfillmentType(StrEnum):
    """How the order reaches the customer."""

    DELIVERY = "delivery"  # we dispatch a courier
    MERCHANT_MANAGED_DELIVERY = "merchant_managed_delivery"  # the merchant's own drivers
    PICKUP = "pickup"
    CURBSIDE = "curbside"
    DRIVE_THRU = "drive_thru"
    DINE_IN = "dine_in"


class Actor(StrEnum):
    """Who caused a change."""

    POS = "pos"
    COURIER = "courier"
    OPERATOR = "operator"
    SYSTEM = "system"


S = OrderStatus
TERMINAL: frozenset[OrderStatus] = frozenset({S.COMPLETED, S.CANCELED, S.FAILED})

# Every legal move for a delivery order. Forward skips are allowed; nothing moves backwards;
# canceled, completed and failed are final.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.SCHEDULED: frozenset(
        {S.RECEIVED, S.PREPARING, S.READY_FOR_PICKUP, S.OUT_FOR_DELIVERY, S.COMPLETED, S.CANCELED, S.FAILED}
    ),
    S.RECEIVED: frozenset({S.PREPARING, S.READY_FOR_PICKUP, S.OUT_FOR_DELIVERY, S.COMPLETED, S.CANCELED, S.FAILED}),
    S.PREPARING: frozenset({S.READY_FOR_PICKUP, S.OUT_FOR_DELIVERY, S.COMPLETED, S.CANCELED, S.FAILED}),
    S.READY_FOR_PICKUP: frozenset({S.OUT_FOR_DELIVERY, S.COMPLETED, S.CANCELED, S.FAILED}),
    S.OUT_FOR_DELIVERY: frozenset({S.COMPLETED, S.CANCELED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.CANCELED: frozenset(),
    S.FAILED: frozenset(),
}

_ALL = frozenset(OrderStatus)
_NOT_DELIVERED = _ALL - {S.OUT_FOR_DELIVERY, S.FAILED}

# Which states exist for which fulfillment type.
STATES_BY_FULFILLMENT: dict[FulfillmentType, frozenset[OrderStatus]] = {
    FulfillmentType.DELIVERY: _ALL,
    FulfillmentType.MERCHANT_MANAGED_DELIVERY: _ALL,
    FulfillmentType.PICKUP: _NOT_DELIVERED,
    FulfillmentType.CURBSIDE: _NOT_DELIVERED,
    FulfillmentType.DRIVE_THRU: _NOT_DELIVERED,
    FulfillmentType.DINE_IN: _NOT_DELIVERED,
}

# merchant_managed_delivery goes to the location's own drivers only (deliveries.policy.for_fulfillment)
DISPATCHED_TYPES: frozenset[FulfillmentType] = frozenset(
    {FulfillmentType.DELIVERY, FulfillmentType.MERCHANT_MANAGED_DELIVERY}
)


class IllegalTransition(Exception):
    """A status change the state machine does not allow."""

    def __init__(self, current: OrderStatus, target: OrderStatus, fulfillment_type: FulfillmentType) -> None:
        self.current = current
        self.target = target
        self.fulfillment_type = fulfillment_type
        if target not in STATES_BY_FULFILLMENT[fulfillment_type]:
            why = f"a {fulfillment_type} order has no status {target}"
        elif current in TERMINAL:
            why = f"{current} is final"
        else:
            why = "orders never move backwards"
        super().__init__(f"cannot move from {current} to {target}: {why}")


@dataclass(frozen=True)
class Transition:
    """The outcome of asking for a status: a change, or none when the order is already there."""

    from_status: OrderStatus
    to_status: OrderStatus

    @property
    def changed(self) -> bool:
        """False when the order was already in the asked-for status."""
        return self.from_status != self.to_status


def can_transition(fulfillment_type: FulfillmentType, current: OrderStatus, target: OrderStatus) -> bool:
    """True when an order of this type may move from current to target (a repeat is not a move)."""
    allowed = STATES_BY_FULFILLMENT[fulfillment_type]
    return current in allowed and target in allowed and target in TRANSITIONS[current]


def transition(fulfillment_type: FulfillmentType, current: OrderStatus, target: OrderStatus) -> Transition:
    """Check a requested status: the same status is a no-op, a legal move a change, else an error."""
    if current == target and target in STATES_BY_FULFILLMENT[fulfillment_type]:
        return Transition(current, target)
    if not can_transition(fulfillment_type, current, target):
        raise IllegalTransition(current, target, fulfillment_type)
    return Transition(current, target)


def initial_status(*, is_future: bool) -> OrderStatus:
    """A new order starts received, or scheduled when it is for later."""
    return OrderStatus.SCHEDULED if is_future else OrderStatus.RECEIVED


def is_dispatched(fulfillment_type: FulfillmentType) -> bool:
    """True when orderstream finds a courier for this fulfillment type."""
    return fulfillment_type in DISPATCHED_TYPES
