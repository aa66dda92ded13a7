"""Uber Direct credentials and endpoints (ORDERSTREAM_UBER_* variables); secrets stay SecretStr."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The simulator accepts these by default, so the sandbox works with no configuration at all.
SANDBOX_CUSTOMER_ID = "cus_orderstream_sandbox"
SANDBOX_CLIENT_ID = "orderstream-sandbox-client"
SANDBOX_CLIENT_SECRET = "orderstream-sandbox-secret"  # noqa: S105 - a documented sandbox value
SANDBOX_WEBHOOK_SIGNING_KEY = "orderstream-sandbox-uber-signing-key"


class UberSettings(BaseSettings):
    """How to reach Uber Direct (or its simulator) for one Uber Direct customer (organisation)."""

    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_UBER_", extra="ignore")

    base_url: str = "https://api.uber.com/v1"
    token_url: str = "https://auth.uber.com/oauth/v2/token"
    customer_id: str = SANDBOX_CUSTOMER_ID
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: SecretStr = SecretStr(SANDBOX_CLIENT_SECRET)
    webhook_signing_key: SecretStr = SecretStr(SANDBOX_WEBHOOK_SIGNING_KEY)
    scope: str = "eats.deliveries"
    timeout_seconds: float = 10.0
    # refresh the token this long before Uber says it expires (capped at a tenth of its lifetime)
    token_refresh_margin_seconds: float = 300.0
    # where book() looks for an existing delivery when Uber reports a used quote: pages of the list
    recovery_pages: int = 5

    @property
    def uses_sandbox_credentials(self) -> bool:
        """True while no real Uber credentials are configured (then only a simulator can answer)."""
        return self.client_id == SANDBOX_CLIENT_ID or self.client_secret.get_secret_value() == SANDBOX_CLIENT_SECRET

    @classmethod
    def for_simulator(cls, base_url: str, **overrides: object) -> UberSettings:
        """Settings that talk to a simulator at base_url (e.g. http://127.0.0.1:8123) with its default credentials."""
        root = base_url.rstrip("/")
        values: dict[str, object] = {"base_url": f"{root}/v1", "token_url": f"{root}/oauth/v2/token"}
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
