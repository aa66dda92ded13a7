"""What a POS may send: both envelopes and every event body, validated field by field with JSON paths."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from orderstream.errors import _loc_to_path as loc_to_path
from orderstream.orders.domain import FulfillmentType
from orderstream.pos.currencies import is_currency

MAX_AMOUNT = 10**11  # minor units; far above any real order, far below BIGINT
MAX_QUANTITY = 10_000
MAX_TEXT = 5_000


class EventType(StrEnum):
    """The events the webhook understands."""

    ORDER_CREATED = "order.created"
    ORDER_STATUS_UPDATED = "order.status.updated"
    ORDER_CANCELED = "order.canceled"
    LOCATION_STATUS_UPDATED = "location.status.updated"


# `order.updated` is Stream's own name for a status update in the current envelope
EVENT_ALIASES: dict[str, EventType] = {e.value: e for e in EventType}
EVENT_ALIASES["order.updated"] = EventType.ORDER_STATUS_UPDATED


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request: where (JSON path), a stable code and a message."""

    path: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The problem as it appears in an error's details."""
        return {"path": self.path, "code": self.code, "message": self.message}


class InvalidEvent(Exception):
    """The event is not acceptable; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


def join_path(prefix: str, loc: tuple[Any, ...] | list[Any]) -> str:
    """A JSON path such as `data.order.line_items[0].quantity` from a prefix and a location."""
    return loc_to_path([prefix, *loc] if prefix else loc)


# --- field types ---------------------------------------------------------------------------------


Id = Annotated[StrictStr, StringConstraints(min_length=1, max_length=128)]
Name = Annotated[StrictStr, StringConstraints(min_length=1, max_length=300)]
Text = Annotated[StrictStr, StringConstraints(max_length=MAX_TEXT)]
Str2 = Annotated[StrictStr, StringConstraints(min_length=2, max_length=2)]
Str20 = Annotated[StrictStr, StringConstraints(max_length=20)]
Str64 = Annotated[StrictStr, StringConstraints(max_length=64)]
Str100 = Annotated[StrictStr, StringConstraints(max_length=100)]
Str200 = Annotated[StrictStr, StringConstraints(max_length=200)]
Str255 = Annotated[StrictStr, StringConstraints(max_length=255)]
Str300 = Annotated[StrictStr, StringConstraints(max_length=300)]
Str320 = Annotated[StrictStr, StringConstraints(max_length=320)]
Street = Annotated[StrictStr, StringConstraints(min_length=1, max_length=200)]
City = Annotated[StrictStr, StringConstraints(min_length=1, max_length=100)]
Amount = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)]
Quantity = Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)]


def _currency(value: Any) -> Any:
    if isinstance(value, str) and not is_currency(value):
        raise PydanticCustomError("unknown_currency", "not an ISO 4217 currency code: {value}", {"value": value})
    return value


Currency = Annotated[StrictStr, BeforeValidator(_currency)]

# epoch milliseconds below this are surely seconds or garbage: 2001-09-09
_MIN_EPOCH_MS = 1_000_000_000_000
_MAX_EPOCH_MS = 4_102_444_800_000  # 2100-01-01


def parse_timestamp(value: Any) -> Any:
    """Epoch milliseconds (an integer) or ISO 8601 with an offset, as an aware UTC datetime."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not _MIN_EPOCH_MS <= value <= _MAX_EPOCH_MS:
            raise PydanticCustomError("invalid_timestamp", "epoch milliseconds out of range (2001-09-09 to 2100-01-01)")
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is None or not 1 <= parsed.year <= 9998:
            raise PydanticCustomError("invalid_timestamp", "not an ISO 8601 timestamp or epoch milliseconds")
        if parsed.tzinfo is None:
            raise PydanticCustomError("timestamp_without_offset", "an ISO 8601 timestamp needs an offset (or Z)")
        return parsed.astimezone(UTC)
    raise PydanticCustomError("invalid_timestamp", "expected epoch milliseconds (integer) or an ISO 8601 string")


Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]


def _id_text(value: Any) -> Any:
    # customer ids are strings in the docs, but an integer id is unambiguous
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


RefId = Annotated[Id, BeforeValidator(_id_text)]


class _In(BaseModel):
    # unknown fields are ignored here (the raw event keeps them); nothing is copied onto our rows wholesale
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


# --- order.created -------------------------------------------------------------------------------


class CustomerIn(_In):
    """A customer: `customer` (legacy) or an entry of `customers[]` (current)."""

    id: RefId | None = None
    name: Str200 | None = None
    phone: Str64 | None = None
    email: Str320 | None = None


