"""Everything the order page shows, gathered in one read transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection, RowMapping

from orderstream.dashboard import audit, bridges, features, masking
from orderstream.dashboard.board import money
from orderstream.orders import domain, queries
from orderstream.webhooks_out import service as webhooks_service


@dataclass
class OrderPage:
    """The order and every related record the page lists."""

    order: RowMapping
    items: list[dict[str, Any]]
    amounts: list[tuple[str, str]]
    customer: dict[str, str]
    history: list[RowMapping]
    attempts: list[dict[str, Any]] | None  # None: dispatch not installed
    notifications: list[dict[str, Any]] | None  # None: notifications not installed
    webhooks: list[dict[str, Any]] | None  # None: outbound webhooks not installed
    warnings: list[Any]
    audit: list[dict[str, Any]]
    allowed: dict[str, bool]
    missing: dict[str, str]
    providers: list[str]
    drivers: list[dict[str, Any]] | None  # the location's drivers when an own driver can be assigned
    timezone: str


def _item(row: RowMapping, currency: str) -> dict[str, Any]:
    return {
        "name": row["name"],
        "quantity": row["quantity"],
        "price": money(row["price_amount"], currency),
        "line_total": money(row["price_amount"] * row["quantity"], currency),
        "special_instructions": row["special_instructions"],
        "modifiers": _modifiers(row["modifiers"] or [], currency),
    }


def _modifiers(mods: list[dict[str, Any]], currency: str) -> list[dict[str, Any]]:
    out = []
    for mod in mods:
        price = mod.get("price_amount")
        out.append(
            {
                "name": mod.get("name", "?"),
                "quantity": mod.get("quantity", 1),
                "price": money(int(price), currency) if isinstance(price, int) and price else None,
                "modifiers": _modifiers(mod.get("modifiers") or [], currency),
            }
        )
    return out


def _amounts(order: RowMapping) -> list[tuple[str, str]]:
    cur = order["currency"]
    rows = [("Subtotal", money(order["subtotal_amount"], cur)), ("Tax", money(order["tax_amount"], cur))]
    for key, value in sorted((order["amounts"] or {}).items()):
        if isinstance(value, int):
            rows.append((key.replace("_", " ").capitalize(), money(value, cur)))
    rows.append(("Total", money(order["total_amount"], cur)))
    return rows


def customer_view(order: RowMapping, *, revealed: bool) -> dict[str, str]:
    """The customer block: phone, e-mail and address masked unless revealed."""
    phone = order["customer_phone_e164"] or order["customer_phone"]
    return {
        "name": order["customer_name"] or "guest",
        "phone": (phone or "—") if revealed else masking.mask_phone(phone),
        "email": (order["customer_email"] or "—") if revealed else masking.mask_email(order["customer_email"]),
        "address": masking.full_address(order["delivery_address"])
        if revealed
        else masking.mask_address(order["delivery_address"]),
    }


def allowed_actions(order: RowMapping) -> dict[str, bool]:
    """Which status actions the state machine allows now."""
    ftype = domain.FulfillmentType(order["fulfillment_type"])
    status = domain.OrderStatus(order["status"])
    open_ = status not in domain.TERMINAL
    return {
        "cancel": domain.can_transition(ftype, status, domain.OrderStatus.CANCELED),
        "mark_ready": domain.can_transition(ftype, status, domain.OrderStatus.READY_FOR_PICKUP),
        "dispatch": open_ and domain.is_dispatched(ftype),
        "open": open_,
    }


def load(conn: Connection, order: RowMapping, *, revealed: bool) -> OrderPage:
    """The order page's data for an order the caller already checked the user may see."""
    items = queries.line_items_by_order(conn, order_ids=[order["id"]])[order["id"]]
    has_webhooks = features.available(conn, features.WEBHOOKS_OUT)
    attempts = bridges.delivery_attempts(conn, order["id"])
    notes = bridges.notifications(conn, order["id"])
    missing = {}
    if attempts is None:
        missing["dispatch"] = features.missing_text(features.DISPATCH)
    if notes is None:
        missing["notifications"] = features.missing_text(features.NOTIFICATIONS)
    webhooks = None
    if has_webhooks:
        webhooks = webhooks_service.order_deliveries(conn, order_id=order["id"], partner_id=order["partner_id"])
    else:
        missing["webhooks"] = features.missing_text(features.WEBHOOKS_OUT)
    return OrderPage(
        order=order,
        items=[_item(r, order["currency"]) for r in items],
        amounts=_amounts(order),
        customer=customer_view(order, revealed=revealed),
        history=queries.order_history_rows(conn, order_id=order["id"]),
        attempts=attempts,
        notifications=notes,
        webhooks=webhooks,
        warnings=list(order["warnings"] or []),
        audit=audit.for_order(conn, order_id=order["id"]),
        allowed=allowed_actions(order),
        missing=missing,
        providers=bridges.providers(conn),
        drivers=bridges.own_drivers(conn, order),
        timezone=order["location_timezone"],
    )


def local(value: Any, tz: str) -> str:
    """A timestamp in the location's time zone, for display."""
    if value is None:
        return "—"
    return str(value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S"))
