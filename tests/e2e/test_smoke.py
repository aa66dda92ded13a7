"""Smoke test of the harness: a real server process, the CLI, readiness and API-key authentication."""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.e2e import harness
from tests.e2e.conftest import Launcher

pytestmark = pytest.mark.e2e


def test_server_starts_answers_ready_and_guards_the_order_api(db_url: str, launch: Launcher) -> None:
    partner = harness.create_partner(db_url)
    assert partner.secret.startswith("whsec_")
    assert partner.api_key.startswith("osk_")

    server = launch.server(db_url)
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200

        anonymous = client.get("/v1/orders")
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "missing_api_key"
        wrong = client.get("/v1/orders", headers={"Authorization": "Bearer osk_not-a-key"})
        assert wrong.status_code == 401

        ok = client.get("/v1/orders", headers=partner.auth)
        assert ok.status_code == 200
        assert ok.json() == {"data": [], "next_cursor": None}

    assert server.stop() in (0, -signal.SIGTERM)
    assert not server.forced, "the server ignored SIGTERM"
    assert "Traceback" not in server.log_text()


def test_kill_and_restart_keep_the_same_address(db_url: str, launch: Launcher) -> None:
    server = launch.server(db_url)
    server.kill()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base_url}/healthz", timeout=2)
    server.restart()
    assert httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200