class AddressIn(_In):
    """A delivery address; `zip`/`postal_code` and `street`/`address_line_1` are both accepted."""

    street: Street = Field(validation_alias=AliasChoices("street", "address_line_1"))
    address_line_2: Str200 | None = None
    city: City
    state: Str100 | None = None
    postal_code: Str20 | None = Field(None, validation_alias=AliasChoices("postal_code", "zip"))
    country: Str2 | None = None


class ModifierIn(_In):
    """A modifier; priced per unit of its parent, and modifiers nest."""

    provider_id: RefId | None = None
    name: Name
    quantity: Quantity = 1
    price_amount: Amount = Field(0, validation_alias=AliasChoices("price_amount", "price"))
    price_currency: Currency | None = None
    modifiers: list[ModifierIn] = Field(default_factory=list, max_length=100)


class LineItemIn(_In):
    """A line of the order: a unit price in minor units times a quantity."""

    provider_id: RefId | None = None
    name: Name
    quantity: Quantity
    price_amount: Amount = Field(validation_alias=AliasChoices("price_amount", "price"))
    price_currency: Currency | None = None
    customer_id: RefId | None = None
    special_instructions: Text | None = None
    modifiers: list[ModifierIn] = Field(default_factory=list, max_length=100)


class DiscountIn(_In):
    """A discount: not subtracted from item prices or the subtotal (Stream's rule)."""

    name: Str300 | None = None
    provider_id: RefId | None = None
    amount: Amount = Field(validation_alias=AliasChoices("amount", "price_amount", "value"))


class OrderIn(_In):
    """An in-store order in either envelope's vocabulary (legacy names are accepted as aliases)."""

    pos_order_id: Id = Field(validation_alias=AliasChoices("source_order_id", "provider_id"))
    location_id: RefId | None = None
    idempotency_key: Str255 | None = None
    source: Str100 | None = None
    brand: Str200 | None = None
    fulfillment_type: FulfillmentType
    placed_at: Timestamp | None = None
    is_future_order: StrictBool | None = None
    requested_for: Timestamp | None = None
    should_include_utensils: StrictBool | None = None
    customer: CustomerIn | None = None
    customers: list[CustomerIn] = Field(default_factory=list, max_length=50)
    delivery_address: AddressIn | None = None
    line_items: list[LineItemIn] = Field(min_length=1, max_length=500)
    currency: Currency | None = None
    subtotal: Amount | None = Field(None, validation_alias=AliasChoices("subtotal", "subtotal_amount"))
    tax: Amount | None = Field(None, validation_alias=AliasChoices("tax", "tax_amount"))
    total: Amount | None = Field(None, validation_alias=AliasChoices("total", "total_amount"))
    tax_withheld_by_dsp: Amount | None = Field(
        None, validation_alias=AliasChoices("tax_withheld_by_dsp", "tax_withheld")
    )
    driver_tip: Amount | None = None
    store_tip: Amount | None = Field(None, validation_alias=AliasChoices("store_tip", "restaurant_tip"))
    delivery_fee: Amount | None = None
    delivery_fee_tax: Amount | None = Field(
        None, validation_alias=AliasChoices("delivery_fee_tax", "delivery_fee_taxes")
    )
    service_charge: Amount | None = None
    discounts: list[DiscountIn] = Field(default_factory=list, max_length=100)
    notes: Text | None = None
    special_instructions: Text | None = None
    fulfillment_instructions: Text | None = None
    unpaid: StrictBool = False
    prep_time_minutes: Annotated[StrictInt, Field(ge=0, le=1440)] | None = None


# --- status, cancel, location --------------------------------------------------------------------

POS_STATUSES = ("preparing", "ready_for_pickup", "out_for_delivery", "completed", "canceled")
# Stream's own vocabulary for the same states (section 4.5 of the reference)
_STATUS_ALIASES = {"in_progress": "preparing", "merchant_canceled": "canceled", "cancelled": "canceled"}


def _pos_status(value: Any) -> Any:
    if isinstance(value, str):
        value = _STATUS_ALIASES.get(value, value)
        if value not in POS_STATUSES:
            raise PydanticCustomError(
                "unknown_status", "status must be one of: {allowed}", {"allowed": ", ".join(POS_STATUSES)}
            )
    return value


CANCEL_REASONS = (
    "customer_requested",
    "customer_no_show",
    "customer_changed_mind",
    "merchant_requested",
    "item_out_of_stock",
    "store_closed",
    "kitchen_too_busy",
    "menu_issue",
    "driver_unavailable",
    "delivery_address_issue",
    "delivery_failed",
    "pos_rejected",
    "pos_error",
    "payment_failed",
    "duplicate_order",
    "order_validation_failed",
    "fraud_suspected",
    "weather_conditions",
    "other",
    "unknown",
    "reason_not_provided",
)
CANCEL_SOURCES = ("customer", "restaurant", "driver", "dsp", "stream", "unknown")


