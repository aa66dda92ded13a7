"""The order API's response models, built from stored rows (what a partner sees of an order)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orderstream.orders.domain import FulfillmentType, OrderStatus


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Customer(_Out):
    """A customer of the order, as the POS sent it (the phone also in E.164 when it is a valid number)."""

    id: str | None = Field(None, description="the POS's customer id (current envelope)")
    name: str | None = None
    phone: str | None = Field(None, description="as sent by the POS")
    phone_e164: str | None = Field(None, description="the phone in E.164 when it is a valid number")
    email: str | None = None


class DeliveryAddress(BaseModel):
    """Where a delivery goes (`zip` of the legacy envelope is given as `postal_code`)."""

    model_config = ConfigDict(extra="allow")

    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class Modifier(_Out):
    """A modifier of a line item; modifiers nest."""

    provider_id: str | None = Field(None, description="the POS's catalog id")
    name: str
    quantity: int | None = None
    price_amount: int | None = Field(None, description="unit price in minor units")
    price_currency: str | None = None
    modifiers: list[Modifier] = Field(default_factory=list)


class LineItem(_Out):
    """One line of the order."""

    provider_id: str | None = Field(None, description="the POS's catalog id")
    name: str
    quantity: int
    price_amount: int = Field(description="unit price in minor units")
    price_currency: str
    customer_id: str | None = None
    special_instructions: str | None = None
    modifiers: list[Modifier] = Field(default_factory=list)


class Cancellation(_Out):
    """Why and by whom an order was canceled."""

    reason: str | None = Field(None, description="normalized cancel reason")
    source: str | None = None
    note: str | None = Field(None, description="free text as sent")


class OrderWarning(BaseModel):
    """Something noticed when the order was accepted that did not stop it (totals, phone number...)."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    path: str | None = None


class Order(BaseModel):
    """An order as the partner sees it."""

    id: str = Field(description="orderstream's order id (time-sortable)")
    pos_order_id: str = Field(description="the POS's order id (`provider_id` / `source_order_id`)")
    idempotency_key: str | None = None
    location_id: str = Field(description="the partner's own location id")
    fulfillment_type: FulfillmentType
    status: OrderStatus
    delivery_status: str | None = Field(None, description="Stream delivery status of the active delivery")
    source: str | None = None
    brand: str | None = None
    customer: Customer | None = Field(None, description="the first (ordering) customer")
    customers: list[Customer]
    delivery_address: DeliveryAddress | None = None
    line_items: list[LineItem]
    currency: str
    subtotal_amount: int | None = None
    tax_amount: int | None = None
    total_amount: int | None = None
    amounts: dict[str, Any] = Field(description="other amounts in minor units: tips, fees, tax withheld...")
    unpaid: bool
    notes: str | None = None
    special_instructions: str | None = None
    fulfillment_instructions: str | None = None
    should_include_utensils: bool | None = None
    is_future_order: bool
    requested_for: datetime | None = None
    placed_at: datetime | None = None
    prep_time_minutes: int | None = None
    cancellation: Cancellation | None = None
    warnings: list[OrderWarning]
    tracking_url: str = Field(description="the customer's live tracking page")
    created_at: datetime
    updated_at: datetime


class OrderPage(BaseModel):
    """One page of orders, newest first."""

    data: list[Order]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class HistoryEntry(BaseModel):
    """One change in an order's life."""

    at: datetime
    kind: str = Field(description="status, delivery, ...")
    from_status: str | None = None
    to_status: str | None = None
    actor: str = Field(description="pos, courier, operator or system")
    reason: str | None = None
    details: dict[str, Any] | None = None


class OrderHistory(BaseModel):
    """An order's history, oldest first."""

    order_id: str
    data: list[HistoryEntry]


def _customer(raw: Mapping[Any, Any]) -> Customer:
    return Customer.model_validate({k: (str(v) if k == "id" and v is not None else v) for k, v in raw.items()})


def _warning(raw: Any) -> OrderWarning:
    if isinstance(raw, Mapping):
        return OrderWarning.model_validate({"code": "warning", "message": "", **raw})
    return OrderWarning(code="warning", message=str(raw))


def order_from_rows(
    row: Mapping[Any, Any], items: Iterable[Mapping[Any, Any]], *, location_external_id: str, public_base_url: str
) -> Order:
    """The API representation of a stored order, its line items and its location."""
    customers = [_customer(c) for c in (row["customers"] or []) if isinstance(c, Mapping)]
    primary: Customer | None = None
    if row["customer_name"] or row["customer_phone"] or row["customer_email"]:
        primary = Customer(
            id=customers[0].id if customers else None,
            name=row["customer_name"],
            phone=row["customer_phone"],
            phone_e164=row["customer_phone_e164"],
            email=row["customer_email"],
        )
    elif customers:
        primary = customers[0]
    cancellation = None
    if row["cancel_reason"] or row["cancel_source"] or row["cancel_note"]:
        cancellation = Cancellation(reason=row["cancel_reason"], source=row["cancel_source"], note=row["cancel_note"])
    return Order(
        id=row["id"],
        pos_order_id=row["source_order_id"],
        idempotency_key=row["idempotency_key"],
        location_id=location_external_id,
        fulfillment_type=row["fulfillment_type"],
        status=row["status"],
        delivery_status=row["delivery_status"],
        source=row["source"],
        brand=row["brand"],
        customer=primary,
        customers=customers,
        delivery_address=DeliveryAddress.model_validate(row["delivery_address"]) if row["delivery_address"] else None,
        line_items=[
            LineItem(
                provider_id=item["provider_id"],
                name=item["name"],
                quantity=item["quantity"],
                price_amount=item["price_amount"],
                price_currency=item["price_currency"],
                customer_id=item["customer_ref"],
                special_instructions=item["special_instructions"],
                modifiers=[Modifier.model_validate(m) for m in item["modifiers"] or []],
            )
            for item in items
        ],
        currency=row["currency"],
        subtotal_amount=row["subtotal_amount"],
        tax_amount=row["tax_amount"],
        total_amount=row["total_amount"],
        amounts=dict(row["amounts"] or {}),
        unpaid=bool(row["unpaid"]),
        notes=row["notes"],
        special_instructions=row["special_instructions"],
        fulfillment_instructions=row["fulfillment_instructions"],
        should_include_utensils=row["should_include_utensils"],
        is_future_order=bool(row["is_future_order"]),
        requested_for=row["requested_for"],
        placed_at=row["placed_at"],
        prep_time_minutes=row["prep_time_minutes"],
        cancellation=cancellation,
        warnings=[_warning(w) for w in row["warnings"] or []],
        tracking_url=f"{public_base_url.rstrip('/')}/t/{row['tracking_token']}",
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def history_from_rows(order_id: str, rows: Iterable[Mapping[Any, Any]]) -> OrderHistory:
    """The API representation of an order's history."""
    return OrderHistory(
        order_id=order_id,
        data=[
            HistoryEntry(
                at=r["at"],
                kind=r["kind"],
                from_status=r["from_status"],
                to_status=r["to_status"],
                actor=r["actor"],
                reason=r["reason"],
                details=r["details"],
            )
            for r in rows
        ],
    )
