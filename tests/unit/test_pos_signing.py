"""POS webhook authentication: hex HMAC and Standard Webhooks, checked against the reference library."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from orderstream.pos import signing
from orderstream.pos.signing import SignatureError, verify
from tests.e2e import harness

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"
BODY = b'{"event":"order.created","data":{"order":{}}}'
NOW = 1_764_201_600


def std_headers(secret: str, msg_id: str = "msg_1", ts: int = NOW, body: bytes = BODY) -> dict[str, str]:
    """Standard Webhooks headers made by the reference library."""
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def check(
    headers: dict[str, str], *, secrets: tuple[str, ...] = (SECRET,), require: bool = False, now: int = NOW
) -> str | None:
    return verify(headers, BODY, secrets, require_standard=require, now=now, tolerance=300).webhook_id


def code_of(headers: dict[str, str], **kwargs: object) -> str:
    with pytest.raises(SignatureError) as err:
        check(headers, **kwargs)  # type: ignore[arg-type]
    return err.value.code


def test_hex_signature_is_the_documented_hmac() -> None:
    assert signing.hex_signature(SECRET, BODY) == harness.sign_hex(SECRET, BODY)
    assert check({"stream-webhook-signature": harness.sign_hex(SECRET, BODY)}) is None


def test_any_active_secret_verifies() -> None:
    headers = {"stream-webhook-signature": harness.sign_hex(SECRET, BODY)}
    assert check(headers, secrets=(OTHER, SECRET)) is None
    assert code_of(headers, secrets=(OTHER,)) == "invalid_signature"
    assert code_of(headers, secrets=()) == "invalid_signature"


def test_hex_signature_must_be_exact() -> None:
    good = harness.sign_hex(SECRET, BODY)
    assert code_of({"stream-webhook-signature": good[:-1]}) == "invalid_signature"
    assert code_of({"stream-webhook-signature": "sha256=" + good}) == "invalid_signature"
    assert code_of({"stream-webhook-signature": harness.sign_hex(SECRET, BODY + b"\n")}) == "invalid_signature"
    assert check({"stream-webhook-signature": f" {good} "}) is None  # surrounding blanks are not part of it


def test_standard_webhooks_from_the_reference_library_verify_and_give_the_id() -> None:
    assert check(std_headers(SECRET, "msg_abc")) == "msg_abc"
    assert check(std_headers(OTHER), secrets=(SECRET, OTHER)) == "msg_1"


def test_harness_headers_verify_both_ways() -> None:
    raw = harness.signed_headers(SECRET, BODY, msg_id="msg_h", timestamp=NOW)
    headers = {k.lower(): v for k, v in raw.items()}
    assert check(headers) == "msg_h"


def test_one_of_several_signatures_may_match() -> None:
    headers = std_headers(SECRET)
    headers["webhook-signature"] = "v1,AAAA v2,zzz " + headers["webhook-signature"]
    assert check(headers) == "msg_1"
    headers["webhook-signature"] = "v1,AAAA"
    assert code_of(headers) == "invalid_signature"


@pytest.mark.parametrize(("skew", "ok"), [(0, True), (300, True), (-300, True), (301, False), (-301, False)])
def test_timestamp_tolerance_is_five_minutes_both_ways(skew: int, ok: bool) -> None:
    headers = std_headers(SECRET, ts=NOW + skew)
    if ok:
        assert check(headers) == "msg_1"
    else:
        assert code_of(headers) == "webhook_timestamp_out_of_tolerance"


@pytest.mark.parametrize("ts", ["abc", "-5", "1.5", "99999999999999", "١٢٣"])
def test_timestamp_must_be_integer_seconds(ts: str) -> None:
    headers = std_headers(SECRET)
    headers["webhook-timestamp"] = ts
    assert code_of(headers) == "invalid_webhook_timestamp"


def test_standard_headers_go_together_and_the_id_is_bounded() -> None:
    headers = std_headers(SECRET)
    del headers["webhook-signature"]
    assert code_of(headers) == "incomplete_standard_webhook_headers"
    assert code_of(std_headers(SECRET, msg_id="m" * 256)) == "invalid_webhook_id"


def test_both_kinds_present_must_both_match() -> None:
    headers = std_headers(SECRET) | {"stream-webhook-signature": harness.sign_hex(SECRET, BODY)}
    assert check(headers) == "msg_1"
    assert code_of(headers | {"stream-webhook-signature": "0" * 64}) == "invalid_signature"
    assert code_of(headers | {"webhook-signature": "v1,AAAA"}) == "invalid_signature"


def test_missing_and_required() -> None:
    assert code_of({}) == "missing_signature"
    hex_only = {"stream-webhook-signature": harness.sign_hex(SECRET, BODY)}
    assert code_of(hex_only, require=True) == "standard_webhooks_required"
    assert check(std_headers(SECRET), require=True) == "msg_1"


def test_a_secret_that_is_not_base64_only_verifies_hex() -> None:
    odd = "whsec_not base64!"
    assert signing.standard_key(odd) is None
    assert check({"stream-webhook-signature": signing.hex_signature(odd, BODY)}, secrets=(odd,)) is None
    assert code_of(std_headers(SECRET), secrets=(odd,)) == "invalid_signature"
