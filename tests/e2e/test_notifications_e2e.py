"""Notifications end to end: `orderstream serve` (embedded worker), `orderstream simulate twilio`, a real SMTP
server (aiosmtpd) and the tracking page in headless Chromium (Playwright), which changes without a reload.

Orders are stored and their events published by the test, as intake and dispatch do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from orderstream.db import Database, utcnow
from tests.e2e import harness
from tests.e2e.conftest import Launcher
from tests.e2e.screenshots import update_docs_screenshot
from tests.factories import PartnerFixture, make_partner
from tests.notifications_helpers import SmtpSink, by_key, delivery, order_created, sim_messages, smtp_sink
from tests.orders_api_helpers import seed_order

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class SimProcess(harness.ManagedProcess):
    """`orderstream simulate twilio` on a free port."""

    def __init__(self, log_dir: Path, *extra: str) -> None:
        self.port = harness.free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        args = [*harness.orderstream_command(), "simulate", "twilio", "--port", str(self.port),
                "--callback-delay-seconds", "0.2", *extra]  # fmt: skip
        super().__init__("twilio simulator", args, env=harness.process_env("sqlite://"), log_path=log_dir / "sim.log")

    def wait_ready(self) -> None:
        """Poll the health endpoint."""
        harness.wait_for(lambda: self._healthy(), timeout=harness.READY_TIMEOUT, message="twilio simulator ready")

    def _healthy(self) -> bool:
        if not self.running:
            raise harness.ProcessError(self.log_tail())
        try:
            return httpx.get(f"{self.base_url}/_sim/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False


@contextmanager
def running_sim(log_dir: Path, *extra: str) -> Iterator[SimProcess]:
    """A started, ready simulator process, stopped at the end."""
    proc = SimProcess(log_dir, *extra)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    with running_sim(tmp_path / "logs") as proc:
        yield proc


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as running:
        yield running


def notification_env(sim_url: str, smtp_port: int) -> dict[str, str]:
    """Environment pointing a server or worker at the simulator and the SMTP sink."""
    return {
        "ORDERSTREAM_NOTIFICATIONS_SMS_BACKEND": "twilio",
        "ORDERSTREAM_TWILIO_BASE_URL": sim_url,
        "ORDERSTREAM_NOTIFICATIONS_EMAIL_BACKEND": "smtp",
        "ORDERSTREAM_SMTP_HOST": "127.0.0.1",
        "ORDERSTREAM_SMTP_PORT": str(smtp_port),
        "ORDERSTREAM_WORKER_IDLE_POLL_SECONDS": "0.2",
    }


def _token(db: Database, order_id: str) -> str:
    with db.read() as conn:
        return str(conn.execute(sa.text("SELECT tracking_token FROM orders WHERE id = :i"), {"i": order_id}).scalar())


def _status(db: Database, order_id: str, kind: str, channel: str) -> str | None:
    row = by_key(db, order_id).get((kind, channel))
    return None if row is None else str(row["status"])


def _texts(sim_url: str, phone: str) -> list[str]:
    return [str(m["body"]) for m in sim_messages(sim_url) if m["to"] == phone]


def test_customer_is_told_and_the_tracking_page_follows_live(
    db: Database, db_url: str, launch: Launcher, sim: SimProcess, sink: SmtpSink, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    server = launch.server(db_url, env=notification_env(sim.base_url, sink.port), embedded_worker=True)
    partner: PartnerFixture = make_partner(db)
    phone = "+14155550170"
    order_id = seed_order(
        db, partner, fulfillment_type="merchant_managed_delivery", customer_phone=phone,
        customer_email="live.page@example.com",
    )  # fmt: skip
    order_created(db, order_id)
    token = _token(db, order_id)

    confirmed = harness.wait_for(lambda: _texts(sim.base_url, phone), timeout=30, message="confirmation SMS")
    assert f"{server.base_url}/t/{token}" in confirmed[0]
    harness.wait_for(lambda: sink.messages, timeout=30, message="confirmation e-mail")
    assert sink.messages[0]["To"] == "live.page@example.com"
    # the simulator's signed status callback reaches the server and marks the SMS delivered
    harness.wait_for(lambda: _status(db, order_id, "confirmed", "sms") == "delivered", timeout=30, message="delivered")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            page.goto(f"{server.base_url}/t/{token}")
            expect(page.locator("#location-name")).to_have_text("Main Street Burgers")
            expect(page.locator("li.current")).to_have_text("Order received")
            expect(page.locator("#courier-card")).to_be_hidden()
            page.evaluate("window.__sameDocument = true")
            page.wait_for_timeout(1500)  # the event stream is open

            eta = utcnow() + timedelta(minutes=25)
            delivery(db, partner, order_id, "enroute_to_dropoff", dropoff_eta=eta)

            expect(page.locator("li.current")).to_have_text("On the way", timeout=15000)
            expect(page.locator("#courier-name")).to_have_text("Dana")
            expect(page.locator("#vehicle")).to_have_text("blue Toyota Prius")
            expect(page.locator("#eta-card")).to_be_visible()
            assert page.evaluate("window.__sameDocument") is True  # updated in place, no reload
            page.screenshot(path=str(tmp_path / "tracking-page.png"), full_page=True)
        finally:
            browser.close()
    update_docs_screenshot(tmp_path / "tracking-page.png")

    out = harness.wait_for(
        lambda: [t for t in _texts(sim.base_url, phone) if "is on its way with" in t],
        timeout=30,
        message="on-its-way SMS",
    )
    assert "arriving around" in out[0]
    assert phone not in server.log_text()
    assert "live.page@example.com" not in server.log_text()


def test_sandbox_default_needs_no_configuration(db: Database, db_url: str, launch: Launcher) -> None:
    """`serve` with nothing configured: an in-process Twilio simulator and an e-mail log sink."""
    server = launch.server(db_url, embedded_worker=True, env={"ORDERSTREAM_WORKER_IDLE_POLL_SECONDS": "0.2"})
    partner = make_partner(db)
    order_id = seed_order(db, partner, fulfillment_type="pickup", customer_phone="+14155550171",
                          customer_email="sandbox.user@example.com")  # fmt: skip
    order_created(db, order_id)
    # the in-process simulator's signed callback comes back to this server
    harness.wait_for(lambda: _status(db, order_id, "confirmed", "sms") == "delivered", timeout=30, message="delivered")
    mail = by_key(db, order_id)[("confirmed", "email")]
    assert (mail["status"], mail["provider"]) == ("sent", "log")
    history = httpx.get(
        f"{server.base_url}/v1/orders/{order_id}/history", headers={"Authorization": f"Bearer {partner.api_key}"}
    )
    reasons = [e["reason"] for e in history.json()["data"] if e["kind"] == "notification"]
    assert "sms confirmed delivered" in reasons
    assert "email confirmed sent" in reasons
    log = harness.wait_for(lambda: "sandbox sms confirmed to +1********71" in server.log_text() and server.log_text(),
                           timeout=10, message="sandbox log line")  # fmt: skip
    assert "sandbox email confirmed to s***@example.com" in log
    assert "+14155550171" not in log
    assert "sandbox.user@example.com" not in log
