"""Reads and actions of other features, behind one seam each: empty or refused while the feature is missing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from orderstream.dashboard import features


@dataclass(frozen=True)
class DeliveryInfo:
    """What the board needs from an order's current delivery attempt."""

    provider: str | None
    courier_assigned: bool
    pickup_eta: datetime | None
    dropoff_eta: datetime | None
    promised_at: datetime | None
    fee: int | None


class FeatureMissing(Exception):
    """An action needs a feature that is not installed here."""

    def __init__(self, feature: features.Feature) -> None:
        super().__init__(features.missing_text(feature))
        self.feature = feature


def delivery_info(conn: Connection, order_ids: list[str]) -> dict[str, DeliveryInfo]:
    """The current delivery of each order that has one (none while dispatch is missing)."""
    if not order_ids or not features.available(conn, features.DISPATCH):
        return {}
    return {}


def delivery_attempts(conn: Connection, order_id: str) -> list[dict[str, Any]] | None:
    """Every delivery attempt of an order, oldest first; None while dispatch is missing."""
    if not features.available(conn, features.DISPATCH):
        return None
    return []


def notifications(conn: Connection, order_id: str) -> list[dict[str, Any]] | None:
    """Every notification of an order with its outcome; None while notifications are missing."""
    if not features.available(conn, features.NOTIFICATIONS):
        return None
    return []


def providers(conn: Connection) -> list[str]:
    """Provider names the board can filter by (none while dispatch is missing)."""
    if not features.available(conn, features.DISPATCH):
        return []
    return []


def fee_by_provider(conn: Connection, order_ids: list[str]) -> list[tuple[str, float]] | None:
    """Average courier fee (major units) per provider over the orders' attempts; None while dispatch is missing."""
    if not features.available(conn, features.DISPATCH):
        return None
    return []


def redispatch_counts(conn: Connection, order_ids: list[str]) -> tuple[int, int] | None:
    """(orders with more than one attempt, orders with any attempt); None while dispatch is missing."""
    if not features.available(conn, features.DISPATCH):
        return None
    return (0, 0)
