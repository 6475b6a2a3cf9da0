"""The waveform wire format (``models.waveform``) and the edge's block stage (``edge.blocks``), without servers:
frames survive the wire exactly, hostile payloads are refused with the field named, and blocks become the asset's
feature points (the worst channel), with envelope energy at BPFO rising once the simulated bearing is worn."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from edge.blocks import MAX_PENDING, BlockStage
from models.machine import Bearing, MachineProfile
from models.waveform import Frame, FrameError, decode, decode_snapshot, encode, encode_snapshot
from simulators.machine import Machine, MachineParams
from simulators.waveforms import machine_frame

DAY_S = 86_400.0


def _frame(ch: int = 2, n: int = 512, asset: str = "m-1") -> Frame:
    return Frame(asset, 25_600.0, 1_700_000_000 * 10**9, np.arange(ch * n, dtype=np.float32).reshape(ch, n), 1790.0)


def test_a_frame_survives_the_wire_bit_for_bit():
    f = _frame()
    wire = encode(f)
    assert len(wire) == 33 + len("m-1") + 4 * 2 * 512
    g = decode(wire)
    assert (g.asset, g.sample_rate_hz, g.t0_ns, g.rpm) == (f.asset, f.sample_rate_hz, f.t0_ns, f.rpm)
    assert np.array_equal(g.data, f.data) and g.data.dtype == np.float32


def test_a_frame_without_an_asset_takes_the_topics():
    assert decode(encode(_frame(asset="")), "from-topic").asset == "from-topic"
    with pytest.raises(FrameError, match="no asset"):
        decode(encode(_frame(asset="")))


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda b: b[:20], "shorter than the 33-byte header"),
    (lambda b: b"XXXX" + b[4:], "not a waveform frame"),
    (lambda b: b[:4] + b"\x02" + b[5:], "version 2"),
    (lambda b: b[:-4], "the header announces"),
    (lambda b: b + b"\x00", "the header announces"),
    (lambda b: b[:6] + struct.pack("<H", 0) + b[8:], "0 channels"),
    (lambda b: b[:12] + struct.pack("<d", float("nan")) + b[20:], "sample rate nan"),
    (lambda b: b[:-4] + struct.pack("<f", float("inf")), "NaN or infinity"),
])
def test_a_hostile_frame_is_refused_naming_what_is_wrong(mangle, message):
    with pytest.raises(FrameError, match=message):
        decode(mangle(encode(_frame())))


def test_a_snapshot_holds_its_frames_and_refuses_a_zip_bomb():
    frames = [_frame(), _frame()]
    head, back = decode_snapshot(encode_snapshot({"asset": "m-1", "event_id": "e1"}, frames))
    assert head == {"asset": "m-1", "event_id": "e1", "frames": 2}
    assert [np.array_equal(a.data, b.data) for a, b in zip(frames, back, strict=True)] == [True, True]
    bomb = b"AWS1" + struct.pack("<I", 2) + b"{}" + zlib.compress(b"\x00" * (8 << 20), 9)
    with pytest.raises(FrameError, match="inflates past"):
        decode_snapshot(bomb, max_bytes=1 << 20)


POINTS = ("vib_velocity_rms", "vib_env_bpfo", "vib_kurtosis", "vib_accel_rms")


def _stage(profile: MachineProfile) -> tuple[BlockStage, dict]:
    index = {("pump-1", p): i for i, p in enumerate(POINTS)}
    return BlockStage({"pump-1": profile}, index), index


def test_blocks_become_the_assets_points_and_bpfo_energy_rises_once_the_bearing_is_worn():
    bearing = Bearing(n_balls=9, ball_diameter_mm=7.94, pitch_diameter_mm=39.04)
    m = Machine("pump-1", MachineParams(onset_s=10 * DAY_S, failure_s=40 * DAY_S, n_balls=9, ball_diameter_mm=7.94,
                                        pitch_diameter_mm=39.04), seed=2)
    stage, _ = _stage(MachineProfile(bearing=bearing))
    for day in (2, 5, 30, 35):
        stage.put(decode(encode(machine_frame(m, 0, day * DAY_S))))
    out: list[tuple] = []
    assert stage.drain(lambda *a: out.append(a)) == 4
    assert len(out) == 4 * len(POINTS)  # one sample per listed point and frame, nothing for unlisted points
    bpfo = {t // 10**9 // 86_400: v for i, t, v, _ in out if i == POINTS.index("vib_env_bpfo")}
    assert max(bpfo[2], bpfo[5]) < 0.1 and min(bpfo[30], bpfo[35]) > 0.3, bpfo
    assert stage.counts["blocks_in"] == 4 and stage.counts["block_samples"] == 4 * 4 * 25_600
    assert decode_snapshot(stage.snapshot("pump-1", {}))[0]["frames"] == 4  # the ring keeps the last 4


def test_each_point_is_the_worst_channel():
    stage, _ = _stage(MachineProfile())
    t = np.arange(25_600) / 25_600.0
    quiet, loud = np.sin(2 * np.pi * 100 * t), 5 * np.sin(2 * np.pi * 100 * t)
    stage.put(Frame("pump-1", 25_600.0, 0, np.vstack([quiet, loud, quiet]).astype(np.float32)))
    out: list[tuple] = []
    stage.drain(lambda *a: out.append(a))
    vel = next(v for i, _, v, _ in out if i == POINTS.index("vib_velocity_rms"))
    assert vel == pytest.approx(5 / (2 * np.pi * 100) / np.sqrt(2) * 1000, rel=0.005)


def test_blocks_of_unknown_assets_are_counted_and_a_flood_drops_the_oldest():
    stage, _ = _stage(MachineProfile())
    stage.put(_frame(asset="stranger"))
    for _ in range(MAX_PENDING + 3):
        stage.put(_frame(asset="pump-1", n=256))
    assert stage.counts["blocks_dropped"] == 4
    stage.drain(lambda *a: None)
    assert stage.counts["blocks_unmapped"] == 0 and stage.counts["blocks_in"] == MAX_PENDING  # the stranger went first
    stage.put(_frame(asset="stranger"))
    assert stage.drain(lambda *a: None) == 0 and stage.counts["blocks_unmapped"] == 1


def test_an_opcua_array_variable_arrives_as_a_block_with_its_source_time():
    from edge.config import OpcUaSource
    from edge.sources.opcua import OpcUaSourceRunner
    from simulators.opcua_server import SimOpcUaServer
    from simulators.waveforms import publish_frame_opcua
    from tests.harness import free_port
    from tests.harness.opcua import Recorder

    m = Machine("pump-1", MachineParams(), seed=5)
    frames = [machine_frame(m, 1_700_000_000 * 10**9, 3600.0 * i, channels=2) for i in range(2)]
    with SimOpcUaServer(free_port(), [("pump-1", "rotating-machine")]) as sim:
        node = publish_frame_opcua(sim, frames[0])
        cfg = OpcUaSource.model_validate({"type": "opcua", "endpoint": sim.endpoint, "publishing_interval_ms": 20,
                                          "nodes": [{"node": node, "asset": "pump-1", "point": "waveform",
                                                     "waveform": {"sample_rate_hz": 25_600.0, "channels": 2}}]})
        sink = Recorder()
        runner = OpcUaSourceRunner(cfg)
        runner.start(sink)
        try:
            sink.wait_for(lambda s: len(s) >= 1, 20, "the first block")
            publish_frame_opcua(sim, frames[1])
            sink.wait_for(lambda s: len(s) >= 2, 20, "the second block")
        finally:
            runner.stop()
    got = [s[3] for s in sink.samples]
    assert [(g.asset, g.t0_ns, g.data.shape) for g in got] == [("pump-1", f.t0_ns, (2, 25_600)) for f in frames]
    assert all(np.array_equal(g.data, f.data) for g, f in zip(got, frames, strict=True))
    assert runner.counters()["opcua_blocks"] == 2


def test_the_cloud_dead_letters_a_malformed_snapshot_and_keeps_a_good_one(tmp_path):
    from cloud.machines import SnapshotSink, list_snapshots
    from cloud.registry import DeadLetter, Registry

    reg = Registry(f"sqlite:///{tmp_path / 'r.sqlite'}")
    reg.create_schema()
    sink = SnapshotSink(reg)
    topic = "twin/v1/acme/gw-1/snapshots"
    sink(topic, b"AWS1garbage")
    sink(topic, encode_snapshot({"asset": "m-1"}, [_frame(asset="other")]))  # frames of another asset
    sink(topic, encode_snapshot({"asset": "m-1", "event_id": "gw-1:m-1:vib_kurtosis:5", "reason": "anomaly"},
                                [_frame(), _frame()]))
    assert sink.counters == {"snapshots_stored": 1, "snapshots_rejected": 2}
    with reg.session() as s:
        assert s.query(DeadLetter).filter(DeadLetter.topic == topic).count() == 2
    (kept,) = list_snapshots(reg, "acme", "m-1")
    assert (kept["gateway"], kept["blocks"], kept["channels"], kept["event_id"]) == ("gw-1", 2, 2,
                                                                                   "gw-1:m-1:vib_kurtosis:5")
    reg.engine.dispose()
