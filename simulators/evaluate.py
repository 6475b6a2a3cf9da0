"""Scoring detections against a run's ground truth: recall, false alarms, delay and lead time.

A scenario (or a C-MAPSS replay) writes ``ground_truth.json``; the platform's detectors and rules produce
detections (the API's anomalies or alerts, an edge log, a CSV). This module says how good they were, the
same way every time, so two detector settings can be compared on one run.

Rules:

- A detection **matches** a fault when it is on the fault's asset and starts within
  ``[fault.start - tolerance, fault.end + grace]``: a little before the start forgives clock skew and
  sample alignment; the grace after the end covers effects that outlast the fault (a trailer still
  warm after its compressor restarts).
- A fault is **caught** if at least one detection matches it. Its **delay** is the first matching
  detection's start minus the fault's start. Its **lead time**, for faults that carry ``failure_ns``
  (predictive: a bearing, an engine), is the failure time minus that first detection's start.
- Every detection that matches some fault is a true detection, however many there are (repeats are
  reported as ``matched``, not as false alarms).
- A detection that matches no fault is a **false alarm** — also inside a normal event's window
  (defrost, a delivery's door opening): a detector that alarms on every defrost is noisy, and the
  operator pays for it. The exception: a detection *classified* as that event (its ``kind`` equals the
  event's kind) on the same asset, starting inside ``[event.start, event.end + grace]``, is
  **explained** and not counted. False alarms inside event windows are also listed per event kind.
- False alarms are normalised per asset-day: the number of assets in the truth times the run length (end - start).
- Detections on assets the truth does not list, or starting outside ``[start - tolerance, end + grace]``
  of the run, are **ignored** (counted, not scored): they belong to another run.

Detections are JSON (a list of objects, or an object holding lists under ``detections``, ``anomalies``,
``alerts`` or ``alarms``) or CSV with a header; each needs ``asset`` and ``start_ns`` (or ``t_ns``), and
may have ``end_ns`` and a classification in ``classification``, ``kind`` or ``rule`` (first present).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_LIST_KEYS = ("detections", "anomalies", "alerts", "alarms")
_KIND_KEYS = ("classification", "kind", "rule")


@dataclass(frozen=True)
class Detection:
    asset: str
    start_ns: int
    end_ns: int | None = None
    kind: str | None = None


@dataclass
class FaultScore:
    asset: str
    kind: str
    start_ns: int
    end_ns: int
    caught: bool
    detected_ns: int | None = None
    delay_s: float | None = None
    lead_s: float | None = None


@dataclass
class KindScore:
    faults: int
    caught: int
    recall: float | None
    median_delay_s: float | None
    median_lead_s: float | None


@dataclass
class Evaluation:
    tolerance_s: float
    grace_s: float
    assets: int
    asset_days: float
    detections: int
    matched: int
    explained: int
    false_alarms: int
    false_alarms_per_asset_day: float | None
    false_alarms_in_events: dict[str, int]
    ignored: int
    per_kind: dict[str, KindScore]
    overall: KindScore
    faults: list[FaultScore] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _detection(obj: Mapping[str, Any], where: str) -> Detection:
    asset = obj.get("asset")
    start = obj.get("start_ns", obj.get("t_ns"))
    if not asset or start in (None, ""):
        raise ValueError(f"{where}: a detection needs 'asset' and 'start_ns' (or 't_ns')")
    end = obj.get("end_ns")
    kind = next((obj[k] for k in _KIND_KEYS if obj.get(k) not in (None, "")), None)
    try:
        return Detection(str(asset), int(start), None if end in (None, "") else int(end),
                         None if kind is None else str(kind))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: start_ns/end_ns must be integers (ns since the epoch)") from None


def parse_detections(data: Any, source: str = "detections") -> list[Detection]:
    """Detections from decoded JSON: a list, or an object with lists under the usual keys."""
    if isinstance(data, Mapping):
        lists = [(k, data[k]) for k in _LIST_KEYS if isinstance(data.get(k), list)]
        if not lists:
            raise ValueError(f"{source}: expected a list, or an object with one of {', '.join(_LIST_KEYS)}")
        items = [(f"{source}: {k}[{i}]", d) for k, lst in lists for i, d in enumerate(lst)]
    elif isinstance(data, list):
        items = [(f"{source}[{i}]", d) for i, d in enumerate(data)]
    else:
        raise ValueError(f"{source}: expected a JSON list or object of detections")
    out = []
    for where, d in items:
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: a detection must be an object")
        out.append(_detection(d, where))
    return out


def load_detections(path: Path | str) -> list[Detection]:
    """From a ``.csv`` file (header row) or JSON."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            return [_detection(row, f"{path}: row {i + 2}") for i, row in enumerate(csv.DictReader(fh))]
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    return parse_detections(data, str(path))


