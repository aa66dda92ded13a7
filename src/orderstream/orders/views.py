"""The partner order API: list, fetch, look up by POS id, and history; scoped by the bearer API key."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AwareDatetime
from sqlalchemy.engine import RowMapping

from orderstream.app_state import db_of, settings_of
from orderstream.auth import PartnerPrincipal, require_partner_key
from orderstream.errors import ERROR_RESPONSES, ApiError
from orderstream.orders import queries
from orderstream.orders.domain import FulfillmentType, OrderStatus
from orderstream.orders.schemas import Order, OrderHistory, OrderPage, history_from_rows, order_from_rows

router = APIRouter(tags=["orders"], responses=ERROR_RESPONSES)

Principal = Annotated[PartnerPrincipal, Depends(require_partner_key)]

_CURSOR_PREFIX = "o1:"
_ORDER_ID = re.compile(r"^[a-z]{1,8}_[0-9a-z]{1,40}$")


def encode_cursor(order_id: str) -> str:
    """An opaque cursor pointing just past this order."""
    return base64.urlsafe_b64encode((_CURSOR_PREFIX + order_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The order id inside a cursor, or a 422 naming the parameter."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    order_id = raw.removeprefix(_CURSOR_PREFIX)
    if not raw.startswith(_CURSOR_PREFIX) or not _ORDER_ID.match(order_id):
        raise _query_error("cursor", "invalid_cursor", "not a cursor returned by this API")
    return order_id


def _query_error(name: str, code: str, message: str) -> ApiError:
    return ApiError(
        422,
        "validation_error",
        "the request is not valid",
        details=[{"path": f"query.{name}", "code": code, "message": message}],
    )


def _orders(request: Request, rows: Sequence[RowMapping]) -> list[Order]:
    base_url = settings_of(request).public_base_url
    with db_of(request).read() as conn:
        items = queries.line_items_by_order(conn, order_ids=[r["id"] for r in rows])
    return [
        order_from_rows(
            r, items[r["id"]], location_external_id=r[queries.LOCATION_EXTERNAL_ID], public_base_url=base_url
        )
        for r in rows
    ]


def _not_found() -> ApiError:
    return ApiError(404, "order_not_found", "no such order")


@router.get("/v1/orders", response_model=OrderPage, summary="List orders, newest first")
def list_orders(
    request: Request,
    principal: Principal,
    location_id: Annotated[
        str | None, Query(max_length=128, description="only orders of this location (your own location id)")
    ] = None,
    status: Annotated[list[OrderStatus] | None, Query(description="only these statuses (repeatable)")] = None,
    fulfillment_type: Annotated[
        list[FulfillmentType] | None, Query(description="only these fulfillment types (repeatable)")
    ] = None,
    created_after: Annotated[
        AwareDatetime | None, Query(description="ISO 8601 with offset; orders created at or after it")
    ] = None,
    created_before: Annotated[
        AwareDatetime | None, Query(description="ISO 8601 with offset; orders created before it")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, description="page size; larger values are capped at the server's maximum")] = 50,
) -> OrderPage:
    """The partner's orders, filtered, newest first, one page at a time."""
    if created_after is not None and created_before is not None and created_after >= created_before:
        raise _query_error("created_before", "invalid_range", "created_before must be later than created_after")
    before_id = decode_cursor(cursor) if cursor is not None else None
    filters = queries.OrderFilters(
        location_id=location_id,
        statuses=[s.value for s in status or []],
        fulfillment_types=[f.value for f in fulfillment_type or []],
        created_after=created_after,
        created_before=created_before,
    )
    limit = min(limit, settings_of(request).page_size_max)
    with db_of(request).read() as conn:
        rows, more = queries.list_orders(
            conn, partner_id=principal.partner_id, filters=filters, before_id=before_id, limit=limit
        )
    return OrderPage(data=_orders(request, rows), next_cursor=encode_cursor(rows[-1]["id"]) if more else None)


@router.get("/v1/orders/{order_id}", response_model=Order, summary="Fetch an order")
def get_order(request: Request, principal: Principal, order_id: Annotated[str, Path(max_length=64)]) -> Order:
    """One of the partner's orders by orderstream's id."""
    with db_of(request).read() as conn:
        row = queries.get_order(conn, partner_id=principal.partner_id, order_id=order_id)
    if row is None:
        raise _not_found()
    return _orders(request, [row])[0]


@router.get(
    "/v1/locations/{location_id}/orders/{pos_order_id}",
    response_model=Order,
    summary="Look up an order by location and POS order id",
)
def get_order_by_pos_id(
    request: Request,
    principal: Principal,
    location_id: Annotated[str, Path(max_length=128, description="your own location id")],
    pos_order_id: Annotated[str, Path(max_length=128, description="your POS order id (provider_id / source_order_id)")],
) -> Order:
    """One of the partner's orders by the partner's own location id and POS order id."""
    with db_of(request).read() as conn:
        row = queries.get_order_by_pos_id(
            conn, partner_id=principal.partner_id, location_id=location_id, pos_order_id=pos_order_id
        )
    if row is None:
        raise _not_found()
    return _orders(request, [row])[0]


@router.get("/v1/orders/{order_id}/history", response_model=OrderHistory, summary="An order's history")
def get_order_history(
    request: Request, principal: Principal, order_id: Annotated[str, Path(max_length=64)]
) -> OrderHistory:
    """Every status and delivery change of one of the partner's orders, oldest first."""
    with db_of(request).read() as conn:
        row = queries.get_order(conn, partner_id=principal.partner_id, order_id=order_id)
        if row is None:
            raise _not_found()
        rows = queries.order_history_rows(conn, order_id=order_id)
    return history_from_rows(order_id, rows)
