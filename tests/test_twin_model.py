"""The twin's model document has several writers (the RUL pack's estimate, an operator's horizon, the vessel
pack's forecast, the what-if's calibration): each sets its own keys and keeps the others', on SQLite and on the
real PostgreSQL, even when they write at the same moment."""

from __future__ import annotations

import threading

import pytest

from cloud.registry import Asset, Tenant, Twin
from cloud.twin import TwinService

N = 150


@pytest.fixture
def engine(registry) -> str:
    """One turbofan of tenant acme, with no twin row yet (the first merge makes it)."""
    with registry.session() as s:
        s.add(Tenant(id="acme"))
        s.flush()
        s.add(Asset(tenant="acme", id="engine-1", type="turbofan"))
    return "engine-1"


def stored(registry) -> dict:
    with registry.session() as s:
        return dict(s.get(Twin, ("acme", "engine-1")).model)


def test_concurrent_writers_of_different_keys_both_survive_every_time(registry, engine):
    # Two services on one registry: on PostgreSQL they are two API/rules processes (the row lock orders them);
    # on SQLite, one process's threads (the service's lock does).
    writers = [TwinService(registry, None), TwinService(registry, None)]
    go = threading.Barrier(2)
    lost: list[tuple[str, int, dict]] = []

    def write(k: int, key: str) -> None:
        go.wait()
        for i in range(N):
            _, doc = writers[k].merge_model("acme", "engine-1", {key: i})
            if doc.get(key) != i:
                lost.append((key, i, doc))

    # On SQLite both go through one service (one process); on PostgreSQL through two.
    if registry.engine.dialect.name == "sqlite":
        writers[1] = writers[0]
    threads = [threading.Thread(target=write, args=(k, key)) for k, key in enumerate(("rul", "rul_settings"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    assert not lost
    assert stored(registry) == {"rul": N - 1, "rul_settings": N - 1}


def test_a_function_of_the_document_reads_and_writes_it_in_one_step(registry, engine):
    twins = TwinService(registry, None)
    twins.merge_model("acme", "engine-1", {"rul": {"cycle": 3}, "rul_settings": {"horizon_cycles": 30}})

    _, doc = twins.merge_model("acme", "engine-1",
                               lambda d: {"rul_settings": {**d["rul_settings"], "failure_cycle": 9}})

    assert doc == {"rul": {"cycle": 3}, "rul_settings": {"horizon_cycles": 30, "failure_cycle": 9}}
    assert stored(registry) == doc
