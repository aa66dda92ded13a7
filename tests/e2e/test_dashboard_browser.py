"""The dashboard in a real headless Chromium against a real server process: sign in, live board, order, cancel.

Screenshots of the board and the order page go to the test's artifact folder (ORDERSTREAM_TEST_ARTIFACTS,
else the test's tmp_path); ORDERSTREAM_UPDATE_SCREENSHOTS=1 also rewrites docs/screenshots.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import Launcher
from tests.e2e.screenshots import update_docs_screenshot

pytestmark = pytest.mark.e2e

playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (.ci/run installs the Debian package)")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    root = os.environ.get("ORDERSTREAM_TEST_ARTIFACTS")
    out = Path(root) / "dashboard" if root else tmp_path / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    return out


def add_user(db_url: str, email: str, *, role: str, locations: str = "") -> None:
    args = [*harness.orderstream_command(), "users", "add", email, "--role", role, "--password-stdin"]
    if locations:
        args += ["--locations", locations]
    proc = subprocess.run(
        args, input=PASSWORD + "\n", env=harness.process_env(db_url), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def pos_order(location_id: str, pos_order_id: str, *, delivery: bool = False) -> dict[str, Any]:
    """A legacy-envelope in-store order as in the Stream docs (pickup, or delivery to an address)."""
    order: dict[str, Any] = {
        "event": "order.created",
        "data": {
            "order": {
                "provider_id": pos_order_id,
                "location_id": location_id,
                "fulfillment_type": "pickup",
                "customer": {"name": "Jane Doe", "phone": "+14155550123", "email": "jane.doe@example.com"},
                "line_items": [
                    {
                        "name": "Cheeseburger",
                        "quantity": 2,
                        "price_amount": 1200,
                        "price_currency": "usd",
                        "provider_id": "item_789",
                        "modifiers": [
                            {
                                "name": "Extra Cheese",
                                "price_amount": 100,
                                "price_currency": "usd",
                                "provider_id": "modifier_101",
                            }
                        ],
                    }
                ],
                "subtotal_amount": 2400,
                "tax_amount": 200,
                "total_amount": 2600,
                "currency": "usd",
                "notes": "Extra crispy fries please",
            }
        },
    }
    if delivery:
        order["data"]["order"]["fulfillment_type"] = "delivery"
        order["data"]["order"]["delivery_address"] = {
            "street": "500 Market St",
            "city": "Anytown",
            "state": "CA",
            "zip": "12345",
            "country": "US",
        }
    return order


def post_order(
    server: harness.ServerProcess, partner: harness.Partner, pos_order_id: str, *, delivery: bool = False
) -> httpx.Response:
    body = json.dumps(pos_order(partner.location_id, pos_order_id, delivery=delivery)).encode()
    with server.client() as client:
        return client.post(
            f"/pos/{partner.slug}/webhook", content=body, headers=harness.signed_headers(partner.secret, body)
        )


def sign_in(page: Any, base_url: str, email: str) -> None:
    page.goto(f"{base_url}/dashboard/board")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/dashboard/board")


def save_screenshot(page: Any, name: str, artifacts: Path) -> None:
    path = artifacts / name
    page.screenshot(path=str(path), full_page=True)
    update_docs_screenshot(path)


def test_sign_in_watch_a_pos_order_arrive_open_it_and_cancel_it(
    db_url: str, launch: Launcher, browser: Any, artifacts: Path
) -> None:
    partner = harness.create_partner(db_url)
    add_user(db_url, f"ops_{uuid.uuid4().hex[:8]}@example.com", role="admin")
    email = f"chef_{uuid.uuid4().hex[:8]}@example.com"
    add_user(db_url, email, role="merchant", locations=f"{partner.slug}/{partner.location_id}")
    server = launch.server(db_url, env={"ORDERSTREAM_DASHBOARD_SSE_POLL_SECONDS": "0.3"})
    for n, delivery in enumerate((True, False)):  # orders already there when the board opens
        assert post_order(server, partner, f"earlier_{n}_{uuid.uuid4().hex[:4]}", delivery=delivery).status_code == 200
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    sign_in(page, server.base_url, email)
    page.wait_for_selector("#live[data-state=live]")
    page.evaluate("window.__notReloaded = true")

    pos_order_id = f"pos_order_{uuid.uuid4().hex[:6]}"
    assert post_order(server, partner, pos_order_id).status_code == 200
    card = page.locator(".card", has_text=f"#{pos_order_id}")
    card.wait_for(timeout=15_000)

    assert page.evaluate("window.__notReloaded") is True  # it came over the event stream, not a reload
    assert card.locator("xpath=ancestor::section[1]").get_attribute("data-column") == "received"
    save_screenshot(page, "dashboard-board.png", artifacts)

    card.click()
    page.wait_for_selector("#order-status")
    assert "Cheeseburger" in page.inner_text("main")
    assert "+14155550123" not in page.content()
    save_screenshot(page, "dashboard-order.png", artifacts)

    page.once("dialog", lambda dialog: dialog.accept())
    page.select_option("#cancel-form select[name=reason]", "out_of_stock")
    page.click("#cancel-form button[type=submit]")
    page.wait_for_selector("#order-status[data-status=canceled]")
    history = page.inner_text("#history")
    assert "canceled" in history
    assert email in history
    context.close()


def test_another_merchants_order_is_404_and_a_form_without_csrf_is_rejected(
    db_url: str, launch: Launcher, browser: Any
) -> None:
    mine = harness.create_partner(db_url)
    theirs = harness.create_partner(db_url)
    email = f"chef_{uuid.uuid4().hex[:8]}@example.com"
    add_user(db_url, email, role="merchant", locations=f"{mine.slug}/{mine.location_id}")
    server = launch.server(db_url)
    their_order = order_through_pos(server, theirs)
    my_order = order_through_pos(server, mine)

    context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    page = context.new_page()
    sign_in(page, server.base_url, email)

    response = page.goto(f"{server.base_url}/dashboard/orders/{their_order}")
    assert response is not None
    assert response.status == 404

    page.goto(f"{server.base_url}/dashboard/orders/{my_order}")
    page.evaluate("document.querySelectorAll('#cancel-form input[name=csrf_token]').forEach(e => e.remove())")
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation() as nav:
        page.click("#cancel-form button[type=submit]")
    assert nav.value is not None
    assert nav.value.status == 403
    assert page.locator(".error[data-code=csrf_failed]").count() == 1
    page.goto(f"{server.base_url}/dashboard/orders/{my_order}")
    assert page.get_attribute("#order-status", "data-status") == "received"
    # nothing pushes any page wider than a phone screen (wide tables scroll inside their panel)
    for path in ("/dashboard/board", f"/dashboard/orders/{my_order}", "/dashboard/charts", "/dashboard/locations"):
        page.goto(f"{server.base_url}{path}")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
    context.close()


def order_through_pos(server: harness.ServerProcess, partner: harness.Partner) -> str:
    """Post a new order through the POS webhook; its orderstream id, looked up through the order API."""
    pos_order_id = f"pos_order_{uuid.uuid4().hex[:6]}"
    resp = post_order(server, partner, pos_order_id)
    assert resp.status_code == 200, resp.text
    with server.client() as client:
        found = client.get(f"/v1/locations/{partner.location_id}/orders/{pos_order_id}", headers=partner.auth)
    return str(found.json()["id"])


def test_an_open_event_stream_does_not_hold_up_a_graceful_stop(db_url: str, launch: Launcher) -> None:
    email = f"ops_{uuid.uuid4().hex[:8]}@example.com"
    add_user(db_url, email, role="admin")
    server = launch.server(db_url)
    with server.client() as client:
        form = client.get("/dashboard/signin")
        token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        client.post("/dashboard/signin", data={"email": email, "password": PASSWORD, "csrf_token": token})
        with client.stream("GET", "/dashboard/board/events") as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("event:")) == "event: ready"
            started = time.monotonic()
            server.stop(timeout=15)
            took = time.monotonic() - started
    assert not server.forced, "the server had to be killed: the event stream held it up"
    assert took < 10
