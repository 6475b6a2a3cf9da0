"""A full disk on the gateway: the agent keeps running, stops taking telemetry into its outbox beyond a reserve
kept for events, counts what it could not store, reports it in its status, delivers its alarms, and takes
telemetry again once there is room. On a real small filesystem: a tmpfs with a size, mounted here (as root)."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.outbox import RESERVE_BYTES, Outbox
from simulators.devices import Reading, publish_readings
from tests.harness import MosquittoServer
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

S = 1_000_000_000
T0 = 1_767_225_600 * S


@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    """A 16 MB tmpfs of its own; mounting needs root, and a run without it fails here rather than skipping."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True,
                          text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs (the full-disk tests need root): {done.stderr.strip()}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(path: Path) -> int:
    """Write ``path`` until the filesystem has no byte left; the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            chunk = b"\0" * size
            while True:
                try:
                    written += os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return written


def _batch(seq: int) -> bytes:
    return b'{"seq": %d, "pad": "%s"}' % (seq, b"x" * 8000)


def test_the_outbox_on_a_full_disk_counts_telemetry_it_cannot_store_and_keeps_events_in_the_reserve(small_fs):
    ob = Outbox(small_fs / "outbox.sqlite")
    assert (small_fs / "outbox.sqlite.reserve").stat().st_size == RESERVE_BYTES
    _fill(small_fs / "filler")
    stored = refused = 0
    while refused < 5:  # the WAL and free pages take what they still can; then the disk says no
        if ob.put_telemetry("t", 10, _batch) is None:
            refused += 1
        else:
            stored += 1
        assert stored < 1000
    st = ob.stats()
    assert (st["disk_full"], st["unstored_batches"], st["unstored_samples"], st["next_seq"]) == (1, 5, 50, stored)

    ob.put_event("e", lambda seq: b'{"alarm": %d}' % seq)  # into the reserve
    assert not (small_fs / "outbox.sqlite.reserve").exists()
    assert [(r.topic, r.seq) for r in ob.pending(1)] == [("e", 0)]
    assert ob.put_telemetry("t", 10, _batch) is None  # what the reserve freed is kept for events
    assert ob.stats()["events_waiting_for_disk"] == 0 and ob.stats()["unstored_samples"] == 60

    (small_fs / "filler").unlink()  # space again
    assert ob.put_telemetry("t", 10, _batch) == stored
    st = ob.stats()
    assert (st["disk_full"], st["unstored_batches"], st["unstored_samples"]) == (0, 6, 60)
    assert (small_fs / "outbox.sqlite.reserve").stat().st_size == RESERVE_BYTES
    ob.close()
    again = Outbox(small_fs / "outbox.sqlite")  # what could not be stored is counted for good
    assert (again.stats()["unstored_samples"], again.stats()["disk_full_episodes"]) == (60, 0)
    again.close()


def test_events_wait_in_memory_when_not_even_the_reserve_holds_them(small_fs):
    ob = Outbox(small_fs / "outbox.sqlite")
    (small_fs / "outbox.sqlite.reserve").unlink()  # say another process took the reserve's room
    _fill(small_fs / "filler")
    for _ in range(200):  # fill the WAL too, so nothing more goes in
        ob.put_event("e", b"x" * 4000)
        if ob.stats()["events_waiting_for_disk"]:
            break
    waiting = ob.stats()["events_waiting_for_disk"]
    assert waiting == 1 and ob.stats()["disk_full"] == 1
    ob.put_event("e", b"late")
    assert ob.stats()["events_waiting_for_disk"] == 2
    (small_fs / "filler").unlink()
    ob.put_event("e", b"last")
    rows = ob.pending(10_000)
    assert ob.stats()["events_waiting_for_disk"] == 0 and [r.payload for r in rows[-2:]] == [b"late", b"last"]
    ob.close()


# -- the real agent ------------------------------------------------------------------------------------------

POINTS = ("supply_air", "return_air", "ambient")


@pytest.fixture
def brokers():
    site, cloud = MosquittoServer(), MosquittoServer()
    site.start()
    cloud.start()
    yield site, cloud
    site.close()
    cloud.close()


def _readings(first: int, n: int, supply_air: float | None = None) -> list[Reading]:
    """n samples per point, 1 s apart from second ``first`` (supply air fixed when given)."""
    return [Reading("trailer-001", p, T0 + (first + i) * S,
                    supply_air if supply_air is not None and p == "supply_air" else 4.0 + (i % 8) * 0.25)
            for i in range(n) for p in POINTS]


def test_the_agent_on_a_filesystem_that_fills_up_keeps_running_and_delivers_its_alarms(
        tmp_path, small_fs, brokers, influxdb, postgres):
    site, cloud_broker = brokers
    db = f"full_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    cloud = CloudProcess(tmp_path, cloud_broker.url, postgres.url_for(db), influxdb.url, db)
    config = gateway_config(small_fs, cloud_broker.url, site.url)  # outbox and detector state on the small disk
    edge = EdgeProcess(tmp_path / "edge", config)

    def stored() -> int:
        res = influxdb.query("SELECT count(value) FROM telemetry", db=db)
        series = res["results"][0].get("series", [])
        return series[0]["values"][0][1] if series else 0

    def status() -> dict[str, int]:
        with cloud.client() as api:
            gws = [g for g in api.get("/api/v1/gateways").json()["items"] if g["id"] == "gw-e2e"]
        return gws[0]["counters"] if gws else {}

    def alarms() -> list[dict]:
        with cloud.client() as api:
            r = api.get("/api/v1/assets/trailer-001/alarms")
        return r.json()["items"] if r.status_code == 200 else []

    published = 0

    def send(readings: list[Reading]) -> None:
        nonlocal published
        assert publish_readings(site.url, readings, rate=1000).acked == len(readings)
        published += len(readings)

    try:
        cloud.start()
        cloud.wait_ready()
        edge.start()
        edge.wait_log("source sensors: connected")
        send(_readings(0, 50))
        wait_until(lambda: stored() == published, timeout=30, what="the first samples stored")

        _fill(small_fs / "filler")  # the disk fills up (logs, another process...)
        send(_readings(50, 300))
        wait_until(lambda: status().get("disk_full") == 1 and status().get("unstored_samples", 0) > 0, timeout=30,
                   what="the agent to report a full disk")
        hot_from = 350  # then supply air above 8 degC for 16.5 min of sample time: the local rule fires
        send([Reading("trailer-001", "supply_air", T0 + (hot_from + 10 * i) * S, 9.5) for i in range(100)])
        got = wait_until(alarms, timeout=60, what="the alarm raised on the full disk, in the cloud")
        assert [(a["rule"], a["start_ns"]) for a in got] == [("supply-air-high", T0 + hot_from * S)]
        assert edge.alive and status()["disk_full"] == 1

        (small_fs / "filler").unlink()  # room again
        send(_readings(2000, 50))
        wait_until(lambda: status().get("disk_full") == 0, timeout=30, what="the agent to take telemetry again")
        # Every sample the agent took in is in InfluxDB or counted as not stored: none unaccounted for.
        final = wait_until(lambda: (c := status()).get("samples_in") == published
                           and c.get("outbox_depth") == 0 and stored() + c["unstored_samples"] == published and c,
                           timeout=60, what="every sample stored or counted")
        assert 0 < final["unstored_samples"] < published
        assert final["unstored_batches"] > 0 and final["disk_full_episodes"] == 1
        assert edge.stop() == 0  # it ran through it all, and stops cleanly
    finally:
        edge.stop()
        cloud.stop()
        influxdb.drop_database(db)
        postgres.drop_database(db)
