"""`orderstream users add/list` through the real CLI entry point, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from orderstream.cli import app
from orderstream.dashboard import security, users
from orderstream.db import Database
from tests.factories import make_partner

runner = CliRunner()


@pytest.fixture(autouse=True)
def _database(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    monkeypatch.setenv("ORDERSTREAM_DATABASE_URL", db_url)


def test_add_a_merchant_with_the_password_on_stdin(db: Database) -> None:
    partner = make_partner(db)
    email = f"Chef.{partner.slug}@Example.com"

    result = runner.invoke(
        app,
        [
            "users",
            "add",
            email,
            "--role",
            "merchant",
            "--locations",
            f"{partner.slug}/{partner.location_id}",
            "--password-stdin",
            "--json",
        ],
        input="a long enough password\n",
    )

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["email"] == email.lower()
    assert out["role"] == "merchant"
    with db.read() as conn:
        found = users.find_for_signin(conn, email=email)
        assert found is not None
        assert security.verify_password(found[1], "a long enough password")
        assert users.get_user(conn, user_id=found[0]).location_ids is not None
    listed = runner.invoke(app, ["users", "list", "--json"])
    assert {"email": email.lower(), "locations": [f"{partner.slug}/{partner.location_id}"]}.items() <= next(
        u for u in json.loads(listed.stdout) if u["email"] == email.lower()
    ).items()


def test_add_an_admin_with_the_password_from_the_prompt(db: Database) -> None:
    email = f"admin.{make_partner(db).slug}@example.com"
    result = runner.invoke(
        app, ["users", "add", email, "--role", "admin"], input="prompted password\nprompted password\n"
    )
    assert result.exit_code == 0, result.output
    with db.read() as conn:
        found = users.find_for_signin(conn, email=email)
    assert found is not None
    assert security.verify_password(found[1], "prompted password")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--role", "merchant"], "locations_required"),
        (["--role", "merchant", "--locations", "nope/none"], "location_not_found"),
        (["--role", "merchant", "--locations", "no-slash"], "invalid_location"),
        (["--role", "admin", "--locations", "a/b"], "locations_not_allowed"),
    ],
)
def test_bad_requests_fail_with_a_stable_code(db: Database, args: list[str], code: str) -> None:
    result = runner.invoke(app, ["users", "add", "x@example.com", *args, "--password-stdin"], input="long password!!\n")
    assert result.exit_code == 1
    assert json.loads(result.stderr)["error"]["code"] == code


def test_short_password_and_duplicate_email_are_refused(db: Database) -> None:
    email = f"dup.{make_partner(db).slug}@example.com"
    short = runner.invoke(app, ["users", "add", email, "--role", "admin", "--password-stdin"], input="short\n")
    first = runner.invoke(
        app, ["users", "add", email, "--role", "admin", "--password-stdin"], input="long password!!\n"
    )
    again = runner.invoke(
        app, ["users", "add", email, "--role", "admin", "--password-stdin"], input="long password!!\n"
    )
    assert json.loads(short.stderr)["error"]["code"] == "password_too_short"
    assert first.exit_code == 0
    assert json.loads(again.stderr)["error"]["code"] == "user_exists"
