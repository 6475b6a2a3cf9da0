"""Offline scoring of a CSV file with the same kernels a gateway runs: for backtests and for tuning.

Input: a ``timestamp`` column (ISO 8601, e.g. ``2024-05-01T12:00:00Z`` — naive times are UTC — or an epoch
number in s, ms, us or ns by its magnitude, ``models.timestamps``) and one or more numeric columns; every
numeric column is one point. A column with any non-numeric value is copied through but not scored; an empty
cell is a missing sample. Rows are scored in file order as one stream (the kernels handle unsorted, duplicate
and gapped timestamps).

Output: the input columns unchanged, plus ``score`` (the row's highest combined score, 0 to 1, see
``ensemble.py``) and ``anomaly`` (1 when any detector on any column fired on that row: with the default
``novelty`` detector, the row where an anomaly event starts).

Configuration (YAML, optional): either a list of detector specs applied to every numeric column, or::

    default: [{kind: ewma_z, tau_s: 600, threshold: 6}]    # columns not listed; omitted = DEFAULT_DETECTORS
    columns:
      supply_air: [{kind: limits, hi: 8, hysteresis: 0.5}, {kind: stuck, duration_s: 1800}]

Without a configuration every column gets ``DEFAULT_DETECTORS``, what a new point gets on a gateway.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge.detect.registry import DEFAULT_DETECTORS, build_detectors
from models.timestamps import parse_time_ns

_CHUNK_ROWS = 200_000


def parse_timestamp(text: str) -> int:
    """Epoch nanoseconds from ISO 8601 or an epoch number, by the platform's one rule (``models.timestamps``:
    a bare number is s, ms, µs or ns by its magnitude; ns fractions kept exactly)."""
    return parse_time_ns(text)


def _to_float(text: str) -> float | None:
    """The cell's value; NaN for an empty cell; None when it is not a number."""
    s = text.strip()
    if not s:
        return float("nan")
    try:
        return float(s)
    except ValueError:
        return None


def _specs_per_column(config: Any, columns: list[str], source: str) -> list[list[Any]]:
    if config is None:
        return [copy.deepcopy(DEFAULT_DETECTORS) for _ in columns]
    if isinstance(config, list):
        return [copy.deepcopy(config) for _ in columns]
    if not isinstance(config, dict) or set(config) - {"default", "columns"}:
        raise ValueError(f"{source}: expected a list of detectors, or a mapping with 'default' and/or "
                         "'columns'")
    default = config.get("default", DEFAULT_DETECTORS)
    per_column = config.get("columns") or {}
    unknown = sorted(set(per_column) - set(columns))
    if unknown:
        raise ValueError(f"{source}: columns {', '.join(unknown)} are not numeric columns of the input "
                         f"(numeric columns: {', '.join(columns)})")
    return [copy.deepcopy(per_column.get(c, default)) for c in columns]


def score_csv(input: str | Path, output: str | Path, config: str | Path | dict | list | None = None,
              sep: str = ",") -> dict[str, int]:
    """Score ``input`` into ``output``; ``config`` is a YAML path or the parsed structure.

    Returns ``{"rows": ..., "points": ..., "anomalies": ...}``.
    """
    src = str(input)
    with open(input, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=sep)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{src}: empty file, expected a header with a 'timestamp' column") from None
        lines = [row for row in reader if row]
    names = [h.strip() for h in header]
    lowered = [h.lower() for h in names]
    if "timestamp" not in lowered:
        raise ValueError(f"{src}: no 'timestamp' column (columns: {', '.join(names)}); is --sep right?")
    ts_col = lowered.index("timestamp")
    n_rows = len(lines)
    t_ns = np.empty(n_rows, np.int64)
    for r, row in enumerate(lines):
        if len(row) != len(header):
            raise ValueError(f"{src}: line {r + 2}: {len(row)} fields, the header has {len(header)}")
        try:
            t_ns[r] = parse_timestamp(row[ts_col])
        except ValueError as exc:
            raise ValueError(f"{src}: line {r + 2}: {exc}") from None
    value_cols: list[int] = []
    columns: list[list[float]] = []
    for c in range(len(header)):
        if c == ts_col:
            continue
        vals = [_to_float(row[c]) for row in lines]
        if all(v is not None for v in vals):
            value_cols.append(c)
            columns.append(vals)  # type: ignore[arg-type]
    if not value_cols:
        raise ValueError(f"{src}: no numeric column to score besides 'timestamp'")
    if isinstance(config, str | Path):
        cfg_source = str(config)
        config = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
    else:
        cfg_source = "config"
    value_names = [names[c] for c in value_cols]
    specs = _specs_per_column(config, value_names, cfg_source)
    try:
        ensemble = build_detectors(specs, point_names=value_names)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{cfg_source}: {exc}") from None

    m = len(value_cols)
    values = np.array(columns, np.float64).T.copy() if n_rows else np.empty((0, m))
    row_score = np.zeros(n_rows)
    row_anomaly = np.zeros(n_rows, np.bool_)
    point = np.tile(np.arange(m, dtype=np.int64), min(n_rows, _CHUNK_ROWS))
    for lo in range(0, n_rows, _CHUNK_ROWS):
        hi = min(n_rows, lo + _CHUNK_ROWS)
        k = (hi - lo) * m
        x = values[lo:hi].ravel()
        score, mask = ensemble.update(point[:k], np.repeat(t_ns[lo:hi], m), x, ~np.isnan(x))
        row_score[lo:hi] = score.reshape(-1, m).max(axis=1)
        row_anomaly[lo:hi] = (mask.reshape(-1, m) != 0).any(axis=1)

    # Six decimals, truncated and kept on the right side of 0.5, so "score >= 0.5 exactly when
    # anomaly = 1" still holds in the file.
    shown = np.floor(row_score * 1e6) / 1e6
    shown = np.where(row_anomaly, np.maximum(shown, 0.5), np.minimum(shown, 0.499999))
    with open(output, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=sep, lineterminator="\n")
        writer.writerow([*header, "score", "anomaly"])
        for r, row in enumerate(lines):
            writer.writerow([*row, f"{shown[r]:.6f}", int(row_anomaly[r])])
    return {"rows": n_rows, "points": m, "anomalies": int(row_anomaly.sum())}
