"""`orderstream jobs ...`: see pending, running, dead and done jobs, and replay dead ones."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer

from orderstream import cli_support
from orderstream.config import load_settings
from orderstream.jobs import retention, runtime

jobs_app = typer.Typer(help="Background jobs: list, stats, retry dead ones, prune done ones.", no_args_is_help=True)


class Status(StrEnum):
    """A job status, as a CLI choice."""

    pending = "pending"
    running = "running"
    dead = "dead"
    done = "done"


def _when(value: Any) -> str:
    return value.isoformat(timespec="milliseconds") if value is not None else "-"


def _one_line(text: str | None, width: int = 80) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@jobs_app.command("list")
def list_command(
    status: Status = typer.Option(None, "--status", help="only jobs in this status"),
    kind: str = typer.Option(None, "--kind", help="only jobs of this kind"),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="one JSON array"),
) -> None:
    """List jobs, newest first."""
    db = cli_support.open_db(pool_size=1)
    try:
        with db.read() as conn:
            rows = runtime.list_jobs(conn, status=status.value if status else None, kind=kind, limit=limit)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(rows, default=str))
        return
    if not rows:
        typer.echo("no jobs")
        return
    width = max(len(row["kind"]) for row in rows)
    for row in rows:
        line = (
            f"{row['id']:>8}  {row['status']:<8} {row['kind']:<{width}}  key={row['key'] or '-'}  "
            f"attempts={row['attempts']}/{row['max_attempts']}  run_at={_when(row['run_at'])}"
        )
        if row["status"] == "running":
            line += f"  leased_by={row['leased_by']} until={_when(row['leased_until'])}"
        if row["last_error"]:
            line += f"  error={_one_line(row['last_error'])}"
        typer.echo(line)


@jobs_app.command("retry")
def retry_command(
    job_id: int = typer.Argument(..., help="id of a dead job"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Put a dead job back to pending, due now, with a fresh set of attempts."""
    db = cli_support.open_db(pool_size=1)
    try:
        with db.write() as conn:
            row = runtime.retry_dead(conn, job_id=job_id)
    except runtime.JobError as err:
        typer.echo(json.dumps({"error": {"code": err.code, "message": str(err)}}), err=True)
        raise typer.Exit(code=1) from None
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(row, default=str))
    else:
        typer.echo(f"job {row['id']} ({row['kind']}) is pending again")


@jobs_app.command("stats")
def stats_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Jobs per kind and status, and how late the oldest due job is."""
    db = cli_support.open_db(pool_size=1)
    try:
        with db.read() as conn:
            rows = runtime.stats(conn)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    width = max([len("kind"), *(len(row["kind"]) for row in rows)])
    typer.echo(f"{'kind':<{width}} {'pending':>8} {'running':>8} {'dead':>8} {'done':>10}  oldest due (s)")
    for row in rows:
        lag = row["oldest_due_lag_seconds"]
        typer.echo(
            f"{row['kind']:<{width}} {row['pending']:>8} {row['running']:>8} {row['dead']:>8} {row['done']:>10}  "
            f"{'-' if lag is None else lag}"
        )


@jobs_app.command("prune")
def prune_command(
    older_than_hours: float = typer.Option(
        None, "--older-than-hours", min=0, help="default: ORDERSTREAM_JOBS_DONE_RETENTION_HOURS"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Delete done jobs that finished more than the retention ago now (workers also do it every interval)."""
    hours = load_settings().jobs_done_retention_hours if older_than_hours is None else older_than_hours
    if hours <= 0 and older_than_hours is None:
        message = "ORDERSTREAM_JOBS_DONE_RETENTION_HOURS is 0 (keep every job): pass --older-than-hours"
        typer.echo(json.dumps({"error": {"code": "retention_off", "message": message}}), err=True)
        raise typer.Exit(code=1)
    older_than = retention.cutoff(hours)
    db = cli_support.open_db(pool_size=1)
    try:
        deleted = retention.prune(db, older_than=older_than)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps({"deleted": deleted, "finished_before": older_than.isoformat()}))
    else:
        typer.echo(f"deleted {deleted} done jobs that finished before {older_than.isoformat(timespec='seconds')}")
