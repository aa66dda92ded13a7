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
    log_json: bool = True  # false: text lines (`time LEVEL logger message key=value ...`)

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
    # done jobs are deleted this long after they finished (dead ones stay for operators); 0 keeps every job
    jobs_done_retention_hours: float = Field(default=168.0, ge=0)
    jobs_prune_interval_seconds: float = Field(default=3600.0, gt=0)  # each worker prunes this often

    # --- own-drivers: worker wake-up across processes on SQLite (see jobs/worker.py) ---
    # `orderstream worker` on SQLite checks every this many seconds whether another process committed
    # (PRAGMA data_version) and then looks for due jobs; 0 turns it off (the idle poll alone remains)
    worker_sqlite_watch_seconds: float = 0.02

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

    # --- notifications --- (see docs/notifications.md)
    notifications_enabled: bool = True
    notifications_sms_backend: str = "simulator"  # simulator (in process, the sandbox default) | twilio
    twilio_account_sid: str = "AC00000000000000000000000000000000"  # the simulator accepts any AC... SID
    twilio_auth_token: SecretStr = SecretStr("sim-auth-token")
    twilio_from_number: str | None = "+15005550006"
    twilio_messaging_service_sid: str | None = None  # MG...; used instead of the from-number when set
    twilio_base_url: str = "https://api.twilio.com"  # ignored by the in-process simulator
    notifications_email_backend: str = "log"  # log (a sink: logs and order history only) | smtp
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_security: str = "none"  # none | starttls | ssl
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = 15.0
    notifications_from_email: str = "orders@orderstream.local"
    notifications_default_locale: str = "en_US"
    notifications_cap_per_hour: int = 8  # messages per phone / e-mail per hour; more are skipped (rate_capped)
    notifications_reminder_minutes: int = 30  # a future order's reminder goes this long before requested_for
    notifications_eta_change_minutes: int = 15  # an ETA moved at least this far gets an update
    notifications_update_interval_minutes: int = 10  # at least this long between two updates of an order
    notifications_max_updates: int = 3  # updates per order and channel
    tracking_link_days: int = 7  # a tracking link expires this many days after the order ends

    # operator actions (replay for any partner); unset means the admin API answers 401
    admin_token: SecretStr | None = None

    # --- dispatch --- (see docs/dispatch.md)
    # providers still on their sandbox credentials and default URLs use simulators started in process
    dispatch_sandbox: bool = True
    dispatch_sandbox_step_seconds: float = 3.0  # the embedded simulators' lifecycle step
    dispatch_providers: str = "doordash,uber"  # allowed providers of a location without a policy, in order
    dispatch_strategy: str = "cheapest"  # cheapest | fastest | preferred, for locations without a policy
    dispatch_quote_timeout_seconds: float = 8.0  # all quotes are asked in parallel; late ones are left out
    dispatch_acceptance_timeout_seconds: float = 300.0  # no courier by then: cancel and fall back
    dispatch_redispatch_window_minutes: float = 30.0  # automatic re-dispatch only this long after the first booking
    dispatch_courier_travel_minutes: float = 15.0  # pickup to drop-off, for future orders
    dispatch_failure_grace_seconds: float = 60.0  # an operator may re-dispatch before the order is failed
    dispatch_reconcile_seconds: float = 60.0  # how often an active delivery is checked for silence
    dispatch_quiet_seconds: float = 120.0  # no webhook for this long: poll the provider

    # encryption of stored secrets is out of scope here; the key only salts API-key hashes
    api_key_pepper: SecretStr = SecretStr("orderstream-local-pepper")

    # --- observability (logs, metrics; see docs/operations.md) ---
    log_access: bool = True  # one "request" line per HTTP request (method, route, status, duration)
    worker_metrics_port: int = 0  # `orderstream worker` serves its own /metrics on this port when > 0
    worker_metrics_host: str = "127.0.0.1"

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
