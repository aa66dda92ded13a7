"""Composition root shared by `serve` and `worker`: the job kinds and the services handlers use."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import httpx

from orderstream import __version__
from orderstream.config import Settings
from orderstream.jobs.registry import JobRegistry

log = logging.getLogger(__name__)

# Every feature with background work adds ONE line here: the module holding its
# `register_jobs(registry: JobRegistry) -> None` (by convention `orderstream.<feature>.jobs`).
JOB_MODULES: tuple[str, ...] = (
    "orderstream.deliveries.jobs",
    "orderstream.notifications.jobs",
    "orderstream.webhooks_out.jobs",
)


def build_registry(settings: Settings, *, modules: tuple[str, ...] = JOB_MODULES) -> JobRegistry:
    """Every job kind of every feature, registered through its `register_jobs`."""
    registry = JobRegistry()
    for name in modules:
        module = importlib.import_module(name)
        module.register_jobs(registry)
    log.debug("job kinds registered", extra={"kinds": registry.names(), "environment": settings.environment})
    return registry


def build_services(settings: Settings) -> dict[str, Any]:
    """Long-lived clients shared by request handlers and job handlers; close with close_services()."""
    http = httpx.Client(
        timeout=httpx.Timeout(settings.http_timeout_seconds, connect=settings.http_connect_timeout_seconds),
        follow_redirects=False,
        headers={"User-Agent": f"orderstream/{__version__}"},
    )
    return {"http": http}


def close_services(services: dict[str, Any]) -> None:
    """Close every service that holds connections."""
    for service in services.values():
        close = getattr(service, "close", None)
        if callable(close):
            close()
