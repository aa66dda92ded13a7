"""The e2e harness signs webhooks exactly as the Standard Webhooks reference library and the hex scheme expect."""

from __future__ import annotations

import hashlib
import hmac

from standardwebhooks.webhooks import Webhook

from tests.e2e import harness

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_hex_signature_is_hmac_sha256_keyed_with_the_secret_string() -> None:
    body = b'{"event":"order.created"}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert harness.sign_hex(SECRET, body) == expected
    assert harness.sign_hex(SECRET, body + b" ") != expected


def test_standard_webhook_headers_verify_with_the_reference_library() -> None:
    body = b'{"type":"order.created","object":{}}'
    headers = harness.signed_headers(SECRET, body, standard=True)
    payload = Webhook(SECRET).verify(body, headers)
    assert payload == {"type": "order.created", "object": {}}
    assert headers["Stream-Webhook-Signature"] == harness.sign_hex(SECRET, body)
