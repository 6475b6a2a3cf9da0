"""The bootstrap API key is created by every process of ``twin cloud run --workers N`` at start-up, at the same
moment: however they interleave, each gets the one key's id and none fails (a select-then-insert lost this race
with a unique violation on ``api_keys.hash`` and a worker exited, tests/test_scale_out.py once)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from sqlalchemy import func, select

from cloud.registry import ApiKey, Registry

RACERS = 6
KEY = "bootstrap-race-key"
# Each racer connects first, says so, then waits for one line on stdin: all of them insert within a millisecond.
RACER = f"""
import sys
from cloud.registry import Registry
reg = Registry(sys.argv[1])
with reg.engine.connect():
    pass
print("ready", flush=True)
sys.stdin.readline()
print(reg.issue_api_key("acme", "admin", "bootstrap", key={KEY!r})[0], flush=True)
"""


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request, tmp_path) -> str:
    url = request.getfixturevalue("pg_db") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'r.sqlite'}"
    reg = Registry(url)
    reg.create_schema()
    reg.engine.dispose()
    return url


def test_racing_processes_create_the_bootstrap_key_once(database_url):
    racers = [subprocess.Popen([sys.executable, "-c", RACER, database_url], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(RACERS)]
    try:
        for p in racers:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        for p in racers:  # the go signal, as close together as the pipes allow
            p.stdin.write("go\n")
            p.stdin.flush()
        outcomes = [p.communicate(timeout=60) for p in racers]
    finally:
        for p in racers:
            p.kill()
    assert [p.returncode for p in racers] == [0] * RACERS, [err for _, err in outcomes]
    ids = {out.strip() for out, _ in outcomes}
    reg = Registry(database_url)
    with reg.session() as s:
        rows = s.execute(select(ApiKey.id, ApiKey.tenant, ApiKey.role, ApiKey.name)).all()
    reg.engine.dispose()
    assert len(ids) == 1 and [tuple(r) for r in rows] == [(ids.pop(), "acme", "admin", "bootstrap")]


def test_a_bootstrap_key_given_again_keeps_its_id_and_a_new_key_gets_its_own(registry):
    first = registry.issue_api_key("acme", "admin", "bootstrap", key=KEY)
    assert registry.issue_api_key("acme", "admin", "bootstrap", key=KEY) == first
    other_id, other_key = registry.issue_api_key("acme", "viewer")
    assert other_id != first[0] and other_key.startswith("twk_")
    assert registry.lookup_key(other_key).role == "viewer" and registry.lookup_key(KEY).id == first[0]
    with registry.session() as s:
        assert s.scalar(select(func.count()).select_from(ApiKey)) == 2


def test_threads_racing_in_one_process_get_one_key(registry):
    """The API's key creation and a start-up in the same process share an engine: the same rule holds."""
    import threading

    barrier, ids = threading.Barrier(8), []

    def create() -> None:
        barrier.wait()
        ids.append(registry.issue_api_key("acme", "admin", "bootstrap", key=KEY + "-threads")[0])

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert len(ids) == 8 and len(set(ids)) == 1