def load_truth(path: Path | str) -> dict[str, Any]:
    truth = json.loads(Path(path).read_text())
    for key in ("start_ns", "end_ns", "assets", "faults"):
        if key not in truth:
            raise ValueError(f"{path}: not a ground_truth.json (no {key!r})")
    return truth


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _kind_score(scores: list[FaultScore]) -> KindScore:
    caught = [s for s in scores if s.caught]
    return KindScore(
        faults=len(scores), caught=len(caught), recall=len(caught) / len(scores) if scores else None,
        median_delay_s=_median([s.delay_s for s in caught if s.delay_s is not None]),
        median_lead_s=_median([s.lead_s for s in caught if s.lead_s is not None]),
    )


def evaluate(truth: Mapping[str, Any], detections: Iterable[Detection], *, tolerance_s: float = 60.0,
             grace_s: float = 1800.0) -> Evaluation:
    """Score ``detections`` against ``truth`` (a decoded ground_truth.json) by the module's rules."""
    tol, grace = round(tolerance_s * _NS), round(grace_s * _NS)
    assets = {a["id"] for a in truth["assets"]}
    run_start, run_end = int(truth["start_ns"]), int(truth["end_ns"])
    faults = sorted(truth["faults"], key=lambda f: (f["start_ns"], f["asset"]))
    events = truth.get("events", [])
    by_asset: dict[str, list[Detection]] = {}
    ignored = 0
    for d in detections:
        if d.asset not in assets or not run_start - tol <= d.start_ns <= run_end + grace:
            ignored += 1
            continue
        by_asset.setdefault(d.asset, []).append(d)
    for ds in by_asset.values():
        ds.sort(key=lambda d: d.start_ns)

    matched: set[int] = set()
    scores = []
    for f in faults:
        lo, hi = int(f["start_ns"]) - tol, int(f["end_ns"]) + grace
        hits = [d for d in by_asset.get(f["asset"], []) if lo <= d.start_ns <= hi]
        matched.update(id(d) for d in hits)
        score = FaultScore(f["asset"], f["kind"], int(f["start_ns"]), int(f["end_ns"]), bool(hits))
        if hits:
            first = hits[0].start_ns
            score.detected_ns = first
            score.delay_s = (first - int(f["start_ns"])) / _NS
            if f.get("failure_ns") is not None:
                score.lead_s = (int(f["failure_ns"]) - first) / _NS
        scores.append(score)

    explained, false_alarms = 0, 0
    in_events: dict[str, int] = {}
    for asset, ds in by_asset.items():
        mine = [e for e in events if e["asset"] == asset]
        for d in ds:
            if id(d) in matched:
                continue
            inside = [e for e in mine if e["start_ns"] <= d.start_ns <= e["end_ns"] + grace]
            if any(e["kind"] == d.kind for e in inside):
                explained += 1
                continue
            false_alarms += 1
            for kind in sorted({e["kind"] for e in inside}):
                in_events[kind] = in_events.get(kind, 0) + 1

    asset_days = len(assets) * (run_end - run_start) / _DAY_NS
    kinds = sorted({s.kind for s in scores})
    return Evaluation(
        tolerance_s=tolerance_s, grace_s=grace_s, assets=len(assets), asset_days=asset_days,
        detections=sum(len(ds) for ds in by_asset.values()) + ignored, matched=len(matched),
        explained=explained, false_alarms=false_alarms,
        false_alarms_per_asset_day=false_alarms / asset_days if asset_days > 0 else None,
        false_alarms_in_events=in_events, ignored=ignored,
        per_kind={k: _kind_score([s for s in scores if s.kind == k]) for k in kinds},
        overall=_kind_score(scores), faults=scores,
    )
