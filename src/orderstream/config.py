"""Typed settings read from ORDERSTREAM_* environment variables, built once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_database_url() -> str:
    """The embedded default: a SQLite file under ./data."""
    return f"sqlite:///{Path('data') / 'orderstream.db'}"


class Settings(BaseSettings):
    """Everything orderstream can be configured with; see the README for each variable."""

    model_config = SettingsConfigDict(env_prefix="ORDERSTREAM_", extra="ignore")

    environment: str = "local"
    database_url: str = Field(default_factory=default_database_url)
    public_base_url: str = "http://127.0.0.1:8000"
    log_level: str = "INFO"
    log_json: bool = True

    # POS webhook intake
    max_body_bytes: int = 256 * 1024
    webhook_tolerance_seconds: int = 300
    secret_overlap_hours: int = 24
    default_rate_limit_per_minute: int = 6000
    requested_for_max_days: int = 30

    # job runtime
    embedded_worker: bool = True
    worker_concurrency: int = 8
    job_lease_seconds: int = 60
    # the longest a worker sleeps without a wake-up signal; the only cross-process signal on SQLite
    worker_idle_poll_seconds: float = 1.0
    worker_shutdown_timeout_seconds: float = 30.0

    # outbound HTTP (one shared client)
    http_timeout_seconds: float = 15.0
    http_connect_timeout_seconds: float = 5.0

    # order API
    page_size_max: int = 200

    # outbound webhooks to the POS (see docs/webhooks-out.md)
    allow_private_webhook_targets: bool = False  # development and tests only: lets webhooks reach 127.0.0.1 etc.
    webhook_timeout_seconds: float = 10.0
    webhook_retry_scale: float = 1.0  # multiplies the retry schedule (tests shorten it; 1.0 in production)
    webhook_retry_jitter: float = 0.1  # up to 10 % added to each delay at random
    webhook_health_window_seconds: int = 3600
    webhook_health_min_attempts: int = 20  # fewer attempts in the window never trip an alert or a pause
    webhook_alert_failure_rate: float = 0.10
    webhook_pause_failure_rate: float = 0.50
    webhook_pause_seconds: int = 1800  # the circuit breaker's cool-down

    # operator actions (replay for any partner); unset means the admin API answers 401
    admin_token: SecretStr | None = None

    # encryption of stored secrets is out of scope here; the key only salts API-key hashes
    api_key_pepper: SecretStr = SecretStr("orderstream-local-pepper")

    # --- dashboard --- (see docs/dashboard.md)
    dashboard_session_hours: float = 12.0
    dashboard_signin_max_failures: int = 5  # per client IP and e-mail within the window, then 429
    dashboard_signin_window_seconds: int = 900
    dashboard_courier_late_minutes: int = 10  # no courier this close to the pickup time: the order is late
    dashboard_sse_poll_seconds: float = 1.0  # how often the board's event stream looks for changes
    dashboard_sse_max_seconds: float = 300.0  # a stream ends after this; the browser reconnects by itself

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite store."""
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit overrides (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
