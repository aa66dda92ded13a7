"""Which optional features this installation has: a section whose tables are missing says so instead of failing."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class Feature:
    """An optional feature: present when its module imports and its tables exist."""

    name: str
    module: str
    tables: tuple[str, ...]


DISPATCH = Feature("dispatch", "orderstream.deliveries.service", ("delivery_attempts",))
NOTIFICATIONS = Feature("notifications", "orderstream.notifications.service", ("notifications",))
OWN_DRIVERS = Feature(
    "own drivers", "orderstream.deliveries.providers.own_drivers.service", ("driver_deliveries", "delivery_attempts")
)
WEBHOOKS_OUT = Feature("outbound webhooks", "orderstream.webhooks_out", ("webhook_deliveries",))
POS_INTAKE = Feature("POS webhook intake", "orderstream.pos.views", ("inbound_events",))


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


# (database URL, feature) -> present; code and schema only change with a deploy, which restarts the process
_seen: dict[tuple[str, Feature], bool] = {}


def available(conn: Connection, feature: Feature) -> bool:
    """True when the feature's code is installed and its tables are in this database."""
    key = (conn.engine.url.render_as_string(hide_password=True), feature)
    if key not in _seen:
        present = _module_exists(feature.module)
        if present:
            inspector = sa.inspect(conn)
            present = all(inspector.has_table(t) for t in feature.tables)
        _seen[key] = present
    return _seen[key]


def missing_text(feature: Feature) -> str:
    """What a page says in place of a section whose feature is not installed."""
    return f"{feature.name} is not installed on this server yet ({feature.module} or its tables are missing)."
