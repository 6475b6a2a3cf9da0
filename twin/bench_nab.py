"""``twin bench nab``: the Numenta Anomaly Benchmark through ``twin detect run``, scored by NAB's own scorer.

NAB's 58 streams go one by one through a fresh ``twin detect run`` process each, and NAB's optimiser and
scorer judge the ``score`` column: this is ``../shared/tools/nab-score``, which this module runs and reads.
NAB's ``artificialNoAnomaly`` files hold no anomaly at all, so every row flagged there is a false alarm: the
``anomaly`` column of those five files is counted too. The windowed-Gaussian baseline (NAB's own detector,
re-implemented here) can be scored in the same run through the same tool, so the two numbers share a scorer
and a machine. Kept apart from ``twin.bench`` so the baseline can run as ``python -m twin.bench_nab`` without
typer or rich.
"""

from __future__ import annotations

import csv
import math
import os
import re
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

ROOT = Path(__file__).resolve().parents[1]
NO_ANOMALY = Path("data") / "artificialNoAnomaly"

#: NAB's scoreboard (standard, low FP, low FN), from NAB's README.
PUBLISHED: dict[str, tuple[float, float, float]] = {
    "ARTime": (74.9, 65.1, 80.4),
    "Numenta HTM": (70.5, 62.6, 75.2),
    "CAD OSE": (69.9, 67.0, 73.2),
    "KNN-CAD": (58.0, 43.4, 64.8),
    "Random Cut Forest": (51.7, 38.4, 59.7),
    "Windowed Gaussian": (39.6, 20.9, 47.4),
    "null": (0.0, 0.0, 0.0),
}
#: Issue #16's bar for the default detector.
TARGETS = {"standard": 70.0, "low_fp": 60.0, "low_fn": 75.0}

_PROFILES = {"standard": "standard", "low_fp": "low FP", "low_fn": "low FN"}
_SCORE_LINE = re.compile(r"^NAB: standard (\S+)\s+low_FP (\S+)\s+low_FN (\S+)\s*$")
_RESULTS_LINE = re.compile(r"^per-file results: (.+?)\s*$")


class NabSetupError(ValueError):
    """Something the benchmark needs is not where it was told to look."""


class NabRunError(RuntimeError):
    """nab-score or ``twin detect run`` failed; the message carries what they said."""


class NabScores(BaseModel):
    """NAB's three normalised scores (100 = every window found early, no false positive; 0 = the null detector)."""

    model_config = ConfigDict(frozen=True)
    standard: float
    low_fp: float
    low_fn: float

    def text(self) -> str:
        return f"{self.standard:.1f} / {self.low_fp:.1f} / {self.low_fn:.1f}"


class FlagCount(BaseModel):
    """Flagged rows of one scored file; an event is a run of consecutive flagged rows."""

    model_config = ConfigDict(frozen=True)
    rows: int
    flagged_rows: int
    events: int


def _tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def parse_scores(stdout: str) -> NabScores:
    """The scores from nab-score's last ``NAB: standard …  low_FP …  low_FN …`` line."""
    for line in reversed(stdout.splitlines()):
        m = _SCORE_LINE.match(line.strip())
        if m:
            try:
                values = [float(v) for v in m.groups()]
            except ValueError:
                raise NabRunError(f"nab-score printed scores that are not numbers: {line.strip()!r}") from None
            if not all(math.isfinite(v) for v in values):
                raise NabRunError(f"nab-score printed scores that are not finite: {line.strip()!r}")
            return NabScores(standard=values[0], low_fp=values[1], low_fn=values[2])
    raise NabRunError("nab-score printed no 'NAB: standard … low_FP … low_FN …' line; its output ended with:\n"
                      + (_tail(stdout) or "(nothing)"))


def parse_results_dir(stderr: str) -> Path | None:
    """Where nab-score left its per-file results (``per-file results: DIR`` on stderr), if it said."""
    for line in reversed(stderr.splitlines()):
        m = _RESULTS_LINE.match(line.strip())
        if m:
            return Path(m.group(1))
    return None


