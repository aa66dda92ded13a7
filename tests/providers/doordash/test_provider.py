"""DoorDashProvider over httpx.MockTransport: method, URL, JWT, typed errors, idempotent book, cancel outcomes."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from orderstream.deliveries.protocol import (
    DeliveryRef,
    DeliveryStatus,
    ProviderRejected,
    ProviderUnavailable,
    Quote,
)
from orderstream.deliveries.providers.doordash import DoorDashProvider, mapping
from orderstream.deliveries.providers.doordash.client import make_jwt
from tests.providers.doordash.helpers import SECRET, decode_jwt, fixture, fixture_bytes, make_request, settings

NOW = datetime(2026, 12, 1, 17, 41, 0, tzinfo=UTC)
EXT = "os-ord_01jd8x3k9m2q7r5t6v8w0y1z2a-1"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that answers from a script and keeps every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [(request.method, request.url.path) for request in self.requests]

    def body(self, index: int) -> Any:
        return json.loads(self.requests[index].content)


def provider(recorder: Recorder, **overrides: Any) -> DoorDashProvider:
    return DoorDashProvider(
        settings(**overrides), transport=httpx.MockTransport(recorder), clock=lambda: NOW.timestamp()
    )


def ok(name: str) -> httpx.Response:
    return httpx.Response(200, content=fixture_bytes(name), headers={"Content-Type": "application/json"})


def err(status: int, name: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=fixture_bytes(name) if name else b"", headers=headers)


def delivery_json(status: str, **extra: Any) -> httpx.Response:
    data = {**fixture("response_delivery_confirmed.json"), "delivery_status": status, **extra}
    return httpx.Response(200, json=data)


def a_quote(expires_at: datetime | None = None) -> Quote:
    quote = mapping.quote(fixture("response_quote.json"), received_at=NOW, validity_seconds=300)
    return replace(quote, expires_at=expires_at) if expires_at else quote


# -- auth --------------------------------------------------------------------------------------------


def test_every_call_carries_a_drive_jwt_signed_with_the_decoded_secret() -> None:
    recorder = Recorder(ok("response_quote.json"))
    provider(recorder).quote(make_request())
    request = recorder.requests[0]
    scheme, token = request.headers["Authorization"].split(" ", 1)
    assert scheme == "Bearer"
    header, claims = decode_jwt(token)
    assert header == {"alg": "HS256", "typ": "JWT", "dd-ver": "DD-JWT-V1"}
    assert claims == {
        "aud": "doordash",
        "iss": "dev-7f3c",
        "kid": "key-19ab",
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 300,
    }


def test_jwt_does_not_verify_with_the_undecoded_secret() -> None:
    token = make_jwt(settings(), now=NOW.timestamp())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET.encode(), algorithms=["HS256"], audience="doordash", options={"verify_exp": False})


def test_jwt_lifetime_is_configurable_and_short() -> None:
    token = make_jwt(settings(jwt_ttl_seconds=60), now=1_000_000)
    _, claims = decode_jwt(token)
    assert claims["exp"] - claims["iat"] == 60
    with pytest.raises(ValueError):
        settings(jwt_ttl_seconds=3600)


# -- quote -------------------------------------------------------------------------------------------


def test_quote_posts_the_golden_body_and_parses_the_answer() -> None:
    recorder = Recorder(ok("response_quote.json"))
    quote = provider(recorder).quote(make_request())
    assert recorder.calls == [("POST", "/drive/v2/quotes")]
    assert str(recorder.requests[0].url) == "https://openapi.doordash.test/drive/v2/quotes"
    assert recorder.body(0) == fixture("request_asap.json")
    assert (quote.fee, quote.currency, quote.quote_id) == (975, "usd", EXT)
    assert quote.expires_at == NOW + timedelta(minutes=5)


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (err(400, "error_validation.json"), ProviderRejected, "validation_error"),
        (err(422, "error_unserviceable.json"), ProviderRejected, "address_not_serviceable"),
        (err(401, "error_authentication.json"), ProviderRejected, "authentication_error"),
        (err(429, "error_rate_limited.json", {"Retry-After": "3"}), ProviderUnavailable, "request_rate_limited"),
        (err(500), ProviderUnavailable, "http_500"),
        (err(503, "error_service_unavailable.json"), ProviderUnavailable, "service_unavailable"),
        (httpx.ReadTimeout("slow"), ProviderUnavailable, "timeout"),
        (httpx.ConnectTimeout("slow"), ProviderUnavailable, "timeout"),
        (httpx.ConnectError("refused"), ProviderUnavailable, "network_error"),
        (httpx.Response(200, content=b"not json"), ProviderUnavailable, "bad_response"),
    ],
)
def test_quote_failures_are_typed(answer: Any, kind: type, code: str) -> None:
    with pytest.raises(kind) as caught:
        provider(Recorder(answer)).quote(make_request())
    assert caught.value.code == code


def test_rate_limit_carries_retry_after() -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        provider(Recorder(err(429, "error_rate_limited.json", {"Retry-After": "3"}))).quote(make_request())
    assert caught.value.retry_after == 3.0
    assert caught.value.status == 429


# -- book --------------------------------------------------------------------------------------------


def test_retried_booking_whose_pickup_time_went_by_is_sent_asap() -> None:
    recorder = Recorder(delivery_json("created"), delivery_json("created"))
    scheduled = make_request(pickup_ready_at=NOW + timedelta(minutes=15))
    provider(recorder).book(scheduled)
    assert recorder.body(0)["pickup_time"] == "2026-12-01T17:56:00Z"
    provider(recorder).book(make_request(pickup_ready_at=NOW - timedelta(minutes=3)))
    assert "pickup_time" not in recorder.body(1)


def test_book_with_a_quote_accepts_it_with_the_tip() -> None:
    recorder = Recorder(delivery_json("created"))
    snapshot = provider(recorder).book(make_request(tip=650), a_quote())
    assert recorder.calls == [("POST", f"/drive/v2/quotes/{EXT}/accept")]
    assert recorder.body(0) == {"tip": 650}
    assert snapshot.status is DeliveryStatus.PENDING_DRIVER_CONFIRMATION


def test_book_without_a_quote_creates_the_delivery() -> None:
    recorder = Recorder(delivery_json("created"))
    provider(recorder).book(make_request())
    assert recorder.calls == [("POST", "/drive/v2/deliveries")]
    assert recorder.body(0) == fixture("request_asap.json")


def test_retried_create_after_a_lost_answer_returns_the_existing_delivery() -> None:
    recorder = Recorder(err(409, "error_duplicate.json"), delivery_json("confirmed"))
    snapshot = provider(recorder).book(make_request())
    assert recorder.calls == [("POST", "/drive/v2/deliveries"), ("GET", f"/drive/v2/deliveries/{EXT}")]
    assert snapshot.status is DeliveryStatus.ENROUTE_TO_PICKUP
    assert snapshot.external_id == EXT


def test_retried_accept_of_an_already_accepted_quote_returns_the_delivery() -> None:
    recorder = Recorder(err(409, "error_duplicate.json"), delivery_json("created"))
    snapshot = provider(recorder).book(make_request(), a_quote())
    assert [path for _, path in recorder.calls] == [f"/drive/v2/quotes/{EXT}/accept", f"/drive/v2/deliveries/{EXT}"]
    assert snapshot.status is DeliveryStatus.PENDING_DRIVER_CONFIRMATION


def test_409_with_only_a_quote_behind_it_stays_a_rejection() -> None:
    recorder = Recorder(err(409, "error_duplicate.json"), delivery_json("quote"))
    with pytest.raises(ProviderRejected) as caught:
        provider(recorder).book(make_request())
    assert caught.value.code == "duplicate_delivery_id"


def test_expired_quote_answer_is_final_when_nothing_was_booked() -> None:
    recorder = Recorder(err(400, "error_quote_expired.json"), err(404, "error_not_found.json"))
    with pytest.raises(ProviderRejected) as caught:
        provider(recorder).book(make_request(), a_quote())
    assert caught.value.code == "quote_expired"
    assert not caught.value.retryable


def test_locally_expired_quote_is_not_sent_but_an_earlier_booking_is_found() -> None:
    stale = a_quote(expires_at=NOW - timedelta(seconds=1))
    nothing = Recorder(err(404, "error_not_found.json"))
    with pytest.raises(ProviderRejected) as caught:
        provider(nothing).book(make_request(), stale)
    assert caught.value.code == "quote_expired"
    assert nothing.calls == [("GET", f"/drive/v2/deliveries/{EXT}")]
    # The crash case: the quote was accepted, the worker died, and the retry comes after expiry.
    booked = Recorder(delivery_json("confirmed"))
    assert provider(booked).book(make_request(), stale).status is DeliveryStatus.ENROUTE_TO_PICKUP


def test_quote_within_the_safety_margin_counts_as_expired() -> None:
    almost = a_quote(expires_at=NOW + timedelta(seconds=5))
    recorder = Recorder(err(404, "error_not_found.json"))
    with pytest.raises(ProviderRejected):
        provider(recorder).book(make_request(), almost)
    assert all(method == "GET" for method, _ in recorder.calls)


def test_quote_of_another_delivery_is_refused_without_a_call() -> None:
    recorder = Recorder()
    with pytest.raises(ProviderRejected) as caught:
        provider(recorder).book(make_request(external_id="os-other-1"), a_quote())
    assert caught.value.code == "mismatched_quote"
    assert recorder.calls == []


@pytest.mark.parametrize("answer", [err(503), err(429, headers={"Retry-After": "2"}), httpx.ReadTimeout("slow")])
def test_book_failures_that_may_have_landed_are_retryable_without_guessing(answer: Any) -> None:
    recorder = Recorder(answer)
    with pytest.raises(ProviderUnavailable):
        provider(recorder).book(make_request())
    assert len(recorder.calls) == 1  # no GET: the retry's 409 path finds the delivery if it landed


def test_book_validation_error_checks_for_an_earlier_booking_then_rejects() -> None:
    recorder = Recorder(err(400, "error_validation.json"), err(404, "error_not_found.json"))
    with pytest.raises(ProviderRejected) as caught:
        provider(recorder).book(make_request())
    assert caught.value.code == "validation_error"


def test_book_recovery_that_cannot_reach_doordash_is_retryable() -> None:
    recorder = Recorder(err(409, "error_duplicate.json"), err(502))
    with pytest.raises(ProviderUnavailable):
        provider(recorder).book(make_request())


# -- get, update, cancel -----------------------------------------------------------------------------


def test_get_reads_the_delivery() -> None:
    recorder = Recorder(ok("response_delivery_delivered.json"))
    snapshot = provider(recorder).get(DeliveryRef(external_id=EXT))
    assert recorder.calls == [("GET", f"/drive/v2/deliveries/{EXT}")]
    assert snapshot.status is DeliveryStatus.COMPLETED


def test_external_id_is_escaped_in_the_path() -> None:
    recorder = Recorder(ok("response_delivery_delivered.json"))
    provider(recorder).get(DeliveryRef(external_id="a/b c"))
    assert recorder.requests[0].url.raw_path == b"/drive/v2/deliveries/a%2Fb%20c"


def test_get_unknown_delivery_is_a_final_not_found() -> None:
    with pytest.raises(ProviderRejected) as caught:
        provider(Recorder(err(404, "error_not_found.json"))).get(DeliveryRef(external_id=EXT))
    assert caught.value.code == "not_found"


def test_update_patches_only_what_changes() -> None:
    recorder = Recorder(delivery_json("confirmed", tip=800))
    when = datetime(2026, 12, 1, 18, 20, tzinfo=UTC)
    snapshot = provider(recorder).update(DeliveryRef(external_id=EXT), tip=800, pickup_ready_at=when)
    assert recorder.calls == [("PATCH", f"/drive/v2/deliveries/{EXT}")]
    assert recorder.body(0) == {"tip": 800, "pickup_time": "2026-12-01T18:20:00Z"}
    assert snapshot.tip == 800


def test_update_with_nothing_to_change_just_reads() -> None:
    recorder = Recorder(delivery_json("confirmed"))
    provider(recorder).update(DeliveryRef(external_id=EXT))
    assert recorder.calls == [("GET", f"/drive/v2/deliveries/{EXT}")]


def test_cancel_before_assignment_is_free() -> None:
    recorder = Recorder(delivery_json("cancelled", cancellation_reason="cancelled_by_creator", fee=0))
    outcome = provider(recorder).cancel(DeliveryRef(external_id=EXT))
    assert recorder.calls == [("PUT", f"/drive/v2/deliveries/{EXT}/cancel")]
    assert (outcome.canceled, outcome.fee_charged, outcome.reason) == (True, 0, "cancelled_by_creator")


def test_cancel_after_assignment_records_the_fee() -> None:
    outcome = provider(Recorder(ok("response_delivery_cancelled_fee.json"))).cancel(DeliveryRef(external_id=EXT))
    assert (outcome.canceled, outcome.fee_charged) == (True, 975)


def test_cancel_refused_after_pickup_is_an_outcome() -> None:
    recorder = Recorder(err(409, "error_cannot_cancel.json"), delivery_json("picked_up"))
    outcome = provider(recorder).cancel(DeliveryRef(external_id=EXT))
    assert (outcome.canceled, outcome.reason, outcome.fee_charged) == (False, "noncancelable_delivery", None)


def test_retried_cancel_of_a_cancelled_delivery_reports_it_canceled() -> None:
    recorder = Recorder(
        err(409, "error_cannot_cancel.json"),
        delivery_json("cancelled", cancellation_reason="cancelled_by_creator", fee=0),
    )
    outcome = provider(recorder).cancel(DeliveryRef(external_id=EXT))
    assert (outcome.canceled, outcome.fee_charged) == (True, 0)


@pytest.mark.parametrize("answer", [err(500), httpx.ReadTimeout("slow")])
def test_cancel_that_did_not_get_an_answer_is_retryable(answer: Any) -> None:
    with pytest.raises(ProviderUnavailable):
        provider(Recorder(answer)).cancel(DeliveryRef(external_id=EXT))


def test_capabilities() -> None:
    caps = provider(Recorder()).capabilities()
    assert (caps.scheduling, caps.cash_collection, caps.tips, caps.proof_of_delivery) == (True, True, True, True)
    assert provider(Recorder(), cash_on_delivery=False).capabilities().cash_collection is False
