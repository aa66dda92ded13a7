"""Test helpers for notifications: a real SMTP sink (aiosmtpd), the Twilio simulator, events, and a job driver."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.jobs.models import jobs
from orderstream.jobs.registry import JobRegistry
from orderstream.notifications import tracking
from orderstream.notifications.channels.twilio import simulator as twilio_sim
from orderstream.notifications.jobs import register_jobs
from orderstream.notifications.models import notifications
from orderstream.orders import domain
from orderstream.orders.events import OrderCreated
from orderstream.orders.handlers import publish
from orderstream.orders.models import orders
from orderstream.orders.service import change_status, get_order_for_update
from tests.factories import PartnerFixture
from tests.webhooks_out_helpers import JobDriver, delivery_changed

COURIER = {
    "name": "Dana Driver",
    "phone": "+1555***0123",
    "vehicle_type": "car",
    "vehicle_make": "Toyota",
    "vehicle_model": "Prius",
    "vehicle_color": "blue",
}


def free_port() -> int:
    """A TCP port the OS just reported free."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- SMTP sink ------------------------------------------------------------------------------------


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) keeping every message; RCPT to bounce*@ is refused with 550."""

    messages: list[EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        if address.startswith("bounce"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(parsed)  # type: ignore[arg-type]
        return "250 Message accepted"

    def by_message_id(self) -> dict[str, int]:
        """How many copies of each Message-ID arrived."""
        counts: dict[str, int] = {}
        with self.lock:
            for msg in self.messages:
                counts[str(msg["Message-ID"])] = counts.get(str(msg["Message-ID"]), 0) + 1
        return counts


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    """An SMTP server on a free port for the duration of the block."""
    sink = SmtpSink()
    sink.port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# --- Twilio simulator -----------------------------------------------------------------------------


@contextmanager
def twilio(**config: Any) -> Iterator[twilio_sim.RunningSimulator]:
    """The Twilio simulator on a free port."""
    running = twilio_sim.start_in_thread(twilio_sim.SimulatorConfig(**config))
    try:
        yield running
    finally:
        running.stop()


def sim_messages(sim: twilio_sim.RunningSimulator | str) -> list[dict[str, Any]]:
    """Every message the simulator accepted."""
    base = sim if isinstance(sim, str) else sim.base_url
    return list(httpx.get(f"{base}/_sim/messages", timeout=10).json()["messages"])


def notif_settings(db_url: str, *, sms_url: str | None, smtp_port: int | None, **overrides: Any) -> Settings:
    """Settings pointing notifications at the given simulator and SMTP sink."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "embedded_worker": False,
        "log_json": False,
        "public_base_url": "http://127.0.0.1:9",  # nothing listens: status callbacks are not part of these tests
        "notifications_sms_backend": "twilio",
        "twilio_base_url": sms_url or "http://127.0.0.1:9",
        "notifications_email_backend": "smtp" if smtp_port else "log",
        "smtp_port": smtp_port or 25,
    }
    values.update(overrides)
    return Settings(**values)


# --- events -----------------------------------------------------------------------------------------


def order_created(db: Database, order_id: str) -> None:
    """Publish OrderCreated for a stored order, as intake does."""
    with db.write() as conn:
        row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().one()
        tracking.start(conn, order_id=order_id, at=utcnow())  # intake writes it with the order
        publish(
            conn,
            OrderCreated(
                order_id=order_id,
                partner_id=row["partner_id"],
                location_id=row["location_id"],
                fulfillment_type=row["fulfillment_type"],
                status=row["status"],
                is_future_order=row["is_future_order"],
                requested_for=row["requested_for"],
                at=utcnow(),
            ),
        )


def set_status(db: Database, order_id: str, target: str) -> None:
    """Move an order through orders.service.change_status (publishes OrderStatusChanged)."""
    with db.write() as conn:
        row = get_order_for_update(conn, order_id=order_id)
        assert row is not None
        change_status(conn, order=row, target=domain.OrderStatus(target), actor=domain.Actor.SYSTEM)


def delivery(
    db: Database,
    partner: PartnerFixture,
    order_id: str,
    to_status: str,
    *,
    courier: dict[str, Any] | None = COURIER,
    dropoff_eta: datetime | None = None,
    attempt_id: int = 1,
) -> None:
    """Publish DeliveryStatusChanged as dispatch does."""
    delivery_changed(
        db,
        partner,
        order_id,
        to_status,
        courier=courier,
        attempt_id=attempt_id,
        pickup_in=timedelta(minutes=5),
        dropoff_eta=dropoff_eta,
        tracking_url=None,
    )


def rows(db: Database, order_id: str) -> list[dict[str, Any]]:
    """The order's notifications, oldest first."""
    with db.read() as conn:
        found = conn.execute(
            sa.select(notifications)
            .where(notifications.c.order_id == order_id)
            .order_by(notifications.c.created_at, notifications.c.kind, notifications.c.channel)
        ).mappings()
        return [dict(r) for r in found]


def by_key(db: Database, order_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The order's notifications by (kind, channel) (the last of each)."""
    return {(r["kind"], r["channel"]): r for r in rows(db, order_id)}


# --- a job driver -----------------------------------------------------------------------------------


class Driver(JobDriver):
    """Runs due notification jobs of the given partners in this process, as a worker would."""

    def __init__(self, db: Database, settings: Settings, *partners: PartnerFixture) -> None:
        super().__init__(db, settings, *partners, services={})
        self.registry = JobRegistry()
        register_jobs(self.registry)

    def close(self) -> None:
        """Close the channels the jobs built."""
        for service in self.services.values():
            service.close()

    def _ours(self) -> Any:
        mine_orders = sa.select(orders.c.id).where(orders.c.partner_id.in_(self.partner_ids))
        mine = sa.select(notifications.c.id).where(notifications.c.partner_id.in_(self.partner_ids))
        return sa.or_(
            sa.and_(jobs.c.kind == "notifications.plan", jobs.c.payload["order_id"].as_string().in_(mine_orders)),
            sa.and_(jobs.c.kind == "notifications.send", jobs.c.payload["notification_id"].as_string().in_(mine)),
        )

    def make_due(self) -> None:
        """Every pending job of ours runs now (skips retry back-off and scheduled reminders)."""
        with self.db.write() as conn:
            conn.execute(sa.update(jobs).where(self._ours(), jobs.c.status == "pending").values(run_at=utcnow()))

    def drain(self, *, until: Callable[[], bool] | None = None, timeout: float = 30.0) -> None:
        """Run due jobs until none is due (jobs waiting for a later run_at stay pending)."""
        deadline = time.monotonic() + timeout
        while self.run_once():
            if time.monotonic() > deadline:
                raise AssertionError("notification jobs did not drain")

    def pending(self) -> list[dict[str, Any]]:
        """Our jobs not finished."""
        with self.db.read() as conn:
            found = conn.execute(sa.select(jobs).where(self._ours(), jobs.c.status.in_(("pending", "running"))))
            return [dict(r._mapping) for r in found]
