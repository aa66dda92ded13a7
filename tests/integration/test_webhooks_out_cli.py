"""`orderstream webhooks ...` against both databases: add (with the SSRF check), list, rotate, deliveries, replay."""

from __future__ import annotations

from typing import Any

import pytest

from orderstream.db import Database
from tests.cli_helpers import cli_json
from tests.factories import make_partner
from tests.webhooks_out_helpers import JobDriver, Receiver, Reply, insert_order, set_status, webhook_settings


def cli(*args: str) -> Any:
    """Run the CLI; the parsed JSON output, or the failing result."""
    return cli_json("webhooks", *args)


def test_webhooks_cli(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSTREAM_DATABASE_URL", db_url)
    partner = make_partner(db)
    receiver = Receiver().start()
    try:
        refused = cli("add", "--partner", partner.slug, "--url", receiver.url(), "--json")
        assert refused.exit_code == 1
        assert "url_blocked_address" in refused.stderr

        monkeypatch.setenv("ORDERSTREAM_ALLOW_PRIVATE_WEBHOOK_TARGETS", "true")
        added = cli(
            "add",
            "--partner",
            partner.slug,
            "--url",
            receiver.url(),
            "--events",
            "order.updated,order.canceled",
            "--json",
        )
        assert added["event_types"] == ["order.updated", "order.canceled"]
        assert added["secret"].startswith("whsec_")
        assert [e["id"] for e in cli("list", "--partner", partner.slug, "--json")] == [added["id"]]
        rotated = cli("rotate-secret", added["id"], "--overlap-hours", "2", "--json")
        assert rotated["secret"] != added["secret"]
        assert cli("add", "--partner", partner.slug, "--url", receiver.url(), "--events", "order.eaten").exit_code == 1

        receiver.default = Reply(400)
        order_id = insert_order(db, partner)
        set_status(db, order_id, "preparing")
        driver = JobDriver(db, webhook_settings(db_url), partner)
        driver.drain()
        [failed] = cli("deliveries", "--partner", partner.slug, "--status", "failed", "--json")
        detail = cli("deliveries", "--id", failed["id"], "--json")
        assert [a["response_status"] for a in detail["attempt_log"]] == [400]

        receiver.default = Reply(200)
        assert cli("replay", failed["id"], "--json")["status"] == "pending"
        driver.drain()
        assert cli("deliveries", "--id", failed["id"], "--json")["status"] == "succeeded"

        receiver.default = Reply(400)
        set_status(db, order_id, "ready_for_pickup")
        driver.drain()
        result = cli("replay", "--partner", partner.slug, "--json")
        assert result["replayed"] == 1
        assert cli("disable", added["id"], "--json")["status"] == "disabled"
        assert cli("enable", added["id"], "--json")["status"] == "enabled"
        assert cli("replay", "--json").exit_code == 1  # neither an id nor --partner
    finally:
        receiver.stop()
