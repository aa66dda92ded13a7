"""A real dispatch stack for integration tests: the app served on a free port with its embedded worker,
and both provider simulators in process, sending their webhooks to the app over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from orderstream.app import create_app
from orderstream.config import Settings
from orderstream.db import Database, utcnow
from orderstream.deliveries import policy as rules
from orderstream.deliveries import service
from orderstream.deliveries.models import delivery_attempts
from orderstream.deliveries.providers.doordash import simulator as dd_sim
from orderstream.deliveries.providers.uber import simulator as uber_sim
from orderstream.notifications import tracking
from orderstream.orders.events import OrderCreated
from orderstream.orders.handlers import publish
from orderstream.orders.models import order_history, orders
from orderstream.tenancy import service as tenancy
from tests.e2e.harness import free_port
from tests.factories import PartnerFixture
from tests.jobs_helpers import wait_for
from tests.orders_api_helpers import seed_order

ADMIN_TOKEN = "admin-test-token"  # noqa: S105 - a test value


@dataclass
class Stack:
    """The app, its database and the two simulators."""

    db: Database
    settings: Settings
    base_url: str
    doordash: Any
    uber: Any

    def client(self) -> httpx.Client:
        """An HTTP client for the app."""
        return httpx.Client(base_url=self.base_url, timeout=30)

    def sim(self, provider: str) -> httpx.Client:
        """An HTTP client for a simulator's control endpoints."""
        base = self.doordash.base_url if provider == "doordash" else self.uber.base_url
        return httpx.Client(base_url=base, timeout=30)

    def set_policy(self, partner: PartnerFixture, **values: Any) -> None:
        """Store a policy for the partner's location."""
        values.setdefault("allowed_providers", ("doordash", "uber"))
        with self.db.write() as conn:
            location = tenancy.get_location(conn, partner_id=partner.partner_id, external_id=partner.location_id)
            assert location is not None
            service.set_policy(conn, location_id=int(location["id"]), policy=rules.Policy(**values))

    def create_order(self, partner: PartnerFixture, **overrides: Any) -> str:
        """Seed an order and publish OrderCreated, as the POS intake does."""
        order_id = seed_order(self.db, partner, **overrides)
        with self.db.write() as conn:
            row = conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().one()
            tracking.start(conn, order_id=order_id, at=utcnow())  # intake writes it with the order
            publish(
                conn,
                OrderCreated(
                    order_id=order_id,
                    partner_id=partner.partner_id,
                    location_id=int(row["location_id"]),
                    fulfillment_type=row["fulfillment_type"],
                    status=row["status"],
                    is_future_order=bool(row["is_future_order"]),
                    requested_for=row["requested_for"],
                    at=utcnow(),
                ),
            )
        return order_id

    def order(self, order_id: str) -> dict[str, Any]:
        """The order row."""
        with self.db.read() as conn:
            return dict(conn.execute(sa.select(orders).where(orders.c.id == order_id)).mappings().one())

    def attempts(self, order_id: str) -> list[dict[str, Any]]:
        """The order's attempts, oldest first."""
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(delivery_attempts)
                .where(delivery_attempts.c.order_id == order_id)
                .order_by(delivery_attempts.c.number)
            ).mappings()
            return [dict(r) for r in rows]

    def history(self, order_id: str) -> list[dict[str, Any]]:
        """The order's history."""
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(order_history).where(order_history.c.order_id == order_id).order_by(order_history.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def wait_status(self, order_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the order has this status."""
        return dict(
            wait_for(lambda: (o := self.order(order_id))["status"] == status and o, timeout=timeout)  # type: ignore[arg-type]
        )

    def wait_for_history(self, order_id: str, text: str, timeout: float = 30.0) -> None:
        """Wait until a history entry's reason contains text."""
        wait_for(lambda: any(text in (h["reason"] or "") for h in self.history(order_id)), timeout=timeout)

    def wait_attempts(self, order_id: str, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until predicate(attempts) is true."""
        return list(wait_for(lambda: (a := self.attempts(order_id)) and predicate(a) and a, timeout=timeout))

    def bookings(self, provider: str, external_id: str) -> int:
        """How many bookings the simulator counts for one external id."""
        with self.sim(provider) as sim:
            if provider == "doordash":
                return int(sim.get("/_sim/requests", params={"external_delivery_id": external_id}).json()["bookings"])
            rows = sim.get("/_sim/requests").json()["data"]
            return sum(1 for r in rows if r.get("external_id") == external_id and r.get("created"))


def stack_settings(db_url: str, port: int, **overrides: Any) -> Settings:
    """Settings of the app under test: embedded worker, no sandbox, fast timings."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "embedded_worker": True,
        "log_json": False,
        "public_base_url": f"http://127.0.0.1:{port}",
        "worker_idle_poll_seconds": 0.2,
        "worker_concurrency": 4,
        "job_lease_seconds": 10,
        "dispatch_sandbox": False,
        "dispatch_failure_grace_seconds": 0.0,
        "dispatch_acceptance_timeout_seconds": 60.0,
        "dispatch_quote_timeout_seconds": 5.0,
        "admin_token": ADMIN_TOKEN,
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def dispatch_stack(
    db_url: str, monkeypatch: pytest.MonkeyPatch, *, step_seconds: float = 0.4, **overrides: Any
) -> Iterator[Stack]:
    """Both simulators and the app on free ports; the providers configured through their environment variables."""
    port = free_port()
    hook = f"http://127.0.0.1:{port}/providers/{{}}/webhook"
    doordash = dd_sim.start_in_thread(
        dd_sim.SimulatorConfig(
            webhook_url=hook.format("doordash"), step_seconds=step_seconds, webhook_retry_seconds=0.2
        )
    )
    uber = uber_sim.start_in_thread(
        uber_sim.SimulatorConfig(
            webhook_url=hook.format("uber"), step_seconds=step_seconds, courier_updates=False, webhook_retry_seconds=0.2
        )
    )
    monkeypatch.setenv("ORDERSTREAM_DOORDASH_BASE_URL", doordash.base_url)
    monkeypatch.setenv("ORDERSTREAM_UBER_BASE_URL", f"{uber.base_url}/v1")
    monkeypatch.setenv("ORDERSTREAM_UBER_TOKEN_URL", f"{uber.base_url}/oauth/v2/token")
    settings = stack_settings(db_url, port, **overrides)
    db = Database.from_url(db_url, pool_size=10)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, db=db), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start in time"
        assert thread.is_alive(), "the app thread died"
        time.sleep(0.02)
    try:
        yield Stack(db=db, settings=settings, base_url=f"http://127.0.0.1:{port}", doordash=doordash, uber=uber)
    finally:
        server.should_exit = True
        thread.join(20)
        doordash.stop()
        uber.stop()
        db.dispose()


def admin(headers: dict[str, str] | None = None) -> dict[str, str]:
    """The operator's Authorization header."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}", **(headers or {})}


def future(minutes: float) -> datetime:
    """A moment minutes from now."""
    from datetime import timedelta

    return utcnow() + timedelta(minutes=minutes)
