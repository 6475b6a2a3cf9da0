"""Excursion counting and the offline verdict: the one piece of logic that both ``twin coldchain
evaluate`` (a logger file on a desk) and the live rules (a trailer's samples from the store) run, so a
shipment judged twice is judged the same.

Logger semantics (WHO/PQS/E006, LogTag, Berlinger, Controlant; see the domain notes): limits are
inclusive unless a boundary says otherwise; a reading holds until the next one (the last for the
median spacing); a ``single`` counter restarts when a reading is back in range, a ``cumulative`` one
keeps counting; an alarm fires the moment its counter reaches ``after`` and the counter starts again
from zero, so a long excursion fires again.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cloud.rules.coldchain.mkt import WindowMkt, hold_durations_ns, mkt_c, rolling_mkt, time_weighted_mean_c
from cloud.rules.coldchain.profiles import SEVERITIES, Boundary, Profile, format_duration
from models.timestamps import parse_time_ns

_NS = 1_000_000_000
_MKT_TOLERANCE_C = 1e-9  # rounding noise must not turn "MKT equals the limit" into a failure


class ReadingsError(ValueError):
    """Readings that cannot be evaluated; the message names the file, line and column."""


def iso(t_ns: int) -> str:
    """UTC ISO 8601 with a Z; fractions of a second only when there are some."""
    sec, frac = divmod(int(t_ns), _NS)
    base = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}".rstrip("0") + "Z" if frac else f"{base}Z"


def parse_timestamp_ns(text: str) -> int:
    """A logger export's time: ISO 8601 (no zone = UTC) or an epoch number by its magnitude, read by the
    platform's one rule (``models.timestamps.parse_time_ns``) so a CSV and the API never disagree."""
    return parse_time_ns(text)


def read_readings_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``timestamp`` and ``temperature`` columns (others ignored) -> (t_ns int64, temps °C), time-sorted."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in ("timestamp", "temperature") if c not in fields]
            if missing:
                raise ReadingsError(f"{path}: missing column(s) {', '.join(missing)} "
                                    f"(found: {', '.join(fields) or 'nothing'})")
            reader.fieldnames = fields
            t_ns, temps = [], []
            for row in reader:
                line = reader.line_num
                try:
                    t_ns.append(parse_timestamp_ns(row["timestamp"] or ""))
                except ValueError as exc:
                    raise ReadingsError(f"{path}: line {line}: timestamp: {exc}") from None
                try:
                    value = float(row["temperature"] or "")
                except ValueError:
                    raise ReadingsError(f"{path}: line {line}: temperature: {row['temperature']!r} is not a "
                                        "number") from None
                if not math.isfinite(value):
                    raise ReadingsError(f"{path}: line {line}: temperature: {value} is not a finite number")
                temps.append(value)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReadingsError(f"{path}: cannot read: {exc}") from None
    if not t_ns:
        raise ReadingsError(f"{path}: no readings")
    t = np.asarray(t_ns, np.int64)
    order = np.argsort(t, kind="stable")
    return t[order], np.asarray(temps, float)[order]


@dataclass(frozen=True)
class Alarm:
    """One firing of a boundary: when, the counter that fired it, and the context an auditor needs."""

    boundary: str
    severity: str
    occurrence: int  # 1 for the first firing of this boundary, 2 for the next...
    fired_at_ns: int
    counter_s: float  # the boundary's counter at that moment (= its ``after``)
    out_of_range_s: float  # all time out of range for this boundary up to that moment
    value_c: float  # the reading holding at that moment
    excursion_start_ns: int  # start of the out-of-range run it fired in

    def to_dict(self, t0_ns: int) -> dict[str, Any]:
        return {"boundary": self.boundary, "severity": self.severity, "occurrence": self.occurrence,
                "fired_at": iso(self.fired_at_ns), "elapsed_s": (self.fired_at_ns - t0_ns) / _NS,
                "counter_s": self.counter_s, "out_of_range_s": self.out_of_range_s, "value_c": self.value_c,
                "excursion_start": iso(self.excursion_start_ns)}


