"""``python -m twin coldchain evaluate`` as an operator runs it: exact JSON, a readable table, exit codes
0 pass / 1 fail / 2 bad input. The CLI takes seconds to start, so the process runs start at once in a
module fixture and the tests read their results; further bad inputs run in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from twin.coldchain_cli import app

ROOT = Path(__file__).resolve().parents[1]
WHO_CASE = [31.0] * 24 + [20.0] * 12 + [31.0] * 18 + [20.0] * 12 + [31.0] * 21  # 10-minute readings


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    d = tmp_path_factory.mktemp("coldchain")
    who = _write(d / "who.csv", "timestamp,temperature\n" + "".join(
        f"{1_704_067_200 + 600 * i},{v}\n" for i, v in enumerate(WHO_CASE)))
    fridge = _write(d / "fridge.csv", "timestamp,temperature,humidity\n"
                                      "2024-03-01T00:00:00Z,4.0,50\n"
                                      "2024-03-01T01:00:00+01:00,6.5,50\n"  # = 00:00Z+0h: sorted into place
                                      "2024-03-01T00:30:00,8.0,50\n"
                                      "2024-03-01T01:30:00Z,5.0,50\n")
    profile = _write(d / "fridge.yaml", "name: fridge\n"
                                        "boundaries:\n"
                                        "  - {name: warm, above: 8.0, after: 90m, mode: single, severity: medium}\n"
                                        "mkt: {limit: 8.0}\n")
    bad_profile = _write(d / "bad.yaml", "name: bad\nboundaries:\n"
                                         "  - {name: warm, above: 8.0, after: soon, mode: single, severity: high}\n")
    bad_csv = _write(d / "bad.csv", "timestamp,temperature\n2024-03-01T00:00:00Z,4.0\n2024-03-01T00:10:00Z,n/a\n")
    no_column = _write(d / "nocol.csv", "time,temp\n0,4.0\n")
    cases = {
        "who_json": ["--profile", "who-type-1", "--input", who, "--json"],
        "who_table": ["--profile", "who-type-1", "--input", who],
        "bad_profile": ["--profile", bad_profile, "--input", fridge, "--json"],
    }
    in_process = {
        "fridge_json": ["--profile", profile, "--input", fridge, "--json"],
        "bad_csv": ["--profile", "who-type-1", "--input", bad_csv, "--json"],
        "no_column": ["--profile", "who-type-1", "--input", no_column],
        "unknown_profile": ["--profile", "who-type-9", "--input", fridge],
    }
    procs = {name: subprocess.Popen([sys.executable, "-m", "twin", "coldchain", "evaluate", *args], cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "NO_COLOR": "1"})
             for name, args in cases.items()}
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=120)
        out[name] = subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)
    runner = CliRunner()
    for name, args in in_process.items():  # more bad inputs, without paying a process start each
        r = runner.invoke(app, ["evaluate", *args])
        out[name] = subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)
    return out


def test_who_cumulative_case_prints_exact_json_and_exits_1(runs):
    r = runs["who_json"]
    assert (r.returncode, r.stderr) == (1, "")
    assert json.loads(r.stdout) == {
        "profile": "who-type-1",
        "readings": 87,
        "start": "2024-01-01T00:00:00Z",
        "end": "2024-01-01T14:30:00Z",
        "duration_s": 52200.0,
        "median_spacing_s": 600.0,
        "min_c": 20.0,
        "max_c": 31.0,
        "mean_c": 27.97,
        "mkt": {"delta_h_kj_mol": 83.144, "mkt_c": 29.0, "window_s": 86400.0, "window_mkt_c": 29.0,
                "window_start": "2024-01-01T00:00:00Z", "window_end": "2024-01-01T14:30:00Z",
                "window_complete": False, "limit_c": 8.0, "over_limit": True},
        "paused_s": 0.0,
        "boundaries": [
            {"name": "heat-spike", "condition": "≥ 45.0 °C", "after_s": 3600.0, "mode": "single",
             "severity": "high", "out_of_range_s": 0.0, "alarms": 0},
            {"name": "heat-total", "condition": "≥ 30.0 °C", "after_s": 36000.0, "mode": "cumulative",
             "severity": "high", "out_of_range_s": 37800.0, "alarms": 1},
            {"name": "freeze", "condition": "≤ -0.5 °C", "after_s": 3600.0, "mode": "single",
             "severity": "high", "out_of_range_s": 0.0, "alarms": 0},
        ],
        "alarms": [
            {"boundary": "heat-total", "severity": "high", "occurrence": 1, "fired_at": "2024-01-01T14:00:00Z",
             "elapsed_s": 50400.0, "counter_s": 36000.0, "out_of_range_s": 36000.0, "value_c": 31.0,
             "excursion_start": "2024-01-01T11:00:00Z"},
        ],
        "verdict": {"result": "fail", "disposition": None, "reasons": [
            "heat-total: ≥ 30.0 °C for 10h cumulative, reached at 2024-01-01T14:00:00Z",
            "MKT 29.00 °C over the whole record (14h30m) exceeds the limit 8.0 °C",
        ]},
    }


def test_without_json_prints_a_readable_table(runs):
    r = runs["who_table"]
    assert r.returncode == 1
    for text in ("who-type-1: 87 readings", "MKT (ΔH 83.144 kJ/mol)", "29.00 °C", "heat-total", "10h30m",
                 "2024-01-01T14:00:00Z", "FAIL", "• heat-total: ≥ 30.0 °C for 10h cumulative"):
        assert text in r.stdout


def test_profile_file_and_iso_timestamps_pass_with_exit_0(runs):
    r = runs["fridge_json"]
    assert (r.returncode, r.stderr) == (0, "")
    out = json.loads(r.stdout)
    assert (out["profile"], out["readings"], out["start"], out["end"]) == (
        "fridge", 4, "2024-03-01T00:00:00Z", "2024-03-01T02:00:00Z")
    # 01:00+01:00 is 00:00Z, the instant of the 4.0: that reading holds 0 s, then 6.5 for 30 min, 8.0 for
    # 1 h, and the last (5.0) the median spacing, 30 min.
    assert out["mkt"] == {"delta_h_kj_mol": 83.144, "mkt_c": 6.97, "limit_c": 8.0, "over_limit": False}
    assert (out["boundaries"][0]["out_of_range_s"], out["alarms"]) == (3600.0, [])  # 1 h at 8.0 < 90m
    assert out["verdict"] == {"result": "pass", "reasons": [], "disposition": None}


def test_bad_profile_exits_2_naming_the_field(runs):
    r = runs["bad_profile"]
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.endswith("bad.yaml: boundaries[0].after: 'soon' is not a duration (use e.g. 45s, 30m, 1h, "
                             "10h, 2d)\n")


def test_bad_reading_exits_2_naming_line_and_column(runs):
    r = runs["bad_csv"]
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr.endswith("bad.csv: line 3: temperature: 'n/a' is not a number\n")


def test_missing_columns_exit_2(runs):
    r = runs["no_column"]
    assert r.returncode == 2
    assert r.stderr.endswith("nocol.csv: missing column(s) timestamp, temperature (found: time, temp)\n")


def test_unknown_profile_name_exits_2(runs):
    r = runs["unknown_profile"]
    assert r.returncode == 2
    assert "error: who-type-9: no such file, and not a shipped profile (fda-cold-holding," in r.stderr
