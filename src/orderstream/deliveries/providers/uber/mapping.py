"""Pure mapping between our delivery values and Uber Direct's JSON (requests, responses, webhooks, errors)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import phonenumbers

from orderstream.deliveries.protocol import (
    Address,
    Courier,
    DeliveryRequest,
    DeliverySnapshot,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    Quote,
    WebhookRejected,
    WebhookUpdate,
)
from orderstream.deliveries.providers.uber.statuses import canonical_status

PROVIDER = "uber"
NOTES_MAX = 280
WEBHOOK_KINDS = frozenset({"event.delivery_status", "event.courier_update"})

# Uber's six delivery-window rules (delivery-providers.md §2.2), as durations.
MAX_SCHEDULE_AHEAD = timedelta(days=30)
MIN_PICKUP_WINDOW = timedelta(minutes=10)
MIN_PICKUP_DEADLINE_FROM_NOW = timedelta(minutes=20)
MIN_DROPOFF_WINDOW = timedelta(minutes=20)
# Our defaults when the request leaves a bound open.
DEFAULT_DROPOFF_AFTER_PICKUP_DEADLINE = timedelta(minutes=30)
# A pickup ready time this close to now (or past) is sent as "now + lead" so it is not in the past on arrival.
PICKUP_READY_LEAD = timedelta(minutes=1)

# Codes that mean "try again later" even when Uber answers with a 4xx.
RETRYABLE_CODES = frozenset(
    {
        "couriers_busy",
        "robo_couriers_busy",
        "service_unavailable",
        "request_timeout",
        "customer_limited",
        "internal_server_error",
        "unknown_error",
    }
)


class UberRejected(ProviderRejected):
    """A final Uber Direct error, with Uber's `metadata` kept (e.g. the duplicate's delivery_id)."""

    def __init__(
        self, code: str, message: str, *, status: int | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(code, message, status=status)
        self.metadata: Mapping[str, Any] = dict(metadata or {})


class UberUnavailable(ProviderUnavailable):
    """A retryable Uber Direct error (network, timeout, 5xx, 408, 429, couriers busy)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(code, message, status=status, retry_after=retry_after)
        self.metadata: Mapping[str, Any] = dict(metadata or {})


class IgnoredWebhook(WebhookRejected):
    """A correctly signed Uber event we do not act on (refunds, shopping progress): answer 200, do nothing."""

    def __init__(self, kind: str) -> None:
        super().__init__(200, "ignored_event", f"Uber event kind {kind!r} is not used by orderstream")
        self.kind = kind


# --- times ---------------------------------------------------------------------------------


