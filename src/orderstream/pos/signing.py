"""Webhook authentication: Stream's hex HMAC header and the Standard Webhooks headers, in constant time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

HEX_HEADER = "stream-webhook-signature"
ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
STANDARD_HEADERS = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
MAX_WEBHOOK_ID = 255


class SignatureError(Exception):
    """The request is not authentic; the code says why (answered as a 401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Verified:
    """What authentication established: the Standard Webhooks message id, when one was sent."""

    webhook_id: str | None


def hex_signature(secret: str, body: bytes) -> str:
    """`Stream-Webhook-Signature`: lowercase hex HMAC-SHA256 of the raw body, keyed with the secret's UTF-8 bytes."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def standard_key(secret: str) -> bytes | None:
    """The Standard Webhooks key: the base64-decoded part after `whsec_` (None if it is not base64)."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return None


def standard_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """base64 HMAC-SHA256 over `id.timestamp.body` (without the `v1,` prefix)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _ascii(value: str) -> bytes:
    # header values arrive decoded as latin-1; compare bytes so that compare_digest never sees non-ASCII text
    return value.encode("latin-1", "replace")


def _verify_hex(given: str, body: bytes, secrets: Sequence[str]) -> bool:
    given_bytes = _ascii(given.strip())
    ok = False
    for secret in secrets:
        # no early exit: the time taken does not tell which secret matched
        ok |= hmac.compare_digest(_ascii(hex_signature(secret, body)), given_bytes)
    return ok


def _verify_standard(
    headers: Mapping[str, str], body: bytes, secrets: Sequence[str], *, now: int, tolerance: int
) -> str:
    msg_id, timestamp, signatures = (headers.get(h, "") for h in STANDARD_HEADERS)
    if not (msg_id and timestamp and signatures):
        raise SignatureError(
            "incomplete_standard_webhook_headers", "webhook-id, webhook-timestamp and webhook-signature go together"
        )
    if len(msg_id) > MAX_WEBHOOK_ID:
        raise SignatureError("invalid_webhook_id", f"webhook-id is longer than {MAX_WEBHOOK_ID} characters")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureError("invalid_webhook_timestamp", "webhook-timestamp must be integer seconds since the epoch")
    if abs(now - int(timestamp)) > tolerance:
        raise SignatureError(
            "webhook_timestamp_out_of_tolerance", f"webhook-timestamp is more than {tolerance} seconds from now"
        )
    given = [_ascii(part.removeprefix("v1,")) for part in signatures.split() if part.startswith("v1,")]
    ok = False
    for secret in secrets:
        key = standard_key(secret)
        if key is None:
            continue
        expected = _ascii(standard_signature(key, msg_id, timestamp, body))
        for candidate in given:
            ok |= hmac.compare_digest(expected, candidate)
    if not ok:
        raise SignatureError("invalid_signature", "webhook-signature does not match")
    return msg_id


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    require_standard: bool,
    now: int,
    tolerance: int,
) -> Verified:
    """Check every signature the request carries against every active secret; at least one must be there.

    The hex header, when present, must match. The Standard Webhooks headers, when present (or when the
    partner requires them), must all be there, be recent (both ways) and match.
    """
    hex_given = headers.get(HEX_HEADER)
    has_standard = any(headers.get(h) for h in STANDARD_HEADERS)
    if require_standard and not has_standard:
        raise SignatureError(
            "standard_webhooks_required", "this partner must send webhook-id, webhook-timestamp and webhook-signature"
        )
    if not hex_given and not has_standard:
        raise SignatureError("missing_signature", "send Stream-Webhook-Signature (or the Standard Webhooks headers)")
    if hex_given and not _verify_hex(hex_given, body, secrets):
        raise SignatureError("invalid_signature", "Stream-Webhook-Signature does not match")
    webhook_id = _verify_standard(headers, body, secrets, now=now, tolerance=tolerance) if has_standard else None
    return Verified(webhook_id=webhook_id)
