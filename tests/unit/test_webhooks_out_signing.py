"""Signing vectors for outbound webhooks, checked against the Standard Webhooks example and the reference library."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from orderstream.webhooks_out.signing import (
    new_endpoint_secret,
    secret_key,
    signature_headers,
    standard_signature,
    stream_signature,
)

# The example of the Standard Webhooks / Svix documentation (computed independently with openssl).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'


def test_standard_signature_matches_the_spec_example() -> None:
    assert standard_signature(SECRET, msg_id=MSG_ID, timestamp=TIMESTAMP, body=BODY) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_standard_signature_matches_the_reference_library() -> None:
    secret = new_endpoint_secret()
    at = datetime.fromtimestamp(TIMESTAMP, UTC)
    ours = standard_signature(secret, msg_id=MSG_ID, timestamp=TIMESTAMP, body=BODY)
    assert ours == Webhook(secret).sign(MSG_ID, at, BODY.decode())


def test_stream_signature_is_hex_hmac_of_the_body_keyed_with_the_secret_text() -> None:
    # openssl dgst -sha256 -hmac "$SECRET" over the body
    assert stream_signature(SECRET, BODY) == "80ec8a89ce3cd22133a1066caecb4d04fea7467657c8514d717ec42c38a5c94c"


def test_new_secrets_are_32_random_bytes() -> None:
    first, second = new_endpoint_secret(), new_endpoint_secret()
    assert first.startswith("whsec_")
    assert len(secret_key(first)) == 32
    assert first != second


def test_headers_carry_one_signature_per_active_secret_and_verify_with_either() -> None:
    new, old = new_endpoint_secret(), new_endpoint_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = signature_headers([new, old], msg_id="evt_01abc", timestamp=now, body=BODY)
    assert headers["webhook-id"] == "evt_01abc"
    assert headers["webhook-timestamp"] == str(now)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert headers["X-Stream-Signature"] == stream_signature(new, BODY)
    assert Webhook(new).verify(BODY, headers) == {"test": 2432232314}
    assert Webhook(old).verify(BODY, headers) == {"test": 2432232314}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_endpoint_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(BODY + b" ", headers)


def test_a_stale_timestamp_does_not_verify() -> None:
    secret = new_endpoint_secret()
    headers = signature_headers([secret], msg_id="evt_1", timestamp=TIMESTAMP, body=BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


@pytest.mark.parametrize(("secrets", "msg_id"), [([], "evt_1"), ([SECRET], "evt.1")])
def test_refuses_to_sign_without_a_secret_or_with_a_dotted_id(secrets: list[str], msg_id: str) -> None:
    with pytest.raises(ValueError):
        signature_headers(secrets, msg_id=msg_id, timestamp=TIMESTAMP, body=BODY)
