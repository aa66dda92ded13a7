"""Shared builders for the DoorDash adapter tests: requests, settings, fixtures, JWT checks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from orderstream.deliveries.protocol import Address, Contact, DeliveryRequest, Item
from orderstream.deliveries.providers.doordash.settings import DoorDashSettings, decode_signing_secret

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "dGVzdC1zaWduaW5nLXNlY3JldC1mb3ItZG9vcmRhc2gtdGVzdHM"  # base64url("test-signing-secret-for-doordash-tests")
WEBHOOK_AUTH = "Basic b3JkZXJzdHJlYW06d2ViaG9vay1zZWNyZXQ="


def fixture(name: str) -> Any:
    """A JSON fixture by file name."""
    return json.loads((FIXTURES / name).read_text())


def fixture_bytes(name: str) -> bytes:
    """A fixture's raw bytes, as a server would send them."""
    return (FIXTURES / name).read_bytes()


def settings(**overrides: Any) -> DoorDashSettings:
    """Settings with test credentials and a fake base URL (MockTransport answers it)."""
    values: dict[str, Any] = {
        "base_url": "https://openapi.doordash.test",
        "developer_id": "dev-7f3c",
        "key_id": "key-19ab",
        "signing_secret": SECRET,
        "webhook_authorization": WEBHOOK_AUTH,
    }
    values.update(overrides)
    return DoorDashSettings(**values)


def make_request(**overrides: Any) -> DeliveryRequest:
    """An ASAP delivery for two pizzas, with a tip and instructions."""
    request = DeliveryRequest(
        external_id="os-ord_01jd8x3k9m2q7r5t6v8w0y1z2a-1",
        order_id="ord_01jd8x3k9m2q7r5t6v8w0y1z2a",
        pickup_address=Address(
            street="901 Market Street", city="San Francisco", state="CA", postal_code="94103", country="US"
        ),
        pickup_contact=Contact(name="Front desk", phone="+16505555555", business_name="Tony's Pizza Napoletana"),
        dropoff_address=Address(
            street="1 Dr Carlton B Goodlett Pl",
            unit="Room 200",
            city="San Francisco",
            state="CA",
            postal_code="94102",
            country="US",
            latitude=37.779265,
            longitude=-122.419277,
        ),
        dropoff_contact=Contact(name="Jane Q Doe", phone="+14155550199"),
        order_value=4250,
        currency="usd",
        items=(Item(name="Margherita", quantity=2, price=1800), Item(name="Tiramisu", quantity=1, price=650)),
        pickup_instructions="Order at the counter, mention orderstream",
        dropoff_instructions="Ring twice, leave with the doorman",
        tip=500,
    )
    return replace(request, **overrides)


AT = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)


def decode_jwt(token: str, *, secret: str = SECRET) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and verified claims of a Drive JWT signed with the base64url-decoded secret."""
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(
        token,
        decode_signing_secret(secret),
        algorithms=["HS256"],
        audience="doordash",
        options={"verify_exp": False, "verify_iat": False},
    )
    return header, claims
