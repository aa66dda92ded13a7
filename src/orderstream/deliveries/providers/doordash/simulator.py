"""A local DoorDash Drive v2 simulator: same endpoints, JWT check, error bodies, lifecycle and webhooks.

Run it with `orderstream simulate doordash --port N --webhook-url URL`, or build the app with
`create_app(SimulatorConfig(...))` (or `start_in_thread`) to embed it, as the sandbox default does.

Fault modes, per simulator (`--fault MODE`, repeatable, or `POST /_sim/config {"faults": [...]}`) or per
delivery (a marker such as `[sim:no_courier]` or `[sim:return_to_store,duplicates]` anywhere in the
request's `dropoff_instructions`):

- `no_courier`: no Dasher accepts; the delivery is cancelled with reason `no_available_dashers`.
- `courier_cancels`: the Dasher is assigned, heads to the store, then cancels (`dasher_cancelled`).
- `return_to_store`: at the drop-off nobody answers; the Dasher brings the order back (returned).
- `cancel_fee`: a cancel after a Dasher is assigned is billed the delivery fee.
- `cancel_refused`: a cancel is refused as soon as a Dasher is assigned (pickup always refuses).
- `hold`: no automatic progress; move it with `POST /_sim/deliveries/{id}/state`.
- `duplicates`: every webhook is sent twice. `out_of_order`: consecutive webhooks are swapped.
- `unserviceable`: quotes and creates answer 422 (outside the delivery area).
- `http_500`, `http_503`, `http_429`, `slow`: as a marker, the first quote/create that carries it fails
  that way once (`slow` answers after `slow_seconds`, so a client times out though the call succeeds).

One-shot request faults for the next N API calls: `POST /_sim/faults {"mode": "http_429", "count": 2,
"retry_after": 3, "seconds": 5, "path": "/deliveries"}`.

Control and inspection (no auth; the simulator is a local tool): `GET /_sim/health`,
`GET /_sim/requests` (every API request with its external id, `kind` and whether it `booked` a delivery),
`GET /_sim/webhooks` (every webhook attempt), `GET /_sim/deliveries/{id}`,
`POST /_sim/deliveries/{id}/state {"state": "picked_up", "cancellation_reason": ..., "resume": false}`
(pushes the delivery to any state and sends its webhook; the script pauses unless `resume`),
`POST /_sim/config`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orderstream import simulators
from orderstream.deliveries.providers.doordash.settings import (
    SANDBOX_DEVELOPER_ID,
    SANDBOX_KEY_ID,
    SANDBOX_SIGNING_SECRET,
    SANDBOX_WEBHOOK_AUTH,
    decode_signing_secret,
)
from orderstream.simulators import RunningSimulator

LIFECYCLE_MODES = frozenset(
    {"no_courier", "courier_cancels", "return_to_store", "cancel_fee", "cancel_refused", "hold"}
)
WEBHOOK_MODES = frozenset({"duplicates", "out_of_order"})
REQUEST_MODES = frozenset({"http_500", "http_503", "http_429", "slow", "unserviceable"})
ALL_MODES = LIFECYCLE_MODES | WEBHOOK_MODES | REQUEST_MODES

STATES = (
    "created",
    "confirmed",
    "enroute_to_pickup",
    "arrived_at_pickup",
    "picked_up",
    "enroute_to_dropoff",
    "arrived_at_dropoff",
    "delivered",
    "enroute_to_return",
    "arrived_at_return",
    "returned",
    "cancelled",
)
EVENT_FOR_STATE = {
    "created": "DELIVERY_CREATED",
    "confirmed": "DASHER_CONFIRMED",
    "enroute_to_pickup": "DASHER_ENROUTE_TO_PICKUP",
    "arrived_at_pickup": "DASHER_CONFIRMED_PICKUP_ARRIVAL",
    "picked_up": "DASHER_PICKED_UP",
    "enroute_to_dropoff": "DASHER_ENROUTE_TO_DROPOFF",
    "arrived_at_dropoff": "DASHER_CONFIRMED_DROPOFF_ARRIVAL",
    "delivered": "DASHER_DROPPED_OFF",
    "enroute_to_return": "DELIVERY_RETURN_INITIALIZED",
    "arrived_at_return": "DASHER_CONFIRMED_RETURN_ARRIVAL",
    "returned": "DELIVERY_RETURNED",
    "cancelled": "DELIVERY_CANCELLED",
}
TERMINAL = frozenset({"delivered", "returned", "cancelled"})
AFTER_PICKUP = frozenset(
    {"picked_up", "enroute_to_dropoff", "arrived_at_dropoff", "enroute_to_return", "arrived_at_return"}
)
NORMAL_ROUTE = ("confirmed", "enroute_to_pickup", "arrived_at_pickup", "picked_up", "enroute_to_dropoff")
PICKUP_ARRIVAL_STEP = 3  # steps after `created` until arrived_at_pickup
DROPOFF_ARRIVAL_STEP = 6

logger = logging.getLogger("orderstream.simulators.doordash")

MARKER = re.compile(r"\[sim:([a-z0-9_,\s]+)\]")
PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
JWT_MAX_LIFETIME = 1800


@dataclass
class SimulatorConfig:
    """How the simulator behaves; the defaults match DoorDashSettings' sandbox credentials."""

    developer_id: str = SANDBOX_DEVELOPER_ID
    key_id: str = SANDBOX_KEY_ID
    signing_secret: str = SANDBOX_SIGNING_SECRET
    webhook_url: str | None = None
    webhook_authorization: str | None = SANDBOX_WEBHOOK_AUTH
    step_seconds: float = 8.0
    quote_ttl_seconds: float = 300.0
    fee: int = 975
    currency: str = "USD"
    faults: frozenset[str] = frozenset()
    event_key: str = "event_name"  # or "event_type"
    webhook_attempts: int = 5
    webhook_retry_seconds: float = 0.5
    webhook_timeout_seconds: float = 5.0
    slow_seconds: float = 30.0
    retry_after_seconds: int = 2


