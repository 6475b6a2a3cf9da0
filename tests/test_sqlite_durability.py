"""The cloud's SQLite files are fully synchronous: an acknowledged commit survives power loss.

With WAL, ``synchronous=NORMAL`` fsyncs only at checkpoints, so a commit that was already acknowledged (an API
key, an alert, a batch ingest confirmed) could roll back when the machine loses power; ``FULL`` fsyncs the WAL
at every commit. The pragma is per connection, so it is read back from live connections the code itself opens,
not from the source.
"""

from __future__ import annotations

from sqlalchemy import text

from cloud.registry import Registry
from cloud.store.embedded import EmbeddedStore

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_registry_connections_are_wal_and_fully_synchronous(tmp_path):
    reg = Registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    try:
        reg.create_schema()
        # Two connections open at once: the pool's second one gets the pragmas too, not only the first.
        with reg.engine.connect() as a, reg.engine.connect() as b:
            for conn in (a, b):
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == FULL
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        with reg.session() as s:  # the path every registry query takes
            assert s.execute(text("PRAGMA synchronous")).scalar() == FULL
    finally:
        reg.engine.dispose()


def test_embedded_store_connection_is_wal_and_fully_synchronous(tmp_path):
    store = EmbeddedStore(tmp_path / "ts.sqlite")
    try:
        assert store._db.execute("PRAGMA synchronous").fetchone() == (FULL,)
        assert store._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        store.close()