def count_flags(scored_csv: Path) -> FlagCount:
    """Rows, rows with ``anomaly`` set, and runs of them, in a CSV written by ``twin detect run``."""
    rows = flagged = events = 0
    previous = False
    with scored_csv.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "anomaly" not in reader.fieldnames:
            raise NabRunError(f"{scored_csv}: no 'anomaly' column (columns: {reader.fieldnames})")
        for i, row in enumerate(reader, start=2):
            cell = (row["anomaly"] or "").strip()
            try:
                up = cell != "" and float(cell) != 0.0
            except ValueError:
                raise NabRunError(f"{scored_csv}:{i}: anomaly {cell!r} is not 0 or 1") from None
            rows += 1
            flagged += up
            events += up and not previous
            previous = up
    return FlagCount(rows=rows, flagged_rows=flagged, events=events)


def default_twin() -> Path:
    """The ``twin`` of the running interpreter's environment (the venv's, not whatever is first on PATH)."""
    return Path(sys.executable).parent / "twin"  # not resolved: the venv's python is a symlink out of the venv


def check_paths(data: Path, tool: Path, twin: Path) -> None:
    """Raise ``NabSetupError`` naming the first thing that is missing."""
    for sub in ("data", "labels", "config", "nab", str(NO_ANOMALY)):
        if not (data / sub).is_dir():
            raise NabSetupError(f"NAB data not found: {data / sub} is not a directory (--data: NAB's checkout, "
                                "with data/, labels/, config/, nab/ and run.py)")
    if not (data / "run.py").is_file():
        raise NabSetupError(f"NAB data not found: {data / 'run.py'} is not a file (--data: NAB's checkout, "
                            "with data/, labels/, config/, nab/ and run.py)")
    if not tool.is_file():
        raise NabSetupError(f"nab-score not found: {tool} (--tool)")
    if not os.access(tool, os.X_OK):
        raise NabSetupError(f"nab-score is not executable: {tool} (--tool)")
    if not twin.is_file() or not os.access(twin, os.X_OK):
        raise NabSetupError(f"twin executable not found: {twin} (--twin)")


def run_nab_score(tool: Path, twin: Path, data: Path, extra: Sequence[str] = ()) -> tuple[NabScores, Path | None]:
    """nab-score on every NAB file through ``twin``: NAB's scores, and where the per-file results are."""
    cmd = [str(tool), str(twin), *(["--", *extra] if extra else [])]
    done = subprocess.run(cmd, env={**os.environ, "NAB": str(data)}, capture_output=True, text=True)
    if done.returncode != 0:
        raise NabRunError(f"nab-score exited with {done.returncode}:\n"
                          + (_tail(done.stderr) or _tail(done.stdout) or "(no output)"))
    return parse_scores(done.stdout), parse_results_dir(done.stderr)


