"""A local Uber Direct: OAuth, quotes, deliveries, a scripted Robo-Courier-like lifecycle, signed webhooks, faults.

Run it with `orderstream simulate uber --port N --webhook-url URL`, or in process with
`start_in_thread(SimulatorConfig(...))` / `create_app(...)`. Requests are validated against the same
official OpenAPI files the adapter is tested with, and errors use Uber's `{code, message, kind, metadata}`.

Fault modes (the names are shared with the DoorDash simulator where they overlap):
- lifecycle / webhooks of a delivery: `no_courier`, `courier_cancels`, `return_to_store`, `cancel_fee`,
  `cancel_refused` (once a courier is assigned), `noncancelable` (always), `hold`, `duplicates`, `out_of_order`;
- calls: `http_500`, `http_503`, `http_429` (with Retry-After), `couriers_busy` (503), `request_timeout` (408),
  `unserviceable` (400 address_undeliverable), `slow` (answers after slow_seconds), `lost_response`
  (does the work, then answers 500).
They are selected
- for the whole simulator: `--fault MODE` (repeatable), `POST /_sim/config {"faults": [...]}`, or
  `POST /_sim/faults {"mode", "operation"?, "count"?}` (`DELETE /_sim/faults` clears them);
- for one delivery: a marker `[sim:MODE]` (or `[sim:MODE1,MODE2]`; `MODE*N` = only the first N calls)
  in the create request's `dropoff_notes`, or `POST /_sim/deliveries/{id}/faults {"mode"}`.
Control: `POST /_sim/deliveries/{id}/state {"status" (Uber's or our canonical names), "courier_imminent"?,
"auto"?}` pushes a delivery to any state; `GET /_sim/requests` lists every create request received;
`GET /_sim/webhooks` lists webhook attempts; `POST /_sim/config` changes speed, webhook URL, disorder
and TTLs at run time; `POST /_sim/tokens/expire` expires every issued token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import heapq
import hmac
import json
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orderstream import simulators
from orderstream.deliveries.providers.uber import openapi
from orderstream.deliveries.providers.uber.settings import (
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_CUSTOMER_ID,
    SANDBOX_WEBHOOK_SIGNING_KEY,
)
from orderstream.simulators import RunningSimulator

# Faults on API answers (any operation, or the one named): error status, Uber code, message.
HTTP_FAULTS: dict[str, tuple[int, str, str]] = {
    "http_500": (500, "internal_server_error", "We have experienced a problem."),
    "http_503": (503, "service_unavailable", "Service is currently unavailable."),
    "http_429": (429, "customer_limited", "Your account’s limits have been exceeded."),
    "couriers_busy": (503, "couriers_busy", "All of our couriers are currently busy."),
    "request_timeout": (408, "request_timeout", "The request timed out…"),
    "unserviceable": (400, "address_undeliverable", "The specified location is not in a deliverable area."),
}
# `slow`: answer after slow_seconds; `lost_response`: do the work, then answer 500 as if the reply were lost.
CALL_FAULTS = frozenset({*HTTP_FAULTS, "slow", "lost_response"})
# Faults of one delivery's lifecycle, cancel behaviour and webhooks.
LIFECYCLE_FAULTS = frozenset(
    {
        "no_courier",  # nobody accepts: canceled with undeliverable_reason couriers_busy
        "courier_cancels",  # the courier is assigned, heads to the store, then cancels
        "return_to_store",  # at the drop-off nobody answers: returned, then the return trip completes
        "cancel_fee",  # a cancel once a courier is assigned charges cancellation_fee
        "cancel_refused",  # a cancel is refused as soon as a courier is assigned
        "noncancelable",  # a cancel is always refused
        "hold",  # no automatic progress; move it with POST /_sim/deliveries/{id}/state
        "duplicates",  # every webhook of the delivery is sent twice
        "out_of_order",  # consecutive status webhooks of the delivery arrive swapped
    }
)
# Other names accepted for the same modes (the DoorDash simulator's and older ones).
FAULT_ALIASES = {"return": "return_to_store", "rate_limit": "http_429"}
FAULT_MODES = CALL_FAULTS | LIFECYCLE_FAULTS | frozenset(FAULT_ALIASES)


def canonical_fault(mode: str) -> str:
    """The fault mode's canonical name (aliases resolved)."""
    return FAULT_ALIASES.get(mode, mode)


OPERATIONS = ("token", "quote", "create", "get", "list", "update", "cancel", "proof_of_delivery")

# The forward lifecycle: (status, courier_imminent). Index = stage.
STAGES: tuple[tuple[str, bool], ...] = (
    ("pending", False),
    ("pickup", False),
    ("pickup", True),
    ("pickup_complete", False),
    ("dropoff", False),
    ("dropoff", True),
    ("delivered", False),
)
PICKED_UP_STAGE = 3
# The control endpoint also takes our canonical statuses (and DoorDash-style names) as states.
STATE_ALIASES: dict[str, tuple[str, bool]] = {
    "enroute_to_pickup": ("pickup", False),
    "arrived_at_pickup": ("pickup", True),
    "picked_up": ("pickup_complete", False),
    "enroute_to_dropoff": ("dropoff", False),
    "arrived_at_dropoff": ("dropoff", True),
    "completed": ("delivered", False),
    "cancelled": ("canceled", False),
    "enroute_to_return": ("returned", False),
}
TERMINAL = frozenset({"delivered", "canceled", "returned"})
MARKER = re.compile(r"\[sim:([a-z_0-9*,\s]+)\]")
ONE_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
COURIERS = (
    {
        "name": "Robo C.",
        "vehicle_type": "car",
        "vehicle_make": "Toyota",
        "vehicle_model": "Prius",
        "vehicle_color": "white",
    },
    {"name": "Ada L.", "vehicle_type": "bicycle"},
    {"name": "Sam K.", "vehicle_type": "motorcycle", "vehicle_make": "Honda", "vehicle_color": "red"},
)


_Outgoing = tuple[str, bytes, dict[str, Any], bool]  # (url, body, payload, send twice) of one webhook


@dataclass
class SimulatorConfig:
    """Everything the simulator can be told at start (most of it also at run time via /_sim/config)."""

    customer_id: str = SANDBOX_CUSTOMER_ID
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: str = SANDBOX_CLIENT_SECRET
    signing_key: str = SANDBOX_WEBHOOK_SIGNING_KEY
    webhook_url: str | None = None
    step_seconds: float = 8.0
    token_ttl_seconds: float = 30 * 24 * 3600.0  # Uber client-credentials tokens last 30 days
    quote_ttl_seconds: float = 15 * 60.0
    idempotency_window_seconds: float = 60 * 60.0
    duplicate_rate: float = 0.0  # probability that a webhook is sent twice
    out_of_order_rate: float = 0.0  # probability that a status webhook is held back past the next one
    courier_updates: bool = True  # also send event.courier_update between steps while a courier is assigned
    webhook_retry_seconds: float = 1.0  # first retry delay; doubles each time
    webhook_max_attempts: int = 8
    slow_seconds: float = 5.0
    retry_after_seconds: int = 2
    cancellation_fee: int = 700
    faults: tuple[str, ...] = ()  # lifecycle or call faults applied to every delivery / call
    seed: int | None = None


