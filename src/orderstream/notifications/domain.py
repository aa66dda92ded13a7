"""Pure notification rules: which event sends which kind, updates and their throttle, PII masking."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import phonenumbers


class Kind(StrEnum):
    """What a message tells the customer."""

    CONFIRMED = "confirmed"
    REMINDER = "reminder"  # a future order: it is coming up
    COURIER_ASSIGNED = "courier_assigned"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERED = "delivered"
    READY_FOR_PICKUP = "ready_for_pickup"
    CANCELED = "canceled"
    DELAYED = "delayed"  # the ETA moved later, first time
    DELIVERY_PROBLEM = "delivery_problem"
    UPDATE = "update"  # a throttled short correction (new ETA, new courier); seq 1, 2, ...


class Channel(StrEnum):
    """How a message reaches the customer."""

    SMS = "sms"
    EMAIL = "email"


class Status(StrEnum):
    """Where a message is."""

    QUEUED = "queued"
    SENDING = "sending"  # the provider call may be in flight: never blindly repeated
    SENT = "sent"  # the provider accepted it
    DELIVERED = "delivered"  # the provider confirmed delivery to the handset / mailbox
    FAILED = "failed"  # permanently (invalid number, bounce) or retries exhausted
    SKIPPED = "skipped"  # never sent: see the reason


FINAL_STATUSES = frozenset({Status.SENT, Status.DELIVERED, Status.FAILED, Status.SKIPPED})
# messages that count against the per-customer cap
COUNTED_STATUSES = frozenset({Status.QUEUED, Status.SENDING, Status.SENT, Status.DELIVERED})

PICKUP_TYPES = frozenset({"pickup", "curbside", "drive_thru"})
DELIVERY_TYPES = frozenset({"delivery", "merchant_managed_delivery"})
COURIER_STATES = frozenset({"enroute_to_pickup", "arrived_at_pickup"})
ON_THE_WAY_STATES = frozenset({"enroute_to_dropoff", "arrived_at_dropoff"})
PROBLEM_STATES = frozenset(
    {"failed_to_deliver", "failed_to_pickup", "failed", "enroute_to_return", "arrived_at_return", "returned"}
)


def kinds_for_order_status(fulfillment_type: str, to_status: str) -> list[Kind]:
    """The messages an order status change calls for (deliveries we dispatch speak through the courier events)."""
    if to_status == "canceled":
        return [Kind.CANCELED]
    if to_status == "failed":
        return [Kind.DELIVERY_PROBLEM] if fulfillment_type in DELIVERY_TYPES else [Kind.CANCELED]
    if to_status == "ready_for_pickup" and fulfillment_type in PICKUP_TYPES:
        return [Kind.READY_FOR_PICKUP]
    if fulfillment_type == "merchant_managed_delivery" and to_status == "out_for_delivery":
        return [Kind.OUT_FOR_DELIVERY]
    if fulfillment_type in DELIVERY_TYPES and to_status == "completed":
        return [Kind.DELIVERED]
    return []


def kinds_for_delivery_status(to_status: str, *, has_courier: bool) -> list[Kind]:
    """The once-only messages a delivery status calls for."""
    if to_status in COURIER_STATES and has_courier:
        return [Kind.COURIER_ASSIGNED]
    if to_status in ON_THE_WAY_STATES:
        return [Kind.OUT_FOR_DELIVERY]
    if to_status == "completed":
        return [Kind.DELIVERED]
    if to_status in PROBLEM_STATES:
        return [Kind.DELIVERY_PROBLEM]
    return []


def delivery_status_may_notify(to_status: str) -> bool:
    """Whether a delivery status can call for any message, whatever the customer was told before.

    False for the statuses in between (quoted, booked, picked up, ...): planning them queues nothing.
    """
    once_only = kinds_for_delivery_status(to_status, has_courier=True)
    return bool(once_only) or to_status in COURIER_STATES | ON_THE_WAY_STATES  # the latter: ETA updates


@dataclass(frozen=True)
class Told:
    """What the customer was last told about the delivery, and when."""

    dropoff_eta: datetime | None
    attempt_id: int | None
    at: datetime | None  # when the last update (delayed / update) was queued
    updates: int  # updates queued so far (delayed counts as one)
    delayed_sent: bool


@dataclass(frozen=True)
class UpdateRules:
    """Thresholds for update messages."""

    eta_change: timedelta
    interval: timedelta
    max_updates: int


def decide_update(
    told: Told, *, dropoff_eta: datetime | None, attempt_id: int, has_courier: bool, now: datetime, rules: UpdateRules
) -> tuple[Kind, str] | None:
    """Whether a delivery change makes an earlier message wrong enough for a (throttled) update, and why."""
    why: str | None = None
    if told.attempt_id is not None and attempt_id != told.attempt_id and has_courier:
        why = "redispatch"
    elif told.dropoff_eta is not None and dropoff_eta is not None:
        moved = dropoff_eta - told.dropoff_eta
        if abs(moved) >= rules.eta_change:
            why = "eta_later" if moved > timedelta(0) else "eta_earlier"
    if why is None:
        return None
    if told.updates >= rules.max_updates:
        return None
    if told.at is not None and now - told.at < rules.interval:
        return None
    if why == "eta_later" and not told.delayed_sent:
        return Kind.DELAYED, why
    return Kind.UPDATE, why


# --- contacts and PII -------------------------------------------------------------------------------


def contact_hash(value: str) -> str:
    """The stored stand-in for a phone (E.164) or e-mail (lower-cased): sha256 hex."""
    return hashlib.sha256(value.strip().lower().encode("utf-8")).hexdigest()


def mask_phone(phone: str | None) -> str | None:
    """+1*******23: the country prefix and the last two digits."""
    if not phone:
        return None
    digits = phone.strip()
    if len(digits) <= 4:
        return "*" * len(digits)
    head = 2 if digits.startswith("+") else 0
    return digits[:head] + "*" * (len(digits) - head - 2) + digits[-2:]


def mask_email(email: str | None) -> str | None:
    """j***@example.com: the first character and the domain."""
    if not email or "@" not in email:
        return None
    local, _, domain = email.strip().rpartition("@")
    return f"{local[:1]}***@{domain}"


def sms_recipient(phone_e164: str | None, phone_given: str | None) -> tuple[str | None, str | None]:
    """(E.164 number, None) when the order's phone can get an SMS, else (None, skip reason)."""
    if phone_e164:
        try:
            parsed = phonenumbers.parse(phone_e164, None)
        except phonenumbers.NumberParseException:
            return None, "invalid_phone"
        if phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), None
        return None, "invalid_phone"
    return None, "invalid_phone" if phone_given else "no_phone"


def email_recipient(email: str | None) -> tuple[str | None, str | None]:
    """(address, None) when the order has a usable e-mail, else (None, skip reason)."""
    if not email:
        return None, "no_email"
    address = email.strip()
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain or any(c.isspace() for c in address):
        return None, "invalid_email"
    return address, None


def redact(text: str, *secrets: str | None) -> str:
    """The text with every given contact value replaced by [redacted] (for provider errors before logging)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def first_name(name: str | None) -> str | None:
    """The first word of a name (couriers are shown by first name only)."""
    if not name or not name.strip():
        return None
    return name.strip().split()[0]


def vehicle_text(courier: dict[str, Any] | None) -> str | None:
    """'silver Toyota Prius', or the vehicle type, or None."""
    if not courier:
        return None
    parts = [courier.get("vehicle_color"), courier.get("vehicle_make"), courier.get("vehicle_model")]
    described = " ".join(str(p) for p in parts if p)
    return described or (str(courier["vehicle_type"]) if courier.get("vehicle_type") else None)
