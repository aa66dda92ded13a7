"""Delivery providers by name: one factory per provider, built once per process; and the pool that asks for quotes.

A new provider adds ONE line to FACTORIES: `"name": factory`, where factory(settings, db) returns an
object implementing `orderstream.deliveries.protocol.DeliveryProvider` (db: the process's shared Database).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orderstream.config import Settings
from orderstream.db import Database
from orderstream.deliveries import sandbox
from orderstream.deliveries.protocol import DeliveryProvider

ProviderFactory = Callable[[Settings, Database], DeliveryProvider]


def _doordash(settings: Settings, _db: Database) -> DeliveryProvider:
    from orderstream.deliveries.providers.doordash.provider import DoorDashProvider

    return DoorDashProvider(sandbox.doordash_settings(settings))


def _uber(settings: Settings, _db: Database) -> DeliveryProvider:
    from orderstream.deliveries.providers.uber.provider import UberDirectProvider

    return UberDirectProvider(sandbox.uber_settings(settings))


def _own_drivers(_settings: Settings, db: Database) -> DeliveryProvider:
    from orderstream.deliveries.providers.own_drivers.provider import OwnDriversProvider
    from orderstream.deliveries.providers.own_drivers.settings import OwnDriversSettings

    return OwnDriversProvider(db, OwnDriversSettings())


FACTORIES: dict[str, ProviderFactory] = {
    "doordash": _doordash,
    "uber": _uber,
    "own_drivers": _own_drivers,
}

SERVICE_KEY = "providers"
_services_lock = threading.Lock()


class UnknownProvider(KeyError):
    """No provider of that name is registered."""


class ProviderRegistry:
    """Provider instances by name, built on first use, and one quote pool; closed with the process's services."""

    def __init__(self, settings: Settings, db: Database, factories: dict[str, ProviderFactory] | None = None) -> None:
        self.settings = settings
        self.db = db
        self.factories = dict(FACTORIES if factories is None else factories)
        self._built: dict[str, DeliveryProvider] = {}
        self._lock = threading.Lock()
        self._quote_pool: ThreadPoolExecutor | None = None

    def quote_pool(self) -> ThreadPoolExecutor:
        """The long-lived pool dispatch rounds ask their quotes in (every worker slot, every provider at once)."""
        with self._lock:
            if self._quote_pool is None:
                workers = max(1, self.settings.worker_concurrency) * max(1, len(self.factories))
                self._quote_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dispatch-quote")
            return self._quote_pool

    def names(self) -> list[str]:
        """Every registered provider name."""
        return sorted(self.factories)

    def get(self, name: str) -> DeliveryProvider:
        """The provider called name; raises UnknownProvider."""
        with self._lock:
            if name not in self._built:
                factory = self.factories.get(name)
                if factory is None:
                    raise UnknownProvider(name)
                self._built[name] = factory(self.settings, self.db)
            return self._built[name]

    def close(self) -> None:
        """Stop the quote pool and close every built provider that holds connections."""
        with self._lock:
            if self._quote_pool is not None:
                self._quote_pool.shutdown(wait=False, cancel_futures=True)
                self._quote_pool = None
            for provider in self._built.values():
                close = getattr(provider, "close", None)
                if callable(close):
                    close()
            self._built.clear()


def providers(services: dict[str, Any], settings: Settings, db: Database) -> ProviderRegistry:
    """The process's registry, kept in the shared services (closed by bootstrap.close_services)."""
    with _services_lock:
        registry = services.get(SERVICE_KEY)
        if not isinstance(registry, ProviderRegistry):
            registry = ProviderRegistry(settings, db)
            services[SERVICE_KEY] = registry
        return registry