@dataclass
class GlobalFault:
    """A simulator-wide fault, optionally limited to one operation and a number of uses."""

    mode: str
    operation: str | None = None
    remaining: int | None = None


@dataclass
class SimDelivery:
    """One delivery's full state; `body()` renders it as Uber's delivery object."""

    id: str
    customer_id: str
    request: dict[str, Any]
    quote_id: str | None
    fee: int
    tip: int
    currency: str
    created: datetime
    pickup_ready: datetime | None
    pickup_deadline: datetime | None
    dropoff_ready: datetime | None
    dropoff_deadline: datetime | None
    tracking_url: str
    faults: set[str] = field(default_factory=set)
    stage: int = 0
    status: str = "pending"
    courier_imminent: bool = False
    courier: dict[str, Any] | None = None
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    undeliverable_reason: str = ""
    undeliverable_action: str = ""
    return_status: str | None = None
    pickup_done_at: datetime | None = None
    dropoff_done_at: datetime | None = None
    auto: bool = True
    next_step_at: float = 0.0
    version: int = 0
    status_events: int = 0
    step_seconds: float = 8.0  # the simulator's pace, for ETAs
    held: _Outgoing | None = None  # a status webhook held back to arrive after the next one

    def body(self) -> dict[str, Any]:
        """Uber's delivery object (DeliveryResp) for this delivery, as of now."""
        req = self.request
        now = datetime.now(UTC)
        step = timedelta(seconds=self.step_seconds)
        last = len(STAGES) - 1
        if self.pickup_done_at is not None:
            pickup_eta = self.pickup_done_at
        else:
            # the courier reaches the store at stage 2 (imminent); a scheduled one not before pickup_ready
            pickup_eta = now + max(0, 2 - self.stage) * step
            if self.stage == 0 and self.pickup_ready is not None:
                pickup_eta = max(pickup_eta, self.pickup_ready + 2 * step)
        if self.dropoff_done_at is not None:
            dropoff_eta = self.dropoff_done_at
        else:
            dropoff_eta = max(pickup_eta, now) + max(1, last - max(self.stage, 2)) * step
        pickup: dict[str, Any] = {
            "name": req.get("pickup_business_name") or req.get("pickup_name", ""),
            "phone_number": req.get("pickup_phone_number", ""),
            "address": _address_line(req.get("pickup_address", "")),
            "notes": req.get("pickup_notes", ""),
            "location": _location(req, "pickup"),
        }
        dropoff: dict[str, Any] = {
            "name": req.get("dropoff_name", ""),
            "phone_number": _mask(req.get("dropoff_phone_number", "")),
            "address": _address_line(req.get("dropoff_address", "")),
            "notes": _strip_markers(req.get("dropoff_notes", "")),
            "seller_notes": req.get("dropoff_seller_notes", ""),
            "location": _location(req, "dropoff"),
        }
        if self.pickup_done_at:
            pickup.update(status="completed", status_timestamp=_iso(self.pickup_done_at))
        if self.status == "delivered" and self.dropoff_done_at:
            dropoff.update(
                status="completed",
                status_timestamp=_iso(self.dropoff_done_at),
                verification={
                    "picture": {"image_url": f"{self.tracking_url}/proof.png"},
                    "completion_location": dropoff["location"],
                },
            )
        elif self.status in ("returned", "canceled") and self.pickup_done_at:
            dropoff.update(status="failed", status_timestamp=_iso(self.updated))
        out: dict[str, Any] = {
            "id": self.id,
            "kind": "delivery",
            "quote_id": self.quote_id or "",
            "status": self.status,
            "complete": self.status in ("delivered", "canceled") or self.return_status == "completed",
            "courier_imminent": self.courier_imminent,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
            "currency": self.currency,
            "fee": self.fee,
            "tip": self.tip,
            "pickup": pickup,
            "dropoff": dropoff,
            "pickup_ready": _iso(self.pickup_ready or self.created),
            "pickup_deadline": _iso(self.pickup_deadline or self.created + timedelta(minutes=30)),
            "dropoff_ready": _iso(self.dropoff_ready or self.created),
            "dropoff_deadline": _iso(self.dropoff_deadline or self.created + timedelta(minutes=60)),
            "pickup_eta": _iso(pickup_eta),
            "dropoff_eta": _iso(dropoff_eta),
            "tracking_url": self.tracking_url,
            "undeliverable_action": self.undeliverable_action,
            "undeliverable_reason": self.undeliverable_reason,
            "external_id": req.get("external_id", ""),
            "manifest": {
                "reference": req.get("manifest_reference", ""),
                "total_value": req.get("manifest_total_value", 0),
            },
            "manifest_items": req.get("manifest_items", []),
            "live_mode": False,
            "uuid": self.id.removeprefix("del_"),
        }
        if self.courier:
            out["courier"] = dict(self.courier)
        if self.return_status is not None:
            ret_id = "ret_" + self.id.removeprefix("del_")
            out["related_deliveries"] = [{"id": ret_id, "relationship": "return"}]
            out["return"] = {
                "name": pickup["name"],
                "address": pickup["address"],
                "location": pickup["location"],
                **(
                    {"status": "completed", "status_timestamp": _iso(self.updated)}
                    if self.return_status == "completed"
                    else {}
                ),
            }
        return out


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_dt(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _mask(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    return "+1555" + digits[-7:].rjust(7, "0") if digits else ""


def _address_line(raw: str) -> str:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(parsed, dict):
        return raw
    street = ", ".join(str(s) for s in parsed.get("street_address") or [])
    parts = [
        street,
        parsed.get("city", ""),
        f"{parsed.get('state', '')} {parsed.get('zip_code', '')}".strip(),
        parsed.get("country", ""),
    ]
    return ", ".join(str(p) for p in parts if p)


def _location(req: Mapping[str, Any], prefix: str) -> dict[str, float]:
    lat, lng = req.get(f"{prefix}_latitude"), req.get(f"{prefix}_longitude")
    if isinstance(lat, int | float) and isinstance(lng, int | float):
        return {"lat": float(lat), "lng": float(lng)}
    seed = int(hashlib.sha256(str(req.get(f"{prefix}_address", "")).encode()).hexdigest()[:8], 16)
    return {"lat": 37.7 + (seed % 1000) / 10000, "lng": -122.4 - (seed // 1000 % 1000) / 10000}


def _courier_position(delivery: SimDelivery, *, half_step: bool) -> dict[str, float]:
    """Where the courier is: on the way to the store (stages 1-2), at it (3), then on to the customer (4-6)."""
    store, door = _location(delivery.request, "pickup"), _location(delivery.request, "dropoff")
    start = {"lat": store["lat"] + 0.01, "lng": store["lng"] + 0.01}
    stage = delivery.stage + (0.5 if half_step else 0.0)
    if stage <= 2:
        origin, target, fraction = start, store, (stage - 1) / 1.0
    else:
        origin, target, fraction = store, door, (stage - 3) / 2.0
    fraction = min(1.0, max(0.0, fraction))
    return {
        "lat": round(origin["lat"] + (target["lat"] - origin["lat"]) * fraction, 6),
        "lng": round(origin["lng"] + (target["lng"] - origin["lng"]) * fraction, 6),
    }


def _strip_markers(text: str) -> str:
    return MARKER.sub("", text).strip()


def parse_markers(text: str | None) -> dict[str, int | None]:
    """Fault markers in a free-text field: `[sim:no_courier]`, `[sim:http_500*1,cancel_fee]` -> {mode: count}."""
    found: dict[str, int | None] = {}
    for group in MARKER.findall(text or ""):
        for raw in group.split(","):
            token = raw.strip()
            if not token:
                continue
            mode, _, count = token.partition("*")
            if mode in FAULT_MODES:
                found[canonical_fault(mode)] = int(count) if count.isdigit() else None
    return found


def _error(
    status: int,
    code: str,
    message: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "kind": "error"}
    if metadata:
        body["metadata"] = dict(metadata)
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


class SimulatorError(Exception):
    """An Uber error answer raised from inside a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.response = _error(status, code, message, metadata=metadata, headers=headers)


def check_windows(body: Mapping[str, Any], *, now: datetime) -> None:
    """Uber's six delivery-window rules, each with its own 400 code."""
    pickup_ready = _parse_dt(body.get("pickup_ready_dt"))
    pickup_deadline = _parse_dt(body.get("pickup_deadline_dt"))
    dropoff_ready = _parse_dt(body.get("dropoff_ready_dt"))
    dropoff_deadline = _parse_dt(body.get("dropoff_deadline_dt"))
    for name in ("pickup_ready_dt", "pickup_deadline_dt", "dropoff_ready_dt", "dropoff_deadline_dt"):
        if body.get(name) is not None and _parse_dt(body.get(name)) is None:
            raise SimulatorError(
                400,
                "invalid_params",
                "The parameters of your request were invalid.",
                metadata={name: "not an RFC 3339 timestamp"},
            )
    # a little slack for the request's own travel time
    if pickup_ready is not None:
        if pickup_ready < now - timedelta(seconds=30):
            raise SimulatorError(400, "pickup_ready_too_early", "The pickup ready time cannot be in the past.")
        if pickup_ready >= now + timedelta(days=30):
            raise SimulatorError(
                400, "pickup_ready_too_late", "The pickup ready time needs to be within the next 30 days."
            )
    if pickup_deadline is not None:
        if pickup_ready is not None and pickup_deadline < pickup_ready + timedelta(minutes=10):
            raise SimulatorError(
                400, "pickup_window_too_small", "The pickup window needs to be at least 10 minutes long."
            )
        if pickup_deadline < now + timedelta(minutes=20) - timedelta(seconds=30):
            raise SimulatorError(
                400, "pickup_deadline_too_early", "The pickup deadline time needs to be at least 20 minutes from now."
            )
    if dropoff_ready is not None and pickup_deadline is not None and dropoff_ready > pickup_deadline:
        raise SimulatorError(
            400,
            "dropoff_ready_after_pickup_deadline",
            "The dropoff ready time needs to be at or before the pickup deadline.",
        )
    if dropoff_deadline is not None:
        if dropoff_ready is not None and dropoff_deadline < dropoff_ready + timedelta(minutes=20):
            raise SimulatorError(
                400,
                "dropoff_deadline_too_early",
                "The dropoff deadline needs to be at least 20 minutes after the dropoff ready time.",
            )
        if pickup_deadline is not None and dropoff_deadline < pickup_deadline:
            raise SimulatorError(
                400,
                "dropoff_deadline_before_pickup_deadline",
                "The dropoff deadline needs to be after the pickup deadline.",
            )


def _check_address(raw: Any, field_name: str) -> None:
    text = raw if isinstance(raw, str) else ""
    if not text.strip():
        raise SimulatorError(
            400,
            "invalid_params",
            "The parameters of your request were invalid.",
            metadata={field_name: "This field is required."},
        )
    if "undeliverable" in text.lower():
        raise SimulatorError(400, "address_undeliverable", "The specified location is not in a deliverable area.")
    if "unknown location" in text.lower():
        raise SimulatorError(400, "unknown_location", "The specified location was not understood.")


def _fee_for(body: Mapping[str, Any]) -> int:
    digest = hashlib.sha256(f"{body.get('pickup_address')}|{body.get('dropoff_address')}".encode()).digest()
    return 599 + int.from_bytes(digest[:2], "big") % 600


def _currency(body: Mapping[str, Any]) -> str:
    try:
        country = str(json.loads(str(body.get("pickup_address")))["country"]).upper()
    except (ValueError, KeyError, TypeError):
        country = "US"
    return {"US": "USD", "CA": "CAD", "GB": "GBP", "AU": "AUD", "MX": "MXN", "JP": "JPY"}.get(
        country, "EUR" if country in {"FR", "DE", "ES", "IT", "NL", "BE", "PT", "IE", "AT"} else "USD"
    )


def _comparable(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


class UberSimulator:
    """The simulator's state and behaviour; all mutations happen on the event loop, under one lock."""

    def __init__(self, config: SimulatorConfig) -> None:
        config.faults = tuple(canonical_fault(f) for f in config.faults)
        self.config = config
        self.rng = random.Random(config.seed)
        self.tokens: dict[str, float] = {}  # token -> monotonic expiry
        self.quotes: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, SimDelivery] = {}
        self.by_idempotency: dict[str, tuple[float, str, str]] = {}  # key -> (monotonic at, body, delivery id)
        self.by_external: dict[tuple[str, str], str] = {}  # (external_id, manifest_reference) -> delivery id
        self.create_requests: list[dict[str, Any]] = []
        self.webhook_log: list[dict[str, Any]] = []
        self.global_faults: list[GlobalFault] = [GlobalFault(mode) for mode in config.faults if mode in CALL_FAULTS]
        self.marker_uses: dict[tuple[str, str], int] = {}
        self.lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self._ticker: asyncio.Task[Any] | None = None
        self._due: list[tuple[float, int, str]] = []  # heap of (monotonic due time, version, delivery id)

    # --- background work -----------------------------------------------------------------------

    def ensure_started(self) -> None:
        """Start the lifecycle ticker on the running loop (lazily, so the app also works when mounted)."""
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def aclose(self) -> None:
        """Stop background work and close the webhook client."""
        tasks = [t for t in [self._ticker, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._http is not None:
            await self._http.aclose()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(min(0.05, max(0.01, self.config.step_seconds / 10)))
            now = time.monotonic()
            async with self.lock:
                while self._due and self._due[0][0] <= now:
                    _, version, delivery_id = heapq.heappop(self._due)
                    delivery = self.deliveries.get(delivery_id)
                    # entries of deliveries changed since they were scheduled are stale
                    if delivery is None or delivery.version != version or not delivery.auto:
                        continue
                    if delivery.status not in TERMINAL or delivery.return_status == "pending":
                        try:
                            self._advance(delivery)
                        except Exception:  # noqa: BLE001 - one broken delivery must not stop the others
                            delivery.auto = False

    def _schedule_next(self, delivery: SimDelivery, *, at: float | None = None) -> None:
        delivery.step_seconds = self.config.step_seconds
        delivery.next_step_at = at if at is not None else time.monotonic() + self.config.step_seconds
        heapq.heappush(self._due, (delivery.next_step_at, delivery.version, delivery.id))
        if (
            self.config.courier_updates
            and delivery.courier
            and delivery.status in ("pickup", "pickup_complete", "dropoff")
        ):
            self._spawn(self._courier_update_later(delivery.id, delivery.version, self.config.step_seconds / 2))

    async def _courier_update_later(self, delivery_id: str, version: int, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self.lock:
            delivery = self.deliveries.get(delivery_id)
            if delivery is None or delivery.version != version or not delivery.courier:
                return
            delivery.courier["location"] = _courier_position(delivery, half_step=True)
            self._emit(delivery, "event.courier_update")

    def _advance(self, delivery: SimDelivery) -> None:
        """One scripted step, honouring the delivery's lifecycle faults."""
        if delivery.return_status == "pending":
            delivery.return_status = "completed"
            self._touch(delivery)
            self._emit(delivery, "event.delivery_status")
            return
        nxt = delivery.stage + 1
        if nxt == 1 and "no_courier" in delivery.faults:
            self._cancel(delivery, reason="couriers_busy", fee=0)
            return
        if nxt == 3 and "courier_cancels" in delivery.faults:
            self._cancel(delivery, reason="courier_canceled", fee=0)
            return
        if nxt == 6 and "return_to_store" in delivery.faults:
            delivery.status, delivery.courier_imminent = "returned", False
            delivery.undeliverable_action, delivery.undeliverable_reason = "returned", "CUSTOMER_UNAVAILABLE"
            delivery.return_status = "pending"
            self._touch(delivery)
            self._emit(delivery, "event.delivery_status")
            self._schedule_next(delivery)
            return
        self._set_stage(delivery, nxt)
        self._emit(delivery, "event.delivery_status")
        if delivery.status not in TERMINAL:
            self._schedule_next(delivery)

    def _set_stage(self, delivery: SimDelivery, stage: int) -> None:
        now = datetime.now(UTC)
        delivery.stage = stage
        delivery.status, delivery.courier_imminent = STAGES[stage]
        if stage >= 1 and delivery.courier is None:
            profile = COURIERS[self.rng.randrange(len(COURIERS))]
            pickup_loc = _location(delivery.request, "pickup")
            delivery.courier = {
                **profile,
                "phone_number": "+1555" + f"{self.rng.randrange(10**7):07d}",
                "location": {"lat": pickup_loc["lat"] + 0.01, "lng": pickup_loc["lng"] + 0.01},
                "img_href": "https://example.invalid/courier.png",
            }
        if stage == 0:
            delivery.courier = None
        if delivery.courier is not None:
            delivery.courier["location"] = _courier_position(delivery, half_step=False)
        if stage >= PICKED_UP_STAGE and delivery.pickup_done_at is None:
            delivery.pickup_done_at = now
        if stage < PICKED_UP_STAGE:
            delivery.pickup_done_at = None
        if stage == len(STAGES) - 1:
            delivery.dropoff_done_at = now
        self._touch(delivery)

    def _cancel(self, delivery: SimDelivery, *, reason: str = "", fee: int | None = None) -> None:
        delivery.status, delivery.courier_imminent = "canceled", False
        delivery.undeliverable_reason = reason
        if reason == "couriers_busy":
            delivery.courier = None
        if fee is not None:
            delivery.fee = fee
        self._touch(delivery)
        self._emit(delivery, "event.delivery_status")

    def _touch(self, delivery: SimDelivery) -> None:
        delivery.updated = datetime.now(UTC)
        delivery.version += 1

    # --- webhooks ------------------------------------------------------------------------------

    def _emit(self, delivery: SimDelivery, kind: str) -> None:
        url = self.config.webhook_url
        event_id = f"evt_{secrets.token_hex(8)}"
        payload = {
            "id": event_id,
            "kind": kind,
            "delivery_id": delivery.id,
            "status": delivery.status,
            "created": _iso(datetime.now(UTC)),
            "live_mode": False,
            "customer_id": delivery.customer_id,
            "developer_id": "dev_orderstream_sim",
            "account_id": "acc_orderstream_sim",
            "route_id": "",
            "data": delivery.body(),
        }
        if not url:
            self.webhook_log.append(
                {
                    "event_id": event_id,
                    "kind": kind,
                    "delivery_id": delivery.id,
                    "status": delivery.status,
                    "outcome": "no_webhook_url",
                }
            )
            return
        body = json.dumps(payload, separators=(",", ":")).encode()
        twice = "duplicates" in delivery.faults or self.rng.random() < self.config.duplicate_rate
        event: _Outgoing = (url, body, payload, twice)
        if kind != "event.delivery_status":
            self._spawn(self._deliver_event(event))
            return
        delivery.status_events += 1
        held, delivery.held = delivery.held, None
        swap = "out_of_order" in delivery.faults and delivery.status_events % 2 == 1
        if swap or self.rng.random() < self.config.out_of_order_rate:
            # held back until the next status event has been delivered (or two steps, if none comes)
            delivery.held = event
            self._spawn(self._release_later(delivery, event))
            if held is not None:
                self._spawn(self._deliver_event(held))
            return
        self._spawn(self._deliver_in_order(event, held))

    async def _deliver_event(self, event: _Outgoing) -> None:
        url, body, payload, twice = event
        await self._deliver(url, body, payload)
        if twice:  # the same event (same id) once more, as a provider retry would
            await self._deliver(url, body, payload, delay=min(0.2, self.config.step_seconds / 4))

    async def _deliver_in_order(self, first: _Outgoing, then: _Outgoing | None) -> None:
        await self._deliver_event(first)
        if then is not None:
            await self._deliver_event(then)

    async def _release_later(self, delivery: SimDelivery, event: _Outgoing) -> None:
        await asyncio.sleep(self.config.step_seconds * 2)
        if delivery.held is event:
            delivery.held = None
            await self._deliver_event(event)

    async def _deliver(self, url: str, body: bytes, payload: Mapping[str, Any], *, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        signature = hmac.new(self.config.signing_key.encode(), body, hashlib.sha256).hexdigest()
        headers = {"content-type": "application/json", "x-uber-signature": signature, "x-environment": "sandbox"}
        wait = self.config.webhook_retry_seconds
        for attempt in range(1, self.config.webhook_max_attempts + 1):
            entry: dict[str, Any] = {
                "event_id": payload["id"],
                "kind": payload["kind"],
                "delivery_id": payload["delivery_id"],
                "status": payload["status"],
                "courier_imminent": payload["data"].get("courier_imminent", False),
                "attempt": attempt,
            }
            try:
                response = await self._http.post(url, content=body, headers=headers)
                entry["response_status"] = response.status_code
            except httpx.HTTPError as exc:
                entry["error"] = type(exc).__name__
            self.webhook_log.append(entry)
            if 200 <= entry.get("response_status", 0) < 300:
                return
            await asyncio.sleep(wait)
            wait *= 2

    # --- faults --------------------------------------------------------------------------------

    def take_global_fault(self, operation: str) -> str | None:
        """The simulator-wide call fault for this operation, using one of its counted uses."""
        for fault in self.global_faults:
            if fault.operation not in (None, operation) or fault.remaining == 0:
                continue
            if fault.remaining is not None:
                fault.remaining -= 1
            return fault.mode
        return None

    def take_marker_fault(self, key: str, markers: Mapping[str, int | None]) -> str | None:
        """A call fault from a delivery's markers; `mode*N` applies to the first N calls for the same key."""
        for mode, count in markers.items():
            if mode not in CALL_FAULTS:
                continue
            used = self.marker_uses.get((key, mode), 0)
            if count is not None and used >= count:
                continue
            self.marker_uses[(key, mode)] = used + 1
            return mode
        return None

    async def apply_call_fault(self, mode: str | None) -> None:
        """Answer with the fault's error, or wait (slow); lost_response is handled by the caller."""
        if mode is None or mode == "lost_response":
            return
        if mode == "slow":
            await asyncio.sleep(self.config.slow_seconds)
            return
        status, code, message = HTTP_FAULTS[mode]
        headers = {"Retry-After": str(self.config.retry_after_seconds)} if status in (429, 503) else {}
        raise SimulatorError(status, code, message, headers=headers)

    # --- requests ------------------------------------------------------------------------------

    def issue_token(self) -> dict[str, Any]:
        """A new bearer token valid for token_ttl_seconds."""
        token = "IA." + secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.config.token_ttl_seconds
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": int(self.config.token_ttl_seconds),
            "scope": "eats.deliveries",
        }

    def check_auth(self, request: Request, customer_id: str) -> None:
        """401 unauthorized for a missing, unknown or expired token; 404 for another customer."""
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        expiry = self.tokens.get(token)
        if not token or expiry is None or expiry <= time.monotonic():
            raise SimulatorError(401, "unauthorized", "Invalid OAuth 2.0 credentials provided.")
        if customer_id != self.config.customer_id:
            raise SimulatorError(404, "customer_not_found", "Customer does not exist.")

    def delivery_for(self, customer_id: str, delivery_id: str) -> SimDelivery:
        """The delivery or 404 delivery_not_found."""
        delivery = self.deliveries.get(delivery_id)
        if delivery is None or delivery.customer_id != customer_id:
            raise SimulatorError(404, "delivery_not_found", "The requested delivery does not exist.")
        return delivery

    def create_quote(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A delivery_quote valid for quote_ttl_seconds."""
        _check_address(body.get("pickup_address"), "pickup_address")
        _check_address(body.get("dropoff_address"), "dropoff_address")
        now = datetime.now(UTC)
        check_windows(body, now=now)
        quote_id = "dqt_" + secrets.token_urlsafe(16)
        pickup_duration, duration = 8, 30
        fee = _fee_for(body)
        quote = {
            "kind": "delivery_quote",
            "id": quote_id,
            "created": _iso(now),
            "expires": _iso(now + timedelta(seconds=self.config.quote_ttl_seconds)),
            "fee": fee,
            "currency": _currency(body).lower(),
            "currency_type": _currency(body),
            "dropoff_eta": _iso(now + timedelta(minutes=duration)),
            "duration": duration,
            "pickup_duration": pickup_duration,
            "dropoff_deadline": _iso(now + timedelta(minutes=duration + 30)),
        }
        self.quotes[quote_id] = {
            "quote": quote,
            "expires_at": now + timedelta(seconds=self.config.quote_ttl_seconds),
            "used_by": None,
            "pickup_address": body.get("pickup_address"),
            "dropoff_address": body.get("dropoff_address"),
            "external_store_id": body.get("external_store_id"),
        }
        return quote

    def create_delivery(self, body: dict[str, Any], *, base_url: str) -> tuple[SimDelivery, bool]:
        """Create (or find, for a repeated idempotency key) a delivery; returns (delivery, created_now)."""
        now = datetime.now(UTC)
        mono = time.monotonic()
        key = body.get("idempotency_key")
        comparable = _comparable(body)
        if isinstance(key, str) and key:
            seen = self.by_idempotency.get(key)
            if seen is not None and mono - seen[0] <= self.config.idempotency_window_seconds:
                if seen[1] == comparable:
                    return self.deliveries[seen[2]], False
                raise SimulatorError(
                    409,
                    "duplicate_delivery",
                    "An active delivery like this already exists.",
                    metadata={"delivery_id": seen[2]},
                )
        external_key = (str(body.get("external_id") or ""), str(body.get("manifest_reference") or ""))
        if external_key[0] and external_key in self.by_external:
            raise SimulatorError(
                409,
                "duplicate_delivery",
                "An active delivery like this already exists.",
                metadata={"delivery_id": self.by_external[external_key]},
            )
        _check_address(body.get("pickup_address"), "pickup_address")
        _check_address(body.get("dropoff_address"), "dropoff_address")
        quote_id = body.get("quote_id")
        fee = _fee_for(body)
        if quote_id:
            stored = self.quotes.get(str(quote_id))
            if stored is None:
                raise SimulatorError(
                    400,
                    "invalid_params",
                    "The parameters of your request were invalid.",
                    metadata={"quote_id": "unknown quote"},
                )
            if stored["used_by"] is not None:
                raise SimulatorError(400, "used_quote", "The price quote specified has been used.")
            if stored["expires_at"] <= now:
                raise SimulatorError(400, "expired_quote", "The price quote specified has expired.")
            if (stored["pickup_address"], stored["dropoff_address"]) != (
                body.get("pickup_address"),
                body.get("dropoff_address"),
            ) or (stored["external_store_id"] != body.get("external_store_id")):
                raise SimulatorError(400, "mismatched_price_quote", "Quote mismatch, please recreate the quote.")
            fee = int(stored["quote"]["fee"])
        check_windows(body, now=now)
        tip = int(body.get("tip") or 0)
        delivery_id = "del_" + secrets.token_urlsafe(16)
        markers = parse_markers(body.get("dropoff_notes"))
        faults = {m for m in markers if m in LIFECYCLE_FAULTS} | {
            m for m in self.config.faults if m in LIFECYCLE_FAULTS
        }
        delivery = SimDelivery(
            id=delivery_id,
            customer_id=self.config.customer_id,
            request=body,
            quote_id=str(quote_id) if quote_id else None,
            fee=fee + tip,
            tip=tip,
            currency=_currency(body).lower(),
            created=now,
            pickup_ready=_parse_dt(body.get("pickup_ready_dt")),
            pickup_deadline=_parse_dt(body.get("pickup_deadline_dt")),
            dropoff_ready=_parse_dt(body.get("dropoff_ready_dt")),
            dropoff_deadline=_parse_dt(body.get("dropoff_deadline_dt")),
            tracking_url=f"{base_url.rstrip('/')}/_sim/track/{delivery_id}",
            faults=faults,
        )
        delivery.auto = "hold" not in faults
        if quote_id:
            self.quotes[str(quote_id)]["used_by"] = delivery_id
        self.deliveries[delivery_id] = delivery
        if isinstance(key, str) and key:
            self.by_idempotency[key] = (mono, comparable, delivery_id)
        if external_key[0]:
            self.by_external[external_key] = delivery_id
        first_step = mono + self.config.step_seconds
        if delivery.pickup_ready is not None:
            # Robo Courier assigns a courier at pickup_ready_dt
            first_step = max(first_step, mono + (delivery.pickup_ready - now).total_seconds())
        self._touch(delivery)
        self._emit(delivery, "event.delivery_status")
        self._schedule_next(delivery, at=first_step)
        return delivery, True

    def cancel(self, delivery: SimDelivery) -> SimDelivery:
        """Cancel before pickup (free, or the cancellation fee once a courier is assigned in cancel_fee mode)."""
        if delivery.status == "canceled":
            return delivery  # a repeated cancel answers with the canceled delivery
        refused = "noncancelable" in delivery.faults or ("cancel_refused" in delivery.faults and delivery.courier)
        if refused or delivery.stage >= PICKED_UP_STAGE or delivery.status in TERMINAL:
            raise SimulatorError(400, "noncancelable_delivery", "Delivery cannot be cancelled")
        fee = self.config.cancellation_fee if "cancel_fee" in delivery.faults and delivery.courier else 0
        self._cancel(delivery, reason="", fee=fee)
        delivery.tip = 0
        return delivery

    def update(self, delivery: SimDelivery, body: Mapping[str, Any]) -> SimDelivery:
        """Tip and notes; refuses what Uber refuses in the delivery's state."""
        if "tip_by_customer" in body:
            tip = int(body["tip_by_customer"])
            if delivery.status in ("canceled", "returned"):
                raise SimulatorError(400, "invalid_tipping_state", "Tip cannot be updated in the current job state.")
            if tip < 0:
                raise SimulatorError(
                    400,
                    "invalid_params",
                    "The parameters of your request were invalid.",
                    metadata={"tip_by_customer": "must not be negative"},
                )
            if tip > 100_00:
                raise SimulatorError(400, "max_tip_exceeded", "Max tip exceeded.")
            delivery.fee += tip - delivery.tip
            delivery.tip = tip
        changes = {k: v for k, v in body.items() if k != "tip_by_customer"}
        if changes and (delivery.stage >= PICKED_UP_STAGE or delivery.status in TERMINAL):
            raise SimulatorError(
                400,
                "invalid_params",
                "The parameters of your request were invalid.",
                metadata={"param_details": "The provided fields cannot be updated in the current job state."},
            )
        delivery.request = {**delivery.request, **changes}
        self._touch(delivery)
        if delivery.auto and delivery.status not in TERMINAL:
            # keep the scripted step where it was (the version it was scheduled under just changed)
            heapq.heappush(self._due, (delivery.next_step_at, delivery.version, delivery.id))
        return delivery

    def push_state(self, delivery: SimDelivery, body: Mapping[str, Any]) -> SimDelivery:
        """Control endpoint: put a delivery in any state (and optionally stop or resume its script)."""
        status = body.get("status", body.get("state"))
        imminent = bool(body.get("courier_imminent", False))
        if isinstance(status, str) and status in STATE_ALIASES:
            status, imminent = STATE_ALIASES[status]
        if "auto" in body or "resume" in body:
            delivery.auto = bool(body.get("auto", body.get("resume")))
        if status is None:
            if delivery.auto and (delivery.status not in TERMINAL or delivery.return_status == "pending"):
                self._schedule_next(delivery)
            return delivery
        if status == "canceled":
            self._cancel(delivery, reason=str(body.get("reason") or ""), fee=body.get("fee"))
        elif status == "returned":
            if delivery.pickup_done_at is None:
                self._set_stage(delivery, PICKED_UP_STAGE)
            delivery.status, delivery.courier_imminent = "returned", False
            delivery.undeliverable_action = "returned"
            delivery.undeliverable_reason = str(body.get("reason") or "CUSTOMER_UNAVAILABLE")
            delivery.return_status = "completed" if body.get("return_completed") else "pending"
            self._touch(delivery)
            self._emit(delivery, "event.delivery_status")
            self._schedule_next(delivery)
        else:
            matches = [i for i, stage in enumerate(STAGES) if stage == (status, imminent)]
            if not matches:
                matches = [i for i, stage in enumerate(STAGES) if stage[0] == status]
            if not matches:
                raise SimulatorError(
                    400,
                    "invalid_params",
                    "The parameters of your request were invalid.",
                    metadata={"status": f"unknown status {status!r}"},
                )
            delivery.return_status = None
            delivery.undeliverable_action = delivery.undeliverable_reason = ""
            self._set_stage(delivery, matches[0])
            self._emit(delivery, "event.delivery_status")
            if delivery.status not in TERMINAL:
                self._schedule_next(delivery)
        return delivery


# --- HTTP ----------------------------------------------------------------------------------------


def _sim(request: Request) -> UberSimulator:
    sim: UberSimulator = request.app.state.sim
    sim.ensure_started()
    return sim


async def _validated_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    result = openapi.validate_request(
        request.method,
        request.url.path.removeprefix(request.scope.get("root_path", "")),
        query=request.url.query,
        headers=dict(request.headers),
        body=raw,
    )
    if result.operation is None:
        raise SimulatorError(404, "not_found", "No such operation.")
    if result.errors:
        auth_errors = [e for e in result.errors if "bearer" in e]
        if auth_errors:
            raise SimulatorError(401, "unauthorized", "Invalid OAuth 2.0 credentials provided.")
        raise SimulatorError(
            400,
            "invalid_params",
            "The parameters of your request were invalid.",
            metadata={"param_details": "; ".join(result.errors)},
        )
    if not raw.strip():
        return {}
    parsed = json.loads(raw)
    return parsed if isinstance(parsed, dict) else {}


Handler = Callable[[Request, UberSimulator], Awaitable[Response]]


def _handled(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an endpoint: SimulatorError -> Uber error body, anything unexpected -> Uber's 500 body."""

    async def endpoint(request: Request) -> Response:
        sim = _sim(request)
        try:
            return await fn(request, sim)
        except SimulatorError as err:
            return err.response
        except Exception:  # noqa: BLE001 - the simulator answers like Uber, never with a stack trace
            return _error(500, "internal_server_error", "We have experienced a problem.")

    endpoint.__name__ = fn.__name__
    endpoint.__doc__ = fn.__doc__
    return endpoint


@_handled
async def token(request: Request, sim: UberSimulator) -> Response:
    """POST /oauth/v2/token: OAuth2 client credentials, form-encoded."""
    await sim.apply_call_fault(sim.take_global_fault("token"))
    raw = await request.body()
    result = openapi.validate_request("POST", "/oauth/v2/token", headers=dict(request.headers), body=raw)
    form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    if result.errors:
        if form.get("grant_type") not in (None, "client_credentials"):
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        return JSONResponse(
            {"error": "invalid_request", "error_description": "; ".join(result.errors)}, status_code=400
        )
    if form.get("grant_type") != "client_credentials":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    ok_id = hmac.compare_digest(form.get("client_id", "").encode(), sim.config.client_id.encode())
    ok_secret = hmac.compare_digest(form.get("client_secret", "").encode(), sim.config.client_secret.encode())
    if not (ok_id and ok_secret):
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    scopes = set((form.get("scope") or "").split())
    if "eats.deliveries" not in scopes:
        return JSONResponse({"error": "invalid_scope"}, status_code=400)
    async with sim.lock:
        return JSONResponse(sim.issue_token())


@_handled
async def create_quote(request: Request, sim: UberSimulator) -> Response:
    """POST /v1/customers/{customer_id}/delivery_quotes."""
    body = await _validated_json(request)
    sim.check_auth(request, request.path_params["customer_id"])
    await sim.apply_call_fault(sim.take_global_fault("quote"))
    async with sim.lock:
        return JSONResponse(sim.create_quote(body))


@_handled
async def create_delivery(request: Request, sim: UberSimulator) -> Response:
    """POST /v1/customers/{customer_id}/deliveries."""
    raw_entry: dict[str, Any] = {"received_at": _iso(datetime.now(UTC))}
    try:
        body = await _validated_json(request)
    except SimulatorError as err:
        sim.create_requests.append({**raw_entry, "response_status": err.response.status_code})
        raise
    entry = {
        **raw_entry,
        "idempotency_key": body.get("idempotency_key"),
        "external_id": body.get("external_id"),
        "manifest_reference": body.get("manifest_reference"),
        "quote_id": body.get("quote_id"),
    }
    sim.create_requests.append(entry)
    try:
        sim.check_auth(request, request.path_params["customer_id"])
        markers = parse_markers(body.get("dropoff_notes"))
        key = str(body.get("idempotency_key") or body.get("external_id") or "")
        fault = sim.take_global_fault("create") or sim.take_marker_fault(key, markers)
        await sim.apply_call_fault(fault)
        async with sim.lock:
            delivery, created = sim.create_delivery(
                body, base_url=str(request.base_url).rstrip("/") + request.scope.get("root_path", "")
            )
            out = delivery.body()
        entry.update(delivery_id=delivery.id, created=created, response_status=200)
        if fault == "lost_response":
            entry["response_status"] = 500
            raise SimulatorError(500, "internal_server_error", "We have experienced a problem.")
        return JSONResponse(out)
    except SimulatorError as err:
        entry["response_status"] = err.response.status_code
        entry["error_code"] = json.loads(bytes(err.response.body)).get("code")
        raise


@_handled
async def get_delivery(request: Request, sim: UberSimulator) -> Response:
    """GET /v1/customers/{customer_id}/deliveries/{delivery_id}: always the latest truth."""
    await _validated_json(request)
    sim.check_auth(request, request.path_params["customer_id"])
    await sim.apply_call_fault(sim.take_global_fault("get"))
    async with sim.lock:
        delivery = sim.delivery_for(request.path_params["customer_id"], request.path_params["delivery_id"])
        return JSONResponse(delivery.body())


@_handled
async def list_deliveries(request: Request, sim: UberSimulator) -> Response:
    """GET /v1/customers/{customer_id}/deliveries?filter=&limit=&offset= (newest first)."""
    await _validated_json(request)
    customer_id = request.path_params["customer_id"]
    sim.check_auth(request, customer_id)
    await sim.apply_call_fault(sim.take_global_fault("list"))
    params = request.query_params
    limit = max(1, min(int(params.get("limit") or 30), 100))
    offset = max(0, int(params.get("offset") or params.get("Offset") or 0))
    wanted = params.get("filter")
    async with sim.lock:
        rows = [d for d in reversed(list(sim.deliveries.values())) if d.customer_id == customer_id]
        if wanted == "ongoing":
            rows = [d for d in rows if d.status not in TERMINAL]
        elif wanted:
            rows = [d for d in rows if d.status == wanted]
        page = [d.body() for d in rows[offset : offset + limit]]
    out: dict[str, Any] = {"data": page, "total_count": -1}
    if offset + limit < len(rows):
        out["next_href"] = f"{request.url.path}?limit={limit}&offset={offset + limit}" + (
            f"&filter={wanted}" if wanted else ""
        )
    return JSONResponse(out)


@_handled
async def update_delivery(request: Request, sim: UberSimulator) -> Response:
    """POST /v1/customers/{customer_id}/deliveries/{delivery_id}."""
    body = await _validated_json(request)
    sim.check_auth(request, request.path_params["customer_id"])
    await sim.apply_call_fault(sim.take_global_fault("update"))
    async with sim.lock:
        delivery = sim.delivery_for(request.path_params["customer_id"], request.path_params["delivery_id"])
        return JSONResponse(sim.update(delivery, body).body())


@_handled
async def cancel_delivery(request: Request, sim: UberSimulator) -> Response:
    """POST /v1/customers/{customer_id}/deliveries/{delivery_id}/cancel."""
    await _validated_json(request)
    sim.check_auth(request, request.path_params["customer_id"])
    fault = sim.take_global_fault("cancel")
    await sim.apply_call_fault(fault)
    async with sim.lock:
        delivery = sim.delivery_for(request.path_params["customer_id"], request.path_params["delivery_id"])
        out = sim.cancel(delivery).body()
    if fault == "lost_response":
        raise SimulatorError(500, "internal_server_error", "We have experienced a problem.")
    return JSONResponse(out)


@_handled
async def proof_of_delivery(request: Request, sim: UberSimulator) -> Response:
    """POST /v1/customers/{customer_id}/deliveries/{delivery_id}/proof-of-delivery: a base64 PNG once delivered."""
    body = await _validated_json(request)
    sim.check_auth(request, request.path_params["customer_id"])
    await sim.apply_call_fault(sim.take_global_fault("proof_of_delivery"))
    async with sim.lock:
        delivery = sim.delivery_for(request.path_params["customer_id"], request.path_params["delivery_id"])
        done = (
            delivery.status == "delivered" if body.get("waypoint") == "dropoff" else delivery.pickup_done_at is not None
        )
        if body.get("waypoint") == "return":
            done = delivery.return_status == "completed"
    if not done or body.get("type") != "picture":
        raise SimulatorError(
            400,
            "invalid_params",
            "The parameters of your request were invalid.",
            metadata={"param_details": f"no {body.get('type')} proof for the {body.get('waypoint')} waypoint yet"},
        )
    return JSONResponse({"document": base64.b64encode(ONE_PIXEL_PNG).decode()})


# --- control endpoints ----------------------------------------------------------------------------


async def _json_or_empty(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        raise SimulatorError(400, "invalid_params", "body is not JSON") from exc
    if not isinstance(parsed, dict):
        raise SimulatorError(400, "invalid_params", "body must be a JSON object")
    return parsed


@_handled
async def sim_health(request: Request, sim: UberSimulator) -> Response:
    """GET /_sim/health."""
    return JSONResponse({"ok": True, "customer_id": sim.config.customer_id, "deliveries": len(sim.deliveries)})


@_handled
async def sim_requests(request: Request, sim: UberSimulator) -> Response:
    """GET /_sim/requests: every create request received, in order."""
    return JSONResponse({"data": sim.create_requests, "count": len(sim.create_requests)})


@_handled
async def sim_webhooks(request: Request, sim: UberSimulator) -> Response:
    """GET /_sim/webhooks: every webhook attempt, in order."""
    return JSONResponse({"data": sim.webhook_log, "count": len(sim.webhook_log)})


@_handled
async def sim_state(request: Request, sim: UberSimulator) -> Response:
    """POST /_sim/deliveries/{delivery_id}/state {"status", "courier_imminent"?, "auto"?, "reason"?, "fee"?}."""
    body = await _json_or_empty(request)
    async with sim.lock:
        delivery = sim.delivery_for(sim.config.customer_id, request.path_params["delivery_id"])
        return JSONResponse(sim.push_state(delivery, body).body())


@_handled
async def sim_delivery_faults(request: Request, sim: UberSimulator) -> Response:
    """POST /_sim/deliveries/{delivery_id}/faults {"mode"}: add a lifecycle fault to one delivery."""
    body = await _json_or_empty(request)
    mode = canonical_fault(str(body.get("mode")))
    if mode not in LIFECYCLE_FAULTS:
        raise SimulatorError(400, "invalid_params", f"mode must be one of {sorted(LIFECYCLE_FAULTS)}")
    async with sim.lock:
        delivery = sim.delivery_for(sim.config.customer_id, request.path_params["delivery_id"])
        delivery.faults.add(str(mode))
        return JSONResponse({"id": delivery.id, "faults": sorted(delivery.faults)})


@_handled
async def sim_faults(request: Request, sim: UberSimulator) -> Response:
    """POST /_sim/faults {"mode", "operation"?, "count"?} adds a simulator-wide fault; DELETE clears them."""
    if request.method == "DELETE":
        sim.global_faults.clear()
        sim.config.faults = tuple(f for f in sim.config.faults if f not in LIFECYCLE_FAULTS)
        return JSONResponse({"faults": []})
    if request.method == "POST":
        body = await _json_or_empty(request)
        mode, operation, count = canonical_fault(str(body.get("mode"))), body.get("operation"), body.get("count")
        if mode not in FAULT_MODES or (operation is not None and operation not in OPERATIONS):
            raise SimulatorError(400, "invalid_params", f"mode in {sorted(FAULT_MODES)}, operation in {OPERATIONS}")
        if mode in LIFECYCLE_FAULTS:
            sim.config.faults = (*sim.config.faults, str(mode))
        else:
            sim.global_faults.append(GlobalFault(str(mode), operation, int(count) if count is not None else None))
    return JSONResponse(
        {
            "faults": [asdict(f) for f in sim.global_faults],
            "lifecycle_faults": [f for f in sim.config.faults if f in LIFECYCLE_FAULTS],
        }
    )


@_handled
async def sim_config(request: Request, sim: UberSimulator) -> Response:
    """POST /_sim/config: change step_seconds, webhook_url, duplicate_rate, out_of_order_rate, ... at run time."""
    body = await _json_or_empty(request)
    allowed = {
        "webhook_url", "step_seconds", "duplicate_rate", "out_of_order_rate", "courier_updates", "quote_ttl_seconds",
        "token_ttl_seconds", "webhook_retry_seconds", "slow_seconds", "cancellation_fee", "retry_after_seconds",
        "idempotency_window_seconds",
    }  # fmt: skip
    unknown = set(body) - allowed - {"faults"}
    if unknown:
        raise SimulatorError(400, "invalid_params", f"unknown settings {sorted(unknown)}")
    if "faults" in body:
        # the whole simulator-wide fault list, replaced (as `--fault` sets it at start)
        faults = [canonical_fault(str(f)) for f in body.pop("faults") or []]
        if any(f not in FAULT_MODES for f in faults):
            raise SimulatorError(400, "invalid_params", f"fault modes are {sorted(FAULT_MODES)}")
        sim.config.faults = tuple(faults)
        sim.global_faults = [GlobalFault(f) for f in faults if f in CALL_FAULTS]
    for key, value in body.items():
        setattr(sim.config, key, value)
    return JSONResponse({"faults": list(sim.config.faults), **{k: getattr(sim.config, k) for k in sorted(allowed)}})


@_handled
async def sim_expire_tokens(request: Request, sim: UberSimulator) -> Response:
    """POST /_sim/tokens/expire: every issued token stops working (the next call gets 401 unauthorized)."""
    now = time.monotonic()
    sim.tokens = {t: min(exp, now - 1) for t, exp in sim.tokens.items()}
    return JSONResponse({"expired": len(sim.tokens)})


@_handled
async def sim_track(request: Request, sim: UberSimulator) -> Response:
    """GET /_sim/track/{delivery_id}: the unauthenticated tracking page (JSON here)."""
    delivery = sim.deliveries.get(request.path_params["delivery_id"])
    if delivery is None:
        raise SimulatorError(404, "delivery_not_found", "The requested delivery does not exist.")
    body = delivery.body()
    return JSONResponse(
        {k: body.get(k) for k in ("id", "status", "courier_imminent", "courier", "pickup_eta", "dropoff_eta")}
    )


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """The simulator as an ASGI app (run it under uvicorn, or mount it in process)."""
    sim = UberSimulator(config or SimulatorConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sim.ensure_started()
        yield
        await sim.aclose()

    customer = "/v1/customers/{customer_id}"
    routes = [
        Route("/oauth/v2/token", token, methods=["POST"]),
        Route(f"{customer}/delivery_quotes", create_quote, methods=["POST"]),
        Route(f"{customer}/deliveries", create_delivery, methods=["POST"]),
        Route(f"{customer}/deliveries", list_deliveries, methods=["GET"]),
        Route(f"{customer}/deliveries/{{delivery_id}}", get_delivery, methods=["GET"]),
        Route(f"{customer}/deliveries/{{delivery_id}}", update_delivery, methods=["POST"]),
        Route(f"{customer}/deliveries/{{delivery_id}}/cancel", cancel_delivery, methods=["POST"]),
        Route(f"{customer}/deliveries/{{delivery_id}}/proof-of-delivery", proof_of_delivery, methods=["POST"]),
        Route("/_sim/health", sim_health, methods=["GET"]),
        Route("/_sim/requests", sim_requests, methods=["GET"]),
        Route("/_sim/webhooks", sim_webhooks, methods=["GET"]),
        Route("/_sim/faults", sim_faults, methods=["GET", "POST", "DELETE"]),
        Route("/_sim/config", sim_config, methods=["POST"]),
        Route("/_sim/tokens/expire", sim_expire_tokens, methods=["POST"]),
        Route("/_sim/deliveries/{delivery_id}/state", sim_state, methods=["POST"]),
        Route("/_sim/deliveries/{delivery_id}/faults", sim_delivery_faults, methods=["POST"]),
        Route("/_sim/track/{delivery_id}", sim_track, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sim = sim
    return app


class BackgroundSimulator(RunningSimulator):
    """The simulator served by uvicorn on a thread of this process (the sandbox default, tests)."""

    @property
    def simulator(self) -> UberSimulator:
        """The running simulator's state (for inspection)."""
        sim: UberSimulator = self.app.state.sim
        return sim


def start_in_thread(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0
) -> BackgroundSimulator:
    """Serve the simulator on a daemon thread; port 0 picks a free port (see `.base_url`, `.stop()`)."""
    return simulators.start_in_thread(
        create_app(config),
        name="uber-simulator",
        kind=BackgroundSimulator,
        host=host,
        port=port,
        timeout=timeout,
        access_log=False,
        lifespan="on",
    )


def run(config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 8300) -> None:
    """Serve the simulator with uvicorn until interrupted (the CLI command)."""
    simulators.serve(create_app(config), host=host, port=port)


serve = run  # the DoorDash simulator's name for the same thing
