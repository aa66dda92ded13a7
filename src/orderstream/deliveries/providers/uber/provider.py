"""Uber Direct behind the DeliveryProvider interface: quotes, idempotent booking, cancel, update, webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx

from orderstream.deliveries.protocol import (
    CancelOutcome,
    Capabilities,
    DeliveryProvider,
    DeliveryRef,
    DeliveryRequest,
    DeliverySnapshot,
    Quote,
    WebhookRejected,
    WebhookUpdate,
)
from orderstream.deliveries.providers.uber import mapping
from orderstream.deliveries.providers.uber.client import UberClient
from orderstream.deliveries.providers.uber.settings import UberSettings

SIGNATURE_HEADERS = ("x-uber-signature", "x-postmates-signature")
LIST_PAGE_SIZE = 50


def _utcnow() -> datetime:
    return datetime.now(UTC)


def sign_webhook(body: bytes, signing_key: str) -> str:
    """Uber's webhook signature: hex HMAC-SHA256 of the raw body with the webhook signing key."""
    return hmac.new(signing_key.encode("utf-8"), body, hashlib.sha256).hexdigest()


class UberDirectProvider:
    """Uber Direct (delivery as a service).

    Booking is idempotent on `request.external_id` (one delivery attempt):
    - it is sent as `idempotency_key` (Uber answers a repeat within 60 minutes with the same
      delivery) and as `external_id`, with the order id as `manifest_reference`; Uber refuses a
      second delivery for the same manifest_reference + external_id with 409 `duplicate_delivery`
      whose `metadata.delivery_id` names the existing one, which book() then returns;
    - a retry that reuses a quote after its first use gets `used_quote`: book() then looks up the
      delivery carrying our external_id and returns it; only when there is none is the error final.
    So a book retried after a crash, a timeout or a lost answer never creates a second delivery.
    """

    name = "uber"

    def __init__(
        self,
        settings: UberSettings,
        *,
        http: httpx.Client | None = None,
        now: Callable[[], datetime] = _utcnow,
        client: UberClient | None = None,
    ) -> None:
        self.settings = settings
        self._now = now
        self.client = client or UberClient(settings, http=http, now=now)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self.client.close()

    def capabilities(self) -> Capabilities:
        """Scheduling (delivery windows), tips and proof of delivery; no cash collection."""
        return Capabilities(scheduling=True, cash_collection=False, tips=True, proof_of_delivery=True)

    def quote(self, request: DeliveryRequest) -> Quote:
        """POST delivery_quotes; the quote (`dqt_...`) is valid about 15 minutes."""
        body = mapping.quote_body(request, now=self._now())
        return mapping.parse_quote(self.client.create_quote(body), request)

    def book(self, request: DeliveryRequest, quote: Quote | None = None) -> DeliverySnapshot:
        """Create the delivery (with the quote when given); never creates a second one for the same external_id."""
        quote_id = quote.quote_id if quote is not None and quote.provider == self.name else None
        body = mapping.delivery_body(request, quote_id=quote_id, now=self._now())
        try:
            created = self.client.create_delivery(body)
        except mapping.UberRejected as exc:
            existing = self._recover_existing(exc, request.external_id)
            if existing is None:
                raise
            return existing
        return mapping.parse_delivery(created, external_id=request.external_id)

    def _recover_existing(self, exc: mapping.UberRejected, external_id: str) -> DeliverySnapshot | None:
        if exc.code == "duplicate_delivery":
            delivery_id = exc.metadata.get("delivery_id")
            if isinstance(delivery_id, str) and delivery_id:
                snapshot = mapping.parse_delivery(self.client.get_delivery(delivery_id), external_id=external_id)
                # a duplicate of someone else's delivery is not ours to adopt
                if snapshot.external_id in ("", external_id):
                    return snapshot
                return None
            return self._find_by_external_id(external_id)
        if exc.code == "used_quote":
            return self._find_by_external_id(external_id)
        return None

    def _find_by_external_id(self, external_id: str) -> DeliverySnapshot | None:
        """Scan the newest deliveries for our external_id (Uber has no lookup by it)."""
        for page in range(max(1, self.settings.recovery_pages)):
            listing = self.client.list_deliveries(limit=LIST_PAGE_SIZE, offset=page * LIST_PAGE_SIZE)
            rows = listing.get("data") or []
            for row in rows:
                if isinstance(row, Mapping) and row.get("external_id") == external_id:
                    return mapping.parse_delivery(row, external_id=external_id)
            if len(rows) < LIST_PAGE_SIZE or not listing.get("next_href"):
                break
        return None

    def _delivery_id(self, ref: DeliveryRef) -> str:
        if ref.provider_delivery_id:
            return ref.provider_delivery_id
        found = self._find_by_external_id(ref.external_id)
        if found is None:
            raise mapping.UberRejected("delivery_not_found", f"no Uber delivery with external_id {ref.external_id}")
        return found.provider_delivery_id

    def get(self, ref: DeliveryRef) -> DeliverySnapshot:
        """GET the delivery: the latest truth."""
        return mapping.parse_delivery(self.client.get_delivery(self._delivery_id(ref)), external_id=ref.external_id)

    def cancel(self, ref: DeliveryRef) -> CancelOutcome:
        """POST .../cancel. Refused after pickup (`noncancelable_delivery`) is an outcome, not an error.

        fee_charged is the `fee` Uber reports on the canceled delivery when it is not zero.
        """
        try:
            body = self.client.cancel_delivery(self._delivery_id(ref))
        except mapping.UberRejected as exc:
            if exc.code == "noncancelable_delivery":
                return CancelOutcome(canceled=False, reason=exc.code)
            raise
        fee = body.get("fee")
        charged = fee if isinstance(fee, int) and fee > 0 else None
        return CancelOutcome(canceled=body.get("status") == "canceled", fee_charged=charged, reason=None)

    def update(
        self,
        ref: DeliveryRef,
        *,
        tip: int | None = None,
        pickup_ready_at: datetime | None = None,
        dropoff_deadline: datetime | None = None,
    ) -> DeliverySnapshot:
        """Change the tip (`tip_by_customer`). Uber Direct cannot move times after booking: that is a final error."""
        if pickup_ready_at is not None or dropoff_deadline is not None:
            raise mapping.UberRejected(
                "not_supported", "Uber Direct cannot change pickup or drop-off times of a booked delivery"
            )
        body = mapping.update_body(tip=tip)
        delivery_id = self._delivery_id(ref)
        if not body:
            return self.get(DeliveryRef(ref.external_id, delivery_id))
        return mapping.parse_delivery(self.client.update_delivery(delivery_id, body), external_id=ref.external_id)

    def proof_of_delivery(self, ref: DeliveryRef, *, waypoint: str = "dropoff", kind: str = "picture") -> str:
        """The proof-of-delivery image as a base64 string (POST .../proof-of-delivery)."""
        body = self.client.proof_of_delivery(self._delivery_id(ref), waypoint=waypoint, kind=kind)
        document = body.get("document")
        if not isinstance(document, str):
            raise mapping.UberUnavailable("bad_response", "proof-of-delivery answer without document")
        return document

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookUpdate:
        """Verify `x-uber-signature` (or the older `X-Postmates-Signature`) in constant time, then map the event.

        Raises WebhookRejected: 401 for a missing or wrong signature, 400 for an unreadable body,
        and IgnoredWebhook (status 200) for signed event kinds orderstream does not use.
        """
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = next((lowered[h] for h in SIGNATURE_HEADERS if lowered.get(h)), None)
        if signature is None:
            raise WebhookRejected(401, "missing_signature", "x-uber-signature header is missing")
        expected = sign_webhook(body, self.settings.webhook_signing_key.get_secret_value())
        if not hmac.compare_digest(expected.encode("ascii"), signature.strip().lower().encode("ascii", "replace")):
            raise WebhookRejected(401, "invalid_signature", "x-uber-signature does not match the body")
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise WebhookRejected(400, "invalid_payload", "Uber webhook body is not JSON") from exc
        return mapping.parse_webhook_event(payload)


if TYPE_CHECKING:  # mypy proves the class satisfies the shared interface
    _conforms: DeliveryProvider = UberDirectProvider(UberSettings())
