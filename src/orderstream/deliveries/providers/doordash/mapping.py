"""Pure translations between our delivery values and DoorDash Drive v2 JSON (no I/O)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from orderstream.deliveries.protocol import (
    Address,
    Courier,
    DeliveryRequest,
    DeliverySnapshot,
    DeliveryStatus,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    Quote,
    WebhookRejected,
    WebhookUpdate,
)
from orderstream.deliveries.providers.doordash import statuses

PROVIDER = "doordash"


# -- times -------------------------------------------------------------------------------------------


def format_time(value: datetime) -> str:
    """ISO-8601 in UTC with a Z, as DoorDash wants it; naive datetimes are a bug, not an input."""
    if value.tzinfo is None:
        raise ValueError("DoorDash times must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    """A DoorDash timestamp as an aware UTC datetime (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# -- requests ----------------------------------------------------------------------------------------


def format_address(address: Address) -> str:
    """One line, the way DoorDash takes `pickup_address` / `dropoff_address`."""
    parts = [address.street, address.unit, address.city, f"{address.state} {address.postal_code}".strip()]
    parts.append(address.country)
    return ", ".join(part.strip() for part in parts if part and part.strip())


def _split_name(name: str) -> tuple[str, str | None]:
    given, _, family = name.strip().partition(" ")
    return given, (family.strip() or None)


# A requested time this close to now (or past) means "as soon as possible": DoorDash refuses past times,
# and a retried booking must not fail for good because its pickup time went by while it waited.
ASAP_MARGIN = timedelta(seconds=30)


def _window(start: datetime, end: datetime, now: datetime | None) -> dict[str, str] | None:
    if now is not None:
        if end <= now + ASAP_MARGIN:
            return None
        start = max(start, now)
    return {"start_time": format_time(start), "end_time": format_time(end)}


def _single(when: datetime, now: datetime | None) -> str | None:
    if now is not None and when <= now + ASAP_MARGIN:
        return None
    return format_time(when)


def timing_fields(request: DeliveryRequest, *, now: datetime | None = None) -> dict[str, Any]:
    """At most one timing field: a pickup window or time when we know when food is ready, else drop-off.

    With `now`, times already due are dropped (ASAP) and windows that have begun start now.
    """
    if request.pickup_ready_at and request.pickup_deadline:
        window = _window(request.pickup_ready_at, request.pickup_deadline, now)
        return {"pickup_window": window} if window else {}
    if request.pickup_ready_at:
        single = _single(request.pickup_ready_at, now)
        return {"pickup_time": single} if single else {}
    if request.dropoff_ready_at and request.dropoff_deadline:
        window = _window(request.dropoff_ready_at, request.dropoff_deadline, now)
        return {"dropoff_window": window} if window else {}
    if request.dropoff_deadline:
        single = _single(request.dropoff_deadline, now)
        return {"dropoff_time": single} if single else {}
    return {}  # ASAP


def delivery_body(
    request: DeliveryRequest,
    *,
    cash_on_delivery: bool = True,
    send_customer_notifications: bool = False,
    action_if_undeliverable: str | None = "return_to_pickup",
    locale: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The JSON body of `POST /drive/v2/quotes` and `POST /drive/v2/deliveries` for one request."""
    pickup, dropoff = request.pickup_contact, request.dropoff_contact
    given, family = _split_name(dropoff.name)
    body: dict[str, Any] = {"external_delivery_id": request.external_id}
    if locale:
        body["locale"] = locale
    body["pickup_address"] = format_address(request.pickup_address)
    body["pickup_business_name"] = pickup.business_name or pickup.name
    body["pickup_phone_number"] = pickup.phone
    if request.pickup_instructions:
        body["pickup_instructions"] = request.pickup_instructions
    body["pickup_reference_tag"] = request.order_id
    if request.external_store_id:
        body["pickup_external_store_id"] = request.external_store_id
    body["dropoff_address"] = format_address(request.dropoff_address)
    if dropoff.business_name:
        body["dropoff_business_name"] = dropoff.business_name
    if request.dropoff_address.latitude is not None and request.dropoff_address.longitude is not None:
        body["dropoff_location"] = {"lat": request.dropoff_address.latitude, "lng": request.dropoff_address.longitude}
    body["dropoff_phone_number"] = dropoff.phone
    if request.dropoff_instructions:
        body["dropoff_instructions"] = request.dropoff_instructions
    body["dropoff_contact_given_name"] = given
    if family:
        body["dropoff_contact_family_name"] = family
    body["dropoff_contact_send_notifications"] = send_customer_notifications
    body["order_value"] = request.order_value
    if request.items:
        body["items"] = [{"name": item.name, "quantity": item.quantity, "price": item.price} for item in request.items]
    body["tip"] = request.tip
    if request.cash_to_collect is not None:
        if not cash_on_delivery:
            raise ProviderRejected("cash_not_supported", "cash on delivery is not enabled for DoorDash")
        body["dropoff_cash_on_delivery"] = request.cash_to_collect
    if action_if_undeliverable:
        body["action_if_undeliverable"] = action_if_undeliverable
    body.update(timing_fields(request, now=now))
    return body


def accept_body(request: DeliveryRequest) -> dict[str, Any]:
    """The body of `POST /drive/v2/quotes/{id}/accept`: the tip may change between quote and accept."""
    return {"tip": request.tip}


def update_body(
    *, tip: int | None = None, pickup_ready_at: datetime | None = None, dropoff_deadline: datetime | None = None
) -> dict[str, Any]:
    """The body of `PATCH /drive/v2/deliveries/{id}` with only the fields that change."""
    body: dict[str, Any] = {}
    if tip is not None:
        body["tip"] = tip
    if pickup_ready_at is not None:
        body["pickup_time"] = format_time(pickup_ready_at)
    if dropoff_deadline is not None:
        body["dropoff_time"] = format_time(dropoff_deadline)
    return body


# -- responses ---------------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


def courier(payload: Mapping[str, Any]) -> Courier | None:
    """The Dasher, when one is assigned (`dasher_*` fields; location nested or flat)."""
    if payload.get("dasher_id") is None and not payload.get("dasher_name"):
        return None
    location = payload.get("dasher_location")
    lat = lng = None
    if isinstance(location, Mapping):
        lat, lng = _float(location.get("lat")), _float(location.get("lng"))
    if lat is None:
        lat, lng = _float(payload.get("dasher_location_lat")), _float(payload.get("dasher_location_lng"))
    return Courier(
        name=_str(payload.get("dasher_name")),
        phone=_str(payload.get("dasher_dropoff_phone_number") or payload.get("dasher_phone_number")),
        vehicle_make=_str(payload.get("dasher_vehicle_make")),
        vehicle_model=_str(payload.get("dasher_vehicle_model")),
        latitude=lat,
        longitude=lng,
    )


def proof_of_delivery(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """Photo and signature links DoorDash attaches after drop-off."""
    fields = {
        "photo_url": payload.get("dropoff_verification_image_url"),
        "signature_url": payload.get("dropoff_signature_image_url"),
        "pickup_photo_url": payload.get("pickup_verification_image_url"),
    }
    found = {key: value for key, value in fields.items() if value}
    return found or None


def delivery_snapshot(payload: Mapping[str, Any], *, status: DeliveryStatus | None = None) -> DeliverySnapshot:
    """A DoorDash delivery object (response or webhook) as our snapshot; raises ValueError if unusable."""
    external_id = _str(payload.get("external_delivery_id"))
    if external_id is None:
        raise ValueError("external_delivery_id is missing")
    provider_status = str(payload.get("delivery_status") or "")
    status = status or statuses.delivery_status(payload)
    if status is None:
        raise ValueError(f"unknown delivery_status {provider_status!r}")
    currency = _str(payload.get("currency"))
    return DeliverySnapshot(
        provider=PROVIDER,
        external_id=external_id,
        provider_delivery_id=external_id,  # DoorDash addresses every delivery by our external id
        status=status,
        provider_status=provider_status,
        fee=_int(payload.get("fee")),
        currency=currency.lower() if currency else None,
        tip=_int(payload.get("tip")),
        pickup_eta=parse_time(payload.get("pickup_time_estimated")),
        dropoff_eta=parse_time(payload.get("dropoff_time_estimated")),
        courier=courier(payload),
        tracking_url=_str(payload.get("tracking_url")),
        proof_of_delivery=proof_of_delivery(payload),
        cancellation_reason=_str(payload.get("cancellation_reason")),
        updated_at=parse_time(payload.get("updated_at")),
        raw=dict(payload),
    )


def quote(payload: Mapping[str, Any], *, received_at: datetime, validity_seconds: int) -> Quote:
    """A quote response (a delivery object with `delivery_status: "quote"`) as our Quote."""
    external_id = _str(payload.get("external_delivery_id"))
    fee = _int(payload.get("fee"))
    if external_id is None or fee is None:
        raise ValueError("a quote needs external_delivery_id and fee")
    currency = _str(payload.get("currency")) or "usd"
    expires_at = parse_time(payload.get("expires_at")) or received_at + timedelta(seconds=validity_seconds)
    return Quote(
        provider=PROVIDER,
        external_id=external_id,
        quote_id=external_id,
        fee=fee,
        currency=currency.lower(),
        pickup_eta=parse_time(payload.get("pickup_time_estimated")),
        dropoff_eta=parse_time(payload.get("dropoff_time_estimated")),
        expires_at=expires_at,
        raw=dict(payload),
    )


# -- errors ------------------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def error_body(content: bytes) -> dict[str, Any]:
    """The DoorDash error envelope `{code, message, field_errors[]}`, or {} when the body is not one."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(body: Mapping[str, Any], fallback: str) -> str:
    message = str(body.get("message") or fallback)
    field_errors = body.get("field_errors")
    if isinstance(field_errors, list) and field_errors:
        details = "; ".join(
            f"{item.get('field')}: {item.get('error')}" for item in field_errors if isinstance(item, Mapping)
        )
        if details:
            message = f"{message} ({details})"
    return message


def is_expired_quote(body: Mapping[str, Any]) -> bool:
    """DoorDash answers an accept after the 5 minutes with a 400 whose code or text says 'expired'."""
    text = json.dumps(body).lower()
    return "expire" in text


def provider_error(
    status: int, content: bytes, *, retry_after: str | None = None, now: datetime | None = None
) -> ProviderError:
    """A non-2xx DoorDash answer as a typed error: 429 and 5xx retryable, every other 4xx final."""
    body = error_body(content)
    code = str(body.get("code") or f"http_{status}")
    message = _describe(body, f"DoorDash answered HTTP {status}")
    if status == 429:
        wait = retry_after_seconds(retry_after, now=now or datetime.now(UTC))
        # DoorDash documents "retry after at least 1 second" without promising the header.
        return ProviderUnavailable(code, message, retry_after=wait if wait is not None else 1.0, status=status)
    if status >= 500 or status == 408:
        wait = retry_after_seconds(retry_after, now=now or datetime.now(UTC))
        return ProviderUnavailable(code, message, retry_after=wait, status=status)
    if status == 400 and is_expired_quote(body):
        return ProviderRejected("quote_expired", message, status=status)
    if status == 409 and code == f"http_{status}":
        code = "duplicate_delivery_id"
    return ProviderRejected(code, message, status=status)


# -- webhooks ----------------------------------------------------------------------------------------


def event_name(payload: Mapping[str, Any]) -> str | None:
    """The event name: `event_name` in the Drive v2 samples, `event_type` in some reconstructions."""
    value = payload.get("event_name") or payload.get("event_type")
    return str(value) if value else None


def webhook_update(payload: Mapping[str, Any]) -> WebhookUpdate:
    """A verified webhook body as our update; raises WebhookRejected(400) when it cannot be read."""
    name = event_name(payload)
    if not name:
        raise WebhookRejected(400, "missing_event_name", "the webhook has neither event_name nor event_type")
    external_id = _str(payload.get("external_delivery_id"))
    if external_id is None:
        raise WebhookRejected(400, "missing_external_delivery_id", "the webhook has no external_delivery_id")
    status = statuses.event_status(name, payload)
    if status is None:
        raise WebhookRejected(400, "unknown_event", f"cannot map event {name!r} without a known delivery_status")
    # The event says what happened; the payload is the full delivery at sending time.
    snapshot = delivery_snapshot(payload, status=status)
    occurred_at = parse_time(payload.get("created_at")) or parse_time(payload.get("updated_at"))
    stamp = payload.get("created_at") or payload.get("updated_at") or ""
    # DoorDash sends no event id; a retried webhook repeats the same body, so this key dedupes it.
    event_id = f"{PROVIDER}:{external_id}:{name.upper()}:{stamp}"
    return WebhookUpdate(
        provider=PROVIDER,
        event_id=event_id,
        event_name=name.upper(),
        snapshot=snapshot,
        occurred_at=occurred_at,
    )
