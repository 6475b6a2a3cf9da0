"""Detection quality on the simulator's ground truth: the edge's detectors and local rules, and the
cloud's cold-chain rules, run over a scenario's readings exactly as they run live (ticks in time
order), scored by ``simulators.evaluate``: recall of faults, false alarms per asset-day, delay."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cloud.rules.coldchain.profiles import load_profile
from cloud.rules.coldchain.reefer import assess_trailer
from edge.buffer import Tick
from edge.config import parse_config
from edge.rules import LocalRules
from edge.watch import PointWatch
from simulators.evaluate import Detection, evaluate
from simulators.scenario import load_scenario, run_scenario

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCENARIO = ROOT / "simulators" / "scenarios" / "trailer-faults.yaml"
TICK_S = 600


def _edge_detections(runs, tenant: str = "bench") -> list[Detection]:
    assets = [r.asset_id for r in runs]
    cfg = parse_config({"tenant": tenant, "gateway": "gw", "assets": [{"id": a, "type": "refrigerated-trailer"}
                                                                      for a in assets],
                        "sources": [{"type": "mqtt", "subscriptions": [{"topic": "x/+", "asset": "{1}",
                                                                         "point": "v"}]}]})
    points = cfg.points()
    index = {p: i for i, p in enumerate(points)}
    watch = PointWatch(cfg, points)
    rules = LocalRules([(a.id, r, index[(a.id, r.point)]) for a in cfg.assets for r in a.asset_type.local_rules],
                       len(points))
    idx, t, x, q = [], [], [], []
    for r in runs:
        for p, s in r.points.items():
            if (r.asset_id, p) in index:
                idx.append(np.full(len(s.t_ns), index[(r.asset_id, p)], np.int64))
                t.append(s.t_ns)
                x.append(s.values)
                q.append(s.quality.astype(np.int8))
    idx_a, t_a, x_a, q_a = (np.concatenate(v) for v in (idx, t, x, q))
    order = np.argsort(t_a, kind="stable")
    idx_a, t_a, x_a, q_a = idx_a[order], t_a[order], x_a[order], q_a[order]
    out: list[Detection] = []
    bounds = np.searchsorted(t_a, np.arange(t_a[0], t_a[-1] + TICK_S * 10**9, TICK_S * 10**9))
    for a, b in itertools.pairwise(bounds):
        tick = Tick(idx_a[a:b], t_a[a:b], x_a[a:b], q_a[a:b])
        for ev in watch.process(tick):
            out.append(Detection(points[ev.point][0], ev.start_ns, ev.end_ns, "anomaly:" + ",".join(ev.detectors)))
        for f in rules.evaluate(tick):
            out.append(Detection(f.asset, f.start_ns, f.fired_ns, "alarm:" + f.rule.name))
    # an event is reported when it opens and again when it closes: score each once
    seen, unique = set(), []
    for d in out:
        key = (d.asset, d.start_ns, d.kind)
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def _cloud_detections(runs, profile: str = "who-30-day-refrigerator") -> list[Detection]:
    out = []
    prof = load_profile(profile)
    for r in runs:
        for alarm in assess_trailer(r.points, prof).alarms:
            out.append(Detection(r.asset_id, alarm.fired_at_ns, None, alarm.rule))
    return out


def run_quality(scenario_path: Path = DEFAULT_SCENARIO) -> dict[str, Any]:
    scenario = load_scenario(scenario_path)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_scenario(scenario, tmp, publish=False)
    truth = result.ground_truth
    figures: dict[str, Any] = {"scenario": scenario.name, "faults": len(truth["faults"]), "assets": len(result.runs)}
    for name, dets in (("edge", _edge_detections(result.runs)), ("cloud", _cloud_detections(result.runs))):
        ev = evaluate(truth, dets)
        figures[name] = {"detections": len(dets), "recall": ev.overall.recall, "caught": ev.overall.caught,
                         "false_alarms_per_asset_day": ev.false_alarms_per_asset_day,
                         "false_alarms": ev.false_alarms, "median_delay_s": ev.overall.median_delay_s,
                         "per_kind": {k: {"recall": v.recall, "median_delay_s": v.median_delay_s}
                                      for k, v in ev.per_kind.items()},
                         "false_alarms_in_events": ev.false_alarms_in_events}
    both = _edge_detections(result.runs) + _cloud_detections(result.runs)
    ev = evaluate(truth, both)
    figures["combined"] = {"recall": ev.overall.recall, "false_alarms_per_asset_day": ev.false_alarms_per_asset_day,
                           "median_delay_s": ev.overall.median_delay_s}
    return figures
