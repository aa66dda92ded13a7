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

    # encryption of stored secrets is out of scope here; the key only salts API-key hashes
    api_key_pepper: SecretStr = SecretStr("orderstream-local-pepper")

    @property
    def is_sqlite(self) -> bool:
        """True when the database is the embedded SQLite store."""
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with explicit overrides (tests, CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