def format_dt(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, as Uber's examples write it."""
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_dt(value: Any) -> datetime | None:
    """An Uber RFC 3339 timestamp as an aware UTC datetime (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def window_fields(request: DeliveryRequest, *, now: datetime) -> dict[str, str]:
    """The four `*_dt` fields for a scheduled request, widened where needed to satisfy Uber's six rules.

    ASAP (no time set at all) sends none of them. Otherwise:
    1. pickup_ready_dt is not in the past (a past or imminent time becomes now + 1 min) and is less
       than 30 days ahead (else a final `pickup_ready_too_late`, raised here without calling Uber);
    2. pickup_deadline_dt >= pickup_ready_dt + 10 min;  3. pickup_deadline_dt >= now + 20 min;
    4. dropoff_ready_dt <= pickup_deadline_dt;  5. dropoff_deadline_dt >= dropoff_ready_dt + 20 min;
    6. dropoff_deadline_dt >= pickup_deadline_dt.
    Windows are only ever widened, never narrowed, so a courier is never asked to come earlier
    than the food is ready.
    """
    times = (request.pickup_ready_at, request.pickup_deadline, request.dropoff_ready_at, request.dropoff_deadline)
    if all(t is None for t in times):
        return {}
    for t in times:
        if t is not None and t.tzinfo is None:
            raise ValueError("delivery times must be timezone-aware")
    earliest = now + PICKUP_READY_LEAD
    pickup_ready = request.pickup_ready_at or request.dropoff_ready_at or earliest
    pickup_ready = max(pickup_ready, earliest)
    if pickup_ready - now >= MAX_SCHEDULE_AHEAD:
        raise UberRejected("pickup_ready_too_late", "The pickup ready time needs to be within the next 30 days.")
    pickup_deadline = max(
        request.pickup_deadline or pickup_ready + MIN_PICKUP_WINDOW,
        pickup_ready + MIN_PICKUP_WINDOW,
        now + MIN_PICKUP_DEADLINE_FROM_NOW,
    )
    dropoff_ready = min(max(request.dropoff_ready_at or pickup_ready, pickup_ready), pickup_deadline)
    dropoff_deadline = max(
        request.dropoff_deadline or pickup_deadline + DEFAULT_DROPOFF_AFTER_PICKUP_DEADLINE,
        dropoff_ready + MIN_DROPOFF_WINDOW,
        pickup_deadline,
    )
    return {
        "pickup_ready_dt": format_dt(pickup_ready),
        "pickup_deadline_dt": format_dt(pickup_deadline),
        "dropoff_ready_dt": format_dt(dropoff_ready),
        "dropoff_deadline_dt": format_dt(dropoff_deadline),
    }


# --- requests ------------------------------------------------------------------------------


def address_json(address: Address) -> str:
    """Uber's structured address: a JSON-encoded string."""
    street = [address.street] + ([address.unit] if address.unit else [])
    structured = {
        "street_address": street,
        "city": address.city,
        "state": address.state,
        "zip_code": address.postal_code,
        "country": address.country.upper(),
    }
    return json.dumps(structured, separators=(",", ":"), ensure_ascii=False)


def phone_e164(phone: str, *, country: str, field: str) -> str:
    """A phone number as Uber wants it (`^\\+[0-9]+$`); a final invalid_params when it cannot be read."""
    try:
        parsed = phonenumbers.parse(phone, None if phone.strip().startswith("+") else country.upper())
    except phonenumbers.NumberParseException as exc:
        raise UberRejected(
            "invalid_params", f"{field} is not a valid phone number", metadata={field: str(exc)}
        ) from exc
    if not phonenumbers.is_possible_number(parsed):
        raise UberRejected("invalid_params", f"{field} is not a valid phone number", metadata={field: "not possible"})
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _coordinates(prefix: str, address: Address) -> dict[str, float]:
    if address.latitude is None or address.longitude is None:
        return {}
    return {f"{prefix}_latitude": address.latitude, f"{prefix}_longitude": address.longitude}


def _notes(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    return text.strip()[:NOTES_MAX]


def _require_no_cash(request: DeliveryRequest) -> None:
    if request.cash_to_collect:
        raise UberRejected("cash_not_supported", "Uber Direct couriers cannot collect cash on delivery")


def manifest_items(request: DeliveryRequest) -> list[dict[str, Any]]:
    """The manifest: one entry per item line (Uber requires at least one)."""
    items = [
        {
            "name": item.name[:255] or "Item",
            "quantity": max(1, item.quantity),
            "size": "small",
            "price": max(0, item.price),
        }
        for item in request.items
    ]
    if not items:
        items = [{"name": f"Order {request.order_id}", "quantity": 1, "size": "small", "price": request.order_value}]
    return items


def quote_body(request: DeliveryRequest, *, now: datetime) -> dict[str, Any]:
    """POST /customers/{customer_id}/delivery_quotes body."""
    _require_no_cash(request)
    body: dict[str, Any] = {
        "pickup_address": address_json(request.pickup_address),
        "dropoff_address": address_json(request.dropoff_address),
        **_coordinates("pickup", request.pickup_address),
        **_coordinates("dropoff", request.dropoff_address),
        **window_fields(request, now=now),
        "pickup_phone_number": phone_e164(
            request.pickup_contact.phone, country=request.pickup_address.country, field="pickup_phone_number"
        ),
        "dropoff_phone_number": phone_e164(
            request.dropoff_contact.phone, country=request.dropoff_address.country, field="dropoff_phone_number"
        ),
        "manifest_total_value": request.order_value,
    }
    if request.external_store_id:
        body["external_store_id"] = request.external_store_id
    return body


def delivery_body(request: DeliveryRequest, *, quote_id: str | None, now: datetime) -> dict[str, Any]:
    """POST /customers/{customer_id}/deliveries body.

    idempotency_key and external_id are both our attempt's external_id, and manifest_reference is
    the order id: Uber answers a repeat within 60 minutes with the same delivery, and refuses a
    second delivery with the same manifest_reference + external_id (409 duplicate_delivery).
    """
    _require_no_cash(request)
    pickup, dropoff = request.pickup_contact, request.dropoff_contact
    body: dict[str, Any] = {
        "pickup_name": pickup.business_name or pickup.name,
        "pickup_address": address_json(request.pickup_address),
        "pickup_phone_number": phone_e164(
            pickup.phone, country=request.pickup_address.country, field="pickup_phone_number"
        ),
        "dropoff_name": dropoff.name,
        "dropoff_address": address_json(request.dropoff_address),
        "dropoff_phone_number": phone_e164(
            dropoff.phone, country=request.dropoff_address.country, field="dropoff_phone_number"
        ),
        "manifest_items": manifest_items(request),
        **_coordinates("pickup", request.pickup_address),
        **_coordinates("dropoff", request.dropoff_address),
        "manifest_reference": request.order_id,
        "manifest_total_value": request.order_value,
        **window_fields(request, now=now),
        "idempotency_key": request.external_id,
        "external_id": request.external_id,
    }
    if pickup.business_name:
        body["pickup_business_name"] = pickup.business_name
    if dropoff.business_name:
        body["dropoff_business_name"] = dropoff.business_name
    if notes := _notes(request.pickup_instructions):
        body["pickup_notes"] = notes
    if notes := _notes(request.dropoff_instructions):
        body["dropoff_notes"] = notes
    if request.tip > 0:
        body["tip"] = request.tip
    if quote_id:
        body["quote_id"] = quote_id
    if request.external_store_id:
        body["external_store_id"] = request.external_store_id
    return body


def update_body(*, tip: int | None) -> dict[str, Any]:
    """POST /customers/{customer_id}/deliveries/{delivery_id} body (Uber can change the tip, not the times)."""
    body: dict[str, Any] = {}
    if tip is not None:
        if tip < 0:
            raise UberRejected("invalid_params", "tip cannot be negative")
        body["tip_by_customer"] = tip
    return body


def token_form(*, client_id: str, client_secret: str, scope: str) -> dict[str, str]:
    """The form-encoded body of POST /oauth/v2/token (client credentials)."""
    return {
        "client_id": client_id,
        "client_secret": client_secret,
        "grant_type": "client_credentials",
        "scope": scope,
    }


# --- responses -----------------------------------------------------------------------------


def parse_quote(body: Mapping[str, Any], request: DeliveryRequest) -> Quote:
    """A DeliveryQuoteResp as our Quote."""
    quote_id = body.get("id")
    fee = body.get("fee")
    if not isinstance(quote_id, str) or not isinstance(fee, int):
        raise UberUnavailable("bad_response", "Uber quote response without id or fee")
    created = parse_dt(body.get("created"))
    pickup_eta = None
    if created is not None and isinstance(body.get("pickup_duration"), int):
        pickup_eta = created + timedelta(minutes=body["pickup_duration"])
    currency = body.get("currency_type") or body.get("currency") or request.currency
    return Quote(
        provider=PROVIDER,
        external_id=request.external_id,
        quote_id=quote_id,
        fee=fee,
        currency=str(currency).lower(),
        pickup_eta=pickup_eta,
        dropoff_eta=parse_dt(body.get("dropoff_eta")),
        expires_at=parse_dt(body.get("expires")),
        raw=dict(body),
    )


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def parse_courier(value: Any) -> Courier | None:
    """Uber's CourierInfo (plus the vehicle fields its webhooks carry) as our Courier."""
    if not isinstance(value, Mapping) or not value:
        return None
    raw_location = value.get("location")
    location: Mapping[str, Any] = raw_location if isinstance(raw_location, Mapping) else {}
    return Courier(
        name=value.get("name") or None,
        phone=value.get("phone_number") or None,
        vehicle_type=value.get("vehicle_type") or None,
        vehicle_make=value.get("vehicle_make") or None,
        vehicle_model=value.get("vehicle_model") or None,
        vehicle_color=value.get("vehicle_color") or None,
        license_plate=value.get("vehicle_license_plate") or None,
        latitude=_float(location.get("lat")),
        longitude=_float(location.get("lng")),
        picture_url=value.get("img_href") or None,
    )


def _proof(delivery: Mapping[str, Any]) -> Mapping[str, Any] | None:
    dropoff = delivery.get("dropoff")
    if isinstance(dropoff, Mapping) and isinstance(dropoff.get("verification"), Mapping) and dropoff["verification"]:
        return dict(dropoff["verification"])
    return None


def parse_delivery(
    body: Mapping[str, Any], *, external_id: str | None = None, canceled_by_us: bool = False
) -> DeliverySnapshot:
    """A delivery object (create / get / update / cancel response, webhook data) as a DeliverySnapshot."""
    delivery_id = body.get("id")
    status = body.get("status")
    if not isinstance(delivery_id, str) or not isinstance(status, str):
        raise UberUnavailable("bad_response", "Uber delivery object without id or status")
    try:
        canonical = canonical_status(body, canceled_by_us=canceled_by_us)
    except ValueError as exc:
        raise UberUnavailable("bad_response", str(exc)) from exc
    fee = body.get("fee")
    tip = body.get("tip")
    reason = body.get("undeliverable_reason") or None
    return DeliverySnapshot(
        provider=PROVIDER,
        external_id=str(body.get("external_id") or external_id or ""),
        provider_delivery_id=delivery_id,
        status=canonical,
        provider_status=status + (" (imminent)" if body.get("courier_imminent") else ""),
        fee=fee if isinstance(fee, int) else None,
        currency=str(body["currency"]).lower() if body.get("currency") else None,
        tip=tip if isinstance(tip, int) else None,
        pickup_eta=parse_dt(body.get("pickup_eta")),
        dropoff_eta=parse_dt(body.get("dropoff_eta")),
        courier=parse_courier(body.get("courier")),
        tracking_url=body.get("tracking_url") or None,
        proof_of_delivery=_proof(body),
        cancellation_reason=str(reason) if reason else None,
        updated_at=parse_dt(body.get("updated")),
        raw=dict(body),
    )


def parse_webhook_event(payload: Any) -> WebhookUpdate:
    """A verified webhook body (already JSON-decoded) as a WebhookUpdate; IgnoredWebhook for other kinds."""
    if not isinstance(payload, Mapping):
        raise WebhookRejected(400, "invalid_payload", "Uber webhook body is not a JSON object")
    kind = payload.get("kind")
    if not isinstance(kind, str):
        raise WebhookRejected(400, "invalid_payload", "Uber webhook without kind")
    if kind not in WEBHOOK_KINDS:
        raise IgnoredWebhook(kind)
    data = payload.get("data")
    event_id = payload.get("id")
    if not isinstance(data, Mapping) or not isinstance(event_id, str) or not event_id:
        raise WebhookRejected(400, "invalid_payload", "Uber webhook without id or data")
    if not data.get("status") and isinstance(payload.get("status"), str):
        data = {**data, "status": payload["status"]}
    if not data.get("id") and isinstance(payload.get("delivery_id"), str):
        data = {**data, "id": payload["delivery_id"]}
    try:
        snapshot = parse_delivery(data)
    except ProviderError as exc:
        raise WebhookRejected(400, "invalid_payload", exc.message) from exc
    return WebhookUpdate(
        provider=PROVIDER,
        event_id=event_id,
        event_name=kind,
        snapshot=snapshot,
        occurred_at=parse_dt(payload.get("created")),
    )


# --- errors --------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], *, now: datetime
) -> UberRejected | UberUnavailable:
    """An Uber error answer (`{code, message, metadata}`) as a typed retryable or final error."""
    payload: Any = None
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if not isinstance(payload, Mapping):
        payload = {}
    # the API answers {code, message}; the OAuth token endpoint answers {error, error_description}
    code = str(payload.get("code") or payload.get("error") or f"http_{status}")
    message = str(payload.get("message") or payload.get("error_description") or f"Uber Direct answered HTTP {status}")
    metadata = payload.get("metadata") if isinstance(payload.get("metadata"), Mapping) else {}
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = retry_after_seconds(lowered.get("retry-after"), now=now)
    if status >= 500 or status in (408, 429) or code in RETRYABLE_CODES:
        return UberUnavailable(code, message, status=status, retry_after=retry_after, metadata=metadata)
    return UberRejected(code, message, status=status, metadata=metadata)
