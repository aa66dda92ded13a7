"""The jobs table: side effects written in the same transaction as the change that causes them."""

from __future__ import annotations

import sqlalchemy as sa

from orderstream.db import JSON, BigId, UTCDateTime, metadata

# pending -> running -> done | pending (retry) | dead
ACTIVE_JOB_STATES = ("pending", "running")

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(64), nullable=False),
    # dedupe key: at most one active job per (kind, key) when set
    sa.Column("key", sa.String(255), nullable=True),
    sa.Column("payload", JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("run_at", UTCDateTime, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer, nullable=False, server_default="10"),
    sa.Column("leased_until", UTCDateTime, nullable=True),
    sa.Column("leased_by", sa.String(100), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Index("ix_jobs_claim", "status", "run_at"),
    # the claim and the next-due query: due pending jobs by run_at, expired leases by lease end
    sa.Index(
        "ix_jobs_pending_run_at",
        "run_at",
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    ),
    sa.Index(
        "ix_jobs_running_leased_until",
        "leased_until",
        sqlite_where=sa.text("status = 'running'"),
        postgresql_where=sa.text("status = 'running'"),
    ),
    sa.Index(
        "uq_jobs_active_kind_key",
        "kind",
        "key",
        unique=True,
        sqlite_where=sa.text("key IS NOT NULL AND status IN ('pending', 'running')"),
        postgresql_where=sa.text("key IS NOT NULL AND status IN ('pending', 'running')"),
    ),
)