@dataclass
class SimDelivery:
    """One quote or delivery and its script."""

    record: dict[str, Any]
    modes: set[str]
    quote_expires_at: float | None = None
    booked: bool = False
    paused: bool = False
    task: asyncio.Task[None] | None = None
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    sender: asyncio.Task[None] | None = None
    dasher_number: int = 0


@dataclass
class PendingFault:
    """A one-shot request fault from `POST /_sim/faults`."""

    mode: str
    remaining: int
    retry_after: int | None = None
    seconds: float | None = None
    path: str | None = None


class ApiProblem(Exception):
    """A DoorDash-style error answer: `{code, message, field_errors}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field_errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field_errors = field_errors
        self.headers = headers

    def response(self) -> JSONResponse:
        """The HTTP answer."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field_errors is not None:
            body["field_errors"] = self.field_errors
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _cents_errors(body: dict[str, Any], names: tuple[str, ...]) -> list[dict[str, str]]:
    """Field errors for amounts that must be non-negative 32-bit integers (cents), as DoorDash checks them."""
    errors: list[dict[str, str]] = []
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            errors.append({"field": name, "error": f"{name} must be a non-negative integer (cents)"})
        elif value > 2_147_483_647:
            errors.append({"field": name, "error": f"Numeric value ({value}) out of range of int"})
    return errors


def markers(text: Any) -> set[str]:
    """The fault modes named by `[sim:...]` markers in a text."""
    if not isinstance(text, str):
        return set()
    found: set[str] = set()
    for group in MARKER.findall(text):
        found.update(part.strip() for part in group.split(",") if part.strip() in ALL_MODES)
    return found


