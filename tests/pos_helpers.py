"""Build, sign and post POS webhook events (for in-process TestClient and real HTTP alike)."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any, Protocol

from tests.e2e.harness import sign_hex, signed_headers

FIXTURES = Path(__file__).parent / "fixtures" / "pos"
DOC_ORDER_CREATED = FIXTURES / "legacy_order_created.json"
DOC_STATUS_UPDATED = FIXTURES / "legacy_order_status_updated.json"
DOC_ORDER_CANCELED = FIXTURES / "legacy_order_canceled.json"

__all__ = [
    "DOC_ORDER_CANCELED",
    "DOC_ORDER_CREATED",
    "DOC_STATUS_UPDATED",
    "Poster",
    "current_order",
    "doc_bytes",
    "legacy_order",
    "post_event",
    "sign_hex",
    "signed_headers",
]


class Poster(Protocol):
    """Anything with httpx's `post(url, content=, headers=)`: a TestClient or an httpx.Client."""

    def post(self, url: str, *, content: bytes, headers: dict[str, str]) -> Any: ...


def doc_bytes(path: Path) -> bytes:
    """A documented example payload exactly as written in the docs."""
    return path.read_bytes()


def post_event(
    client: Poster,
    slug: str,
    secret: str,
    event: dict[str, Any] | bytes,
    *,
    standard: bool = False,
    msg_id: str | None = None,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST a signed event (a dict is serialized; bytes are sent as they are) to /pos/{slug}/webhook.

    With standard, msg_id or timestamp, the Standard Webhooks headers are added to the hex signature.
    """
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    standard = standard or msg_id is not None or timestamp is not None
    sent = signed_headers(secret, body, standard=standard, msg_id=msg_id, timestamp=timestamp)
    sent.update(headers or {})
    return client.post(f"/pos/{slug}/webhook", content=body, headers=sent)


def legacy_order(pos_order_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The docs' legacy order.created example, with a fresh POS order id and any field overridden."""
    event: dict[str, Any] = json.loads(DOC_ORDER_CREATED.read_bytes())
    order = event["data"]["order"]
    order["provider_id"] = pos_order_id or f"pos_order_{uuid.uuid4().hex[:12]}"
    order.update(copy.deepcopy(overrides))
    return event


def current_order(
    pos_order_id: str | None = None, *, location_id: str = "location_456", **overrides: Any
) -> dict[str, Any]:
    """An order.created in the current {"type","object"} envelope, shaped like the docs' example (valid values)."""
    pos_order_id = pos_order_id or f"pos_order_{uuid.uuid4().hex[:12]}"
    obj: dict[str, Any] = {
        "idempotency_key": f"{pos_order_id}_1699564800",
        "source_order_id": pos_order_id,
        "location_id": location_id,
        "source": "your_pos_name",
        "brand": "your_brand_name",
        "fulfillment_type": "delivery",
        "placed_at": 1699564800000,
        "is_future_order": False,
        "should_include_utensils": True,
        "customers": [
            {"id": "customer_1", "name": "Jane Doe", "phone": "+14155550123", "email": "jane.doe@example.com"}
        ],
        "delivery_address": {
            "street": "123 Main St",
            "city": "Anytown",
            "state": "CA",
            "postal_code": "12345",
            "country": "US",
        },
        "line_items": [
            {
                "provider_id": "item_789",
                "name": "Cheeseburger",
                "quantity": 2,
                "price_amount": 1200,
                "price_currency": "USD",
                "customer_id": "customer_1",
                "modifiers": [
                    {
                        "provider_id": "modifier_101",
                        "name": "Extra Cheese",
                        "quantity": 1,
                        "price_amount": 100,
                        "price_currency": "USD",
                        "modifiers": [],
                    }
                ],
            }
        ],
        "subtotal": 2600,
        "tax": 208,
        "tax_withheld_by_dsp": 0,
        "special_instructions": "Ring the bell",
    }
    obj.update(copy.deepcopy(overrides))
    return {"type": "order.created", "object": obj}
