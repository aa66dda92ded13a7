"""`orderstream jobs list|retry|stats` and `orderstream worker --help` against a real database."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from orderstream.cli import app
from orderstream.db import Database
from orderstream.jobs import runtime
from orderstream.jobs.outbox import enqueue
from tests.jobs_helpers import job_row, unique_kind

runner = CliRunner()


@pytest.fixture
def cli_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ORDERSTREAM_DATABASE_URL", db_url)
    return db_url


def _dead_job(db: Database, kind: str) -> int:
    with db.write() as conn:
        job_id = enqueue(conn, kind=kind, key="order-9", payload={"order_id": "order-9"})
    with db.write() as conn:
        [job] = runtime.claim(conn, worker_id="w1", kinds={kind: 30}, limit=1)
        runtime.fail(conn, job=job, error="PermanentError: provider rejected\nsecond line", retry_in=None)
    assert job_id is not None
    return job_id


def test_jobs_list_filters_and_json(db: Database, cli_env: str) -> None:
    kind, waiting_kind = unique_kind("cli"), unique_kind("cli_wait")
    dead = _dead_job(db, kind)
    with db.write() as conn:
        pending = enqueue(conn, kind=waiting_kind, payload={})
    result = runner.invoke(app, ["jobs", "list", "--kind", kind, "--status", "dead", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["id"], r["status"], r["key"]) for r in rows] == [(dead, "dead", "order-9")]
    result = runner.invoke(app, ["jobs", "list", "--kind", waiting_kind])
    assert result.exit_code == 0, result.output
    assert f"{pending}  pending" in result.stdout
    result = runner.invoke(app, ["jobs", "list", "--kind", kind])
    assert "error=PermanentError: provider rejected second line" in result.stdout
    result = runner.invoke(app, ["jobs", "list", "--status", "bogus"])
    assert result.exit_code != 0


def test_jobs_retry_and_stats(db: Database, cli_env: str) -> None:
    kind = unique_kind("cli_retry")
    dead = _dead_job(db, kind)
    result = runner.invoke(app, ["jobs", "stats", "--json"])
    assert result.exit_code == 0, result.output
    entry = {r["kind"]: r for r in json.loads(result.stdout)}[kind]
    assert (entry["dead"], entry["pending"]) == (1, 0)
    result = runner.invoke(app, ["jobs", "retry", str(dead)])
    assert result.exit_code == 0, result.output
    assert f"job {dead} ({kind}) is pending again" in result.stdout
    assert (job_row(db, dead)["status"], job_row(db, dead)["attempts"]) == ("pending", 0)
    result = runner.invoke(app, ["jobs", "retry", str(dead)])
    assert result.exit_code == 1
    assert json.loads(result.stderr)["error"]["code"] == "job_not_dead"
    result = runner.invoke(app, ["jobs", "stats"])
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith(kind))
    assert line.split()[1:5] == ["1", "0", "0", "0"]


def test_worker_command_is_there() -> None:
    result = runner.invoke(app, ["worker", "--help"])
    assert result.exit_code == 0
    assert "--concurrency" in result.stdout
