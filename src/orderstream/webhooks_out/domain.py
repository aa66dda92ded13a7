"""Pure rules of outbound webhooks: event types, status mapping, payloads, retry schedule, outcomes, health."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    """What a POS can subscribe to."""

    ORDER_UPDATED = "order.updated"  # Stream's "Stream Order Status Updates"
    ORDER_CANCELED = "order.canceled"  # we (not the POS) canceled the order
    ORDER_DELIVERY_FAILED = "order.delivery_failed"  # the courier delivery failed; the merchant must act


EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)


class DeliveryState(StrEnum):
    """Where one (event, endpoint) delivery is."""

    PENDING = "pending"  # waiting for its first or next attempt
    SUCCEEDED = "succeeded"  # the endpoint answered 2xx
    FAILED = "failed"  # given up: a final answer, retries exhausted, or the endpoint was disabled


TERMINAL_DELIVERY_STATES = frozenset({DeliveryState.SUCCEEDED, DeliveryState.FAILED})

# Our order status -> Stream's order `status` vocabulary (stream-pos-api.md 6.1). `received` has no
# Stream equivalent: the POS created the order, so from its point of view the kitchen has it.
ORDER_STATUS_TO_STREAM: dict[str, str] = {
    "scheduled": "scheduled",
    "received": "in_progress",
    "preparing": "in_progress",
    "ready_for_pickup": "ready_for_pickup",
    "out_for_delivery": "out_for_delivery",
    "completed": "completed",
    "failed": "failed",
}

# Delivery statuses after which the courier delivery is over without success.
DELIVERY_FAILURE_STATUSES = frozenset({"failed_to_assign_driver", "failed_to_deliver", "failed_to_pickup", "failed"})


def stream_status(status: str, *, cancel_actor: str | None = None) -> str:
    """Stream's order status for ours; a cancel is merchant_canceled (operator, POS) or dsp_canceled (courier side)."""
    if status == "canceled":
        return "merchant_canceled" if cancel_actor in ("operator", "pos") else "dsp_canceled"
    return ORDER_STATUS_TO_STREAM.get(status, status)


@dataclass(frozen=True)
class OrderRef:
    """The POS's own identifiers of an order, and what we know of its state."""

    pos_order_id: str  # the POS's order id (source_order_id / provider_id)
    location_id: str  # the POS's own location id
    status: str  # our order status
    delivery_status: str | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def driver_details(courier: dict[str, Any] | None, *, source: str) -> dict[str, Any] | None:
    """Stream's `driver_details` from a courier dict; None without a courier."""
    if not courier:
        return None
    phone_number = courier.get("phone") or courier.get("phone_number")
    phone_code = courier.get("phone_code") or courier.get("phone_access_code")
    return {
        "source": source,
        "name": courier.get("name"),
        "phone": {"number": phone_number, "code": phone_code} if phone_number or phone_code else None,
        "vehicle_info": {
            "make": courier.get("vehicle_make"),
            "model": courier.get("vehicle_model"),
            "color": courier.get("vehicle_color"),
            "license_plate": courier.get("license_plate"),
        },
    }


def fee_object(fee: int | None, currency: str | None) -> dict[str, Any] | None:
    """The courier fee in minor units, or None when not known."""
    if fee is None:
        return None
    return {"amount": fee, "currency": (currency or "").upper() or None}


def order_updated_object(
    order: OrderRef,
    *,
    delivery: dict[str, Any] | None = None,
    at: datetime,
) -> dict[str, Any]:
    """The `object` of an order.updated event; delivery holds provider, courier, ETAs, tracking URL and fee."""
    delivery = delivery or {}
    return {
        "order_id": order.pos_order_id,
        "location_id": order.location_id,
        "status": stream_status(order.status),
        "delivery_status": delivery.get("delivery_status", order.delivery_status),
        "driver_details": driver_details(delivery.get("courier"), source=str(delivery.get("provider") or "")),
        "pickup_eta": _iso(delivery.get("pickup_eta")),
        "dropoff_eta": _iso(delivery.get("dropoff_eta")),
        "tracking_url": delivery.get("tracking_url"),
        "fee": fee_object(delivery.get("fee"), delivery.get("currency")),
        "updated_at": _iso(at),
    }


