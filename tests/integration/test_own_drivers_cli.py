"""`orderstream drivers ...` against both databases: add, list, shift, deactivate, fleet, deliveries, assign."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orderstream.db import Database
from tests.cli_helpers import cli_json
from tests.factories import make_partner


def cli(*args: str) -> Any:
    """Run `orderstream drivers ...`; the parsed JSON output, or the failing result."""
    return cli_json("drivers", *args)


def test_drivers_cli(db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERSTREAM_DATABASE_URL", db_url)
    partner = make_partner(db)
    where = ["--partner", partner.slug, "--location", partner.location_id]

    sam = cli("add", *where, "--name", "Sam", "--phone", "415 555 0142", "--vehicle", "car", "--on-shift", "--json")
    assert sam["phone"] == "+14155550142"
    assert sam["on_shift"] is True
    assert sam["token"].startswith("osd_")

    bad = cli("add", *where, "--name", "Kim", "--phone", "nope", "--json")
    assert bad.exit_code == 1
    assert json.loads(bad.stderr)["error"]["code"] == "invalid_phone"
    nowhere = cli("list", "--partner", partner.slug, "--location", "elsewhere", "--json")
    assert nowhere.exit_code == 1
    assert json.loads(nowhere.stderr)["error"]["code"] == "location_not_found"

    listed = cli("list", *where, "--json")
    assert [(d["id"], d["open_deliveries"]) for d in listed] == [(sam["id"], 0)]
    assert cli("shift", sam["id"], *where, "--off", "--json")["on_shift"] is False

    assert cli("fleet", *where, "--json") == {"location_id": partner.location_id, "fee": 0, "auto_assign": True}
    assert cli("fleet", *where, "--fee", "250", "--manual", "--json") == {
        "location_id": partner.location_id,
        "fee": 250,
        "auto_assign": False,
    }
    assert cli("deliveries", *where, "--status", "unassigned", "--json") == []

    off = cli("deactivate", sam["id"], *where, "--json")
    assert (off["active"], off["on_shift"]) == (False, False)
    assert cli("list", *where, "--json") == []
    assert len(cli("list", *where, "--all", "--json")) == 1