def no_anomaly_counts(twin: Path, data: Path, extra: Sequence[str] = ()) -> dict[str, FlagCount]:
    """``twin detect run`` on each artificialNoAnomaly file (fresh process each): flagged rows and events."""
    files = sorted((data / NO_ANOMALY).glob("*.csv"))
    if not files:
        raise NabSetupError(f"no CSV files in {data / NO_ANOMALY}")
    counts: dict[str, FlagCount] = {}
    with tempfile.TemporaryDirectory(prefix="twin-nab-") as tmp:
        out = Path(tmp) / "scored.csv"
        for f in files:
            done = subprocess.run([str(twin), "detect", "run", "--input", str(f), "--output", str(out), *extra],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise NabRunError(f"twin detect run failed on {f.name} (exit {done.returncode}):\n"
                                  + (_tail(done.stderr) or "(no output)"))
            counts[f.name] = count_flags(out)
    return counts


# -- the windowed-Gaussian baseline -------------------------------------------------------------------------------


def windowed_gaussian_scores(values: Sequence[float], window: int = 6400, step: int = 100) -> np.ndarray:
    """NAB's windowed-Gaussian detector: each value's two-sided normal tail against the mean and standard
    deviation of the window before it, as ``1 - Q(|z|)`` (0.5 at the mean, towards 1 far from it on either side;
    0 for the first value). The window grows to ``window`` values, refreshed on every value meanwhile, then
    slides by ``step`` values at a time. NAB's parameters: 6400 and 100.

    >>> windowed_gaussian_scores([1.0, 3.0, 2.0, 0.0], window=8, step=2).round(4).tolist()
    [0.0, 1.0, 0.5, 0.9928]
    """
    scores = np.zeros(len(values))
    held: list[float] = []
    pending: list[float] = []
    mean, std = 0.0, 1.0
    for i, x in enumerate(values):
        if held:
            scores[i] = 0.5 + 0.5 * math.erf(abs(x - mean) / std / math.sqrt(2.0))
        if len(held) < window:
            held.append(x)
        else:
            pending.append(x)
            if len(pending) < step:
                continue
            held = held[step:] + pending
            pending = []
        mean, std = float(np.mean(held)), float(np.std(held))
        if std == 0.0:
            std = 1e-6
    return scores


def score_csv_gaussian(input_csv: Path, output_csv: Path) -> int:
    """A NAB file scored by the baseline, written as ``twin detect run`` writes it (timestamp, value, score)."""
    with input_csv.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    scores = windowed_gaussian_scores([float(r["value"]) for r in rows])
    with output_csv.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value", "score"])
        for r, s in zip(rows, scores, strict=True):
            w.writerow([r["timestamp"], r["value"], repr(float(s))])
    return len(rows)


def baseline_executable(directory: Path) -> Path:
    """An executable that answers ``detect run --input F --output O`` like ``twin`` but with the baseline, so
    nab-score runs it exactly as it runs ours."""
    exe = directory / "windowed-gaussian"
    env_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    exe.write_text(f'#!/bin/sh\nPYTHONPATH="{env_path}" exec "{sys.executable}" -m twin.bench_nab "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


def _main(argv: list[str]) -> int:
    """``python -m twin.bench_nab detect run --input F --output O``: the baseline behind nab-score."""
    import argparse

    parser = argparse.ArgumentParser(prog="windowed-gaussian", description=_main.__doc__)
    parser.add_argument("group", choices=["detect"])
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--input", "-i", type=Path, required=True)
    parser.add_argument("--output", "-o", type=Path, required=True)
    args = parser.parse_args(argv)
    n = score_csv_gaussian(args.input, args.output)
    print(f"scored {n} rows -> {args.output}", file=sys.stderr)
    return 0


# -- the whole benchmark -------------------------------------------------------------------------------------------


def detector_label(config: Path | None, twin: Path) -> str:
    """What was benchmarked, in words: the default detectors by name when this checkout's twin ran them."""
    if config is not None:
        return f"`twin detect run --config {config.name}`"
    if twin == default_twin():
        from edge.detect.registry import DEFAULT_DETECTORS

        kinds = " + ".join(str(spec["kind"]) for spec in DEFAULT_DETECTORS)
        return f"`twin detect run` defaults ({kinds})"
    return f"`{twin} detect run` defaults"


def run_nab(data: Path, tool: Path, twin: Path | None = None,
            config: Path | None = None, baseline: bool = False, progress: Any = None) -> dict[str, Any]:
    """The whole benchmark; ``progress(message)`` is told what runs next. Returns the figures."""
    twin = (twin or default_twin()).absolute()
    data, tool = data.absolute(), tool.absolute()
    check_paths(data, tool, twin)
    if config is not None and not config.is_file():
        raise NabSetupError(f"detector configuration not found: {config} (--config)")
    extra = ["--config", str(config.absolute())] if config is not None else []
    say = progress or (lambda _message: None)
    started = time.monotonic()
    say("twin detect run on NAB's artificialNoAnomaly files")
    quiet = no_anomaly_counts(twin, data, extra)
    say("nab-score: NAB's 58 files through twin detect run, then NAB's scorer (a few minutes)")
    ours, results_dir = run_nab_score(tool, twin, data, extra)
    figures: dict[str, Any] = {
        "detector": detector_label(config, twin), "twin": str(twin), "config": str(config) if config else None,
        "data": str(data), "tool": str(tool), "ours": ours.model_dump(),
        "results_dir": str(results_dir) if results_dir else None,
        "targets": TARGETS, "targets_met": {k: getattr(ours, k) >= v for k, v in TARGETS.items()},
        "no_anomaly": {name: c.model_dump() for name, c in quiet.items()},
        "no_anomaly_events": sum(c.events for c in quiet.values()),
        "no_anomaly_flagged_rows": sum(c.flagged_rows for c in quiet.values()),
        "published": {k: dict(zip(("standard", "low_fp", "low_fn"), v, strict=True)) for k, v in PUBLISHED.items()},
    }
    if baseline:
        say("nab-score: the windowed-Gaussian baseline on the same files (a few minutes)")
        with tempfile.TemporaryDirectory(prefix="twin-nab-baseline-") as tmp:
            base, base_dir = run_nab_score(tool, baseline_executable(Path(tmp)), data)
        figures["baseline"] = {"name": "windowed Gaussian (NAB's: window 6400, step 100)", **base.model_dump(),
                               "results_dir": str(base_dir) if base_dir else None}
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def _events(n: int) -> str:
    return f"{n:,} event" + ("" if n == 1 else "s")


def nab_rows(f: dict[str, Any]) -> tuple[list[tuple[str, str, str]], str]:
    """The docs/benchmarks.md rows (what, measured, target or reference) and notes for ``run_nab``'s figures."""
    ours = NabScores(**f["ours"])
    missed = [_PROFILES[k] for k, met in f["targets_met"].items() if not met]
    t = f["targets"]
    target = f"≥ {t['standard']:g} / ≥ {t['low_fp']:g} / ≥ {t['low_fn']:g}: " \
             + ("met" if not missed else "not met (" + ", ".join(missed) + ")")
    rows: list[tuple[str, str, str]] = [
        (f"**ours**: {f['detector']}, standard / low FP / low FN", f"**{ours.text()}**", target)]
    if f.get("baseline"):
        b = NabScores(**{k: f["baseline"][k] for k in ("standard", "low_fp", "low_fn")})
        pub = NabScores(**f["published"]["Windowed Gaussian"])
        rows.append((f"{f['baseline']['name']}, run here through the same scorer", b.text(),
                     f"published {pub.text()}"))
    rows += [(f"published: {name}", NabScores(**s).text(), "NAB scoreboard") for name, s in f["published"].items()]
    counts = {name: FlagCount(**c) for name, c in f["no_anomaly"].items()}
    rows.append((f"artificialNoAnomaly ({len(counts)} files, no anomaly in them): anomaly events",
                 f"{_events(f['no_anomaly_events'])} ({f['no_anomaly_flagged_rows']:,} of "
                 f"{sum(c.rows for c in counts.values()):,} rows flagged)", "0"))
    rows += [(f"  {name}", f"{_events(c.events)} ({c.flagged_rows:,} of {c.rows:,} rows)", "0")
             for name, c in counts.items()]
    notes = ("Rules: NAB's own scorer (`../shared/tools/nab-score`: NAB's optimiser picks each profile's threshold "
             "on the `score` column, then NAB scores and normalises); one parameter set for every file, no tuning "
             "per file or per category; no look-ahead (each row is scored by a detector that has seen only the "
             "rows before it); each file a fresh start (one new `twin detect run` process per file, no state "
             "carried over). The artificialNoAnomaly counts read the `anomaly` column of `twin detect run` on each "
             "file; an event is a run of consecutive flagged rows. Published figures: NAB's scoreboard "
             "(github.com/numenta/NAB).")
    if f.get("baseline"):
        notes += (" The windowed Gaussian is NAB's detector re-implemented in `twin.bench_nab` (its per-row scores "
                  "equal NAB's published results for it on nyc_taxi), scored by the same nab-score as ours.")
    return rows, notes + f" {f['seconds']:.0f} s in all."


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
