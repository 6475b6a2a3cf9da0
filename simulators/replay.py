"""Replay a recorded CSV as a live device: every numeric column becomes a point of one asset.

Real data sets (SKAB, a customer's logger export) test the platform on behaviour no model invents. The
file needs a time column (``timestamp`` by default): ISO 8601 (naive means UTC) or epoch seconds,
milliseconds, microseconds or nanoseconds, told apart by magnitude (``models.timestamps``: the rule every
part of the platform reads times by). Delimiters ``,`` ``;`` and tab are sniffed. Empty cells are not sent.

``speed > 0`` plays the file as a live device: samples keep their spacing divided by ``speed`` and are
stamped with the wall-clock time they are sent at. ``speed = 0`` sends as fast as possible and keeps the
original timestamps, for back-filling history.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from models.timestamps import parse_time_ns
from simulators.devices import (
    DEFAULT_TOPIC_TEMPLATE,
    PayloadStyle,
    PublishReport,
    interleave,
    publish_readings,
)


def point_name(column: str) -> str:
    """A column header as a topic-safe point id: ``Volume Flow RateRMS`` → ``Volume_Flow_RateRMS``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", column.strip()).strip("_") or "value"


def _parse_times(cells: list[str], where: str) -> np.ndarray:
    out = np.empty(len(cells), np.int64)
    for i, cell in enumerate(cells):
        try:
            out[i] = parse_time_ns(cell)
        except ValueError as exc:
            raise ValueError(f"{where}: row {i + 2}: {exc}") from None
    return out


def load_csv(path: Path | str, *, time_column: str = "timestamp") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(t_ns sorted ascending, {point: values with NaN where a cell was empty}); text columns are skipped."""
    path = Path(path)
    text = path.read_text()
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = list(csv.reader(text.splitlines(), dialect))
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header and at least one row")
    header, body = rows[0], [r for r in rows[1:] if any(c.strip() for c in r)]
    lower = [h.strip().lower() for h in header]
    if time_column.lower() not in lower:
        raise ValueError(
            f"{path}: no {time_column!r} column (columns: {', '.join(header)}); pass time_column=")
    ti = lower.index(time_column.lower())
    t_ns = _parse_times([r[ti] if ti < len(r) else "" for r in body], str(path))
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        if j == ti:
            continue
        cells = [r[j].strip() if j < len(r) else "" for r in body]
        try:
            columns[point_name(name)] = np.array([float(c) if c else np.nan for c in cells])
        except ValueError:
            continue  # a text column (a label, a comment): not a point
    order = np.argsort(t_ns, kind="stable")
    return t_ns[order], {k: v[order] for k, v in columns.items()}


def replay_csv(
    path: Path | str,
    asset: str,
    broker_url: str,
    *,
    speed: float = 1.0,
    style: PayloadStyle = "json",
    qos: int = 1,
    topic_template: str = DEFAULT_TOPIC_TEMPLATE,
    time_column: str = "timestamp",
    on_progress: Callable[[int, int], None] | None = None,
) -> PublishReport:
    """Publish the file's numeric columns as points of ``asset``; see the module docstring for ``speed``.

    ``on_progress(sent, total)`` follows the publishing.
    """
    if speed < 0:
        raise ValueError("speed must be 0 (as fast as possible) or positive")
    t_ns, columns = load_csv(path, time_column=time_column)
    if speed > 0 and len(t_ns):
        lead_ns = 200_000_000  # time to connect before the first sample is due
        t_ns = time.time_ns() + lead_ns + np.round((t_ns - t_ns[0]) / speed).astype(np.int64)
    series = {}
    for point, values in columns.items():
        ok = np.isfinite(values)
        series[(asset, point)] = (t_ns[ok], values[ok], np.zeros(int(ok.sum()), np.int8))
    total = sum(len(s[0]) for s in series.values())
    progress = None if on_progress is None else lambda sent: on_progress(sent, total)
    return publish_readings(broker_url, interleave(series), qos=qos, style=style,
                            topic_template=topic_template, realtime=speed > 0, on_progress=progress)
