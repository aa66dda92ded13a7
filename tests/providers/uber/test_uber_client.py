"""Uber Direct client and provider over httpx.MockTransport: OAuth caching, URLs, headers, errors, idempotent book."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx
import pytest

from orderstream.deliveries.protocol import (
    DeliveryRef,
    DeliveryStatus,
    ProviderRejected,
    ProviderUnavailable,
    Quote,
)
from orderstream.deliveries.providers.uber import UberDirectProvider
from orderstream.deliveries.providers.uber.client import UberClient
from tests.providers.uber.uber_helpers import FIXED_NOW, fake_settings, fixture, make_request

API = "https://api.uber.test/v1/customers/cus_test"
TOKEN_URL = "https://auth.uber.test/oauth/v2/token"

Route = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeUber:
    """A MockTransport handler: a token endpoint plus per-(method, path) answers, recording every request."""

    routes: dict[tuple[str, str], list[httpx.Response] | Route] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    tokens_issued: int = 0
    expires_in: int = 2592000
    token_status: int = 200

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if str(request.url) == TOKEN_URL:
            if self.token_status != 200:
                return httpx.Response(self.token_status, json={"error": "invalid_client"})
            self.tokens_issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"tok-{self.tokens_issued}",
                    "token_type": "Bearer",
                    "expires_in": self.expires_in,
                    "scope": "eats.deliveries",
                },
            )
        key = (request.method, request.url.path)
        route = self.routes.get(key)
        if route is None:
            return httpx.Response(404, json={"code": "not_found", "message": f"no route {key}"})
        if callable(route):
            return route(request)
        return route.pop(0) if len(route) > 1 else route[0]

    def api_requests(self) -> list[httpx.Request]:
        """Requests to the delivery API (not the token endpoint)."""
        return [r for r in self.requests if str(r.url) != TOKEN_URL]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_provider(fake: FakeUber, clock: Clock | None = None) -> UberDirectProvider:
    settings = fake_settings()
    http = httpx.Client(transport=httpx.MockTransport(fake))
    client = UberClient(settings, http=http, monotonic=clock or Clock(), now=lambda: FIXED_NOW)
    return UberDirectProvider(settings, client=client, now=lambda: FIXED_NOW)


def ok(name: str) -> list[httpx.Response]:
    return [httpx.Response(200, json=fixture(name))]


def err(status: int, code: str, message: str = "x", **extra: object) -> httpx.Response:
    headers = extra.pop("headers", None)
    return httpx.Response(status, json={"code": code, "message": message, "kind": "error", **extra}, headers=headers)  # type: ignore[arg-type]


# --- OAuth ---------------------------------------------------------------------------------------


def test_token_is_fetched_once_and_cached_across_calls() -> None:
    fake = FakeUber(routes={("GET", "/v1/customers/cus_test/deliveries/del_1"): ok("response_delivery_pending.json")})
    provider = make_provider(fake)
    for _ in range(3):
        provider.get(DeliveryRef("os-1", "del_1"))
    assert fake.tokens_issued == 1
    token_request = fake.requests[0]
    assert token_request.method == "POST"
    assert token_request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = {k: v[0] for k, v in parse_qs(token_request.content.decode()).items()}
    assert form == {
        "client_id": "client-id",
        "client_secret": "client-secret",
        "grant_type": "client_credentials",
        "scope": "eats.deliveries",
    }
    assert all(r.headers["authorization"] == "Bearer tok-1" for r in fake.api_requests())


def test_token_is_refreshed_before_it_expires() -> None:
    fake = FakeUber(
        expires_in=3600,
        routes={("GET", "/v1/customers/cus_test/deliveries/del_1"): ok("response_delivery_pending.json")},
    )
    clock = Clock()
    provider = make_provider(fake, clock)
    provider.get(DeliveryRef("os-1", "del_1"))
    clock.t += 3200  # refresh margin = min(300 s, 10% of 3600 s): refresh due at 3300 s, not yet
    provider.get(DeliveryRef("os-1", "del_1"))
    assert fake.tokens_issued == 1
    clock.t += 150  # 3350 s: within 300 s of expiry, so refresh
    provider.get(DeliveryRef("os-1", "del_1"))
    assert fake.tokens_issued == 2
    assert fake.api_requests()[-1].headers["authorization"] == "Bearer tok-2"


def test_a_401_renews_the_token_and_retries_once() -> None:
    answers = [
        err(401, "unauthorized", "Invalid OAuth 2.0 credentials provided."),
        httpx.Response(200, json=fixture("response_delivery_pending.json")),
    ]
    fake = FakeUber(routes={("GET", "/v1/customers/cus_test/deliveries/del_1"): answers})
    snap = make_provider(fake).get(DeliveryRef("os-1", "del_1"))
    assert snap.status is DeliveryStatus.PENDING
    assert fake.tokens_issued == 2
    assert [r.headers["authorization"] for r in fake.api_requests()] == ["Bearer tok-1", "Bearer tok-2"]


def test_a_second_401_is_final() -> None:
    fake = FakeUber(routes={("GET", "/v1/customers/cus_test/deliveries/del_1"): [err(401, "unauthorized")]})
    with pytest.raises(ProviderRejected) as info:
        make_provider(fake).get(DeliveryRef("os-1", "del_1"))
    assert info.value.code == "unauthorized"
    assert fake.tokens_issued == 2
    assert len(fake.api_requests()) == 2  # one retry, not a loop


def test_bad_client_credentials_are_final() -> None:
    fake = FakeUber(token_status=401)
    with pytest.raises(ProviderRejected) as info:
        make_provider(fake).get(DeliveryRef("os-1", "del_1"))
    assert info.value.code == "invalid_client"


# --- methods, URLs, bodies -------------------------------------------------------------------------


def test_quote_posts_to_delivery_quotes() -> None:
    fake = FakeUber(routes={("POST", "/v1/customers/cus_test/delivery_quotes"): ok("response_quote.json")})
    quote = make_provider(fake).quote(make_request())
    (sent,) = fake.api_requests()
    assert (sent.method, str(sent.url)) == ("POST", f"{API}/delivery_quotes")
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == fixture("request_quote_asap.json")
    assert (quote.quote_id, quote.fee) == ("dqt_6gQ2dt31TjiOPfwux-NCXg", 600)


def test_book_with_quote_posts_deliveries_with_quote_id() -> None:
    fake = FakeUber(routes={("POST", "/v1/customers/cus_test/deliveries"): ok("response_delivery_pending.json")})
    provider = make_provider(fake)
    quote = Quote("uber", "os-1", "dqt_6gQ2dt31TjiOPfwux-NCXg", 600, "usd", None, None, None)
    snap = provider.book(make_request(), quote)
    (sent,) = fake.api_requests()
    assert (sent.method, str(sent.url)) == ("POST", f"{API}/deliveries")
    assert json.loads(sent.content) == fixture("request_delivery_asap.json")
    assert snap.provider_delivery_id == "del_gDcyfRgyQcyN0obpqqS_1B"


def test_a_quote_from_another_provider_is_not_sent() -> None:
    fake = FakeUber(routes={("POST", "/v1/customers/cus_test/deliveries"): ok("response_delivery_pending.json")})
    make_provider(fake).book(make_request(), Quote("doordash", "os-1", "os-1", 600, "usd", None, None, None))
    assert "quote_id" not in json.loads(fake.api_requests()[0].content)


def test_get_update_cancel_and_proof_urls() -> None:
    fake = FakeUber(
        routes={
            ("GET", "/v1/customers/cus_test/deliveries/del_1"): ok("response_delivery_pending.json"),
            ("POST", "/v1/customers/cus_test/deliveries/del_1"): ok("response_delivery_pending.json"),
            ("POST", "/v1/customers/cus_test/deliveries/del_1/cancel"): ok("response_delivery_canceled_with_fee.json"),
            ("POST", "/v1/customers/cus_test/deliveries/del_1/proof-of-delivery"): [
                httpx.Response(200, json={"document": "iVBORw0KGgo="})
            ],
        }
    )
    provider = make_provider(fake)
    ref = DeliveryRef("os-1", "del_1")
    provider.get(ref)
    provider.update(ref, tip=500)
    outcome = provider.cancel(ref)
    document = provider.proof_of_delivery(ref)
    sent = [(r.method, str(r.url), r.content) for r in fake.api_requests()]
    assert sent == [
        ("GET", f"{API}/deliveries/del_1", b""),
        ("POST", f"{API}/deliveries/del_1", b'{"tip_by_customer":500}'),
        ("POST", f"{API}/deliveries/del_1/cancel", b""),
        ("POST", f"{API}/deliveries/del_1/proof-of-delivery", b'{"waypoint":"dropoff","type":"picture"}'),
    ]
    assert outcome.canceled is True
    assert outcome.fee_charged == 700
    assert document == "iVBORw0KGgo="


def test_update_of_times_is_not_supported_by_uber() -> None:
    fake = FakeUber()
    with pytest.raises(ProviderRejected) as info:
        make_provider(fake).update(DeliveryRef("os-1", "del_1"), pickup_ready_at=FIXED_NOW)
    assert info.value.code == "not_supported"
    assert fake.requests == []


# --- errors ----------------------------------------------------------------------------------------


def test_cancel_refused_after_pickup_is_an_outcome() -> None:
    fake = FakeUber(
        routes={
            ("POST", "/v1/customers/cus_test/deliveries/del_1/cancel"): [
                err(400, "noncancelable_delivery", "Delivery cannot be cancelled")
            ]
        }
    )
    outcome = make_provider(fake).cancel(DeliveryRef("os-1", "del_1"))
    assert outcome.canceled is False
    assert outcome.reason == "noncancelable_delivery"


def test_free_cancel_has_no_fee() -> None:
    fake = FakeUber(
        routes={
            ("POST", "/v1/customers/cus_test/deliveries/del_1/cancel"): ok("response_delivery_canceled_no_courier.json")
        }
    )
    outcome = make_provider(fake).cancel(DeliveryRef("os-1", "del_1"))
    assert (outcome.canceled, outcome.fee_charged) == (True, None)


@pytest.mark.parametrize(
    ("answer", "cls", "code", "retry_after"),
    [
        (err(500, "internal_server_error"), ProviderUnavailable, "internal_server_error", None),
        (err(503, "couriers_busy", headers={"Retry-After": "30"}), ProviderUnavailable, "couriers_busy", 30.0),
        (err(429, "customer_limited", headers={"Retry-After": "5"}), ProviderUnavailable, "customer_limited", 5.0),
        (err(408, "request_timeout"), ProviderUnavailable, "request_timeout", None),
        (err(400, "address_undeliverable"), ProviderRejected, "address_undeliverable", None),
        (err(400, "expired_quote"), ProviderRejected, "expired_quote", None),
        (err(400, "mismatched_price_quote"), ProviderRejected, "mismatched_price_quote", None),
        (err(400, "pickup_window_too_small"), ProviderRejected, "pickup_window_too_small", None),
        (err(402, "customer_suspended"), ProviderRejected, "customer_suspended", None),
    ],
)
def test_error_answers_become_typed_errors(
    answer: httpx.Response, cls: type[Exception], code: str, retry_after: float | None
) -> None:
    fake = FakeUber(routes={("POST", "/v1/customers/cus_test/deliveries"): [answer]})
    with pytest.raises(cls) as info:
        make_provider(fake).book(make_request())
    assert info.value.code == code  # type: ignore[attr-defined]
    assert info.value.retry_after == retry_after  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ConnectError("refused"), "network_error"),
        (httpx.ReadTimeout("slow"), "timeout"),
        (httpx.RemoteProtocolError("eof"), "network_error"),
    ],
)
def test_network_failures_are_retryable(exc: Exception, code: str) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise exc

    fake = FakeUber(routes={("POST", "/v1/customers/cus_test/delivery_quotes"): boom})
    with pytest.raises(ProviderUnavailable) as info:
        make_provider(fake).quote(make_request())
    assert info.value.code == code


def test_a_2xx_that_is_not_json_is_retryable() -> None:
    fake = FakeUber(
        routes={("GET", "/v1/customers/cus_test/deliveries/del_1"): [httpx.Response(200, content=b"<html>")]}
    )
    with pytest.raises(ProviderUnavailable):
        make_provider(fake).get(DeliveryRef("os-1", "del_1"))


# --- idempotent book -------------------------------------------------------------------------------


def test_duplicate_delivery_returns_the_existing_delivery() -> None:
    existing = fixture("response_delivery_pickup_imminent.json")
    fake = FakeUber(
        routes={
            ("POST", "/v1/customers/cus_test/deliveries"): [
                err(
                    409,
                    "duplicate_delivery",
                    "An active delivery like this already exists.",
                    metadata={"delivery_id": existing["id"]},
                )
            ],
            ("GET", f"/v1/customers/cus_test/deliveries/{existing['id']}"): [httpx.Response(200, json=existing)],
        }
    )
    snap = make_provider(fake).book(make_request())
    assert snap.provider_delivery_id == existing["id"]
    assert snap.status is DeliveryStatus.ARRIVED_AT_PICKUP
    assert [r.method for r in fake.api_requests()] == ["POST", "GET"]


def test_duplicate_of_someone_elses_delivery_is_not_adopted() -> None:
    other = {**fixture("response_delivery_pending.json"), "external_id": "someone-else"}
    fake = FakeUber(
        routes={
            ("POST", "/v1/customers/cus_test/deliveries"): [
                err(409, "duplicate_delivery", metadata={"delivery_id": other["id"]})
            ],
            ("GET", f"/v1/customers/cus_test/deliveries/{other['id']}"): [httpx.Response(200, json=other)],
        }
    )
    with pytest.raises(ProviderRejected) as info:
        make_provider(fake).book(make_request())
    assert info.value.code == "duplicate_delivery"


def test_used_quote_after_a_lost_answer_finds_our_delivery() -> None:
    ours = fixture("response_delivery_pending.json")
    listing = {"data": [{**ours, "id": "del_other", "external_id": "x"}, ours], "total_count": -1}
    fake = FakeUber(
        routes={
            ("POST", "/v1/customers/cus_test/deliveries"): [
                err(400, "used_quote", "The price quote specified has been used.")
            ],
            ("GET", "/v1/customers/cus_test/deliveries"): [httpx.Response(200, json=listing)],
        }
    )
    quote = Quote("uber", "os-1", "dqt_6gQ2dt31TjiOPfwux-NCXg", 600, "usd", None, None, None)
    snap = make_provider(fake).book(make_request(), quote)
    assert snap.provider_delivery_id == ours["id"]
    list_call = fake.api_requests()[-1]
    assert list_call.url.params["limit"] == "50"
    assert list_call.url.params["offset"] == "0"


def test_used_quote_without_our_delivery_is_final() -> None:
    fake = FakeUber(
        routes={
            ("POST", "/v1/customers/cus_test/deliveries"): [err(400, "used_quote")],
            ("GET", "/v1/customers/cus_test/deliveries"): [httpx.Response(200, json={"data": [], "total_count": -1})],
        }
    )
    with pytest.raises(ProviderRejected) as info:
        make_provider(fake).book(make_request(), Quote("uber", "os-1", "dqt_x", 600, "usd", None, None, None))
    assert info.value.code == "used_quote"


def test_a_retried_book_sends_the_same_idempotency_key() -> None:
    answers = [err(500, "internal_server_error"), httpx.Response(200, json=fixture("response_delivery_pending.json"))]
    fake = FakeUber(routes={("POST", "/v1/customers/cus_test/deliveries"): answers})
    provider = make_provider(fake)
    with pytest.raises(ProviderUnavailable):
        provider.book(make_request())
    provider.book(make_request())
    first, second = (json.loads(r.content) for r in fake.api_requests())
    assert first == second
    assert first["idempotency_key"] == make_request().external_id


def test_get_by_external_id_when_the_delivery_id_is_unknown() -> None:
    ours = fixture("response_delivery_pending.json")
    fake = FakeUber(
        routes={
            ("GET", "/v1/customers/cus_test/deliveries"): [httpx.Response(200, json={"data": [ours]})],
            ("GET", f"/v1/customers/cus_test/deliveries/{ours['id']}"): [httpx.Response(200, json=ours)],
        }
    )
    snap = make_provider(fake).get(DeliveryRef(ours["external_id"]))
    assert snap.provider_delivery_id == ours["id"]


def test_capabilities() -> None:
    caps = make_provider(FakeUber()).capabilities()
    assert (caps.scheduling, caps.cash_collection, caps.tips, caps.proof_of_delivery) == (True, False, True, True)
