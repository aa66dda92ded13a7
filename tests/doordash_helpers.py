"""Test helpers for DoorDash end-to-end tests: the simulator as a process, and a webhook receiver."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.harness import READY_TIMEOUT, ManagedProcess, ProcessError, free_port, orderstream_command, wait_for


@dataclass
class Received:
    """One webhook as the receiver got it."""

    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """A tiny HTTP server recording every POST; `fail` decides which ones get a 500 instead of 200."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    fail: Callable[[dict[str, Any], int], bool] = lambda payload, seen: False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def for_delivery(self, external_id: str) -> list[Received]:
        with self.lock:
            return [item for item in self.received if item.json().get("external_delivery_id") == external_id]

    def events(self, external_id: str) -> list[str]:
        return [_event(item.json()) for item in self.for_delivery(external_id)]

    def wait_for(self, external_id: str, predicate: Callable[[list[str]], bool], timeout: float = 30.0) -> list[str]:
        """Poll until the events of a delivery satisfy the predicate (generous timeout for busy CI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            events = self.events(external_id)
            if predicate(events):
                return events
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for webhooks of {external_id}; got {self.events(external_id)}")


def _event(payload: dict[str, Any]) -> str:
    return str(payload.get("event_name") or payload.get("event_type"))


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """Serve a WebhookReceiver on a free 127.0.0.1 port for the duration of the block."""
    receiver = WebhookReceiver()
    attempts: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            try:
                payload = json.loads(body)
            except ValueError:
                payload = {}
            key = f"{payload.get('external_delivery_id')}:{_event(payload)}"
            with receiver.lock:
                attempts[key] = attempts.get(key, 0) + 1
                seen = attempts[key]
            if receiver.fail(payload, seen):
                self.send_response(500)
                self.end_headers()
                return
            with receiver.lock:
                receiver.received.append(Received(headers=dict(self.headers.items()), body=body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/providers/doordash/webhook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def doordash_simulator(
    *args: str, log_path: Path, webhook_url: str | None = None, step_seconds: float = 0.2
) -> Iterator[str]:
    """Run `orderstream simulate doordash` as a separate process on a free port; yields its base URL."""
    port = free_port()
    command = [*orderstream_command(), "simulate", "doordash", "--port", str(port), "--step-seconds", str(step_seconds)]
    if webhook_url:
        command += ["--webhook-url", webhook_url]
    command += list(args)
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORDERSTREAM_")}
    process = ManagedProcess("doordash-simulator", command, env=env, log_path=log_path)
    process.start()
    base_url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not process.running:
            raise ProcessError(f"the DoorDash simulator exited:\n{process.log_tail()}")
        try:
            return httpx.get(f"{base_url}/_sim/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=READY_TIMEOUT, message="DoorDash simulator ready")
        yield base_url
    finally:
        process.stop()
