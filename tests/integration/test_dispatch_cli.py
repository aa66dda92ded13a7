"""`orderstream dispatch ...` against both databases and both simulators: policy, attempts, cancel, re-dispatch."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cli_helpers import cli_json
from tests.deliveries_helpers import dispatch_stack
from tests.factories import make_partner

pytestmark = pytest.mark.timeout(120)


def cli(*args: str) -> Any:
    """Run the CLI; the parsed JSON output, or the failing result."""
    return cli_json("dispatch", *args)


def test_dispatch_cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with dispatch_stack(db_url, monkeypatch, step_seconds=5.0) as stack:
        monkeypatch.setenv("ORDERSTREAM_DATABASE_URL", db_url)
        partner = make_partner(stack.db)
        where = ("--partner", partner.slug, "--location", partner.location_id, "--json")
        assert cli("policy", *where)["allowed_providers"] == ["doordash", "uber"]
        changed = cli(
            "policy", *where, "--provider", "doordash", "--provider", "uber", "--strategy", "preferred",
            "--acceptance-timeout", "doordash=90", "--max-fee", "5000",
        )  # fmt: skip
        assert changed["strategy"] == "preferred"
        assert changed["acceptance_timeout_seconds"] == {"doordash": 90.0}
        assert cli("policy", *where)["max_fee"] == 5000
        unknown = cli("policy", *where, "--provider", "pigeon")
        assert unknown.exit_code == 1
        assert "unknown_provider" in unknown.stderr

        order_id = stack.create_order(partner)
        stack.wait_attempts(order_id, lambda a: a[0]["state"] == "booked")
        [listed] = cli("attempts", order_id, "--json")
        assert listed["provider"] == "doordash"
        busy = cli("redispatch", order_id, "--json")
        assert busy.exit_code == 1
        assert "delivery_active" in busy.stderr
        canceled = cli("cancel", order_id, "--redispatch", "--provider", "uber", "--reason", "test", "--json")
        assert canceled["cancel_requested_at"] is not None
        attempts = stack.wait_attempts(order_id, lambda a: len(a) == 2 and a[1]["state"] == "booked")
        assert [a["provider"] for a in attempts] == ["doordash", "uber"]
        assert cli("attempts", "ord_nothere", "--json").exit_code == 1
