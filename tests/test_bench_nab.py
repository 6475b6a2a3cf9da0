"""``twin bench nab``: reading nab-score, counting flags, the windowed-Gaussian baseline, and the section it writes.

None of this needs NAB: a made-up NAB folder, and stand-ins for ``nab-score`` and ``twin`` that keep their
contracts (arguments in, the same lines and CSV columns out), let the whole command run in a second.
The real benchmark is ``twin bench nab`` itself.
"""

from __future__ import annotations

import csv
import json
import stat
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import pytest
from typer.testing import CliRunner

from twin import bench
from twin.bench_nab import (
    FlagCount,
    NabRunError,
    NabScores,
    baseline_executable,
    count_flags,
    parse_results_dir,
    parse_scores,
    windowed_gaussian_scores,
)

PHI = NormalDist().cdf

# -- reading nab-score ----------------------------------------------------------------------------------------


def test_scores_are_read_from_the_last_score_line():
    out = ("published (standard / low FP / low FN): ARTime 74.9/65.1/80.4, HTM 70.5/62.6/75.2\n"
           "NAB: standard 12.0  low_FP 1.0  low_FN 2.0\n"
           "NAB: standard 67.3  low_FP -60.1  low_FN 71.0\n")
    assert parse_scores(out) == NabScores(standard=67.3, low_fp=-60.1, low_fn=71.0)


def test_output_without_a_score_line_is_an_error_quoting_its_end():
    with pytest.raises(NabRunError, match=r"no 'NAB: standard … low_FP … low_FN …' line(.|\n)*Traceback"):
        parse_scores("scoring …\nTraceback (most recent call last):\n")
    with pytest.raises(NabRunError, match="not numbers"):
        parse_scores("NAB: standard x  low_FP 1.0  low_FN 2.0\n")
    with pytest.raises(NabRunError, match="not finite"):
        parse_scores("NAB: standard nan  low_FP 1.0  low_FN 2.0\n")


def test_per_file_results_dir_is_read_from_stderr():
    assert parse_results_dir("warning: x\nper-file results: /tmp/nab-score.AbCd/results/candidate\n") == \
        Path("/tmp/nab-score.AbCd/results/candidate")
    assert parse_results_dir("nothing said\n") is None


# -- counting flags in twin detect run's output ---------------------------------------------------------------


def write_scored(path: Path, flags: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "score", "anomaly"])
        w.writerows([i, 1.0, 0.5, f] for i, f in enumerate(flags))
    return path


def test_flagged_rows_and_runs_of_them_are_counted(tmp_path):
    f = write_scored(tmp_path / "s.csv", ["1", "1", "0", "0", "1", "0", "1", "1", "1", ""])
    assert count_flags(f) == FlagCount(rows=10, flagged_rows=6, events=3)
    assert count_flags(write_scored(tmp_path / "q.csv", ["0"] * 5)) == FlagCount(rows=5, flagged_rows=0, events=0)


def test_scored_file_without_an_anomaly_column_or_with_a_bad_flag_is_refused_by_name(tmp_path):
    no_col = tmp_path / "no_col.csv"
    no_col.write_text("timestamp,value,score\n1,1.0,0.5\n")
    with pytest.raises(NabRunError, match=r"no_col\.csv: no 'anomaly' column"):
        count_flags(no_col)
    with pytest.raises(NabRunError, match=r"bad\.csv:3: anomaly 'yes' is not 0 or 1"):
        count_flags(write_scored(tmp_path / "bad.csv", ["0", "yes"]))


# -- the windowed-Gaussian baseline ---------------------------------------------------------------------------


