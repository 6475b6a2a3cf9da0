"""C-MAPSS replay: every file row becomes exactly one sample per point, with the file's values.

Most tests write a small file in the C-MAPSS layout so the suite does not depend on the data set; one
checks the real FD001 when ``/work/shared/data/CMAPSS`` is present.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from typer.testing import CliRunner

from models.catalogue import load_type
from simulators.cli import app
from simulators.turbofan import (
    DEFAULT_DATA,
    POINTS,
    engine_id,
    ground_truth,
    load_engines,
    run_turbofan,
    turbofan_readings,
)

T0 = 1_748_822_400 * 10**9
S = 10**9


def write_cmapss(folder: Path, dataset: str = "FD001", cycles: tuple[int, ...] = (3, 2)) -> list[list[str]]:
    """A train and a test file with ``cycles[u-1]`` rows for unit u, plus RUL; returns the train rows' tokens."""
    rows = []
    for unit, n in enumerate(cycles, start=1):
        for c in range(1, n + 1):
            values = [f"{unit * 0.001 - c * 0.0001:.4f}", "-0.0003", "100.0",
                      *(f"{500 + 7 * j + unit + c / 100:.2f}" for j in range(21))]
            rows.append([str(unit), str(c), *values])
    text = "\n".join(" ".join(r) + "  " for r in rows) + "\n"  # trailing blanks, as in NASA's files
    (folder / f"train_{dataset}.txt").write_text(text)
    (folder / f"test_{dataset}.txt").write_text(text)
    (folder / f"RUL_{dataset}.txt").write_text("".join(f"{100 + 30 * u}\n" for u in range(len(cycles))))
    return rows


def test_every_row_becomes_one_sample_per_point_with_the_file_values(tmp_path):
    rows = write_cmapss(tmp_path)
    engines = load_engines(tmp_path, "FD001")
    assert [e.asset_id for e in engines] == ["engine-FD001-001", "engine-FD001-002"]
    readings = list(turbofan_readings(engines, T0, cycle_period_s=2.0))
    assert len(readings) == 5 * 24
    got = {(r.asset, r.point, r.t_ns): (r.value, r.quality) for r in readings}
    for row in rows:
        unit, cycle = int(row[0]), int(row[1])
        for point, token in zip(POINTS, row[2:], strict=True):
            assert got[(engine_id("FD001", unit), point, T0 + (cycle - 1) * 2 * S)] == (float(token), 0)
    assert [r.t_ns for r in readings] == sorted(r.t_ns for r in readings)


def test_points_match_the_turbofan_asset_type():
    t = load_type(Path(__file__).parents[1] / "models" / "types" / "turbofan.yaml")
    assert tuple(t.points) == POINTS
    assert t.points["s_3"].unit == "degR" and t.points["s_11"].unit == "psia"


def test_ground_truth_puts_failure_at_the_last_train_cycle_and_after_the_test_rul(tmp_path):
    write_cmapss(tmp_path, cycles=(3, 2))
    train = ground_truth(load_engines(tmp_path, "FD001"), T0, 10.0, rul_cap_cycles=2)
    f1, f2 = train["faults"]
    assert (f1["asset"], f1["failure_ns"], f1["start_ns"]) == ("engine-FD001-001", T0 + 20 * S, T0 + 0 * S)
    assert (f2["failure_ns"], f2["start_ns"], f2["end_ns"]) == (T0 + 10 * S, T0, T0 + 10 * S)
    assert train["end_ns"] == T0 + 30 * S and train["assets"][0]["type"] == "turbofan"

    test_engines = load_engines(tmp_path, "FD001", split="test")
    assert [e.failure_cycle for e in test_engines] == [3 + 100, 2 + 130]
    assert test_engines[0].asset_id == "engine-FD001-test-001"
    # With the usual cap of 125 cycles, engine 2's degradation starts after its data ends: left out.
    truth = ground_truth(test_engines, T0, 1.0)
    assert [f["asset"] for f in truth["faults"]] == ["engine-FD001-test-001"]
    assert truth["faults"][0]["failure_ns"] == T0 + 102 * S


