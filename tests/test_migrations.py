"""The registry's schema comes from Alembic migrations, and they match the models on both engines."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cloud.registry import Base, Registry


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    return f"sqlite:///{tmp_path / 'reg.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_db")


def test_migrations_build_exactly_the_models_schema_and_rerun_as_a_no_op(url):
    reg = Registry(url)
    reg.create_schema()
    reg.create_schema()  # idempotent: a restarted service migrates nothing
    with reg.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        assert MigrationContext.configure(conn).get_current_revision() is not None
    assert {"alembic_version", "assets", "alerts", "audit_log", "twins"} <= set(inspect(reg.engine).get_table_names())
    reg.engine.dispose()
