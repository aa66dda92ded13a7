"""Uber Direct settings: environment variables, secrets kept secret, simulator shortcut."""

from __future__ import annotations

import pytest

from orderstream.deliveries.providers.uber import UberSettings


def test_defaults_are_the_real_endpoints_with_sandbox_credentials() -> None:
    settings = UberSettings()
    assert settings.base_url == "https://api.uber.com/v1"
    assert settings.token_url == "https://auth.uber.com/oauth/v2/token"
    assert settings.scope == "eats.deliveries"
    assert settings.uses_sandbox_credentials


def test_read_from_orderstream_uber_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSTREAM_UBER_CUSTOMER_ID", "cus_real")
    monkeypatch.setenv("ORDERSTREAM_UBER_CLIENT_ID", "real-client")
    monkeypatch.setenv("ORDERSTREAM_UBER_CLIENT_SECRET", "real-secret")
    monkeypatch.setenv("ORDERSTREAM_UBER_WEBHOOK_SIGNING_KEY", "real-signing-key")
    settings = UberSettings()
    assert (settings.customer_id, settings.client_id) == ("cus_real", "real-client")
    assert settings.client_secret.get_secret_value() == "real-secret"
    assert settings.webhook_signing_key.get_secret_value() == "real-signing-key"
    assert not settings.uses_sandbox_credentials
    assert "real-secret" not in repr(settings)
    assert "real-signing-key" not in repr(settings)


def test_for_simulator_points_both_urls_at_it() -> None:
    settings = UberSettings.for_simulator("http://127.0.0.1:8300/sim/uber/", timeout_seconds=2)
    assert settings.base_url == "http://127.0.0.1:8300/sim/uber/v1"
    assert settings.token_url == "http://127.0.0.1:8300/sim/uber/oauth/v2/token"
    assert settings.timeout_seconds == 2
