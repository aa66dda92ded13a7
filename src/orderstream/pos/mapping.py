"""From a validated in-store order to our own order values: meaning checks, warnings, content hash (pure)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import phonenumbers

from orderstream.orders.domain import FulfillmentType, OrderStatus, initial_status
from orderstream.pos.schemas import CANCEL_REASONS, CANCEL_SOURCES, ModifierIn, OrderIn, Problem

DELIVERY_TYPES = frozenset({FulfillmentType.DELIVERY, FulfillmentType.MERCHANT_MANAGED_DELIVERY})
MAX_MODIFIER_DEPTH = 5
# a little slack for the clocks of the POS and of this server
REQUESTED_FOR_GRACE = timedelta(minutes=1)
# fields that a POS may regenerate on a retry: they do not make a resubmission different
HASH_IGNORED = frozenset({"idempotency_key", "placed_at"})
AMOUNT_FIELDS = (
    "tax_withheld_by_dsp",
    "driver_tip",
    "store_tip",
    "delivery_fee",
    "delivery_fee_tax",
    "service_charge",
)


def _warning(code: str, message: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "path": path, **extra}


def content_hash(order: OrderIn) -> str:
    """sha256 of the order's meaning: the same order sent again hashes the same, whatever its envelope."""
    content = order.model_dump(mode="json", exclude=set(HASH_IGNORED))
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _depth(modifiers: Sequence[ModifierIn]) -> int:
    return 1 + max((_depth(m.modifiers) for m in modifiers), default=0) if modifiers else 0


def _currency_problems(order: OrderIn, prefix: str) -> tuple[str | None, list[Problem]]:
    currency = order.currency.lower() if order.currency else None
    problems: list[Problem] = []

    def check(code: str | None, path: str) -> None:
        nonlocal currency
        if code is None:
            return
        if currency is None:
            currency = code.lower()
        elif code.lower() != currency:
            problems.append(Problem(path, "currency_mismatch", f"{code} differs from the order currency {currency}"))

    def walk(modifiers: Sequence[ModifierIn], path: str) -> None:
        for j, mod in enumerate(modifiers):
            check(mod.price_currency, f"{path}.modifiers[{j}].price_currency")
            walk(mod.modifiers, f"{path}.modifiers[{j}]")

    for i, item in enumerate(order.line_items):
        check(item.price_currency, f"{prefix}.line_items[{i}].price_currency")
        walk(item.modifiers, f"{prefix}.line_items[{i}]")
    if currency is None:
        problems.append(Problem(f"{prefix}.currency", "missing", "a currency is required (currency or price_currency)"))
    return currency, problems


def check_order(order: OrderIn, *, prefix: str, now: datetime, max_days: int) -> list[Problem]:
    """The meaning errors of a well-formed order (each with its JSON path); empty when it is acceptable."""
    problems: list[Problem] = []
    if order.fulfillment_type in DELIVERY_TYPES and order.delivery_address is None:
        problems.append(
            Problem(f"{prefix}.delivery_address", "delivery_address_required", "a delivery order needs an address")
        )
    _currency, currency_problems = _currency_problems(order, prefix)
    problems += currency_problems
    if order.requested_for is not None:
        if order.requested_for < now - REQUESTED_FOR_GRACE:
            problems.append(Problem(f"{prefix}.requested_for", "requested_for_in_past", "requested_for is in the past"))
        elif order.requested_for > now + timedelta(days=max_days):
            problems.append(
                Problem(
                    f"{prefix}.requested_for",
                    "requested_for_too_far",
                    f"requested_for is more than {max_days} days ahead",
                )
            )
    elif order.is_future_order:
        problems.append(Problem(f"{prefix}.requested_for", "missing", "a future order needs requested_for"))
    for i, item in enumerate(order.line_items):
        if _depth(item.modifiers) > MAX_MODIFIER_DEPTH:
            problems.append(
                Problem(
                    f"{prefix}.line_items[{i}].modifiers",
                    "too_deep",
                    f"modifiers nest at most {MAX_MODIFIER_DEPTH} levels",
                )
            )
    return problems


