"""Every bad input of the POS webhook gets its stated status, a stable code and the JSON path; never a 500."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from orderstream.db import Database
from orderstream.orders.models import orders
from orderstream.pos.models import inbound_events
from orderstream.tenancy import service as tenancy
from tests.factories import PartnerFixture, make_partner
from tests.pos_helpers import current_order, legacy_order, post_event, sign_hex, signed_headers


def error_of(resp: Any, status: int) -> dict[str, Any]:
    """The error body, after checking the status and the one error shape."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    error: dict[str, Any] = body["error"]
    return error


def stored_events(db: Database, partner: PartnerFixture) -> int:
    with db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(inbound_events)
                .where(inbound_events.c.partner_id == partner.partner_id)
            ).scalar()
        )


# --- 400, 413, 415 -------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"type": "order.created",', "\u00e9".encode("latin-1")])
def test_invalid_json_is_400(client: TestClient, partner: PartnerFixture, body: bytes) -> None:
    error = error_of(post_event(client, partner.slug, partner.secret, body), 400)
    assert error["code"] == "invalid_json"


def test_deeply_nested_json_is_400_not_a_crash(client: TestClient, partner: PartnerFixture) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    assert error_of(post_event(client, partner.slug, partner.secret, body), 400)["code"] == "invalid_json"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_a_body_that_is_not_json_is_415(client: TestClient, partner: PartnerFixture, content_type: str | None) -> None:
    body = json.dumps(legacy_order()).encode()
    headers = signed_headers(partner.secret, body)
    del headers["Content-Type"]
    if content_type:
        headers["Content-Type"] = content_type
    resp = client.post(f"/pos/{partner.slug}/webhook", content=body, headers=headers)
    assert error_of(resp, 415)["code"] == "unsupported_media_type"


def test_json_with_a_charset_is_json(client: TestClient, partner: PartnerFixture) -> None:
    body = json.dumps(legacy_order()).encode()
    headers = {**signed_headers(partner.secret, body), "Content-Type": "application/json; charset=utf-8"}
    assert client.post(f"/pos/{partner.slug}/webhook", content=body, headers=headers).status_code == 200