def order_canceled_object(order: OrderRef, *, actor: str, reason: str | None, at: datetime) -> dict[str, Any]:
    """The `object` of an order.canceled event (Stream's shape plus status, reason and time)."""
    return {
        "provider_id": order.pos_order_id,
        "order_id": order.pos_order_id,
        "location_id": order.location_id,
        "status": stream_status("canceled", cancel_actor=actor),
        "cancel_reason": reason,
        "canceled_at": _iso(at),
    }


def delivery_failed_object(
    order: OrderRef, *, provider: str, delivery_status: str, reason: str | None, at: datetime
) -> dict[str, Any]:
    """The `object` of an order.delivery_failed event: which delivery failed and how."""
    return {
        "order_id": order.pos_order_id,
        "location_id": order.location_id,
        "status": stream_status(order.status),
        "delivery_status": delivery_status,
        "provider": provider,
        "failure_reason": reason,
        "failed_at": _iso(at),
    }


def event_body(*, event_id: str, event_type: str, created_at: datetime, obj: dict[str, Any]) -> str:
    """The exact JSON text sent for an event: Stream's {type, object} plus the stable id and creation time."""
    envelope = {"id": event_id, "type": event_type, "created_at": _iso(created_at), "object": obj}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


# --- retries --------------------------------------------------------------------------------------

# Delay before attempt 1, 2, ... 8 (seconds): immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
# (about 27.6 h in total, Svix's horizon); after the 8th failed attempt the delivery is failed.
DEFAULT_SCHEDULE: tuple[float, ...] = (0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)


@dataclass(frozen=True)
class RetrySchedule:
    """When to try a delivery again: a fixed schedule, scaled (tests), with up to `jitter` extra at random."""

    delays: tuple[float, ...] = DEFAULT_SCHEDULE
    scale: float = 1.0
    jitter: float = 0.1
    max_retry_after: float = 24 * 3600.0  # a receiver cannot park a delivery for longer than this

    @property
    def max_attempts(self) -> int:
        """How many attempts a delivery gets before it is failed."""
        return len(self.delays)

    def next_delay(
        self, attempts_made: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float | None:
        """Seconds until the next attempt after `attempts_made` failed ones, or None when the schedule is spent."""
        if attempts_made >= len(self.delays):
            return None
        base = self.delays[attempts_made] * self.scale
        delay = base + base * self.jitter * (rng or random.Random()).random()
        if retry_after is not None:
            delay = max(delay, min(max(retry_after, 0.0), self.max_retry_after))
        return delay


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


class Outcome(StrEnum):
    """What one attempt means for its delivery."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"  # network error, timeout, 5xx, 408, 429
    FAILED = "failed"  # a final answer: 3xx, other 4xx, a refused target
    GONE = "gone"  # 410: the endpoint asked to be disabled


def classify(status_code: int | None, *, error_kind: str | None = None) -> Outcome:
    """The outcome of an attempt from its HTTP status, or its error kind when no answer came."""
    if status_code is None:
        return Outcome.FAILED if error_kind == "blocked" else Outcome.RETRY
    if 200 <= status_code < 300:
        return Outcome.SUCCEEDED
    if status_code == 410:
        return Outcome.GONE
    if status_code in (408, 429) or status_code >= 500:
        return Outcome.RETRY
    return Outcome.FAILED


# --- endpoint health ------------------------------------------------------------------------------


class Health(StrEnum):
    """An endpoint's verdict from its recent failure rate."""

    OK = "ok"
    ALERT = "alert"  # past the alert threshold: log an alert
    PAUSE = "pause"  # past the pause threshold: stop sending for the cool-down


def evaluate_health(*, attempts: int, failures: int, min_attempts: int, alert_rate: float, pause_rate: float) -> Health:
    """The verdict for `failures` out of `attempts` in the window; too few attempts are always OK."""
    if attempts < max(1, min_attempts):
        return Health.OK
    rate = failures / attempts
    if rate >= pause_rate:
        return Health.PAUSE
    if rate >= alert_rate:
        return Health.ALERT
    return Health.OK