@dataclass
class ExcursionCounter:
    """One boundary's time counter, fed reading by reading (so a live rule can keep it between calls).

    ``paused`` readings (a recognised defrost) neither count nor restart a single-event counter.
    """

    boundary: Boundary
    counter_ns: int = 0
    out_of_range_ns: int = 0
    fired: int = 0
    run_start_ns: int | None = None  # start of the current out-of-range run, None when in range

    def advance(self, t_ns: int, hold_ns: int, temp_c: float, out: bool | None = None,
                paused: bool = False) -> list[Alarm]:
        """Account for a reading held over [t_ns, t_ns + hold_ns); returns the alarms it fires."""
        if paused:
            return []
        if out is None:
            out = bool(self.boundary.out_of_range(temp_c))
        if not out:
            self.run_start_ns = None
            if self.boundary.mode == "single":
                self.counter_ns = 0
            return []
        b, alarms = self.boundary, []
        after = b.after_ns
        if self.run_start_ns is None:
            self.run_start_ns = t_ns
            if after == 0:
                alarms.append(self._alarm(t_ns, temp_c))
        start, left = t_ns, hold_ns
        while after > 0 and self.counter_ns + left >= after:
            step = after - self.counter_ns
            start += step
            left -= step
            self.out_of_range_ns += step
            self.counter_ns = after
            alarms.append(self._alarm(start, temp_c))
            self.counter_ns = 0
        self.counter_ns += left
        self.out_of_range_ns += left
        return alarms

    def _alarm(self, at_ns: int, temp_c: float) -> Alarm:
        self.fired += 1
        return Alarm(self.boundary.name, self.boundary.severity, self.fired, at_ns, self.counter_ns / _NS,
                     self.out_of_range_ns / _NS, float(temp_c), int(self.run_start_ns or at_ns))


@dataclass(frozen=True)
class BoundaryResult:
    boundary: Boundary
    out_of_range_s: float
    alarms: list[Alarm]

    def to_dict(self) -> dict[str, Any]:
        b = self.boundary
        return {"name": b.name, "condition": b.condition(), "after_s": b.after, "mode": b.mode,
                "severity": b.severity, "out_of_range_s": self.out_of_range_s, "alarms": len(self.alarms)}


@dataclass(frozen=True)
class Verdict:
    result: str  # pass | fail
    reasons: list[str]
    disposition: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"result": self.result, "reasons": self.reasons, "disposition": self.disposition}


@dataclass(frozen=True)
class Evaluation:
    """A record judged against a profile. Temperatures in the JSON are rounded to 0.01 °C; the fields
    keep full precision."""

    profile: Profile
    readings: int
    start_ns: int
    end_ns: int  # the last reading plus its hold
    median_spacing_s: float
    min_c: float
    max_c: float
    mean_c: float
    mkt_c: float
    window: WindowMkt | None
    boundaries: list[BoundaryResult]
    paused_s: float
    verdict: Verdict
    alarms: list[Alarm] = field(default_factory=list)  # all boundaries, in time order

    @property
    def passed(self) -> bool:
        return self.verdict.result == "pass"

    def to_dict(self) -> dict[str, Any]:
        spec = self.profile.mkt
        mkt: dict[str, Any] = {"delta_h_kj_mol": self.profile.delta_h_kj_mol, "mkt_c": round(self.mkt_c, 2)}
        if self.window is not None:
            w = self.window
            mkt.update(window_s=spec.window if spec else None, window_mkt_c=round(w.mkt_c, 2),
                       window_start=iso(w.start_ns), window_end=iso(w.end_ns), window_complete=w.complete)
        if spec is not None and spec.limit is not None:
            mkt.update(limit_c=spec.limit, over_limit=self._mkt_judged() > spec.limit + _MKT_TOLERANCE_C)
        return {
            "profile": self.profile.name,
            "readings": self.readings,
            "start": iso(self.start_ns),
            "end": iso(self.end_ns),
            "duration_s": (self.end_ns - self.start_ns) / _NS,
            "median_spacing_s": self.median_spacing_s,
            "min_c": round(self.min_c, 2),
            "max_c": round(self.max_c, 2),
            "mean_c": round(self.mean_c, 2),
            "mkt": mkt,
            "paused_s": self.paused_s,
            "boundaries": [b.to_dict() for b in self.boundaries],
            "alarms": [a.to_dict(self.start_ns) for a in self.alarms],
            "verdict": self.verdict.to_dict(),
        }

    def _mkt_judged(self) -> float:
        return self.window.mkt_c if self.window is not None else self.mkt_c


