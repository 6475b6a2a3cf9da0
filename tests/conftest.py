"""Shared fixtures. The real-server harness lives in ``tests/harness``; this file only wires it to pytest.

Session fixtures ``mosquitto``, ``influxdb`` and ``postgres`` each start one REAL server (the installed
binary, on a free loopback port, data in a temp dir; never the default ports, which the machine's own
services may hold) for the whole session, and tear it down at the end. They are lazy: a test run that
does not use them starts nothing. A missing binary FAILS the test (it does not skip): a suite that
silently skips its integration tests reports green for code it never ran.

``influxdb.url`` is a TEST-ONLY front that adds the v2 write endpoint to Debian's InfluxDB 1.6 (see
``tests/harness/influx_front.py``); the data is stored and queried by the real influxd behind it.

Per-test isolation: ``influx_db`` (a fresh InfluxDB database name) and ``pg_db`` (the SQLAlchemy URL
of a fresh PostgreSQL database), both dropped after the test.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

# The repository root, so `tests.harness` (and the project's packages) import when pytest is run
# as a script rather than as `python -m pytest` (which puts the cwd on sys.path itself).
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# The suite checks the kernels as numba's JIT compiles them, whatever build a developer has in edge/_aot;
# tests/test_kernels_aot.py builds its own ahead-of-time module and checks it against them.
os.environ.setdefault("TWIN_KERNELS", "jit")

from tests.harness import HarnessError, InfluxServer, MosquittoServer, PostgresServer, TlsMosquittoServer  # noqa: E402

ServerT = TypeVar("ServerT", MosquittoServer, InfluxServer, PostgresServer)

LONGEST_FIRST = ("test_vessel_pack.py", "test_fuzz_api.py", "test_cloud_outages.py", "test_coldchain_scenarios.py",
                 "test_zero_loss.py", "test_vessel_e2e.py", "test_fuzz_ingest.py", "test_commands.py",
                 "test_demo.py", "test_shipments.py", "test_customer_access.py", "test_webhooks.py",
                 "test_scale_out_nats.py", "test_rul_live.py", "test_pdm_model.py", "test_api_params.py",
                 "test_web.py", "test_api.py", "test_opcua_interop.py")
"""Files of 45 s and more (``--durations=0``, summed per file), longest first. ``make test`` hands whole files to
its three processes in collection order; alphabetical order left vessel, web and zero-loss for last, and one
process ran them alone for minutes while the others had finished."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first (a stable sort: each file's tests keep their order, the rest theirs)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def _serve(factory: Callable[[], ServerT]) -> Iterator[ServerT]:
    """Start a server for the session; a missing binary or failed start fails (never skips) its tests."""
    try:
        server = factory()
        server.start()
    except HarnessError as exc:
        error = str(exc)  # pytest.fail outside the except: the message alone, without a chained traceback
    else:
        error = ""
    if error:
        pytest.fail(error, pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[MosquittoServer]:
    """A real Mosquitto broker (``.url`` = mqtt://127.0.0.1:<port>, ``.host``, ``.port``, ``.restart()``)."""
    yield from _serve(MosquittoServer)


@pytest.fixture(scope="session")
def mosquitto_tls() -> Iterator[TlsMosquittoServer]:
    """Mosquitto on the SHIPPED deploy/mosquitto config and ACL: TLS only, a client certificate each
    (``.url`` = mqtts://127.0.0.1:<port>, ``.client_files("cloud")``, ``.gateway_files(tenant, gateway)``)."""
    yield from _serve(TlsMosquittoServer)


@pytest.fixture(scope="session")
def influxdb() -> Iterator[InfluxServer]:
    """A real influxd: ``.url`` = the TEST-ONLY v2 write front for influxdb-client, ``.raw_url`` = influxd."""
    yield from _serve(InfluxServer)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL (``.url`` = SQLAlchemy URL of database ``assettwin``, ``.url_for(db)``)."""
    yield from _serve(PostgresServer)


@pytest.fixture
def influx_db(influxdb: InfluxServer) -> Iterator[str]:
    """A fresh InfluxDB database for one test; its name (a v2 bucket is ``f"{name}/autogen"``)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    influxdb.create_database(name)
    yield name
    influxdb.start()  # no-op unless an outage test failed before restarting influxd
    influxdb.drop_database(name)


@pytest.fixture
def pg_db(postgres: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database for one test; its SQLAlchemy URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    postgres.create_database(name)
    yield postgres.url_for(name)
    postgres.start()  # no-op unless an outage test failed before restarting PostgreSQL
    postgres.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tmp_path):
    """A fresh registry schema on SQLite and on the real PostgreSQL (a module may define its own)."""
    from cloud.registry import Registry

    url = f"sqlite:///{tmp_path / 'reg.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_db")
    reg = Registry(url)
    reg.create_schema()
    yield reg
    reg.engine.dispose()


@pytest.fixture
def store(influxdb, influx_db):
    """The platform's InfluxDB store on a fresh database of the real influxd (a module may define its own)."""
    from cloud.store.influx import InfluxStore

    s = InfluxStore(influxdb.url, "", "-", f"{influx_db}/autogen", influx_db)
    yield s
    s.close()


@pytest.fixture
def influx_platform(tmp_path, influxdb, influx_db):
    """The cloud ``Platform`` opened (not started) on a SQLite registry and a fresh database of the real influxd."""
    from cloud.platform import Platform
    from cloud.settings import CloudSettings

    p = Platform.open(CloudSettings(database_url=f"sqlite:///{tmp_path / 'r.sqlite'}", store="influx",
                                    influx_url=influxdb.url, influx_bucket=f"{influx_db}/autogen",
                                    influx_database=influx_db))
    yield p
    p.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def linked_platform(request, tmp_path, mosquitto, influxdb, influx_db):
    """The cloud ``Platform`` started with its broker link, on SQLite and on the real PostgreSQL, and InfluxDB."""
    from cloud.platform import Platform
    from cloud.settings import CloudSettings

    db = f"sqlite:///{tmp_path / 'reg.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("pg_db")
    settings = CloudSettings(database_url=db, store="influx", influx_url=influxdb.url,
                             influx_bucket=f"{influx_db}/autogen", influx_database=influx_db, mqtt_url=mosquitto.url)
    p = Platform.open(settings, with_link=True)
    p.start()
    assert p.link.connected.wait(10)
    yield p
    p.close()
