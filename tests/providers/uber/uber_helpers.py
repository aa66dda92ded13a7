"""Shared helpers for the Uber Direct tests: requests, a webhook receiver and the simulator process."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from orderstream.deliveries.protocol import Address, Contact, DeliveryRequest, Item
from orderstream.deliveries.providers.uber import UberSettings
from tests.e2e.harness import READY_TIMEOUT, ManagedProcess, ProcessError, free_port, orderstream_command, wait_for

__all__ = ["free_port", "wait_for"]  # re-exported for the Uber tests

FIXTURES = Path(__file__).parent / "fixtures"
FIXED_NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SIGNING_KEY = "test-signing-key"


def fixture(name: str) -> Any:
    """A JSON fixture from tests/providers/uber/fixtures."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def make_request(**overrides: Any) -> DeliveryRequest:
    """A realistic delivery request; keyword overrides replace fields."""
    values: dict[str, Any] = {
        "external_id": "os-ord_01hx0000000000000000000000-1",
        "order_id": "ord_01hx0000000000000000000000",
        "pickup_address": Address(
            "100 Maiden Ln", "New York", "NY", "10038", "US", latitude=40.7066581, longitude=-74.0071868
        ),
        "pickup_contact": Contact("Front desk", "+12125550100", business_name="Luigi's Pizza"),
        "dropoff_address": Address("30 Lincoln Center Plaza", "New York", "NY", "10023", "US", unit="Apt 5"),
        "dropoff_contact": Contact("Gordon Shumway", "(212) 555-0199"),
        "order_value": 2750,
        "currency": "usd",
        "items": (Item("Margherita pizza", 2, 1100), Item("Tiramisu", 1, 550)),
        "pickup_instructions": "Ask for order 4521 at the counter",
        "dropoff_instructions": "Ring twice",
        "tip": 300,
    }
    values.update(overrides)
    return DeliveryRequest(**values)


def fake_settings(**overrides: Any) -> UberSettings:
    """Settings pointing at a fake host, with a known webhook signing key."""
    values: dict[str, Any] = {
        "base_url": "https://api.uber.test/v1",
        "token_url": "https://auth.uber.test/oauth/v2/token",
        "customer_id": "cus_test",
        "client_id": "client-id",
        "client_secret": "client-secret",
        "webhook_signing_key": SIGNING_KEY,
    }
    values.update(overrides)
    return UberSettings(**values)


@dataclass
class Received:
    """One webhook the receiver got."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def payload(self) -> dict[str, Any]:
        """The decoded JSON body."""
        return dict(json.loads(self.body))


@dataclass
class WebhookReceiver:
    """A tiny HTTP server standing in for orderstream's webhook endpoint."""

    server: ThreadingHTTPServer
    received: list[Received] = field(default_factory=list)
    fail_external: dict[str, int] = field(default_factory=dict)  # delivery external_id -> refuse that many posts
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """Where to send webhooks."""
        return f"http://127.0.0.1:{self.server.server_port}/providers/uber/webhook"

    def for_delivery(self, delivery_id: str, *, ok_only: bool = True) -> list[Received]:
        """What arrived for one delivery, in arrival order."""
        with self.lock:
            items = list(self.received)
        return [r for r in items if r.payload.get("delivery_id") == delivery_id and (r.status == 200 or not ok_only)]


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Run a WebhookReceiver on a free port for the duration of the block."""
    holder: dict[str, WebhookReceiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            receiver = holder["r"]
            status = 200
            with receiver.lock:
                try:
                    external_id = json.loads(body).get("data", {}).get("external_id", "")
                except (ValueError, AttributeError):
                    external_id = ""
                if receiver.fail_external.get(external_id, 0) > 0:
                    receiver.fail_external[external_id] -= 1
                    status = 500
                receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, status))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = WebhookReceiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["r"]
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SimulatorProcess:
    """`orderstream simulate uber` running as a separate process."""

    process: ManagedProcess
    port: int

    @property
    def base(self) -> str:
        """The simulator's root URL."""
        return f"http://127.0.0.1:{self.port}"

    def settings(self, **overrides: Any) -> UberSettings:
        """Adapter settings for this simulator (its default sandbox credentials)."""
        return UberSettings.for_simulator(self.base, **overrides)

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call a /_sim control endpoint."""
        response = httpx.request(method, self.base + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def create_requests(self) -> list[dict[str, Any]]:
        """Every create request the simulator received."""
        return list(self.control("GET", "/_sim/requests")["data"])


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/_sim/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def simulator_process(*args: str) -> Iterator[SimulatorProcess]:
    """Start `orderstream simulate uber` on a free port (logs in a temp dir); stop it afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSTREAM_")}
    with tempfile.TemporaryDirectory(prefix="uber-sim-") as logs:
        port = free_port()
        process = ManagedProcess(
            "uber-simulator",
            [*orderstream_command(), "simulate", "uber", "--port", str(port), *args],
            env=env,
            log_path=Path(logs) / "uber-simulator.log",
        )
        process.start()
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not _healthy(port):
                if not process.running or time.monotonic() > deadline:
                    raise ProcessError(f"the Uber simulator did not start:\n{process.log_tail()}")
                time.sleep(0.1)
            yield SimulatorProcess(process, port)
        finally:
            process.stop()
