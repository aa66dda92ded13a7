"""X-Twilio-Signature: base64 HMAC-SHA1, keyed with the auth token, over the URL plus the sorted form fields."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping


def compute(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The signature Twilio sends with a webhook POSTed to url with these form fields."""
    data = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(auth_token: str, url: str, params: Mapping[str, str], signature: str | None) -> bool:
    """True when signature is the one Twilio would send for this request."""
    if not signature:
        return False
    return hmac.compare_digest(compute(auth_token, url, params), signature)
