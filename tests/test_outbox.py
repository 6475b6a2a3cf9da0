"""The outbox keeps every batch on disk until acknowledged, numbers them, and thins only telemetry."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from edge.outbox import Outbox


def _put(ob: Outbox, size: int = 100, n: int = 10) -> int:
    return ob.put_telemetry("t", n, lambda seq: bytes([seq % 256]) * size)


def test_sequence_numbers_are_consecutive_and_survive_reopen(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    assert [_put(ob) for _ in range(3)] == [0, 1, 2]
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite")
    assert _put(ob) == 3
    assert ob.stats()["outbox_depth"] == 4


def test_rows_leave_only_when_acknowledged(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    for _ in range(3):
        _put(ob)
    rows = ob.pending(10)
    ob.ack(rows[1].id)
    assert [r.id for r in ob.pending(10)] == [rows[0].id, rows[2].id]
    assert ob.stats()["outbox_bytes"] == 200


def test_events_go_ahead_of_telemetry_and_in_flight_rows_are_skipped(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    _put(ob)
    _put(ob)
    ob.put_event("e", b"alarm")
    rows = ob.pending(10)
    assert [r.topic for r in rows] == ["e", "t", "t"]
    assert [r.id for r in ob.pending(10, skip={rows[0].id, rows[1].id})] == [rows[2].id]


def test_outbox_keeps_alarms_when_full_and_counts_what_it_thinned(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", max_bytes=64 * 1024)
    ob.put_event("e", b"x" * 1000)
    for _ in range(200):
        _put(ob, size=1000, n=10)
    st = ob.stats()
    assert st["outbox_bytes"] <= 64 * 1024
    kept = (64 * 1024 - 1000) // 1000  # 64 telemetry rows fit beside the alarm
    assert st["thinned_batches"] == 200 - kept and st["thinned_samples"] == 10 * (200 - kept)
    rows = ob.pending(1000)
    assert rows[0].topic == "e"
    # what is left is the newest telemetry, in order
    left = [r.payload[0] for r in rows[1:]]
    assert left == [s % 256 for s in range(200 - kept, 200)]


def test_committed_batches_survive_kill_9(tmp_path):
    path = tmp_path / "o.sqlite"
    code = textwrap.dedent(f"""
        import os, signal
        from edge.outbox import Outbox
        ob = Outbox({str(path)!r})
        for _ in range(50):
            ob.put_telemetry("t", 1, lambda seq: b"payload-%d" % seq)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    ob = Outbox(path)
    assert [r.payload for r in ob.pending(100)] == [b"payload-%d" % i for i in range(50)]
    assert _put(ob) == 50