def _modifiers_unit_total(modifiers: Sequence[ModifierIn]) -> int:
    return sum(m.quantity * (m.price_amount + _modifiers_unit_total(m.modifiers)) for m in modifiers)


def computed_subtotal(order: OrderIn) -> int:
    """Sum of lines: quantity × (unit price + modifiers, which are priced per unit of their parent)."""
    return sum(i.quantity * (i.price_amount + _modifiers_unit_total(i.modifiers)) for i in order.line_items)


def total_warnings(order: OrderIn, prefix: str) -> list[dict[str, Any]]:
    """Totals that do not add up are reported, never rejected (Stream's own example leaves modifiers out)."""
    warnings = []
    expected_subtotal = computed_subtotal(order)
    subtotal_name = "subtotal" if prefix == "object" else "subtotal_amount"
    if order.subtotal is not None and order.subtotal != expected_subtotal:
        warnings.append(
            _warning(
                "subtotal_mismatch",
                f"subtotal {order.subtotal} differs from the sum of the lines {expected_subtotal}",
                f"{prefix}.{subtotal_name}",
                expected=expected_subtotal,
                given=order.subtotal,
            )
        )
    if order.total is not None:
        base = order.subtotal if order.subtotal is not None else expected_subtotal
        extras = sum(getattr(order, f) or 0 for f in AMOUNT_FIELDS if f != "tax_withheld_by_dsp")
        expected_total = base + (order.tax or 0) + extras
        if order.total != expected_total:
            total_name = "total" if prefix == "object" else "total_amount"
            warnings.append(
                _warning(
                    "total_mismatch",
                    f"total {order.total} differs from subtotal + tax + fees + tips {expected_total}",
                    f"{prefix}.{total_name}",
                    expected=expected_total,
                    given=order.total,
                )
            )
    return warnings


def normalize_phone(phone: str, region: str | None) -> str | None:
    """The number in E.164 when it is a valid phone number (national numbers use the location's country)."""
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class OrderDraft:
    """Our own column values for a new order and its lines, plus the warnings for the POS."""

    values: dict[str, Any]
    line_items: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    status: OrderStatus
    is_future: bool


def _modifier_dict(mod: ModifierIn) -> dict[str, Any]:
    return {
        "provider_id": mod.provider_id,
        "name": mod.name,
        "quantity": mod.quantity,
        "price_amount": mod.price_amount,
        "price_currency": mod.price_currency.lower() if mod.price_currency else None,
        "modifiers": [_modifier_dict(m) for m in mod.modifiers],
    }