def _one_of(allowed: tuple[str, ...], code: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value not in allowed:
            raise PydanticCustomError(code, "must be one of: {allowed}", {"allowed": ", ".join(allowed)})
        return value

    return BeforeValidator(check)


class StatusUpdateIn(_In):
    """`order.status.updated`: the POS moved one of its orders on."""

    pos_order_id: Id = Field(validation_alias=AliasChoices("source_order_id", "provider_id", "order_id"))
    location_id: RefId | None = None
    status: Annotated[StrictStr, BeforeValidator(_pos_status)]
    reason: Text | None = None
    cancel_reason: Annotated[StrictStr, _one_of(CANCEL_REASONS, "unknown_cancel_reason")] | None = None
    cancel_source: Annotated[StrictStr, _one_of(CANCEL_SOURCES, "unknown_cancel_source")] | None = None


class CancelIn(_In):
    """`order.canceled`: a free-text `reason`, and optionally the normalized reason and source."""

    pos_order_id: Id = Field(validation_alias=AliasChoices("source_order_id", "provider_id", "order_id"))
    location_id: RefId | None = None
    reason: Text | None = None
    cancel_reason: Annotated[StrictStr, _one_of(CANCEL_REASONS, "unknown_cancel_reason")] | None = None
    cancel_source: Annotated[StrictStr, _one_of(CANCEL_SOURCES, "unknown_cancel_source")] | None = None


LOCATION_STATUSES = ("active", "inactive", "paused", "online", "offline")


class LocationStatusIn(_In):
    """`location.status.updated`: open (`active`) or closed (`inactive`/`paused`), maybe until a time."""

    location_id: RefId
    status: Annotated[StrictStr, _one_of(LOCATION_STATUSES, "unknown_location_status")]
    paused_until: Timestamp | None = None


# --- envelopes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """An event unwrapped from either envelope: its type, the object and the JSON path of the object."""

    kind: str  # legacy | current
    event: EventType
    obj: dict[str, Any]
    prefix: str  # `data.order`, `data.location` or `object`


def unwrap(data: Any) -> Envelope:
    """The event inside `{"event", "data": {"order"}}` (legacy) or `{"type", "object"}` (current)."""
    if not isinstance(data, dict):
        raise InvalidEvent([Problem("", "invalid_envelope", "the body must be a JSON object")])
    if "type" in data or "object" in data:
        kind, name_key = "current", "type"
    elif "event" in data or "data" in data:
        kind, name_key = "legacy", "event"
    else:
        raise InvalidEvent(
            [Problem("", "invalid_envelope", 'expected {"type", "object"} or {"event", "data": {"order"}}')]
        )
    name = data.get(name_key)
    event = EVENT_ALIASES.get(name) if isinstance(name, str) else None
    problems: list[Problem] = []
    if event is None:
        allowed = ", ".join(EVENT_ALIASES)
        problems.append(Problem(name_key, "unknown_event", f"{name_key} must be one of: {allowed}"))
    if kind == "current":
        obj, prefix = data.get("object"), "object"
    else:
        container = data.get("data")
        inner = "location" if event is EventType.LOCATION_STATUS_UPDATED else "order"
        if not isinstance(container, dict):
            obj, prefix = None, "data"
        else:
            obj, prefix = container.get(inner), f"data.{inner}"
    if not isinstance(obj, dict):
        problems.append(Problem(prefix, "missing" if obj is None else "dict_type", "an object is required"))
    if problems or event is None or not isinstance(obj, dict):
        raise InvalidEvent(problems)
    return Envelope(kind=kind, event=event, obj=obj, prefix=prefix)


M = TypeVar("M", bound=BaseModel)

# the name a missing field is reported under in the legacy envelope (aliases list the current name first)
_LEGACY_NAMES = {"source_order_id": "provider_id", "subtotal": "subtotal_amount", "tax": "tax_amount"}


def validate(model: type[M], envelope: Envelope) -> M:
    """The envelope's object as a model, or InvalidEvent listing every problem with its full JSON path."""
    try:
        return model.model_validate(envelope.obj)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False):
            loc = list(e["loc"])
            if envelope.kind == "legacy" and loc and e["type"] == "missing":
                loc[-1] = _LEGACY_NAMES.get(str(loc[-1]), loc[-1])
            problems.append(Problem(join_path(envelope.prefix, loc), e["type"], e["msg"]))
        raise InvalidEvent(problems) from None
