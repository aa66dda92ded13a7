"""jobs: partial indexes for the claim and the next-due query (pending by run_at, running by lease end)

Revision ID: 0007_jobs_partial_indexes
Revises: 0001_intake
Create Date: 2026-11-27 18:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_jobs_partial_indexes"
down_revision = "0001_intake"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_jobs_pending_run_at",
            ["run_at"],
            unique=False,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )
        batch_op.create_index(
            "ix_jobs_running_leased_until",
            ["leased_until"],
            unique=False,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_running_leased_until")
        batch_op.drop_index("ix_jobs_pending_run_at")
