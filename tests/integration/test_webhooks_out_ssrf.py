"""SSRF at send time: webhooks to internal targets never reach them, whatever the endpoint row says."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa

from orderstream.db import Database
from orderstream.webhooks_out import sender, service
from orderstream.webhooks_out.models import webhook_attempts, webhook_deliveries
from tests.factories import make_partner
from tests.webhooks_out_helpers import JobDriver, Receiver, insert_order, set_status, webhook_settings


def _attempts(db: Database, endpoint_id: str) -> list[dict[str, object]]:
    with db.read() as conn:
        return [
            dict(r)
            for r in conn.execute(
                sa.select(webhook_attempts).where(webhook_attempts.c.endpoint_id == endpoint_id)
            ).mappings()
        ]


@pytest.mark.parametrize(
    ("host", "url_of", "resolver"),
    [
        ("127.0.0.1", lambda r: r.url(), None),
        ("::1", lambda r: r.url(), None),
        ("127.0.0.1", lambda r: f"http://localhost:{r.port}{r.base}/hooks", None),  # a name resolving to loopback
        ("127.0.0.1", lambda r: f"http://pos.example.test:{r.port}{r.base}/hooks", {"pos.example.test": ["127.0.0.1"]}),
        (
            "127.0.0.1",
            lambda r: f"http://rebind.example.test:{r.port}{r.base}/hooks",
            {"rebind.example.test": ["10.0.0.9"]},
        ),
        ("127.0.0.1", lambda _r: "http://10.20.30.40:8080/hooks", None),
        ("127.0.0.1", lambda _r: "http://169.254.169.254/latest/meta-data/", None),
    ],
)
def test_blocked_at_send_time_never_reaches_the_target(
    db: Database, db_url: str, host: str, url_of: object, resolver: dict[str, list[str]] | None
) -> None:
    receiver = Receiver(host=host).start()
    try:
        partner = make_partner(db)
        with db.write() as conn:  # registered while allowed (or the address changed since): checked again on send
            endpoint, _ = service.create_endpoint(
                conn,
                partner_id=partner.partner_id,
                url=url_of(receiver),  # type: ignore[operator]
                event_types=["order.updated"],
                allow_private=True,
                resolver=lambda h, _p: (resolver or {}).get(h, ["127.0.0.1"]),
            )
        order_id = insert_order(db, partner)
        set_status(db, order_id, "preparing")
        services = {"webhooks_resolver": (lambda h, _p: resolver[h])} if resolver else {}
        settings = webhook_settings(db_url, allow_private_webhook_targets=False)
        JobDriver(db, settings, partner, services=services).drain()

        assert receiver.requests == []
        assert receiver.foreign == []
        [attempt] = _attempts(db, endpoint["id"])
        assert attempt["outcome"] == "failed"
        assert attempt["address"] is None  # no connection was made
        assert str(attempt["error"]).startswith("blocked_address")
        with db.read() as conn:
            status = conn.execute(
                sa.select(webhook_deliveries.c.status).where(webhook_deliveries.c.endpoint_id == endpoint["id"])
            ).scalar_one()
        assert status == "failed"
    finally:
        receiver.stop()


def test_connects_to_the_checked_address_once_resolved_keeping_host_and_sni() -> None:
    """DNS rebinding: the name is resolved once, checked, and that very address is connected to."""
    answers = [["93.184.216.34"], ["127.0.0.1"]]
    calls: list[str] = []

    def rebinding(host: str, _port: int) -> list[str]:
        calls.append(host)
        return answers[min(len(calls) - 1, 1)]

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        result = sender.post(
            client,
            url="https://pos.example.com/hooks?x=1",
            body=b"{}",
            headers={"webhook-id": "evt_1"},
            timeout=5,
            allow_private=False,
            resolver=rebinding,
        )
    assert result.status_code == 204
    assert calls == ["pos.example.com"]
    [request] = seen
    assert request.url.host == "93.184.216.34"
    assert request.url.path == "/hooks"
    assert request.headers["host"] == "pos.example.com"
    assert request.extensions["sni_hostname"] == "pos.example.com"
    assert result.address == "93.184.216.34"


def test_a_redirect_is_a_failed_attempt_and_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})

    with httpx.Client(transport=httpx.MockTransport(handler), follow_redirects=True) as client:
        result = sender.post(
            client,
            url="https://pos.example.com/hooks",
            body=b"{}",
            headers={},
            timeout=5,
            allow_private=False,
            resolver=lambda _h, _p: ["93.184.216.34"],
        )
    assert result.status_code == 307
    assert len(seen) == 1  # even a client configured to follow redirects does not, for webhooks
    assert result.response_headers["location"].startswith("http://169.254.169.254")
