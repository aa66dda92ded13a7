"""Test helpers for outbound webhooks: a real receiving HTTP server, orders to change, and a job driver."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import sqlalchemy as sa

from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.jobs.models import jobs
from orderstream.jobs.registry import JobContext, JobRegistry, PermanentError, RetryableError
from orderstream.orders import domain
from orderstream.orders.events import DeliveryStatusChanged
from orderstream.orders.handlers import publish
from orderstream.orders.models import orders
from orderstream.orders.service import change_status, get_order_for_update
from orderstream.tenancy.models import locations
from orderstream.webhooks_out.jobs import register_jobs
from orderstream.webhooks_out.models import webhook_deliveries
from tests.factories import PartnerFixture, random_ref

# --- a receiving POS ------------------------------------------------------------------------------


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        """The body parsed."""
        return json.loads(self.body)


@dataclass
class Reply:
    """What the receiver answers: a status, headers, a body, after an optional delay."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok":true}'
    delay: float = 0.0


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a sender killed mid-request resets the connection; that is the point of some tests


class _IPv6Server(_QuietServer):
    address_family = socket.AF_INET6


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records every request and answers from a script."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", base: str | None = None) -> None:
        self.base = base or f"/{uuid.uuid4().hex}"  # this receiver's own paths; ports get reused between tests
        self.requests: list[Received] = []
        self.foreign: list[Received] = []
        self.torn = 0  # requests cut off before their body was complete
        self.script: list[Reply] = []  # consumed first, then `default`
        self.default = Reply()
        self.responder: Callable[[Received], Reply] | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # the sender died mid-request (kill -9): a real receiver never sees a torn body as a webhook
                    receiver.torn += 1
                    self.close_connection = True
                    return
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                reply = receiver._record(got)
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *_args: Any) -> None:
                return

        server_class = _IPv6Server if ":" in host else _QuietServer
        self.host = host
        self.server = server_class((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread: threading.Thread | None = None

    def _record(self, got: Received) -> Reply:
        with self._lock:
            if not got.path.startswith(self.base):
                # a stale delivery of another test that once used this port: keep it out, disable its endpoint
                self.foreign.append(got)
                return Reply(410)
            self.requests.append(got)
            if self.responder is not None:
                return self.responder(got)
            return self.script.pop(0) if self.script else self.default

    def url(self, path: str = "/hooks") -> str:
        """The URL of a path on this receiver (under its own random prefix)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.base}{path}"

    def start(self) -> Receiver:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[Any]:
        """Every body received, parsed, in arrival order."""
        with self._lock:
            return [r.json() for r in self.requests]


# --- orders -------------------------------------------------------------------------------------


def insert_order(
    db: Database, partner: PartnerFixture, *, fulfillment_type: str = "delivery", status: str = "received"
) -> str:
    """Store a bare order of the partner (no events) and return its id."""
    now = utcnow()
    order_id = random_ref("ord")
    with db.write() as conn:
        location_id = conn.execute(
            sa.select(locations.c.id)
            .where(locations.c.partner_id == partner.partner_id)
            .where(locations.c.external_id == partner.location_id)
        ).scalar_one()
        conn.execute(
            sa.insert(orders).values(
                id=order_id,
                partner_id=partner.partner_id,
                location_id=location_id,
                source_order_id=random_ref("pos-order"),
                content_hash=uuid.uuid4().hex,
                fulfillment_type=fulfillment_type,
                status=status,
                customer_name="Canary Customer",
                customer_phone="+14155550199",
                customer_email="canary@example.com",
                customers=[],
                currency="USD",
                amounts={},
                warnings=[],
                tracking_token=uuid.uuid4().hex,
                created_at=now,
                updated_at=now,
            )
        )
    return order_id


def pos_order_id(db: Database, order_id: str) -> str:
    """The POS's own id of an order."""
    with db.read() as conn:
        return str(conn.execute(sa.select(orders.c.source_order_id).where(orders.c.id == order_id)).scalar_one())


def set_status(db: Database, order_id: str, target: str, *, actor: str = "system", reason: str | None = None) -> None:
    """Move an order through orders.service.change_status (which publishes OrderStatusChanged)."""
    with db.write() as conn:
        row = get_order_for_update(conn, order_id=order_id)
        assert row is not None
        change_status(conn, order=row, target=domain.OrderStatus(target), actor=domain.Actor(actor), reason=reason)


COURIER = {
    "name": "Dana D.",
    "phone": "+15555550123",
    "phone_code": "4821",
    "vehicle_type": "car",
    "vehicle_make": "Toyota",
    "vehicle_model": "Prius",
    "vehicle_color": "blue",
    "license_plate": "7ABC123",
}


def delivery_changed(
    db: Database,
    partner: PartnerFixture,
    order_id: str,
    to_status: str,
    *,
    from_status: str | None = None,
    courier: dict[str, Any] | None = None,
    provider: str = "doordash",
    attempt_id: int = 1,
    pickup_in: timedelta = timedelta(minutes=10),
    dropoff_eta: datetime | None = None,
    tracking_url: str | None = "https://track.example.com/abc",
) -> None:
    """Publish DeliveryStatusChanged the way dispatch-core does: in a write transaction on the order."""
    now = utcnow()
    with db.write() as conn:
        get_order_for_update(conn, order_id=order_id)
        publish(
            conn,
            DeliveryStatusChanged(
                order_id=order_id,
                partner_id=partner.partner_id,
                attempt_id=attempt_id,
                provider=provider,
                from_status=from_status,
                to_status=to_status,
                courier=courier,
                pickup_eta=now + pickup_in,
                dropoff_eta=dropoff_eta or now + timedelta(minutes=30),
                tracking_url=tracking_url,
                at=now,
            ),
        )


# --- a job driver -------------------------------------------------------------------------------


def webhook_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings for webhook tests: private targets allowed, fast schedule, short timeout."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "embedded_worker": False,
        "log_json": False,
        "allow_private_webhook_targets": True,
        "webhook_retry_scale": 0.01,  # 5 s -> 0.05 s, 5 min -> 3 s
        "webhook_retry_jitter": 0.0,
        "webhook_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


class JobDriver:
    """Runs due webhook jobs in this process the way a worker would: claim, run, retry or finish.

    A stand-in for the job runtime while it is not on main; e2e tests with the real worker are separate.
    """

    def __init__(
        self, db: Database, settings: Settings, *partners: PartnerFixture, services: dict[str, Any] | None = None
    ) -> None:
        self.partner_ids = [p.partner_id for p in partners]  # the PostgreSQL test database is shared: stay in ours
        self.db = db
        self.settings = settings
        self.services = services or {}
        self.registry = JobRegistry()
        register_jobs(self.registry)
        self.runs = 0

    def _ours(self) -> Any:
        mine = sa.select(webhook_deliveries.c.id).where(webhook_deliveries.c.partner_id.in_(self.partner_ids))
        return sa.and_(jobs.c.kind.in_(self.registry.names()), jobs.c.payload["delivery_id"].as_string().in_(mine))

    def _claim(self) -> dict[str, Any] | None:
        now = utcnow()
        with self.db.write() as conn:
            stmt = (
                sa.select(jobs)
                .where(self._ours())
                .where(jobs.c.status == "pending")
                .where(jobs.c.run_at <= now)
                .order_by(jobs.c.run_at, jobs.c.id)
                .limit(1)
            )
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            row = conn.execute(stmt).mappings().first()
            if row is None:
                return None
            conn.execute(
                sa.update(jobs)
                .where(jobs.c.id == row["id"])
                .values(status="running", attempts=jobs.c.attempts + 1, updated_at=now)
            )
            return {**row, "attempts": row["attempts"] + 1}

    def run_once(self) -> bool:
        """Run one due job; False when none is due."""
        job = self._claim()
        if job is None:
            return False
        kind = self.registry.get(job["kind"])
        assert kind is not None
        ctx = JobContext(
            job_id=job["id"],
            kind=job["kind"],
            key=job["key"],
            payload=job["payload"],
            attempts=job["attempts"],
            db=self.db,
            settings=self.settings,
            services=self.services,
        )
        self.runs += 1
        now = utcnow()
        try:
            kind.handler(ctx)
        except RetryableError as exc:
            delay = kind.retry.next_delay(job["attempts"], retry_after=exc.retry_after)
            values: dict[str, Any] = (
                {"status": "dead", "last_error": str(exc)}
                if delay is None
                else {"status": "pending", "run_at": utcnow() + timedelta(seconds=delay), "last_error": str(exc)}
            )
        except PermanentError as exc:
            values = {"status": "dead", "last_error": str(exc)}
        else:
            values = {"status": "done", "finished_at": now}
        with self.db.write() as conn:
            conn.execute(sa.update(jobs).where(jobs.c.id == job["id"]).values(updated_at=utcnow(), **values))
        return True

    def drain(self, *, until: Callable[[], bool] | None = None, timeout: float = 30.0) -> None:
        """Run jobs until `until()` holds (or, without it, until no job is pending at all)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until is not None and until():
                return
            ran = self.run_once()
            if until is None and not ran and not self.pending_jobs():
                return
            if not ran:
                time.sleep(0.02)
        raise AssertionError(f"jobs not drained within {timeout}s")

    def pending_jobs(self) -> int:
        """Webhook jobs not finished yet."""
        with self.db.read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(self._ours()).where(jobs.c.status.in_(("pending", "running")))
                ).scalar_one()
            )
