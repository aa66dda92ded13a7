"""The POS webhook over real HTTP: a served process, the docs' curl commands, the 413 guard on a raw socket."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from orderstream.db import Database
from orderstream.jobs.models import jobs
from tests.e2e import harness
from tests.e2e.conftest import Launcher
from tests.pos_helpers import DOC_ORDER_CREATED, current_order, doc_bytes, legacy_order, post_event

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "pos-webhook.md"


def doc_shell_blocks() -> list[str]:
    """The ```sh blocks of the doc's "Try it with curl" section, in order."""
    section = DOC.read_text().split("## Try it with curl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def run_shell(script: str, *, base_url: str, slug: str, secret: str) -> str:
    env = {**os.environ, "BASE_URL": base_url, "SLUG": slug, "SECRET": secret}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_the_docs_curl_commands_post_the_three_doc_payloads(db_url: str, launch: Launcher) -> None:
    partner = harness.create_partner(db_url)
    server = launch.server(db_url)
    blocks = doc_shell_blocks()
    marked = next(b for b in blocks if "post tests/fixtures/pos/legacy_order_created.json" in b)

    out = run_shell(marked, base_url=server.base_url, slug=partner.slug, secret=partner.secret)

    created, ready, canceled = (json.loads(line) for line in out.strip().splitlines())
    assert created["accepted"] is True
    assert {w["code"] for w in created["order"]["warnings"]} == {"subtotal_mismatch", "invalid_phone"}
    assert ready["order"]["status"] == "ready_for_pickup"
    assert canceled["order"]["status"] == "canceled"
    with server.client() as client:
        order = client.get(f"/v1/orders/{created['order']['id']}", headers=partner.auth).json()
        history = client.get(f"/v1/orders/{created['order']['id']}/history", headers=partner.auth).json()
    assert order["cancellation"]["reason"] == "customer_requested"
    assert [h["to_status"] for h in history["data"]] == ["received", "ready_for_pickup", "canceled"]

    # the Standard Webhooks example of the doc: accepted, and the same order is recognised as a duplicate
    standard = next(b for b in blocks if "webhook-signature: v1," in b)
    answer = json.loads(run_shell(standard, base_url=server.base_url, slug=partner.slug, secret=partner.secret))
    assert answer["duplicate"] is True
    assert answer["order"]["id"] == created["order"]["id"]
    assert "Traceback" not in server.log_text()


def test_orders_over_http_are_stored_once_with_their_dispatch_job(db_url: str, launch: Launcher) -> None:
    partner = harness.create_partner(db_url)
    server = launch.server(db_url)
    with server.client() as client:
        first = post_event(client, partner.slug, partner.secret, doc_bytes(DOC_ORDER_CREATED))
        again = post_event(client, partner.slug, partner.secret, doc_bytes(DOC_ORDER_CREATED))
        current = post_event(client, partner.slug, partner.secret, current_order(), standard=True)
        bad = post_event(client, partner.slug, partner.secret, legacy_order(currency="XYZ"))
        unsigned = client.post(
            f"/pos/{partner.slug}/webhook", content=b"{}", headers={"Content-Type": "application/json"}
        )
    assert first.status_code == 200, first.text
    assert again.json()["duplicate"] is True
    assert current.status_code == 200, current.text
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["path"] == "data.order.currency"
    assert unsigned.status_code == 401

    db = Database.from_url(db_url, pool_size=1)
    try:
        with db.read() as conn:
            dispatch = conn.execute(
                sa.select(jobs.c.key, jobs.c.status)
                .where(jobs.c.kind == "dispatch")
                .where(jobs.c.key.in_([first.json()["order"]["id"], current.json()["order"]["id"]]))
            ).all()
    finally:
        db.dispose()
    assert sorted(status for _key, status in dispatch) == ["pending", "pending"]
    log = server.log_text()
    assert "Traceback" not in log
    for secret_of_customer in ("john.doe@example.com", "+1234567890", "123 Main St", "jane.doe@example.com"):
        assert secret_of_customer not in log


def _read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_an_oversized_body_is_refused_without_reading_it(db_url: str, launch: Launcher) -> None:
    partner = harness.create_partner(db_url)
    server = launch.server(db_url)
    path = f"/pos/{partner.slug}/webhook"

    # a declared 50 MB body: answered from the headers, before a single body byte is sent
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Stream-Webhook-Signature: {'0' * 64}\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n".encode()
        )
        started = time.monotonic()
        head = _read_response(sock)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert time.monotonic() - started < 5

    # a chunked body without a length: refused once it passes 256 KiB, long before the 50 MB are sent
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Stream-Webhook-Signature: {'0' * 64}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        try:
            while sent < 50 * 1024 * 1024:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        head = _read_response(sock)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert sent < 5 * 1024 * 1024, f"the server read {sent} bytes before refusing"

    # the server is still fine
    with server.client() as client:
        assert post_event(client, partner.slug, partner.secret, legacy_order()).status_code == 200
    assert httpx.get(f"{server.base_url}/healthz", timeout=5).status_code == 200
