"""Alembic environment: the registry's schema history. Run through ``Registry.migrate()`` (the cloud
does it at start) or ``alembic -c cloud/migrations/alembic.ini upgrade head`` with TWIN_DATABASE_URL set."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from cloud.registry import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or os.environ.get("TWIN_DATABASE_URL", "sqlite:///twin.sqlite")


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(_url(), poolclass=pool.NullPool)
        with engine.connect() as conn:
            _run(conn)
    else:
        _run(connection)


def _run(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds tables the portable way.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