class Simulator:
    """The simulator's state and behaviour; `create_app` wraps it in a Starlette app."""

    def __init__(self, config: SimulatorConfig, *, clock: Callable[[], float] = time.time) -> None:
        unknown = set(config.faults) - ALL_MODES
        if unknown:
            raise ValueError(f"unknown fault modes: {sorted(unknown)}")
        self.config = config
        self.clock = clock
        self.deliveries: dict[str, SimDelivery] = {}
        self.requests: list[dict[str, Any]] = []
        self.webhooks: list[dict[str, Any]] = []
        self.pending_faults: list[PendingFault] = []
        self.used_markers: set[tuple[str, str]] = set()
        self.http: httpx.AsyncClient | None = None
        self._dashers = 0

    # -- lifecycle of the app ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the webhook HTTP client."""
        self.http = httpx.AsyncClient(timeout=self.config.webhook_timeout_seconds)

    async def stop(self) -> None:
        """Stop every script and close the client."""
        for delivery in self.deliveries.values():
            for task in (delivery.task, delivery.sender):
                if task is not None:
                    task.cancel()
        if self.http is not None:
            await self.http.aclose()

    # -- auth ----------------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> None:
        """Check `Authorization: Bearer <JWT>` exactly as Drive v2 describes it."""
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise ApiProblem(401, "authentication_error", "The [Authorization] header is missing or not a Bearer JWT")
        token = header[len("Bearer ") :].strip()
        try:
            jwt_header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as err:
            raise ApiProblem(401, "authentication_error", f"The JWT is malformed: {err}") from err
        if jwt_header.get("alg") != "HS256" or jwt_header.get("dd-ver") != "DD-JWT-V1":
            raise ApiProblem(401, "authentication_error", "The JWT header must carry alg HS256 and dd-ver DD-JWT-V1")
        try:
            claims = jwt.decode(
                token,
                decode_signing_secret(self.config.signing_secret),
                algorithms=["HS256"],
                audience="doordash",
                issuer=self.config.developer_id,
                options={"require": ["aud", "iss", "exp", "iat"]},
                leeway=5,
            )
        except jwt.ExpiredSignatureError as err:
            raise ApiProblem(401, "authentication_error", "The JWT has expired") from err
        except jwt.PyJWTError as err:
            raise ApiProblem(401, "authentication_error", f"The JWT is invalid: {err}") from err
        if claims.get("kid") != self.config.key_id:
            raise ApiProblem(401, "authentication_error", "The JWT kid does not match an active access key")
        if int(claims["exp"]) - int(claims["iat"]) > JWT_MAX_LIFETIME:
            raise ApiProblem(401, "authentication_error", "The JWT lifetime exceeds 30 minutes")

    # -- faults --------------------------------------------------------------------------------------

    def _modes_for(self, body: dict[str, Any]) -> set[str]:
        return set(self.config.faults) | markers(body.get("dropoff_instructions"))

    async def apply_request_faults(self, path: str, body: dict[str, Any] | None, external_id: str | None) -> None:
        """Raise (or delay) as a pending fault or a one-shot request marker asks."""
        for fault in self.pending_faults:
            if fault.remaining > 0 and (fault.path is None or fault.path in path):
                fault.remaining -= 1
                await self._fire(fault.mode, retry_after=fault.retry_after, seconds=fault.seconds)
                break
        self.pending_faults = [fault for fault in self.pending_faults if fault.remaining > 0]
        if body is None or external_id is None:
            return
        modes = self._modes_for(body)
        if "unserviceable" in modes:
            raise ApiProblem(
                422,
                "address_not_serviceable",
                "The dropoff address is outside of the DoorDash delivery area",
                [{"field": "dropoff_address", "error": "Address is out of service coverage"}],
            )
        for mode in sorted(modes & (REQUEST_MODES - {"unserviceable"})):
            if (external_id, mode) not in self.used_markers:
                self.used_markers.add((external_id, mode))
                await self._fire(mode)
                return

    async def _fire(self, mode: str, *, retry_after: int | None = None, seconds: float | None = None) -> None:
        wait = str(retry_after if retry_after is not None else self.config.retry_after_seconds)
        if mode == "http_500":
            raise ApiProblem(500, "internal_server_error", "An unexpected error occurred")
        if mode == "http_503":
            raise ApiProblem(
                503, "service_unavailable", "Dashers are busy, try again later", headers={"Retry-After": wait}
            )
        if mode == "http_429":
            raise ApiProblem(429, "request_rate_limited", "Too many requests", headers={"Retry-After": wait})
        if mode == "slow":
            await asyncio.sleep(seconds if seconds is not None else self.config.slow_seconds)

    # -- validation ----------------------------------------------------------------------------------

    def validate_delivery_body(self, body: Any) -> dict[str, Any]:
        """DoorDash-style 400 `validation_error` with `field_errors` for a quote or create body."""
        if not isinstance(body, dict):
            raise ApiProblem(
                400, "validation_error", "Validation Failed", [{"field": "body", "error": "must be a JSON object"}]
            )
        errors: list[dict[str, str]] = []
        for name in ("external_delivery_id", "pickup_address", "dropoff_address"):
            value = body.get(name)
            if not isinstance(value, str) or not value.strip():
                errors.append({"field": name, "error": f"{name} is required"})
        external_id = body.get("external_delivery_id")
        if isinstance(external_id, str) and len(external_id) > 255:
            errors.append({"field": "external_delivery_id", "error": "must be at most 255 characters"})
        for name in ("pickup_phone_number", "dropoff_phone_number"):
            value = body.get(name)
            if not isinstance(value, str) or not PHONE.match(value):
                errors.append({"field": name, "error": "Invalid phone number; use E.164, e.g. +16505555555"})
        errors.extend(_cents_errors(body, ("order_value", "tip", "dropoff_cash_on_delivery")))
        items = body.get("items")
        if items is not None:
            if not isinstance(items, list):
                errors.append({"field": "items", "error": "must be a list"})
            else:
                for index, item in enumerate(items):
                    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                        errors.append({"field": f"items[{index}].name", "error": "name is required"})
                    elif not isinstance(item.get("quantity"), int) or item["quantity"] < 1:
                        errors.append({"field": f"items[{index}].quantity", "error": "must be a positive integer"})
        errors.extend(self._timing_errors(body))
        if errors:
            raise ApiProblem(400, "validation_error", "Validation Failed", errors)
        return body

    def _timing_errors(self, body: dict[str, Any]) -> list[dict[str, str]]:
        errors: list[dict[str, str]] = []
        present = [
            name for name in ("pickup_time", "dropoff_time", "pickup_window", "dropoff_window") if body.get(name)
        ]
        if len(present) > 1:
            errors.append({"field": present[1], "error": f"only one of {', '.join(present)} may be given"})
        now = datetime.fromtimestamp(self.clock(), UTC)
        for name in ("pickup_time", "dropoff_time"):
            if body.get(name) is None:
                continue
            when = _parse_time(body[name])
            if when is None:
                errors.append({"field": name, "error": "must be an ISO-8601 date-time with a time zone"})
            elif when < now - timedelta(seconds=60):
                errors.append({"field": name, "error": "must not be in the past"})
        for name in ("pickup_window", "dropoff_window"):
            window = body.get(name)
            if window is None:
                continue
            start = _parse_time(window.get("start_time")) if isinstance(window, dict) else None
            end = _parse_time(window.get("end_time")) if isinstance(window, dict) else None
            if start is None or end is None:
                errors.append({"field": name, "error": "start_time and end_time must be ISO-8601 date-times"})
            elif end <= start:
                errors.append({"field": name, "error": "end_time must be after start_time"})
            elif end < now:
                errors.append({"field": name, "error": "must not be in the past"})
        return errors

    # -- records -------------------------------------------------------------------------------------

    def _target_pickup(self, record: dict[str, Any]) -> float | None:
        """When the Dasher should reach the store for a scheduled delivery (None for ASAP)."""
        step = self.config.step_seconds
        if record.get("pickup_time"):
            when = _parse_time(record["pickup_time"])
            return when.timestamp() if when else None
        window = record.get("pickup_window")
        if isinstance(window, dict):
            when = _parse_time(window.get("start_time"))
            return when.timestamp() if when else None
        if record.get("dropoff_time"):
            when = _parse_time(record["dropoff_time"])
            return when.timestamp() - (DROPOFF_ARRIVAL_STEP - PICKUP_ARRIVAL_STEP) * step if when else None
        window = record.get("dropoff_window")
        if isinstance(window, dict):
            when = _parse_time(window.get("start_time"))
            return when.timestamp() - (DROPOFF_ARRIVAL_STEP - PICKUP_ARRIVAL_STEP) * step if when else None
        return None

    def _estimates(self, record: dict[str, Any]) -> None:
        now = self.clock()
        step = self.config.step_seconds
        pickup = max(now + PICKUP_ARRIVAL_STEP * step, self._target_pickup(record) or 0.0)
        record["pickup_time_estimated"] = _iso(pickup)
        record["dropoff_time_estimated"] = _iso(pickup + (DROPOFF_ARRIVAL_STEP + 1 - PICKUP_ARRIVAL_STEP) * step)

    def _new_record(self, body: dict[str, Any], status: str) -> dict[str, Any]:
        record = {key: value for key, value in body.items() if value is not None}
        record["delivery_status"] = status
        record["fee"] = self.config.fee
        record["currency"] = self.config.currency
        record.setdefault("tip", 0)
        record.setdefault("order_value", 0)
        record["updated_at"] = _iso(self.clock())
        self._estimates(record)
        return record

    def public(self, delivery: SimDelivery) -> dict[str, Any]:
        """The delivery object as the API shows it."""
        return dict(delivery.record)

    def get(self, external_id: str) -> SimDelivery:
        """A known delivery or quote; 404 otherwise."""
        delivery = self.deliveries.get(external_id)
        if delivery is None:
            raise ApiProblem(404, "not_found", f"Delivery {external_id} was not found")
        return delivery

    # -- API operations ------------------------------------------------------------------------------

    def quote(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /quotes`: a new quote (or a fresh one replacing an unaccepted quote)."""
        external_id = body["external_delivery_id"]
        existing = self.deliveries.get(external_id)
        if existing is not None and existing.booked:
            raise self._duplicate(external_id)
        delivery = SimDelivery(record=self._new_record(body, "quote"), modes=self._modes_for(body))
        delivery.quote_expires_at = self.clock() + self.config.quote_ttl_seconds
        self.deliveries[external_id] = delivery
        return self.public(delivery)

    def accept(self, external_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /quotes/{id}/accept` within the quote's lifetime."""
        delivery = self.deliveries.get(external_id)
        if delivery is None:
            raise ApiProblem(404, "not_found", f"Quote {external_id} was not found")
        if delivery.booked:
            raise ApiProblem(409, "duplicate_delivery_id", f"The quote for {external_id} has already been accepted")
        if delivery.quote_expires_at is not None and self.clock() > delivery.quote_expires_at:
            raise ApiProblem(
                400,
                "validation_error",
                "Quote has expired",
                [{"field": "external_delivery_id", "error": "The quote has expired; request a new quote"}],
            )
        errors = _cents_errors(body, ("tip",))
        phone = body.get("dropoff_phone_number")
        if phone is not None and (not isinstance(phone, str) or not PHONE.match(phone)):
            errors.append({"field": "dropoff_phone_number", "error": "Invalid phone number"})
        if errors:
            raise ApiProblem(400, "validation_error", "Validation Failed", errors)
        if body.get("tip") is not None:
            delivery.record["tip"] = body["tip"]
        if phone is not None:
            delivery.record["dropoff_phone_number"] = phone
        self._book(delivery)
        return self.public(delivery)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """`POST /deliveries`: book without a quote; a reused external id is a 409."""
        external_id = body["external_delivery_id"]
        existing = self.deliveries.get(external_id)
        if existing is not None and existing.booked:
            raise self._duplicate(external_id)
        delivery = SimDelivery(record=self._new_record(body, "created"), modes=self._modes_for(body))
        self.deliveries[external_id] = delivery
        self._book(delivery)
        return self.public(delivery)

    def update(self, external_id: str, body: Any) -> dict[str, Any]:
        """`PATCH /deliveries/{id}`: tip, times, instructions and phone of an active delivery."""
        delivery = self.get(external_id)
        if not delivery.booked:
            raise ApiProblem(404, "not_found", f"Delivery {external_id} was not found")
        if not isinstance(body, dict):
            raise ApiProblem(
                400, "validation_error", "Validation Failed", [{"field": "body", "error": "must be a JSON object"}]
            )
        record = delivery.record
        if record["delivery_status"] in TERMINAL:
            raise ApiProblem(
                400,
                "validation_error",
                "Validation Failed",
                [{"field": "body", "error": "the delivery is no longer active"}],
            )
        errors = _cents_errors(body, ("tip",))
        if record["delivery_status"] in AFTER_PICKUP and (body.get("pickup_time") or body.get("pickup_window")):
            errors.append({"field": "pickup_time", "error": "the order has already been picked up"})
        errors.extend(self._timing_errors({key: body.get(key) for key in ("pickup_time", "dropoff_time")}))
        if errors:
            raise ApiProblem(400, "validation_error", "Validation Failed", errors)
        for key in ("tip", "pickup_time", "dropoff_time", "dropoff_instructions", "dropoff_phone_number"):
            if body.get(key) is not None:
                record[key] = body[key]
        if body.get("pickup_time") or body.get("dropoff_time"):
            self._estimates(record)
        record["updated_at"] = _iso(self.clock())
        return self.public(delivery)

    def cancel(self, external_id: str) -> dict[str, Any]:
        """`PUT /deliveries/{id}/cancel`: refused after pickup; fee after assignment in `cancel_fee` mode."""
        delivery = self.get(external_id)
        if not delivery.booked:
            raise ApiProblem(404, "not_found", f"Delivery {external_id} was not found")
        status = delivery.record["delivery_status"]
        assigned = delivery.record.get("dasher_id") is not None
        if status in TERMINAL:
            raise ApiProblem(409, "delivery_not_active", f"Delivery {external_id} is already {status}")
        if status in AFTER_PICKUP or (assigned and "cancel_refused" in delivery.modes):
            raise ApiProblem(
                409, "cannot_be_cancelled", f"Delivery {external_id} can no longer be cancelled ({status})"
            )
        fee = delivery.record["fee"] if assigned and "cancel_fee" in delivery.modes else 0
        if delivery.task is not None:
            delivery.task.cancel()
        self.transition(delivery, "cancelled", reason="cancelled_by_creator", fee=fee)
        return self.public(delivery)

    def _duplicate(self, external_id: str) -> ApiProblem:
        return ApiProblem(
            409, "duplicate_delivery_id", f"A delivery with external_delivery_id {external_id} already exists"
        )

    # -- script --------------------------------------------------------------------------------------

    def _book(self, delivery: SimDelivery) -> None:
        delivery.booked = True
        delivery.quote_expires_at = None
        record = delivery.record
        external_id = record["external_delivery_id"]
        record["support_reference"] = str(zlib.crc32(external_id.encode()))
        record["tracking_url"] = f"https://track.doordash-sim.invalid/{record['support_reference']}"
        self.transition(delivery, "created")
        if "hold" not in delivery.modes:
            delivery.task = asyncio.get_running_loop().create_task(self._script(delivery))

    def route(self, modes: set[str]) -> list[tuple[str, str | None]]:
        """The states a delivery walks through after `created`, with the cancel reason where one applies."""
        if "no_courier" in modes:
            return [("cancelled", "no_available_dashers")]
        if "courier_cancels" in modes:
            return [("confirmed", None), ("enroute_to_pickup", None), ("cancelled", "dasher_cancelled")]
        route: list[tuple[str, str | None]] = [(state, None) for state in NORMAL_ROUTE]
        route.append(("arrived_at_dropoff", None))
        if "return_to_store" in modes:
            route += [("enroute_to_return", None), ("arrived_at_return", None), ("returned", None)]
        else:
            route.append(("delivered", None))
        return route

    async def _script(self, delivery: SimDelivery) -> None:
        step = self.config.step_seconds
        target = self._target_pickup(delivery.record)
        if target is not None:
            await asyncio.sleep(max(0.0, target - self.clock() - PICKUP_ARRIVAL_STEP * step))
        for state, reason in self.route(delivery.modes):
            await asyncio.sleep(step)
            if delivery.paused or delivery.record["delivery_status"] in TERMINAL:
                return
            self.transition(delivery, state, reason=reason)

    def transition(
        self, delivery: SimDelivery, state: str, *, reason: str | None = None, fee: int | None = None
    ) -> None:
        """Put a delivery in a state, fill the fields that state implies, and queue its webhook."""
        record = delivery.record
        now = self.clock()
        if state not in ("created", "cancelled") or (state == "cancelled" and reason == "dasher_cancelled"):
            self._assign_dasher(delivery)
        index = STATES.index(state)
        if state != "cancelled" and index >= STATES.index("picked_up"):
            record.setdefault("pickup_time_actual", _iso(now))
        if state == "delivered":
            record["dropoff_time_actual"] = _iso(now)
            record["dropoff_verification_image_url"] = f"{record['tracking_url']}/proof.jpg"
        if state == "cancelled":
            record["cancellation_reason"] = reason or "cancelled_by_creator"
            if fee is not None:
                record["fee"] = fee
        if "dasher_id" in record and state != "cancelled":
            record["dasher_location"] = self._dasher_location(index)
        record["delivery_status"] = state
        record["updated_at"] = _iso(now)
        self.emit(delivery, EVENT_FOR_STATE[state])

    def _assign_dasher(self, delivery: SimDelivery) -> None:
        record = delivery.record
        if record.get("dasher_id") is not None:
            return
        self._dashers += 1
        record.update(
            {
                "dasher_id": 100000 + self._dashers,
                "dasher_name": f"Sim Dasher {self._dashers}",
                "dasher_dropoff_phone_number": "+16505550100",
                "dasher_pickup_phone_number": "+16505550101",
                "dasher_vehicle_make": "Toyota",
                "dasher_vehicle_model": "Prius",
                "dasher_vehicle_year": "2019",
            }
        )

    @staticmethod
    def _dasher_location(index: int) -> dict[str, float]:
        return {"lat": round(37.7749 + 0.001 * index, 6), "lng": round(-122.4194 + 0.001 * index, 6)}

    # -- webhooks ------------------------------------------------------------------------------------

    def emit(self, delivery: SimDelivery, event: str) -> None:
        """Queue a webhook: the event name plus the full delivery snapshot."""
        payload = {self.config.event_key: event, "created_at": _iso(self.clock()), **self.public(delivery)}
        delivery.queue.put_nowait(payload)
        if delivery.sender is None or delivery.sender.done():  # it ends after a final event; a push may follow
            delivery.sender = asyncio.get_running_loop().create_task(self._send_loop(delivery))

    async def _send_loop(self, delivery: SimDelivery) -> None:
        """Send a delivery's webhooks one after another; stops once a final event is out and nothing waits."""
        held: dict[str, Any] | None = None
        flush_after = max(1.0, 3 * self.config.step_seconds)
        while True:
            try:
                payload = await asyncio.wait_for(delivery.queue.get(), timeout=flush_after if held else None)
            except TimeoutError:
                if held is not None:
                    await self._deliver(delivery, held)
                    held = None
                continue
            modes = delivery.modes
            final = payload.get("delivery_status") in TERMINAL
            if "out_of_order" in modes and held is None and not final:
                held = payload
                continue
            await self._deliver(delivery, payload)
            if held is not None:
                await self._deliver(delivery, held)
                held = None
            if final and delivery.queue.empty():
                return

    async def _deliver(self, delivery: SimDelivery, payload: dict[str, Any]) -> None:
        copies = 2 if "duplicates" in delivery.modes else 1
        for _ in range(copies):
            await self._post(payload)

    async def _post(self, payload: dict[str, Any]) -> None:
        """POST one webhook, retrying on non-2xx or network failure (at least once, bounded)."""
        url = self.config.webhook_url
        entry = {
            "event": payload.get(self.config.event_key),
            "external_delivery_id": payload.get("external_delivery_id"),
            "delivery_status": payload.get("delivery_status"),
        }
        if not url or self.http is None:
            self.webhooks.append({**entry, "attempt": 0, "status": None, "result": "no_webhook_url"})
            return
        headers = {"Content-Type": "application/json"}
        if self.config.webhook_authorization:
            headers["Authorization"] = self.config.webhook_authorization
        content = json.dumps(payload).encode()
        for attempt in range(1, self.config.webhook_attempts + 1):
            try:
                response = await self.http.post(url, content=content, headers=headers)
                status: int | None = response.status_code
            except httpx.HTTPError as err:
                status = None
                self.webhooks.append({**entry, "attempt": attempt, "status": None, "result": type(err).__name__})
            else:
                ok = status is not None and 200 <= status < 300
                self.webhooks.append({**entry, "attempt": attempt, "status": status, "result": "ok" if ok else "retry"})
                if ok:
                    return
            if attempt < self.config.webhook_attempts:
                await asyncio.sleep(self.config.webhook_retry_seconds * (2 ** (attempt - 1)))
        logger.warning(
            "doordash simulator gave up on webhook %s for %s after %d attempts",
            entry["event"],
            entry["external_delivery_id"],
            self.config.webhook_attempts,
        )

    # -- control -------------------------------------------------------------------------------------

    def push(self, external_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Move a booked delivery to any state (and send its webhook); pauses the script unless resumed."""
        delivery = self.get(external_id)
        state = body.get("state")
        if state not in STATES:
            raise ApiProblem(
                400, "validation_error", "Validation Failed", [{"field": "state", "error": f"one of {STATES}"}]
            )
        if not delivery.booked:
            raise ApiProblem(409, "not_booked", "only a booked delivery can be pushed")
        delivery.paused = not body.get("resume", False)
        if delivery.paused and delivery.task is not None:
            delivery.task.cancel()
        fee = body.get("fee")
        self.transition(
            delivery, state, reason=body.get("cancellation_reason"), fee=fee if isinstance(fee, int) else None
        )
        if not delivery.paused and state not in TERMINAL:
            if delivery.task is not None:
                delivery.task.cancel()
            delivery.task = asyncio.get_running_loop().create_task(self._resume(delivery, state))
        return self.public(delivery)

    async def _resume(self, delivery: SimDelivery, state: str) -> None:
        route = self.route(delivery.modes)
        names = [name for name, _ in route]
        remaining = route[names.index(state) + 1 :] if state in names else route
        for next_state, reason in remaining:
            await asyncio.sleep(self.config.step_seconds)
            if delivery.paused or delivery.record["delivery_status"] in TERMINAL:
                return
            self.transition(delivery, next_state, reason=reason)

    def add_fault(self, body: Any) -> dict[str, Any]:
        """Queue a one-shot request fault for the next `count` API calls."""
        if not isinstance(body, dict) or body.get("mode") not in REQUEST_MODES - {"unserviceable"}:
            raise ApiProblem(400, "validation_error", "mode must be one of http_500, http_503, http_429, slow")
        fault = PendingFault(
            mode=body["mode"],
            remaining=int(body.get("count", 1)),
            retry_after=body.get("retry_after"),
            seconds=body.get("seconds"),
            path=body.get("path"),
        )
        self.pending_faults.append(fault)
        return {"mode": fault.mode, "count": fault.remaining}

    def configure(self, body: Any) -> dict[str, Any]:
        """Change the webhook URL, step duration, quote lifetime or simulator-wide faults at run time."""
        if not isinstance(body, dict):
            raise ApiProblem(400, "validation_error", "body must be a JSON object")
        if "faults" in body:
            faults = frozenset(body["faults"] or ())
            if faults - ALL_MODES:
                raise ApiProblem(400, "validation_error", f"unknown fault modes: {sorted(faults - ALL_MODES)}")
            self.config.faults = faults
        for key in ("webhook_url", "webhook_authorization", "event_key"):
            if key in body:
                setattr(self.config, key, body[key])
        for key in ("step_seconds", "quote_ttl_seconds"):
            if key in body:
                setattr(self.config, key, float(body[key]))
        return {
            "webhook_url": self.config.webhook_url,
            "step_seconds": self.config.step_seconds,
            "quote_ttl_seconds": self.config.quote_ttl_seconds,
            "faults": sorted(self.config.faults),
            "event_key": self.config.event_key,
        }


def create_app(config: SimulatorConfig | None = None, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The simulator as an ASGI app (uvicorn runs it; the sandbox embeds it)."""
    sim = Simulator(config or SimulatorConfig(), clock=clock)

    def api(kind: str, *, has_body: bool) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            external_id = request.path_params.get("external_delivery_id")
            entry: dict[str, Any] = {
                "received_at": sim.clock(),
                "method": request.method,
                "path": request.url.path,
                "kind": kind,
                "external_delivery_id": external_id,
                "booked": False,
            }
            sim.requests.append(entry)
            try:
                sim.authenticate(request)
                body: Any = None
                if has_body:
                    raw = await request.body()
                    try:
                        body = json.loads(raw) if raw else {}
                    except ValueError as err:
                        raise ApiProblem(
                            400, "validation_error", "Validation Failed", [{"field": "body", "error": "invalid JSON"}]
                        ) from err
                if kind in ("quote", "create"):
                    body = sim.validate_delivery_body(body)
                    external_id = body["external_delivery_id"]
                    entry["external_delivery_id"] = external_id
                    await sim.apply_request_faults(request.url.path, body, external_id)
                else:
                    known = sim.deliveries.get(external_id or "")
                    if kind == "accept" and known is not None:
                        await sim.apply_request_faults(request.url.path, known.record, external_id)
                    else:
                        await sim.apply_request_faults(request.url.path, None, None)
                result = _dispatch(sim, kind, external_id or "", body)
            except ApiProblem as problem:
                entry["status"] = problem.status
                return problem.response()
            entry["status"] = 200
            entry["booked"] = kind in ("accept", "create")
            return JSONResponse(result)

        return endpoint

    async def control(request: Request, action: Callable[[Any], Any]) -> Response:
        try:
            raw = await request.body()
            body = json.loads(raw) if raw else {}
            return JSONResponse(action(body))
        except ValueError:
            return ApiProblem(400, "validation_error", "invalid JSON").response()
        except ApiProblem as problem:
            return problem.response()

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "deliveries": len(sim.deliveries)})

    async def list_requests(request: Request) -> Response:
        kind = request.query_params.get("kind")
        external_id = request.query_params.get("external_delivery_id")
        rows = [
            row
            for row in sim.requests
            if (kind is None or row["kind"] == kind)
            and (external_id is None or row["external_delivery_id"] == external_id)
        ]
        return JSONResponse({"requests": rows, "bookings": sum(1 for row in rows if row["booked"])})

    async def list_webhooks(request: Request) -> Response:
        external_id = request.query_params.get("external_delivery_id")
        rows = [row for row in sim.webhooks if external_id is None or row["external_delivery_id"] == external_id]
        return JSONResponse({"webhooks": rows})

    async def show(request: Request) -> Response:
        try:
            delivery = sim.get(request.path_params["external_delivery_id"])
        except ApiProblem as problem:
            return problem.response()
        return JSONResponse(
            {
                "delivery": sim.public(delivery),
                "modes": sorted(delivery.modes),
                "booked": delivery.booked,
                "paused": delivery.paused,
            }
        )

    async def push(request: Request) -> Response:
        external_id = request.path_params["external_delivery_id"]
        return await control(request, lambda body: sim.push(external_id, body if isinstance(body, dict) else {}))

    async def faults(request: Request) -> Response:
        return await control(request, sim.add_fault)

    async def configure(request: Request) -> Response:
        return await control(request, sim.configure)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await sim.start()
        try:
            yield
        finally:
            await sim.stop()

    base = "/drive/v2"
    routes = [
        Route(f"{base}/quotes", api("quote", has_body=True), methods=["POST"]),
        Route(f"{base}/quotes/{{external_delivery_id}}/accept", api("accept", has_body=True), methods=["POST"]),
        Route(f"{base}/deliveries", api("create", has_body=True), methods=["POST"]),
        Route(f"{base}/deliveries/{{external_delivery_id}}", api("get", has_body=False), methods=["GET"]),
        Route(f"{base}/deliveries/{{external_delivery_id}}", api("update", has_body=True), methods=["PATCH"]),
        Route(f"{base}/deliveries/{{external_delivery_id}}/cancel", api("cancel", has_body=False), methods=["PUT"]),
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/requests", list_requests, methods=["GET"]),
        Route("/_sim/webhooks", list_webhooks, methods=["GET"]),
        Route("/_sim/deliveries/{external_delivery_id}", show, methods=["GET"]),
        Route("/_sim/deliveries/{external_delivery_id}/state", push, methods=["POST"]),
        Route("/_sim/faults", faults, methods=["POST"]),
        Route("/_sim/config", configure, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.simulator = sim
    return app


def _dispatch(sim: Simulator, kind: str, external_id: str, body: Any) -> dict[str, Any]:
    if kind == "quote":
        return sim.quote(body)
    if kind == "create":
        return sim.create(body)
    if kind == "accept":
        return sim.accept(external_id, body if isinstance(body, dict) else {})
    if kind == "get":
        delivery = sim.get(external_id)
        return sim.public(delivery)
    if kind == "update":
        return sim.update(external_id, body)
    return sim.cancel(external_id)


def start_in_thread(
    config: SimulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0
) -> RunningSimulator:
    """Serve the simulator on a daemon thread; port 0 picks a free port (see `.base_url`)."""
    return simulators.start_in_thread(
        create_app(config), name="doordash-simulator", host=host, port=port, timeout=timeout
    )


def serve(config: SimulatorConfig, *, host: str = "127.0.0.1", port: int = 8710) -> None:
    """Run the simulator in the foreground (the CLI command)."""
    simulators.serve(create_app(config), host=host, port=port)