def evaluate(t_ns: np.ndarray, temps_c: np.ndarray, profile: Profile,
             paused: np.ndarray | None = None) -> Evaluation:
    """Judge time-sorted readings against ``profile``. ``paused`` marks readings the counters skip
    (recognised defrost); MKT always uses every reading — it must not be used to excuse defrost."""
    t = np.asarray(t_ns, np.int64)
    temps = np.asarray(temps_c, float)
    if t.size == 0 or t.size != temps.size:
        raise ReadingsError(f"need matching, non-empty times and temperatures (got {t.size} and {temps.size})")
    if np.any(np.diff(t) < 0):
        raise ReadingsError("readings must be in time order")
    if not np.all(np.isfinite(temps)):
        raise ReadingsError("temperatures must be finite numbers")
    skip = np.zeros(t.size, bool) if paused is None else np.asarray(paused, bool)
    hold = hold_durations_ns(t)
    results, alarms = [], []
    for b in profile.boundaries:
        counter = ExcursionCounter(b)
        out = b.out_of_range(temps)
        fired: list[Alarm] = []
        for ti, hi, tc, oi, si in zip(t.tolist(), hold.tolist(), temps.tolist(), out.tolist(), skip.tolist(),
                                      strict=True):
            fired += counter.advance(ti, hi, tc, oi, si)
        results.append(BoundaryResult(b, counter.out_of_range_ns / _NS, fired))
        alarms += fired
    alarms.sort(key=lambda a: (a.fired_at_ns, a.boundary))
    spec = profile.mkt
    dh = profile.delta_h_kj_mol
    window = rolling_mkt(t, temps, spec.window, dh) if spec is not None and spec.window is not None else None
    series_mkt = mkt_c(temps, hold, dh)
    median = float(np.median(np.diff(t))) / _NS if t.size > 1 else 0.0
    ev = Evaluation(profile=profile, readings=int(t.size), start_ns=int(t[0]), end_ns=int(t[-1] + hold[-1]),
                    median_spacing_s=median, min_c=float(temps.min()), max_c=float(temps.max()),
                    mean_c=time_weighted_mean_c(temps, hold), mkt_c=series_mkt, window=window, boundaries=results,
                    paused_s=float(hold[skip].sum()) / _NS, verdict=Verdict("pass", [], None), alarms=alarms)
    return _with_verdict(ev)


def _with_verdict(ev: Evaluation) -> Evaluation:
    reasons = []
    failing = [r for r in ev.boundaries if r.alarms and r.boundary.severity != "notification"]
    for r in failing:
        b, first = r.boundary, r.alarms[0]
        more = f" (fired {len(r.alarms)} times)" if len(r.alarms) > 1 else ""
        reasons.append(f"{b.name}: {b.condition()} for {format_duration(b.after)} {b.mode}, reached at "
                       f"{iso(first.fired_at_ns)}{more}")
    spec = ev.profile.mkt
    mkt_failed = False
    if spec is not None and spec.limit is not None:
        value = ev._mkt_judged()
        if value > spec.limit + _MKT_TOLERANCE_C:
            mkt_failed = True
            if ev.window is not None and ev.window.complete:
                over = f"over {format_duration(spec.window or 0)} ending {iso(ev.window.end_ns)}"
            else:
                span = format_duration((ev.end_ns - ev.start_ns) / _NS)
                over = f"over the whole record ({span})"
            reasons.append(f"MKT {value:.2f} °C {over} exceeds the limit {spec.limit:.1f} °C")
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    with_disposition = [(rank[r.boundary.severity], i, r.boundary.disposition)
                        for i, r in enumerate(ev.boundaries) if r.alarms and r.boundary.disposition]
    if with_disposition:
        disposition = max(with_disposition)[2]
    else:
        disposition = ev.profile.disposition if not failing and not mkt_failed else None
    verdict = Verdict("fail" if reasons else "pass", reasons, disposition)
    return Evaluation(**{**ev.__dict__, "verdict": verdict})