def test_windowed_gaussian_is_the_two_sided_tail_against_a_window_that_grows_then_slides_by_whole_steps():
    got = windowed_gaussian_scores([0.0, 2.0, 4.0, 0.0, 10.0, 2.0, 2.0], window=3, step=2)
    m3, s3 = 14 / 3, ((4 - 14 / 3) ** 2 + (14 / 3) ** 2 + (10 - 14 / 3) ** 2) ** 0.5 / 3 ** 0.5
    expected = [
        0.0,                           # nothing seen yet
        1.0,                           # against [0]: a zero deviation, 2 is infinitely far
        PHI(3.0),                      # against [0, 2]: mean 1, sd 1
        PHI(2 / (8 / 3) ** 0.5),       # window full, [0, 2, 4]: mean 2, sd 1.633; below the mean as above it
        PHI(8 / (8 / 3) ** 0.5),       # the first value of a step is not in the window yet
        PHI(abs(2 - m3) / s3),         # a whole step in: [4, 0, 10]
        PHI(abs(2 - m3) / s3),
    ]
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_baseline_executable_scores_a_file_as_twin_detect_run_would(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n2014-04-01 00:00:00,1.0\n2014-04-01 00:05:00,3.0\n2014-04-01 00:10:00,1\n")
    exe = baseline_executable(tmp_path)
    done = subprocess.run([str(exe), "detect", "run", "--input", str(src), "--output", str(tmp_path / "out.csv")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["timestamp"] for r in rows] == ["2014-04-01 00:00:00", "2014-04-01 00:05:00", "2014-04-01 00:10:00"]
    assert [r["value"] for r in rows] == ["1.0", "3.0", "1"]
    assert [float(r["score"]) for r in rows] == pytest.approx([0.0, 1.0, PHI(1.0)], abs=1e-12)


# -- the command, with stand-ins for NAB, nab-score and twin --------------------------------------------------

FAKE_NAB_SCORE = """#!/bin/sh
# nab-score's contract: TWIN [-- args]; NAB from the environment; runs TWIN detect run on each file.
twin=$1; shift; [ "$1" = "--" ] && shift
echo "nab-score $(basename "$twin") $* NAB=$NAB" >> "$NAB/../calls.log"
for f in "$NAB"/data/*/*.csv; do
  "$twin" detect run --input "$f" --output "$NAB/../scored.csv" "$@" >/dev/null \\
    || { echo "detect run failed" >&2; exit 1; }
done
echo "published (standard / low FP / low FN): ARTime 74.9/65.1/80.4"
case "$twin" in
  *windowed-gaussian) echo "NAB: standard 39.6  low_FP 20.9  low_FN 47.4";;
  *) echo "NAB: standard 71.25  low_FP 58.04  low_FN 77.5";;
esac
echo "per-file results: /tmp/nab-score.TEST/results/candidate" >&2
"""

FAKE_TWIN = """#!/bin/sh
# twin detect run --input F --output O [--config C]: two events on art_flatline.csv, one on art_quiet.csv.
echo "twin $*" >> "$(dirname "$0")/calls.log"
in=$4; out=$6
case "$(basename "$in")" in
  art_flatline.csv) printf 'timestamp,value,score,anomaly\\n1,1,0.1,0\\n2,1,0.9,1\\n3,1,0.9,1\\n' > "$out"
                    printf '4,1,0.1,0\\n5,1,0.9,1\\n' >> "$out";;
  art_quiet.csv) printf 'timestamp,value,score,anomaly\\n1,1,0.1,0\\n2,1,0.2,0\\n3,1,0.9,1\\n' > "$out";;
  *) printf 'timestamp,value,score,anomaly\\n1,1,0.1,0\\n2,1,0.2,0\\n3,1,0.2,0\\n' > "$out";;
esac
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """A NAB folder with two quiet files and one labelled one, the stand-ins, and docs/ in tmp_path."""
    nab = tmp_path / "NAB"
    for sub in ("labels", "config", "nab", "data/artificialNoAnomaly", "data/realKnownCause"):
        (nab / sub).mkdir(parents=True)
    (nab / "run.py").write_text("")
    for name in ("art_flatline.csv", "art_noisy.csv", "art_quiet.csv"):
        (nab / "data/artificialNoAnomaly" / name).write_text("timestamp,value\n2014-04-01 00:00:00,1\n")
    (nab / "data/realKnownCause/nyc_taxi.csv").write_text("timestamp,value\n2014-04-01 00:00:00,1\n")
    tool = executable(tmp_path / "nab-score", FAKE_NAB_SCORE)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    twin = executable(bindir / "twin", FAKE_TWIN)
    monkeypatch.setattr(bench, "DOCS", tmp_path / "docs")
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "docs" / "bench")

    def run(*args: str):
        argv = ["nab", "--data", str(nab), "--tool", str(tool), "--twin", str(twin), *args]
        monkeypatch.setattr(sys, "argv", ["twin", "bench", *argv])
        return CliRunner().invoke(bench.app, argv)

    return {"nab": nab, "tool": tool, "twin": twin, "docs": tmp_path / "docs", "run": run, "tmp": tmp_path}


def test_bench_nab_writes_its_section_beside_the_scoreboard(setup):
    res = setup["run"]("--json", str(setup["tmp"] / "out.json"))
    assert res.exit_code == 0, res.output
    md = (setup["docs"] / "benchmarks.md").read_text()
    section = md[md.index("## Anomaly detection on NAB"):].splitlines()
    twin = setup["twin"]
    assert section[2] == f"- command: `twin bench nab --data {setup['nab']} --tool {setup['tool']} --twin {twin} " \
                         f"--json {setup['tmp'] / 'out.json'}`"
    assert section[3].startswith("- machine: ") and section[4].startswith("- date: ")
    assert section[6:21] == [
        "| what | measured | target / reference |",
        "| --- | --- | --- |",
        f"| **ours**: `{twin} detect run` defaults, standard / low FP / low FN | **71.2 / 58.0 / 77.5** "
        "| ≥ 70 / ≥ 60 / ≥ 75: not met (low FP) |",
        "| published: ARTime | 74.9 / 65.1 / 80.4 | NAB scoreboard |",
        "| published: Numenta HTM | 70.5 / 62.6 / 75.2 | NAB scoreboard |",
        "| published: CAD OSE | 69.9 / 67.0 / 73.2 | NAB scoreboard |",
        "| published: KNN-CAD | 58.0 / 43.4 / 64.8 | NAB scoreboard |",
        "| published: Random Cut Forest | 51.7 / 38.4 / 59.7 | NAB scoreboard |",
        "| published: Windowed Gaussian | 39.6 / 20.9 / 47.4 | NAB scoreboard |",
        "| published: null | 0.0 / 0.0 / 0.0 | NAB scoreboard |",
        "| artificialNoAnomaly (3 files, no anomaly in them): anomaly events | 3 events (4 of 11 rows flagged) "
        "| 0 |",
        "|   art_flatline.csv | 2 events (3 of 5 rows) | 0 |",
        "|   art_noisy.csv | 0 events (0 of 3 rows) | 0 |",
        "|   art_quiet.csv | 1 event (1 of 3 rows) | 0 |",
        "",
    ]
    rules = section[21]
    for rule in ("NAB's own scorer", "one parameter set for every file", "no look-ahead", "each file a fresh start"):
        assert rule in rules
    figures = json.loads((setup["tmp"] / "out.json").read_text())["figures"]
    assert figures["ours"] == {"standard": 71.25, "low_fp": 58.04, "low_fn": 77.5}
    assert figures["targets_met"] == {"standard": True, "low_fp": False, "low_fn": True}
    assert figures["results_dir"] == "/tmp/nab-score.TEST/results/candidate"
    assert figures["no_anomaly_events"] == 3 and "baseline" not in figures
    assert json.loads((setup["docs"] / "bench" / "nab.json").read_text())["figures"] == figures
    # the quiet files first, one fresh process each; then nab-score with the data folder it was given
    calls = (twin.parent / "calls.log").read_text().splitlines()
    assert [c.split(" --input ")[1].split(" ")[0].rsplit("/", 1)[1] for c in calls] == \
        ["art_flatline.csv", "art_noisy.csv", "art_quiet.csv"] * 2 + ["nyc_taxi.csv"]
    assert (setup["tmp"] / "calls.log").read_text() == f"nab-score twin  NAB={setup['nab']}\n"


def test_bench_nab_passes_one_config_to_every_run_and_scores_the_baseline_through_the_same_tool(setup):
    config = setup["tmp"] / "detectors.yaml"
    config.write_text("- {kind: ewma_z}\n")
    res = setup["run"]("--config", str(config), "--baseline")
    assert res.exit_code == 0, res.output
    rows = json.loads((setup["docs"] / "bench" / "nab.json").read_text())["rows"]
    assert rows[0][0] == "**ours**: `twin detect run --config detectors.yaml`, standard / low FP / low FN"
    assert rows[1] == ["windowed Gaussian (NAB's: window 6400, step 100), run here through the same scorer",
                       "39.6 / 20.9 / 47.4", "published 39.6 / 20.9 / 47.4"]
    calls = (setup["twin"].parent / "calls.log").read_text().splitlines()
    assert len(calls) == 7 and all(c.endswith(f" --config {config}") for c in calls)
    assert (setup["tmp"] / "calls.log").read_text().splitlines() == [
        f"nab-score twin --config {config} NAB={setup['nab']}",
        f"nab-score windowed-gaussian  NAB={setup['nab']}",
    ]
    # the baseline really ran on each file (the stand-in fails otherwise) and wrote twin detect run's columns
    assert (setup["nab"].parent / "scored.csv").read_text().splitlines()[0] == "timestamp,value,score"


def test_bench_nab_no_docs_prints_and_writes_json_only(setup):
    res = setup["run"]("--no-docs", "--json", str(setup["tmp"] / "out.json"))
    assert res.exit_code == 0, res.output
    assert "Anomaly detection on NAB" in res.output and "71.2 / 58.0 / 77.5" in res.output
    assert json.loads((setup["tmp"] / "out.json").read_text())["name"] == "nab"
    assert not setup["docs"].exists()


@pytest.mark.parametrize(("what", "message"), [
    ("labels", "NAB data not found: {nab}/labels is not a directory (--data"),
    ("run.py", "NAB data not found: {nab}/run.py is not a file (--data"),
    ("tool", "nab-score not found: {tmp}/nab-score (--tool)"),
    ("twin", "twin executable not found: {tmp}/bin/twin (--twin)"),
])
def test_a_missing_path_stops_the_command_naming_it(setup, what, message):
    if what == "labels":
        (setup["nab"] / "labels").rmdir()
    elif what == "run.py":
        (setup["nab"] / "run.py").unlink()
    else:
        setup[what].unlink()
    res = setup["run"]()
    assert res.exit_code == 2
    # The console wraps long lines, even inside a path (xdist's temp dirs are long): compare without whitespace.
    assert "".join(message.format(nab=setup["nab"], tmp=setup["tmp"]).split()) in "".join(res.output.split())
    assert not setup["docs"].exists()


def test_a_failing_detect_run_stops_the_command_with_its_message(setup):
    executable(setup["twin"], "#!/bin/sh\necho 'error: timestamp \"x\" is neither ISO 8601' >&2\nexit 2\n")
    res = setup["run"]()
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "twin detect run failed on art_flatline.csv (exit 2): error: timestamp \"x\" is neither ISO 8601" in text
    assert not setup["docs"].exists()