def test_units_selects_the_first_engines_and_bad_names_are_explained(tmp_path):
    write_cmapss(tmp_path, cycles=(2, 2, 2))
    assert [e.unit for e in load_engines(tmp_path, "FD001", units=2)] == [1, 2]
    with pytest.raises(ValueError, match="FD001, FD002"):
        load_engines(tmp_path, "FD009")
    with pytest.raises(FileNotFoundError, match=r"train_FD002\.txt"):
        load_engines(tmp_path, "FD002")


@pytest.mark.usefixtures("cmapss")
def test_fd001_train_unit_1_replays_exactly_its_192_rows():
    lines = [ln.split() for ln in (DEFAULT_DATA / "train_FD001.txt").read_text().splitlines() if ln.strip()]
    unit1 = [ln for ln in lines if ln[0] == "1"]
    assert len(unit1) == 192
    (engine,) = load_engines(DEFAULT_DATA, "FD001", units=1)
    assert engine.failure_cycle == 192
    readings = list(turbofan_readings([engine], T0, 1.0))
    assert len(readings) == 192 * 24
    by_cycle: dict[int, dict[str, float]] = defaultdict(dict)
    for r in readings:
        assert r.asset == "engine-FD001-001"
        by_cycle[(r.t_ns - T0) // S + 1][r.point] = r.value
    for row in unit1:
        assert by_cycle[int(row[1])] == {p: float(tok) for p, tok in zip(POINTS, row[2:], strict=True)}


def test_replay_over_mqtt_delivers_every_value_bit_for_bit(mosquitto, tmp_path):
    rows = write_cmapss(tmp_path, cycles=(4, 3))
    prefix = f"cm{uuid.uuid4().hex[:8]}"
    received: dict[tuple[str, str], list[float]] = defaultdict(list)
    done, subscribed, count = threading.Event(), threading.Event(), [0]

    def on_message(client, userdata, msg) -> None:
        _, asset, point = msg.topic.split("/")
        received[(asset, point)].append(float(msg.payload))
        count[0] += 1
        if count[0] >= 7 * 24:
            done.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{prefix}")
    sub.on_connect = lambda c, *a: c.subscribe(f"{prefix}/#", qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = on_message
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        run = run_turbofan(tmp_path, "FD001", broker_url=mosquitto.url, realtime=False, style="bare",
                           topic_template=prefix + "/{asset}/{point}", out_dir=tmp_path / "out")
        assert done.wait(10)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert run.report is not None and run.report.acked == run.n_readings == 7 * 24
    for row in rows:
        asset = engine_id("FD001", int(row[0]))
        for point, token in zip(POINTS, row[2:], strict=True):
            assert received[(asset, point)][int(row[1]) - 1] == float(token)
    truth = json.loads((tmp_path / "out" / "ground_truth.json").read_text())
    assert len(truth["faults"]) == 2


def test_cli_writes_the_ground_truth_without_a_broker(tmp_path):
    write_cmapss(tmp_path)
    result = CliRunner().invoke(app, ["turbofan", "--data", str(tmp_path), "--dataset", "FD001", "--units", "1",
                                      "--cycle-period", "2s", "--no-realtime", "--out", str(tmp_path / "gt")])
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "gt" / "ground_truth.json").read_text())
    assert [a["id"] for a in truth["assets"]] == ["engine-FD001-001"] and truth["sample_period_s"] == 2.0


@pytest.fixture
def cmapss():
    """The real data lives in the shared folder beside the repository; without it this test fails, not skips."""
    if not (DEFAULT_DATA / "train_FD001.txt").is_file():
        pytest.fail(f"C-MAPSS not at {DEFAULT_DATA}: the shared data folder belongs beside the repository")
