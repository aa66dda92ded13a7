"""DoorDash Drive credentials and knobs, read from ORDERSTREAM_DOORDASH_* variables."""

from __future__ import annotations

import base64

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Credentials the bundled simulator accepts by default (`orderstream simulate doordash`), never real ones.
SANDBOX_DEVELOPER_ID = "sandbox-developer"
SANDBOX_KEY_ID = "sandbox-key"
SANDBOX_SIGNING_SECRET = base64.urlsafe_b64encode(b"orderstream-doordash-sandbox-signing-secret").decode().rstrip("=")
SANDBOX_WEBHOOK_AUTH = "Basic c2FuZGJveDpkb29yZGFzaC13ZWJob29r"  # sandbox:doordash-webhook


def decode_signing_secret(secret: str) -> bytes:
    """The HMAC key: DoorDash hands out the signing secret base64url-encoded (padding optional)."""
    text = secret.strip()
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class DoorDashSettings(BaseSettings):
    """How to reach DoorDash Drive v2 and how to recognise its webhooks."""

    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_DOORDASH_", extra="ignore")

    base_url: str = "https://openapi.doordash.com"
    developer_id: str = SANDBOX_DEVELOPER_ID
    key_id: str = SANDBOX_KEY_ID
    signing_secret: SecretStr = SecretStr(SANDBOX_SIGNING_SECRET)
    # The exact Authorization header value configured for our endpoint in the Developer Portal.
    webhook_authorization: SecretStr | None = SecretStr(SANDBOX_WEBHOOK_AUTH)
    jwt_ttl_seconds: int = Field(default=300, ge=10, le=1800)
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 10.0
    # DoorDash does not return an expiry; quotes are valid 5 minutes. Keep a margin for clock skew.
    quote_validity_seconds: int = 300
    quote_safety_margin_seconds: int = 15
    cash_on_delivery: bool = True
    send_customer_notifications: bool = False
    action_if_undeliverable: str = "return_to_pickup"
    locale: str | None = None

    @field_validator("signing_secret")
    @classmethod
    def _secret_is_base64url(cls, value: SecretStr) -> SecretStr:
        try:
            decode_signing_secret(value.get_secret_value())
        except ValueError as err:
            raise ValueError("signing_secret must be the base64url string shown in the Developer Portal") from err
        return value

    @property
    def uses_sandbox_credentials(self) -> bool:
        """True while the simulator's built-in credentials are in use (never valid at DoorDash)."""
        return self.developer_id == SANDBOX_DEVELOPER_ID and self.key_id == SANDBOX_KEY_ID

    @classmethod
    def for_simulator(cls, base_url: str, **overrides: object) -> DoorDashSettings:
        """Settings that talk to a local simulator with its default credentials."""
        return cls(base_url=base_url, **overrides)  # type: ignore[arg-type]
