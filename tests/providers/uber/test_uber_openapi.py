"""Every request the Uber Direct adapter sends validates against the official OpenAPI files (strictly)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from orderstream.deliveries.protocol import Address, Contact, DeliveryRef, Item, Quote
from orderstream.deliveries.providers.uber import UberDirectProvider
from orderstream.deliveries.providers.uber.client import UberClient
from orderstream.deliveries.providers.uber.openapi import load_spec, validate_request
from tests.providers.uber.uber_helpers import FIXED_NOW, fake_settings, fixture, make_request

REPO = Path(__file__).resolve().parents[3]


class CapturingUber:
    """A MockTransport handler that keeps every request and answers like Uber."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/oauth/v2/token"):
            return httpx.Response(
                200,
                json={"access_token": "tok", "token_type": "Bearer", "expires_in": 2592000, "scope": "eats.deliveries"},
            )
        if path.endswith("/delivery_quotes"):
            return httpx.Response(200, json=fixture("response_quote.json"))
        if path.endswith("/proof-of-delivery"):
            return httpx.Response(200, json={"document": "iVBORw0KGgo="})
        if path.endswith("/cancel"):
            return httpx.Response(200, json=fixture("response_delivery_canceled_no_courier.json"))
        if request.method == "GET" and path.endswith("/deliveries"):
            return httpx.Response(200, json={"data": [fixture("response_delivery_pending.json")], "total_count": -1})
        return httpx.Response(200, json=fixture("response_delivery_pending.json"))


def _exercise_every_operation(provider: UberDirectProvider) -> None:
    quote = Quote("uber", "os-1", "dqt_6gQ2dt31TjiOPfwux-NCXg", 600, "usd", None, None, None)
    variants = [
        make_request(),  # ASAP, full
        make_request(  # scheduled, minimal optional data, another country
            pickup_address=Address("10 Downing St", "London", "", "SW1A 2AA", "gb"),
            pickup_contact=Contact("Kitchen", "020 7946 0958"),
            dropoff_address=Address("221B Baker St", "London", "", "NW1 6XE", "GB"),
            dropoff_contact=Contact("S. Holmes", "+44 20 7946 0000"),
            items=(Item("Tea", 1, 0),),
            pickup_instructions=None,
            dropoff_instructions=None,
            tip=0,
            currency="gbp",
            pickup_ready_at=FIXED_NOW + timedelta(hours=3),
            external_store_id="store_london",
        ),
        make_request(dropoff_deadline=FIXED_NOW + timedelta(minutes=50), items=()),  # only a drop-off deadline
    ]
    for request in variants:
        provider.quote(request)
        provider.book(request, quote)
        provider.book(request)
    ref = DeliveryRef("os-1", "del_gDcyfRgyQcyN0obpqqS_1B")
    provider.get(ref)
    provider.get(DeliveryRef(fixture("response_delivery_pending.json")["external_id"]))  # list, then get
    provider.update(ref, tip=250)
    provider.update(ref, tip=0)
    provider.cancel(ref)
    provider.proof_of_delivery(ref)
    provider.proof_of_delivery(ref, waypoint="pickup", kind="signature")


def _captured() -> list[httpx.Request]:
    fake = CapturingUber()
    settings = fake_settings()
    client = UberClient(settings, http=httpx.Client(transport=httpx.MockTransport(fake)), now=lambda: FIXED_NOW)
    _exercise_every_operation(UberDirectProvider(settings, client=client, now=lambda: FIXED_NOW))
    return fake.requests


CAPTURED = _captured()


@pytest.mark.parametrize(
    "request_", CAPTURED, ids=[f"{i}-{r.method}-{r.url.path.rsplit('/', 1)[-1]}" for i, r in enumerate(CAPTURED)]
)
def test_request_validates_against_the_official_openapi(request_: httpx.Request) -> None:
    path = request_.url.path
    if path.endswith("/oauth/v2/token"):
        path = "/oauth/v2/token"  # the auth spec's path (its server is configurable)
    result = validate_request(
        request_.method,
        path,
        query=request_.url.query.decode(),
        headers=dict(request_.headers),
        body=request_.content,
        strict=True,
    )
    assert result.operation is not None
    assert result.errors == ()


def test_every_operation_of_the_spec_is_exercised() -> None:
    seen = set()
    for r in CAPTURED:
        path = "/oauth/v2/token" if r.url.path.endswith("/oauth/v2/token") else r.url.path
        result = validate_request(r.method, path, headers=dict(r.headers), body=r.content)
        assert result.operation is not None
        seen.add((result.operation.method, result.operation.template))
    spec_ops = {
        (method.upper(), template)
        for template, item in load_spec()["paths"].items()
        for method in item
        if method in {"get", "post"}
    }
    assert spec_ops | {("POST", "/oauth/v2/token")} == seen


@pytest.mark.parametrize(
    ("method", "path", "body", "problem"),
    [
        ("POST", "/v1/customers/cus_test/deliveries", {"pickup_name": "x"}, "is a required property"),
        (
            "POST",
            "/v1/customers/cus_test/delivery_quotes",
            {**fixture("request_quote_asap.json"), "pickup_phone_number": "212-555"},
            "does not match",
        ),
        (
            "POST",
            "/v1/customers/cus_test/delivery_quotes",
            {**fixture("request_quote_asap.json"), "pickup_phone": "+1"},
            "Additional properties",
        ),
        (
            "POST",
            "/v1/customers/cus_test/deliveries/del_1",
            {"tip": 500},
            "Additional properties",
        ),  # Uber's name is tip_by_customer
        (
            "POST",
            "/v1/customers/cus_test/deliveries/del_1/proof-of-delivery",
            {"waypoint": "door", "type": "picture"},
            "is not one of",
        ),
        ("PUT", "/v1/customers/cus_test/deliveries/del_1/cancel", None, "not an operation"),
        ("POST", "/v1/customers/cus_test/deliveries/del_1/cancell", None, "not an operation"),
    ],
)
def test_the_validator_catches_wrong_requests(method: str, path: str, body: object, problem: str) -> None:
    content = json.dumps(body).encode() if body is not None else b""
    headers = {"authorization": "Bearer tok", "content-type": "application/json"}
    result = validate_request(method, path, headers=headers, body=content, strict=True)
    assert not result.ok
    assert any(problem in e for e in result.errors), result.errors


def test_the_validator_requires_a_bearer_token() -> None:
    result = validate_request("GET", "/v1/customers/cus_test/deliveries/del_1", headers={})
    assert result.errors == ("missing OAuth 2.0 bearer token (Authorization: Bearer ...)",)


@pytest.mark.slow
def test_the_openapi_files_and_their_licence_are_installed_with_the_package(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(tmp_path),
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (wheel,) = out.glob("orderstream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    base = "orderstream/deliveries/providers/uber/openapi/"
    assert {base + "deliveries.openapi.yaml", base + "auth.openapi.yaml", base + "LICENSE"} <= names
