"""Signing outbound webhooks: Stream's X-Stream-Signature and the Standard Webhooks v1 headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"


def new_endpoint_secret() -> str:
    """A Standard Webhooks secret: whsec_ + base64 of 32 random bytes (the spec asks for 24 to 64)."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a whsec_ secret: its base64-decoded bytes."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def stream_signature(secret: str, body: bytes) -> str:
    """`X-Stream-Signature`: lowercase hex HMAC-SHA256 of the body, keyed with the secret's UTF-8 text.

    The same convention as the inbound `Stream-Webhook-Signature` ("the webhook secret as the key").
    """
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def standard_signature(secret: str, *, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` entry: HMAC-SHA256 over `id.timestamp.body` with the decoded secret."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()


def signature_headers(secrets: Sequence[str], *, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every signature header of one attempt; `secrets` are the endpoint's active ones, newest first.

    `webhook-signature` carries one entry per active secret, so a receiver still on the old secret
    keeps verifying during a rotation; `X-Stream-Signature` (one value only) uses the newest.
    """
    if not secrets:
        raise ValueError("an endpoint needs at least one active secret to sign with")
    if "." in msg_id:
        raise ValueError("a webhook-id must not contain '.'")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(s, msg_id=msg_id, timestamp=timestamp, body=body) for s in secrets
        ),
        "X-Stream-Signature": stream_signature(secrets[0], body),
    }
