"""Offline CSV scoring and its CLI; and that the benchmark runs and reports what it promises."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from edge.detect.cli import app
from edge.detect.offline import parse_timestamp, score_csv

SPIKE_ROW = 350  # the default detector judges levels after 300 samples (or a day) of history


def write_csv(path, n=400, sep=",", iso=False, spike_row=SPIKE_ROW):
    rng = np.random.default_rng(1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter=sep)
        w.writerow(["timestamp", "supply_air", "current", "note"])
        for i in range(n):
            iso_ts = f"2024-05-01T{12 + i // 360:02d}:{i // 6 % 60:02d}:{i % 6 * 10:02d}Z"
            ts = iso_ts if iso else str(1_714_564_800 + 10 * i)
            # bounded noise: a Gaussian's rare new extremes are (rightly) news to the default detector
            air = 4.0 + 0.1 * rng.uniform(-1, 1) + (6.0 if i == spike_row else 0.0)
            w.writerow([ts, f"{air:.3f}", f"{12 + 0.2 * rng.uniform(-1, 1):.3f}", f"row {i}"])


def read(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=sep))


@pytest.mark.parametrize("iso", [False, True])
def test_known_spike_is_the_only_anomalous_row(tmp_path, iso):
    write_csv(tmp_path / "in.csv", iso=iso)
    summary = score_csv(tmp_path / "in.csv", tmp_path / "out.csv")
    rows = read(tmp_path / "out.csv")
    assert summary == {"rows": 400, "points": 2, "anomalies": 1}
    assert [i for i, r in enumerate(rows) if r["anomaly"] == "1"] == [SPIKE_ROW]
    assert list(rows[0]) == ["timestamp", "supply_air", "current", "note", "score", "anomaly"]
    assert rows[5]["note"] == "row 5"  # non-numeric columns pass through
    scores = [float(r["score"]) for r in rows]
    assert all(0 <= s <= 1 for s in scores)
    assert [s >= 0.5 for s in scores] == [r["anomaly"] == "1" for r in rows]


def test_config_file_and_separator(tmp_path):
    write_csv(tmp_path / "in.csv", sep=";")
    (tmp_path / "d.yaml").write_text(
        "default: []\ncolumns:\n  current: [{kind: limits, hi: 12.1, hysteresis: 0.2}]\n")
    score_csv(tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "d.yaml", sep=";")
    rows = read(tmp_path / "out.csv", sep=";")
    expect, alarm = [], False
    for r in rows:  # only 'current' is watched, by limits alone
        x = float(r["current"])
        alarm = x > 12.1 or (alarm and x >= 12.1 - 0.2)
        expect.append(alarm)
    assert [r["anomaly"] == "1" for r in rows] == expect
    assert 3 < sum(expect) < 397


def test_config_naming_an_unknown_column_says_which(tmp_path):
    write_csv(tmp_path / "in.csv")
    with pytest.raises(ValueError, match="columns flow are not numeric columns"):
        score_csv(tmp_path / "in.csv", tmp_path / "out.csv", {"columns": {"flow": []}})


def test_missing_timestamp_column_hints_at_the_separator(tmp_path):
    write_csv(tmp_path / "in.csv", sep=";")
    with pytest.raises(ValueError, match=r"no 'timestamp' column .* is --sep right\?"):
        score_csv(tmp_path / "in.csv", tmp_path / "out.csv")


def test_empty_cells_are_missing_samples_not_errors(tmp_path):
    (tmp_path / "in.csv").write_text("timestamp,a\n0,1\n1,\n2,1\n")
    score_csv(tmp_path / "in.csv", tmp_path / "out.csv")
    assert [r["anomaly"] for r in read(tmp_path / "out.csv")] == ["0", "0", "0"]


@pytest.mark.parametrize(("text", "ns"), [
    ("0", 0),
    ("1714564800.25", 1_714_564_800_250_000_000),
    ("2024-05-01T12:00:00Z", 1_714_564_800_000_000_000),
    ("2024-05-01T12:00:00", 1_714_564_800_000_000_000),
    ("2024-05-01T14:00:00+02:00", 1_714_564_800_000_000_000),
    ("2024-05-01 12:00:00.123456789Z", 1_714_564_800_123_456_789),
])
def test_timestamps_iso_or_epoch_seconds(text, ns):
    assert parse_timestamp(text) == ns


def test_bad_timestamp_names_the_line(tmp_path):
    (tmp_path / "in.csv").write_text("timestamp,a\n0,1\nyesterday,2\n")
    with pytest.raises(ValueError, match="line 3: timestamp 'yesterday' is neither ISO 8601 nor epoch"):
        score_csv(tmp_path / "in.csv", tmp_path / "out.csv")


def test_cli_run_writes_scored_csv(tmp_path):
    write_csv(tmp_path / "in.csv", sep=";")
    result = CliRunner().invoke(app, ["run", "--input", str(tmp_path / "in.csv"), "--output",
                                      str(tmp_path / "out.csv"), "--sep", ";"])
    assert result.exit_code == 0, result.output
    assert "1 anomalous rows" in result.output
    assert [i for i, r in enumerate(read(tmp_path / "out.csv", ";")) if r["anomaly"] == "1"] == [SPIKE_ROW]


def test_cli_reports_errors_without_a_traceback(tmp_path):
    (tmp_path / "in.csv").write_text("timestamp,a\n0,1\n")
    (tmp_path / "d.yaml").write_text("[{kind: fft}]\n")
    result = CliRunner().invoke(app, ["run", "--input", str(tmp_path / "in.csv"), "--output",
                                      str(tmp_path / "out.csv"), "--config", str(tmp_path / "d.yaml")])
    assert result.exit_code == 2
    assert "d.yaml: point 'a': detectors[0]: unknown kind 'fft'" in result.output
    assert "Traceback" not in result.output


def test_bench_runs_small_and_reports_every_figure(tmp_path):
    from edge.detect.bench import run_bench

    res = run_bench(str(tmp_path / "b.json"), n_points=50, n_samples=20_000, tick=1_000, python_samples=2_000,
                    river_samples=200, repeats=1, latency=False, quiet=True)
    for key in ("ewma_kernel_sps", "ensemble_sps", "python_z_sps", "ewma_vs_python", "river_hst_sps"):
        assert key in res
    assert res["ewma_kernel_sps"] > res["python_z_sps"]
    assert (tmp_path / "b.json").exists()