def draft_order(order: OrderIn, *, prefix: str, region: str | None, prep_time_minutes: int | None) -> OrderDraft:
    """Map a checked order onto our columns, field by field; warnings for totals and phone numbers."""
    currency, _ = _currency_problems(order, prefix)
    assert currency is not None, "check_order() first"
    warnings = total_warnings(order, prefix)
    customers = list(order.customers)
    customer_path = f"{prefix}.customers[0]" if not order.customer and customers else f"{prefix}.customer"
    primary = order.customer or (customers[0] if customers else None)
    if order.customer is not None:
        customers = [order.customer, *customers]
    phone_e164 = None
    if primary is not None and primary.phone:
        phone_e164 = normalize_phone(primary.phone, region)
        if phone_e164 is None:
            warnings.append(
                _warning("invalid_phone", "not a valid phone number; stored as given", f"{customer_path}.phone")
            )
    is_future = bool(order.is_future_order) or (order.is_future_order is None and order.requested_for is not None)
    status = initial_status(is_future=is_future)
    amounts: dict[str, Any] = {f: getattr(order, f) for f in AMOUNT_FIELDS if getattr(order, f) is not None}
    if order.discounts:
        amounts["discounts"] = [d.model_dump(exclude_none=True) for d in order.discounts]
    address = order.delivery_address.model_dump(exclude_none=True) if order.delivery_address else None
    values = {
        "source_order_id": order.pos_order_id,
        "idempotency_key": order.idempotency_key,
        "fulfillment_type": order.fulfillment_type.value,
        "status": status.value,
        "source": order.source,
        "brand": order.brand,
        "customer_name": primary.name if primary else None,
        "customer_phone": primary.phone if primary else None,
        "customer_phone_e164": phone_e164,
        "customer_email": primary.email if primary else None,
        "customers": [c.model_dump(exclude_none=True) for c in customers],
        "delivery_address": address,
        "currency": currency,
        "subtotal_amount": order.subtotal,
        "tax_amount": order.tax,
        "total_amount": order.total,
        "amounts": amounts,
        "notes": order.notes,
        "special_instructions": order.special_instructions,
        "fulfillment_instructions": order.fulfillment_instructions,
        "should_include_utensils": order.should_include_utensils,
        "unpaid": order.unpaid,
        "is_future_order": is_future,
        "requested_for": order.requested_for,
        "placed_at": order.placed_at,
        "prep_time_minutes": order.prep_time_minutes if order.prep_time_minutes is not None else prep_time_minutes,
        "warnings": warnings,
    }
    lines = [
        {
            "position": i,
            "provider_id": item.provider_id,
            "name": item.name,
            "quantity": item.quantity,
            "price_amount": item.price_amount,
            "price_currency": (item.price_currency or currency).lower(),
            "customer_ref": item.customer_id,
            "special_instructions": item.special_instructions,
            "modifiers": [_modifier_dict(m) for m in item.modifiers],
        }
        for i, item in enumerate(order.line_items)
    ]
    return OrderDraft(values=values, line_items=lines, warnings=warnings, status=status, is_future=is_future)


# --- cancellations -------------------------------------------------------------------------------

# free-text cancel reasons, matched by keywords in this order (the first match wins)
_REASON_KEYWORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("no show", "no-show", "noshow"), "customer_no_show"),
    (("changed mind", "changed their mind", "changed his mind", "changed her mind"), "customer_changed_mind"),
    (("out of stock", "sold out", "unavailable item"), "item_out_of_stock"),
    (("duplicate",), "duplicate_order"),
    (("fraud",), "fraud_suspected"),
    (("payment", "card declined", "declined"), "payment_failed"),
    (("weather", "storm", "snow"), "weather_conditions"),
    (("too busy", "busy", "overwhelmed"), "kitchen_too_busy"),
    (("closed", "closing"), "store_closed"),
    (("menu",), "menu_issue"),
    (("address",), "delivery_address_issue"),
    (("driver", "courier", "dasher"), "driver_unavailable"),
    (("delivery failed", "failed delivery", "could not deliver"), "delivery_failed"),
    (("customer",), "customer_requested"),
    (("merchant", "restaurant", "store", "manager"), "merchant_requested"),
)


def normalize_cancel_reason(text: str | None) -> str:
    """The normalized cancel reason for a free-text reason (an exact code is kept as is)."""
    if text is None or not text.strip():
        return "reason_not_provided"
    lowered = text.strip().lower()
    code = lowered.replace(" ", "_").replace("-", "_")
    if code in CANCEL_REASONS:
        return code
    for keywords, reason in _REASON_KEYWORDS:
        if any(k in lowered for k in keywords):
            return reason
    return "other"


def cancel_source_for(reason: str) -> str:
    """Who canceled, when the POS does not say: the customer, a driver, else the restaurant (the POS side)."""
    if reason.startswith("customer_"):
        return "customer"
    if reason in ("driver_unavailable", "delivery_failed"):
        return "driver"
    return "restaurant"


def cancellation(*, reason_text: str | None, cancel_reason: str | None, cancel_source: str | None) -> dict[str, Any]:
    """The stored cancellation: normalized reason and source, and the free text as sent."""
    reason = cancel_reason or normalize_cancel_reason(reason_text)
    source = cancel_source or cancel_source_for(reason)
    assert reason in CANCEL_REASONS
    assert source in CANCEL_SOURCES
    return {"cancel_reason": reason, "cancel_source": source, "cancel_note": reason_text}