def test_a_body_over_256_kib_is_413_by_length_or_by_stream(client: TestClient, partner: PartnerFixture) -> None:
    event = legacy_order(notes="x" * 4000)
    event["data"]["order"]["padding"] = "y" * (256 * 1024)
    body = json.dumps(event).encode()
    error = error_of(post_event(client, partner.slug, partner.secret, body), 413)
    assert error["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        for start in range(0, len(body), 16 * 1024):
            yield body[start : start + 16 * 1024]

    streamed = client.post(
        f"/pos/{partner.slug}/webhook", content=chunks(), headers=signed_headers(partner.secret, body)
    )
    assert error_of(streamed, 413)["code"] == "payload_too_large"


def test_a_body_of_exactly_256_kib_is_read(client: TestClient, partner: PartnerFixture) -> None:
    event = legacy_order()
    base = len(json.dumps(event).encode())
    event["data"]["order"]["padding"] = ""
    padding = 256 * 1024 - base - len(', "padding": ""')
    event["data"]["order"]["padding"] = "p" * padding
    body = json.dumps(event).encode()
    assert len(body) == 256 * 1024
    assert post_event(client, partner.slug, partner.secret, body).status_code == 200


# --- 401 ------------------------------------------------------------------------------------------


def test_unknown_partner_missing_and_bad_signatures_are_401(client: TestClient, partner: PartnerFixture) -> None:
    body = json.dumps(legacy_order()).encode()
    assert error_of(post_event(client, "nobody", partner.secret, body), 401)["code"] == "unknown_partner"

    unsigned = client.post(f"/pos/{partner.slug}/webhook", content=body, headers={"Content-Type": "application/json"})
    assert error_of(unsigned, 401)["code"] == "missing_signature"

    wrong_key = post_event(client, partner.slug, "whsec_" + "A" * 44, body)
    assert error_of(wrong_key, 401)["code"] == "invalid_signature"

    tampered = signed_headers(partner.secret, body)
    resp = client.post(f"/pos/{partner.slug}/webhook", content=body + b" ", headers=tampered)
    assert error_of(resp, 401)["code"] == "invalid_signature"

    upper = {
        **signed_headers(partner.secret, body),
        "Stream-Webhook-Signature": "sha256=" + sign_hex(partner.secret, body),
    }
    resp = client.post(f"/pos/{partner.slug}/webhook", content=body, headers=upper)
    assert error_of(resp, 401)["code"] == "invalid_signature"

    non_ascii: dict[str, Any] = {
        **signed_headers(partner.secret, body),
        "Stream-Webhook-Signature": ("\u00e9" * 64).encode("latin-1"),
    }
    resp = client.post(f"/pos/{partner.slug}/webhook", content=body, headers=non_ascii)
    assert error_of(resp, 401)["code"] == "invalid_signature"


@pytest.mark.parametrize("skew", [-301, 301, -3600, 86400])
def test_standard_webhooks_outside_five_minutes_either_way_are_401(
    client: TestClient, partner: PartnerFixture, skew: int
) -> None:
    resp = post_event(client, partner.slug, partner.secret, legacy_order(), timestamp=int(time.time()) + skew)
    assert error_of(resp, 401)["code"] == "webhook_timestamp_out_of_tolerance"


@pytest.mark.parametrize("skew", [-290, 290])
def test_standard_webhooks_within_five_minutes_are_accepted(
    client: TestClient, partner: PartnerFixture, skew: int
) -> None:
    resp = post_event(client, partner.slug, partner.secret, legacy_order(), timestamp=int(time.time()) + skew)
    assert resp.status_code == 200, resp.text


def test_standard_webhooks_headers_alone_authenticate_and_must_match(
    client: TestClient, partner: PartnerFixture
) -> None:
    body = json.dumps(current_order()).encode()
    headers = signed_headers(partner.secret, body, standard=True)
    del headers["Stream-Webhook-Signature"]
    assert client.post(f"/pos/{partner.slug}/webhook", content=body, headers=headers).status_code == 200

    forged = {**headers, "webhook-id": "msg_other"}  # the signature covers the id
    assert error_of(client.post(f"/pos/{partner.slug}/webhook", content=body, headers=forged), 401)["code"] == (
        "invalid_signature"
    )
    partial = {k: v for k, v in headers.items() if k != "webhook-timestamp"}
    assert error_of(client.post(f"/pos/{partner.slug}/webhook", content=body, headers=partial), 401)["code"] == (
        "incomplete_standard_webhook_headers"
    )
    # a valid hex signature does not excuse a bad Standard Webhooks signature
    bad_std = {**signed_headers(partner.secret, body, standard=True), "webhook-signature": "v1,AAAA"}
    assert error_of(client.post(f"/pos/{partner.slug}/webhook", content=body, headers=bad_std), 401)["code"] == (
        "invalid_signature"
    )


def test_a_partner_can_require_standard_webhooks(client: TestClient, db: Database) -> None:
    strict = make_partner(db, require_standard_webhooks=True)
    plain = post_event(client, strict.slug, strict.secret, legacy_order())
    assert error_of(plain, 401)["code"] == "standard_webhooks_required"
    assert post_event(client, strict.slug, strict.secret, legacy_order(), standard=True).status_code == 200


def test_secret_rotation_keeps_the_old_secret_for_the_overlap_only(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    with db.write() as conn:
        new_secret = tenancy.rotate_secret(conn, slug=partner.slug, overlap=timedelta(hours=24))["secret"]
    assert post_event(client, partner.slug, partner.secret, legacy_order()).status_code == 200
    assert post_event(client, partner.slug, new_secret, legacy_order(), standard=True).status_code == 200

    with db.write() as conn:
        newest = tenancy.rotate_secret(conn, slug=partner.slug, overlap=timedelta(0))["secret"]
    for old in (partner.secret, new_secret):
        assert error_of(post_event(client, partner.slug, old, legacy_order()), 401)["code"] == "invalid_signature"
    assert post_event(client, partner.slug, newest, legacy_order()).status_code == 200


# --- 429 ------------------------------------------------------------------------------------------


def test_the_rate_limit_is_per_partner_after_authentication(client: TestClient, db: Database) -> None:
    limited = make_partner(db, rate_limit_per_minute=3)
    other = make_partner(db)
    for _ in range(5):  # unauthenticated requests do not use up the partner's budget
        assert post_event(client, limited.slug, "whsec_wrong", legacy_order()).status_code == 401
    for _ in range(3):
        assert post_event(client, limited.slug, limited.secret, legacy_order()).status_code == 200

    resp = post_event(client, limited.slug, limited.secret, legacy_order())

    error = error_of(resp, 429)
    assert error["code"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 20
    assert post_event(client, other.slug, other.secret, legacy_order()).status_code == 200


# --- 422 ------------------------------------------------------------------------------------------


def problems(resp: Any) -> dict[str, str]:
    error = error_of(resp, 422)
    assert error["code"] == "validation_error"
    return {d["path"]: d["code"] for d in error["details"]}


def test_every_schema_problem_is_listed_with_its_json_path(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    event = legacy_order("pos_bad")
    order = event["data"]["order"]
    order["line_items"][0]["quantity"] = 0
    order["line_items"][0]["price_amount"] = -5
    order["line_items"][0]["modifiers"][0]["price_amount"] = -1
    order["tax_amount"] = -200
    order["currency"] = "ZZZ"
    order["fulfillment_type"] = "teleport"
    del order["provider_id"]

    found = problems(post_event(client, partner.slug, partner.secret, event))

    assert found == {
        "data.order.provider_id": "missing",
        "data.order.fulfillment_type": "enum",
        "data.order.line_items[0].quantity": "greater_than_equal",
        "data.order.line_items[0].price_amount": "greater_than_equal",
        "data.order.line_items[0].modifiers[0].price_amount": "greater_than_equal",
        "data.order.currency": "unknown_currency",
        "data.order.tax_amount": "greater_than_equal",
    }
    assert stored_events(db, partner) == 0


def test_current_envelope_paths_start_at_object(client: TestClient, partner: PartnerFixture) -> None:
    event = current_order()
    event["object"]["line_items"][0]["quantity"] = "2"
    event["object"]["customers"][0]["phone"] = 5551234
    event["object"]["line_items"][0]["price_currency"] = "XXY"
    found = problems(post_event(client, partner.slug, partner.secret, event))
    assert found == {
        "object.line_items[0].quantity": "int_type",
        "object.customers[0].phone": "string_type",
        "object.line_items[0].price_currency": "unknown_currency",
    }


def test_meaning_errors_are_listed_together(client: TestClient, partner: PartnerFixture) -> None:
    past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    event = current_order(requested_for=past, is_future_order=True)
    del event["object"]["delivery_address"]
    event["object"]["line_items"][0]["modifiers"][0]["price_currency"] = "EUR"
    found = problems(post_event(client, partner.slug, partner.secret, event))
    assert found == {
        "object.delivery_address": "delivery_address_required",
        "object.line_items[0].modifiers[0].price_currency": "currency_mismatch",
        "object.requested_for": "requested_for_in_past",
    }


@pytest.mark.parametrize(
    ("requested_for", "code"),
    [
        (lambda now: int((now + timedelta(days=31)).timestamp() * 1000), "requested_for_too_far"),
        (lambda now: (now + timedelta(days=31)).isoformat(), "requested_for_too_far"),
        (lambda now: int((now - timedelta(minutes=10)).timestamp() * 1000), "requested_for_in_past"),
        (lambda now: (now + timedelta(days=1)).replace(tzinfo=None).isoformat(), "timestamp_without_offset"),
        (lambda now: "tomorrow at noon", "invalid_timestamp"),
        (lambda now: int(now.timestamp()), "invalid_timestamp"),  # seconds, not milliseconds
        (lambda now: True, "invalid_timestamp"),
    ],
)
def test_requested_for_must_be_a_time_within_thirty_days(
    client: TestClient, partner: PartnerFixture, requested_for: Any, code: str
) -> None:
    event = legacy_order(requested_for=requested_for(datetime.now(UTC)))
    assert problems(post_event(client, partner.slug, partner.secret, event)) == {"data.order.requested_for": code}


@pytest.mark.parametrize(
    "requested_for",
    [
        lambda now: (now + timedelta(days=29)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        lambda now: (now + timedelta(hours=3)).astimezone(datetime.now().astimezone().tzinfo).isoformat(),
        lambda now: int((now + timedelta(hours=1)).timestamp() * 1000),
    ],
)
def test_requested_for_accepts_iso_with_offset_and_epoch_ms(
    client: TestClient, partner: PartnerFixture, requested_for: Any
) -> None:
    event = legacy_order(requested_for=requested_for(datetime.now(UTC)))
    resp = post_event(client, partner.slug, partner.secret, event)
    assert resp.status_code == 200, resp.text
    assert resp.json()["order"]["status"] == "scheduled"


def test_unknown_location_and_several_locations_without_an_id_are_422(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    found = problems(post_event(client, partner.slug, partner.secret, legacy_order(location_id="nowhere")))
    assert found == {"data.order.location_id": "unknown_location"}

    event = current_order()
    del event["object"]["location_id"]  # one location: it is that one
    assert post_event(client, partner.slug, partner.secret, event).status_code == 200
    with db.write() as conn:
        tenancy.add_location(
            conn,
            partner_slug=partner.slug,
            external_id="second",
            name="Second",
            street="2 Main St",
            city="Anytown",
            state="CA",
            postal_code="12345",
            country="US",
            phone="+14155550100",
            timezone="America/Los_Angeles",
        )
    event = current_order()
    del event["object"]["location_id"]
    assert problems(post_event(client, partner.slug, partner.secret, event)) == {"object.location_id": "missing"}


def test_unpaid_delivery_needs_a_location_that_allows_it(client: TestClient, db: Database) -> None:
    strict = make_partner(db)
    lenient = make_partner(db, allow_unpaid_delivery=True)
    found = problems(post_event(client, strict.slug, strict.secret, legacy_order(unpaid=True)))
    assert found == {"data.order.unpaid": "unpaid_delivery_not_allowed"}

    pickup = legacy_order(unpaid=True, fulfillment_type="pickup")
    assert post_event(client, strict.slug, strict.secret, pickup).status_code == 200
    resp = post_event(client, lenient.slug, lenient.secret, legacy_order(unpaid=True))
    assert resp.status_code == 200, resp.text
    with db.read() as conn:
        unpaid = conn.execute(sa.select(orders.c.unpaid).where(orders.c.id == resp.json()["order"]["id"])).scalar()
    assert unpaid is True


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ([], {"": "invalid_envelope"}),
        ("order.created", {"": "invalid_envelope"}),
        ({"hello": "world"}, {"": "invalid_envelope"}),
        ({"type": "order.exploded", "object": {}}, {"type": "unknown_event"}),
        ({"event": "order.created"}, {"data": "missing"}),
        ({"event": "order.created", "data": {"order": []}}, {"data.order": "dict_type"}),
        ({"type": "order.created", "object": None}, {"object": "missing"}),
        (
            {"type": "order.status.updated", "object": {"source_order_id": "x", "status": "eaten"}},
            {"object.status": "unknown_status"},
        ),
        (
            {
                "type": "order.canceled",
                "object": {"source_order_id": "x", "cancel_reason": "bored", "cancel_source": "ghost"},
            },
            {"object.cancel_reason": "unknown_cancel_reason", "object.cancel_source": "unknown_cancel_source"},
        ),
        (
            {"type": "location.status.updated", "object": {"location_id": "location_456", "status": "asleep"}},
            {"object.status": "unknown_location_status"},
        ),
        (
            {"type": "location.status.updated", "object": {"location_id": "elsewhere", "status": "active"}},
            {"object.location_id": "unknown_location"},
        ),
        (
            {"type": "order.created", "object": {"source_order_id": "a\u0000b"}},
            {"object.source_order_id": "invalid_character"},
        ),
        (
            {"type": "order.created", "object": {"source_order_id": "\ud800"}},
            {"object.source_order_id": "invalid_character"},
        ),
    ],
)
def test_envelope_and_event_problems_are_422(
    client: TestClient, partner: PartnerFixture, event: Any, expected: dict[str, str]
) -> None:
    body = json.dumps(event).encode()
    assert problems(post_event(client, partner.slug, partner.secret, body)) == expected


def test_line_items_and_modifiers_have_limits(client: TestClient, partner: PartnerFixture) -> None:
    event = current_order(line_items=[])
    assert problems(post_event(client, partner.slug, partner.secret, event)) == {"object.line_items": "too_short"}

    nested: dict[str, Any] = {"name": "leaf", "price_amount": 1}
    for level in range(7):
        nested = {"name": f"level {level}", "price_amount": 1, "modifiers": [nested]}
    event = current_order()
    event["object"]["line_items"][0]["modifiers"] = [nested]
    assert problems(post_event(client, partner.slug, partner.secret, event)) == {
        "object.line_items[0].modifiers": "too_deep"
    }

    event = current_order(source_order_id="x" * 129)
    assert problems(post_event(client, partner.slug, partner.secret, event)) == {
        "object.source_order_id": "string_too_long"
    }


# --- never a 500 -----------------------------------------------------------------------------------

MALFORMED: list[bytes] = [
    b"null",
    b"0",
    b'"string"',
    b"[1, 2, 3]",
    b"{}",
    b'{"type": null, "object": null}',
    b'{"type": 5, "object": "x"}',
    b'{"event": ["order.created"], "data": {"order": {}}}',
    b'{"event": "order.created", "data": "x"}',
    b'{"event": "order.created", "data": {"order": {"provider_id": {}, "line_items": {}}}}',
    b'{"type": "order.created", "object": {"line_items": [null, 1, "x", []], "customers": "x"}}',
    b'{"type": "order.created", "object": {"source_order_id": "a", "fulfillment_type": "delivery", "line_items": '
    b'[{"name": "a", "quantity": 1e400, "price_amount": NaN}], "currency": "usd"}}',
    b'{"type": "order.created", "object": {"placed_at": -1, "requested_for": 99999999999999999999999, '
    b'"delivery_address": {"zip": 12345}, "customer": [], "subtotal": 1.5}}',
    b'{"type": "order.created", "object": {"requested_for": "9999-12-31T23:59:59+14:00", '
    b'"placed_at": "0001-01-01T00:00:00-12:00"}}',
    b'{"type": "order.status.updated", "object": {"provider_id": 12, "status": ["ready"]}}',
    b'{"type": "order.canceled", "object": {"provider_id": "' + b"z" * 5000 + b'"}}',
    b'{"type": "location.status.updated", "object": {"location_id": null, "status": "active", "paused_until": "soon"}}',
    b'{"type": "order.created", "object": {"a": {"b": {"c": {"d": {"e": {"f": [[[[[[[[[[[]]]]]]]]]]]}}}}}}}',
    b'{"type": "order.created", "object": {"\\u0000": "\\ud83d"}}',
    b'{"type": "order.created", "object": {"source_order_id": "1", "line_items": [{"quantity": '
    + b"9" * 5000
    + b"}]}}",
    b"\xef\xbb\xbf{}",
    b"\xff\xfe{\x00}\x00",
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_bodies_get_an_error_never_a_500(client: TestClient, partner: PartnerFixture, body: bytes) -> None:
    resp = post_event(client, partner.slug, partner.secret, body)
    assert resp.status_code in (400, 404, 409, 422), resp.text
    error_of(resp, resp.status_code)


def test_settings_changed_while_cached_take_effect_at_once(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    assert post_event(client, partner.slug, partner.secret, legacy_order()).status_code == 200  # now cached
    with db.write() as conn:
        tenancy.update_partner(conn, slug=partner.slug, require_standard_webhooks=True)
    resp = post_event(client, partner.slug, partner.secret, legacy_order())
    assert error_of(resp, 401)["code"] == "standard_webhooks_required"
    assert post_event(client, partner.slug, partner.secret, legacy_order(), standard=True).status_code == 200

    with db.write() as conn:
        tenancy.update_partner(conn, slug=partner.slug, require_standard_webhooks=False, rate_limit_per_minute=1)
    assert post_event(client, partner.slug, partner.secret, legacy_order()).status_code == 200
    assert error_of(post_event(client, partner.slug, partner.secret, legacy_order()), 429)["code"] == "rate_limited"


def test_a_secret_rotated_out_while_cached_stops_at_once_and_nothing_is_stored(
    client: TestClient, db: Database, partner: PartnerFixture
) -> None:
    assert post_event(client, partner.slug, partner.secret, legacy_order()).status_code == 200  # now cached
    with db.write() as conn:
        newest = tenancy.rotate_secret(conn, slug=partner.slug, overlap=timedelta(0))["secret"]
    before = stored_events(db, partner)

    resp = post_event(client, partner.slug, partner.secret, legacy_order(), standard=True)

    assert error_of(resp, 401)["code"] == "invalid_signature"
    assert stored_events(db, partner) == before
    assert post_event(client, partner.slug, newest, legacy_order()).status_code == 200
