"""The one typed interface every delivery provider implements, and the values it speaks in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class DeliveryStatus(StrEnum):
    """Canonical delivery status: Stream's 15 values."""

    PENDING = "pending"  # quoted or created, not confirmed
    PENDING_DRIVER_CONFIRMATION = "pending_driver_confirmation"  # searching for a courier
    ENROUTE_TO_PICKUP = "enroute_to_pickup"
    ARRIVED_AT_PICKUP = "arrived_at_pickup"
    ENROUTE_TO_DROPOFF = "enroute_to_dropoff"  # picked up
    ARRIVED_AT_DROPOFF = "arrived_at_dropoff"
    COMPLETED = "completed"  # delivered
    FAILED_TO_ASSIGN_DRIVER = "failed_to_assign_driver"
    FAILED_TO_DELIVER = "failed_to_deliver"
    FAILED_TO_PICKUP = "failed_to_pickup"
    FAILED = "failed"
    MERCHANT_CANCELED = "merchant_canceled"  # we asked for the cancel
    ENROUTE_TO_RETURN = "enroute_to_return"
    ARRIVED_AT_RETURN = "arrived_at_return"
    RETURNED = "returned"


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do."""

    scheduling: bool
    cash_collection: bool
    tips: bool
    proof_of_delivery: bool


@dataclass(frozen=True)
class Address:
    """A postal address as providers take it."""

    street: str
    city: str
    state: str
    postal_code: str
    country: str
    unit: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True)
class Contact:
    """A person or business at one end of the delivery."""

    name: str
    phone: str  # E.164 where known
    business_name: str | None = None
    email: str | None = None


@dataclass(frozen=True)
class Item:
    """A line of the manifest."""

    name: str
    quantity: int
    price: int  # unit price, minor units


@dataclass(frozen=True)
class DeliveryRequest:
    """Everything a provider needs to quote or book one delivery attempt."""

    external_id: str  # our idempotency key for this attempt, e.g. "os-ord_..-1"
    order_id: str
    pickup_address: Address
    pickup_contact: Contact
    dropoff_address: Address
    dropoff_contact: Contact
    order_value: int  # minor units
    currency: str  # ISO 4217, lowercase
    items: tuple[Item, ...] = ()
    pickup_instructions: str | None = None
    dropoff_instructions: str | None = None
    tip: int = 0
    cash_to_collect: int | None = None  # set for unpaid (cash on delivery) orders
    pickup_ready_at: datetime | None = None  # None = ASAP
    pickup_deadline: datetime | None = None
    dropoff_ready_at: datetime | None = None
    dropoff_deadline: datetime | None = None
    external_store_id: str | None = None


@dataclass(frozen=True)
class Quote:
    """A provider's price and times for a request, valid until expires_at."""

    provider: str
    external_id: str
    quote_id: str  # the provider's quote reference (DoorDash: the external_delivery_id)
    fee: int  # minor units
    currency: str
    pickup_eta: datetime | None
    dropoff_eta: datetime | None
    expires_at: datetime | None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Courier:
    """The courier, as much as the provider tells (phone already masked by the provider)."""

    name: str | None = None
    phone: str | None = None
    vehicle_type: str | None = None
    vehicle_make: str | None = None
    vehicle_model: str | None = None
    vehicle_color: str | None = None
    license_plate: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    picture_url: str | None = None


@dataclass(frozen=True)
class DeliveryRef:
    """How to address one booked delivery at its provider."""

    external_id: str
    provider_delivery_id: str | None = None


@dataclass(frozen=True)
class DeliverySnapshot:
    """The provider's truth about one delivery at one moment."""

    provider: str
    external_id: str
    provider_delivery_id: str
    status: DeliveryStatus
    provider_status: str  # the provider's own code, kept for the record
    fee: int | None = None
    currency: str | None = None
    tip: int | None = None
    pickup_eta: datetime | None = None
    dropoff_eta: datetime | None = None
    courier: Courier | None = None
    tracking_url: str | None = None
    proof_of_delivery: Mapping[str, Any] | None = None
    cancellation_reason: str | None = None
    updated_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class WebhookUpdate:
    """A verified provider webhook, mapped to our vocabulary."""

    provider: str
    event_id: str  # for dedupe
    event_name: str
    snapshot: DeliverySnapshot
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class CancelOutcome:
    """What happened when we asked a provider to cancel."""

    canceled: bool
    fee_charged: int | None = None  # minor units, when the provider charges for the cancel
    reason: str | None = None  # e.g. "noncancelable_delivery" when refused after pickup


class ProviderError(Exception):
    """A provider call that failed; retryable says whether trying again can help."""

    retryable: bool = False

    def __init__(self, code: str, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after
        self.status = status


class ProviderUnavailable(ProviderError):
    """Network error, timeout, 5xx or 429: try again later (after retry_after when given)."""

    retryable = True


class ProviderRejected(ProviderError):
    """A final answer: bad address, expired or used quote, not cancelable, duplicate..."""

    retryable = False


class WebhookRejected(Exception):
    """A provider webhook that failed verification (401) or cannot be read (400)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class DeliveryProvider(Protocol):
    """One delivery provider. Implementations do I/O through httpx only, and map in pure functions."""

    name: str

    def capabilities(self) -> Capabilities:
        """What this provider can do."""
        ...

    def quote(self, request: DeliveryRequest) -> Quote:
        """Ask for a price and times. Raises ProviderError."""
        ...

    def book(self, request: DeliveryRequest, quote: Quote | None = None) -> DeliverySnapshot:
        """Book the delivery, accepting the quote when given; idempotent on request.external_id."""
        ...

    def get(self, ref: DeliveryRef) -> DeliverySnapshot:
        """The latest truth about a delivery."""
        ...

    def cancel(self, ref: DeliveryRef) -> CancelOutcome:
        """Ask for a cancel; a refusal is an outcome, not an error."""
        ...

    def update(
        self,
        ref: DeliveryRef,
        *,
        tip: int | None = None,
        pickup_ready_at: datetime | None = None,
        dropoff_deadline: datetime | None = None,
    ) -> DeliverySnapshot:
        """Change the tip or times of a booked delivery."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookUpdate:
        """Verify a webhook from this provider and map it. Raises WebhookRejected."""
        ...
