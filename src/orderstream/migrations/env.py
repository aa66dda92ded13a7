"""Alembic environment: runs migrations on the connection or URL handed over by orderstream.migrate."""

from __future__ import annotations

from alembic import context

import orderstream.models_all  # noqa: F401  (registers every table on the metadata)
from orderstream.db import create_engine, metadata

config = context.config


def run_migrations_online() -> None:
    """Run against the connection given in config.attributes, or a new engine for the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "", pool_size=1)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
