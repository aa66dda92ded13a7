"""The sandbox default: both provider simulators served in this process, so `serve` works with no configuration."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from orderstream.config import Settings
from orderstream.deliveries.providers.doordash import simulator as doordash_sim
from orderstream.deliveries.providers.doordash.settings import DoorDashSettings
from orderstream.deliveries.providers.uber import simulator as uber_sim
from orderstream.deliveries.providers.uber.settings import UberSettings

log = logging.getLogger("orderstream.deliveries")

# extra fields worth showing in the plain sandbox log line (never a customer's phone, e-mail or address)
_SHOWN = (
    "order_id",
    "provider",
    "attempt",
    "from_status",
    "to_status",
    "fee",
    "quotes",
    "outcome",
    "reason",
    "base_url",
)

_lock = threading.Lock()
_running: dict[str, str] = {}  # provider -> base URL of its simulator in this process
_stoppers: list[object] = []


@dataclass(frozen=True)
class SandboxPlan:
    """Which providers run against an embedded simulator."""

    doordash: bool
    uber: bool


def plan(settings: Settings) -> SandboxPlan:
    """A provider uses the sandbox when enabled and it still has its sandbox credentials and default URL."""
    if not settings.dispatch_sandbox:
        return SandboxPlan(doordash=False, uber=False)
    dd = DoorDashSettings()
    uber = UberSettings()
    return SandboxPlan(
        doordash=dd.uses_sandbox_credentials and dd.base_url == DoorDashSettings.model_fields["base_url"].default,
        uber=uber.uses_sandbox_credentials and uber.base_url == UberSettings.model_fields["base_url"].default,
    )


class _SandboxFormatter(logging.Formatter):
    """`time level logger message key=value ...` with the dispatch fields of the record."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{key}={getattr(record, key)}" for key in _SHOWN if getattr(record, key, None) is not None]
        return " ".join([line, *fields])


def _show_progress() -> None:
    """When nothing configured logging, print dispatch progress to stderr so a sandbox user sees it."""
    if logging.getLogger().handlers or log.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(_SandboxFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def webhook_url(settings: Settings, provider: str) -> str:
    """Where a provider sends its webhooks to us."""
    return f"{settings.public_base_url.rstrip('/')}/providers/{provider}/webhook"


def simulator_url(settings: Settings, provider: str) -> str:
    """The base URL of this process's simulator for provider, started on first use on a free port."""
    with _lock:
        if provider in _running:
            return _running[provider]
        _show_progress()
        step = settings.dispatch_sandbox_step_seconds
        if provider == "doordash":
            running = doordash_sim.start_in_thread(
                doordash_sim.SimulatorConfig(webhook_url=webhook_url(settings, provider), step_seconds=step)
            )
            _stoppers.append(running)
            base = running.base_url
        elif provider == "uber":
            background = uber_sim.start_in_thread(
                uber_sim.SimulatorConfig(
                    webhook_url=webhook_url(settings, provider), step_seconds=step, courier_updates=False
                )
            )
            _stoppers.append(background)
            base = background.base_url
        else:
            raise KeyError(provider)
        _running[provider] = base
        log.info("sandbox simulator started", extra={"provider": provider, "base_url": base})
        return base


def doordash_settings(settings: Settings) -> DoorDashSettings:
    """DoorDash settings from the environment, or pointed at the embedded simulator in the sandbox."""
    if plan(settings).doordash:
        return DoorDashSettings.for_simulator(simulator_url(settings, "doordash"))
    return DoorDashSettings()


def uber_settings(settings: Settings) -> UberSettings:
    """Uber Direct settings from the environment, or pointed at the embedded simulator in the sandbox."""
    if plan(settings).uber:
        return UberSettings.for_simulator(simulator_url(settings, "uber"))
    return UberSettings()
