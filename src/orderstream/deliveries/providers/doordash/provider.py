"""DoorDash Drive v2 behind the DeliveryProvider interface: idempotent booking, cancel outcomes, webhooks."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from orderstream.deliveries.protocol import (
    CancelOutcome,
    Capabilities,
    DeliveryProvider,
    DeliveryRef,
    DeliveryRequest,
    DeliverySnapshot,
    DeliveryStatus,
    ProviderRejected,
    ProviderUnavailable,
    Quote,
    WebhookRejected,
    WebhookUpdate,
)
from orderstream.deliveries.providers.doordash import mapping
from orderstream.deliveries.providers.doordash.client import DoorDashClient, DoorDashError
from orderstream.deliveries.providers.doordash.settings import DoorDashSettings

T = TypeVar("T")

NONCANCELABLE = "noncancelable_delivery"


class DoorDashProvider:
    """DoorDash Drive v2. `external_delivery_id` is our DeliveryRequest.external_id, and the idempotency key."""

    name = "doordash"

    def __init__(
        self,
        settings: DoorDashSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        client: DoorDashClient | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or DoorDashClient(settings, transport=transport, clock=clock)

    def close(self) -> None:
        """Release the HTTP connections."""
        self.client.close()

    def capabilities(self) -> Capabilities:
        """Scheduling by time or window, cash on delivery (when enabled), tips, photo/signature proof."""
        return Capabilities(
            scheduling=True,
            cash_collection=self.settings.cash_on_delivery,
            tips=True,
            proof_of_delivery=True,
        )

    # -- quote and book ------------------------------------------------------------------------------

    def quote(self, request: DeliveryRequest) -> Quote:
        """`POST /quotes`: fee, ETAs and serviceability; valid about 5 minutes."""
        body = self._delivery_body(request)
        try:
            response = self.client.create_quote(body)
        except DoorDashError as err:
            raise err.typed() from None
        validity = self.settings.quote_validity_seconds
        return _read(lambda: mapping.quote(response.data, received_at=self.client.now(), validity_seconds=validity))

    def book(self, request: DeliveryRequest, quote: Quote | None = None) -> DeliverySnapshot:
        """Accept the quote (or create without one); never books twice for one external_id.

        A retry after a crash or timeout repeats the same external_delivery_id. DoorDash answers a
        reused id with 409 (or refuses the already accepted quote), so every final refusal is checked
        against `GET /deliveries/{id}`: when a delivery exists it is returned as the booking. A
        ProviderRejected from here therefore means no DoorDash delivery exists for this id.
        An expired quote is not silently replaced by a create at an unknown price: it raises
        ProviderRejected("quote_expired") and the dispatcher re-quotes (same external_id is fine).
        """
        if quote is not None:
            if quote.provider != self.name or quote.quote_id != request.external_id:
                raise ProviderRejected("mismatched_quote", "the quote belongs to another provider or delivery")
            margin = timedelta(seconds=self.settings.quote_safety_margin_seconds)
            if quote.expires_at is not None and self.client.now() >= quote.expires_at - margin:
                existing = self._existing_booking(request.external_id)
                if existing is not None:
                    return existing
                raise ProviderRejected("quote_expired", f"the DoorDash quote expired at {quote.expires_at.isoformat()}")
        try:
            if quote is not None:
                response = self.client.accept_quote(request.external_id, mapping.accept_body(request))
            else:
                response = self.client.create_delivery(self._delivery_body(request))
        except DoorDashError as err:
            error = err.typed()
            if error.retryable:
                raise error from None
            existing = self._existing_booking(request.external_id)
            if existing is not None:
                return existing
            raise error from None
        return _read(lambda: mapping.delivery_snapshot(response.data))

    def _existing_booking(self, external_id: str) -> DeliverySnapshot | None:
        """The delivery already booked under this id, or None (absent, or only a quote)."""
        try:
            response = self.client.get_delivery(external_id)
        except DoorDashError as err:
            if err.status == 404:
                return None
            raise err.typed() from None
        snapshot = _read(lambda: mapping.delivery_snapshot(response.data))
        if snapshot.status == DeliveryStatus.PENDING:  # still `quote`: nothing was booked
            return None
        return snapshot

    # -- after booking -------------------------------------------------------------------------------

    def get(self, ref: DeliveryRef) -> DeliverySnapshot:
        """`GET /deliveries/{id}`: the latest truth."""
        try:
            response = self.client.get_delivery(ref.external_id)
        except DoorDashError as err:
            raise err.typed() from None
        return _read(lambda: mapping.delivery_snapshot(response.data))

    def cancel(self, ref: DeliveryRef) -> CancelOutcome:
        """`PUT /deliveries/{id}/cancel`; a refusal (after pickup, or already finished) is an outcome.

        `fee_charged` is the `fee` DoorDash reports on the cancelled delivery (0 when nothing is billed).
        Cancelling an already cancelled delivery reports it as canceled, so a retried cancel is safe.
        """
        try:
            response = self.client.cancel_delivery(ref.external_id)
        except DoorDashError as err:
            error = err.typed()
            if error.retryable or err.status == 404:
                raise error from None
            current = self.get(ref)
            if current.provider_status == "cancelled":
                return CancelOutcome(canceled=True, fee_charged=current.fee, reason=current.cancellation_reason)
            return CancelOutcome(canceled=False, reason=NONCANCELABLE)
        snapshot = _read(lambda: mapping.delivery_snapshot(response.data))
        return CancelOutcome(canceled=True, fee_charged=snapshot.fee, reason=snapshot.cancellation_reason)

    def update(
        self,
        ref: DeliveryRef,
        *,
        tip: int | None = None,
        pickup_ready_at: datetime | None = None,
        dropoff_deadline: datetime | None = None,
    ) -> DeliverySnapshot:
        """`PATCH /deliveries/{id}` with the tip and/or times that change."""
        body = mapping.update_body(tip=tip, pickup_ready_at=pickup_ready_at, dropoff_deadline=dropoff_deadline)
        if not body:
            return self.get(ref)
        try:
            response = self.client.update_delivery(ref.external_id, body)
        except DoorDashError as err:
            raise err.typed() from None
        return _read(lambda: mapping.delivery_snapshot(response.data))

    # -- webhooks ------------------------------------------------------------------------------------

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookUpdate:
        """Check the portal-configured Authorization value (constant time), then map the event."""
        expected = self.settings.webhook_authorization
        if expected is None:
            raise WebhookRejected(401, "webhook_auth_not_configured", "no DoorDash webhook authorization configured")
        received = _header(headers, "authorization")
        if received is None or not hmac.compare_digest(
            received.encode("utf-8"), expected.get_secret_value().encode("utf-8")
        ):
            raise WebhookRejected(401, "invalid_authorization", "the Authorization header does not match")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as err:
            raise WebhookRejected(400, "invalid_json", "the webhook body is not JSON") from err
        if not isinstance(payload, dict):
            raise WebhookRejected(400, "invalid_json", "the webhook body is not a JSON object")
        try:
            return mapping.webhook_update(payload)
        except ValueError as err:
            raise WebhookRejected(400, "invalid_payload", str(err)) from err

    def _delivery_body(self, request: DeliveryRequest) -> dict[str, Any]:
        return mapping.delivery_body(
            request,
            cash_on_delivery=self.settings.cash_on_delivery,
            send_customer_notifications=self.settings.send_customer_notifications,
            action_if_undeliverable=self.settings.action_if_undeliverable,
            locale=self.settings.locale,
            now=self.client.now(),
        )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return None


def _read(parse: Callable[[], T]) -> T:
    """Run a response parser; a 2xx body we cannot read is a provider fault worth retrying."""
    try:
        return parse()
    except (ValueError, KeyError, TypeError) as err:
        raise ProviderUnavailable("bad_response", f"unreadable DoorDash response: {err}") from err


if TYPE_CHECKING:  # mypy proves the class satisfies the shared interface
    _conforms: DeliveryProvider = DoorDashProvider(DoorDashSettings())
