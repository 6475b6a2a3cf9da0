"""The vessel pack as a specification, on the simulated fleets of ``simulators/scenarios/vessel-*.yaml``.

Each ship's gateway uploads what its monitoring system logged (one reading a minute) every six hours, as a ship
on a satellite link does; the uploads go through the real ingest worker's code (``Ingest.process``: decoded,
de-duplicated, written to the real InfluxDB), whose hooks mark the vessels for the rule runner, which assesses
after every upload as of the simulated time (``RuleRunner.assess_now``) through the vessel pack. Every injected
fault must be caught with the right classification (the injector by its cylinder, the bearing by its number),
nothing before a fault starts, nothing on a healthy ship, nothing over a normal week of voyages.
``test_vessel_e2e.py`` runs the same rules in the real processes (``twin sim vessels`` → ``twin edge run`` →
``twin cloud run``).

Measured (``.venv/bin/pytest -q -s tests/test_vessel_pack.py -k "scored or normal_week"``): vessel-faults.yaml,
3/3 faults caught with their classification — the injector (cylinder 4) 0.25 days after onset, the turbocharger
fouling 1.25 days after onset (8.75 days before the growth stopped, the service limit predicted for day 10), the
bearing 7.0 days after onset and 4.0 days before its failure — and 0 false alarms in 56 vessel-days;
vessel-normal-week.yaml, 0 alarms in 21 ship-days (7 sea passages, Beaufort 2-7). Over 40 seeds
(``VESSEL_SEEDS=40 .venv/bin/pytest -q -s --timeout 0 tests/test_vessel_pack.py -k many_seeds``, 3.5 min): 160/160
faults named (injector hot or cold, median 0.25 days after onset; turbocharger 1.25, at most 3.0; bearing 6.0, at
most 7.0), none misclassified or early, 0 alarms in 200 normal ship-weeks.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from cloud.ingest import _Msg
from cloud.packs import PACKS
from cloud.packs.vessel import VesselPack, VesselQuestion
from cloud.packs.vessel.data import Bins, bins_from_samples, default_config, read_bins, steady_windows
from cloud.platform import Platform
from cloud.registry import Alert, Twin
from cloud.rules.explain import explain
from cloud.settings import CloudSettings
from models import topics
from models.wire import GatewayStatus, PointSeries, TelemetryBatch, encode
from simulators.evaluate import Detection, evaluate
from simulators.scenario import _start_ns
from simulators.vessel import VesselRun, load_vessel_scenario, simulate_vessels

SCENARIOS = Path(__file__).resolve().parents[1] / "simulators" / "scenarios"
TENANT = "acme"
S = 1_000_000_000
DAY = 86_400 * S
UPLOAD_S = 6 * 3600
EXPECTED = {  # fault kind -> (classification, the evidence key naming the part, from the fault's params)
    "fuel_injector": ("fuel_injector", "cylinder"),
    "turbocharger_fouling": ("turbocharger_fouling", None),
    "shaft_bearing_wear": ("shaft_bearing_wear", "bearing"),
}


def _uploads(run: VesselRun, seq: int, prev_ns: int, t_ns: int) -> _Msg | None:
    series = []
    for point, (ts, vs, qs) in run.points.items():
        keep = (ts > prev_ns) & (ts <= t_ns)
        if keep.any():
            series.append(PointSeries(asset=run.asset_id, point=point, t_ns=ts[keep].tolist(),
                                      values=vs[keep].tolist(), quality=qs[keep].tolist()))
    if not series:
        return None
    batch = TelemetryBatch(tenant=TENANT, gateway=f"gw-{run.asset_id}", seq=seq, sent_ns=t_ns, series=series)
    return _Msg(0, 0, topics.telemetry(TENANT, f"gw-{run.asset_id}"), encode(batch, compress=True))


def replay(tmp_path: Path, influxdb, database: str, scenario_file: str) -> dict:
    """The scenario's ships uploading every six hours through ingest into InfluxDB, assessed after each upload."""
    sc = load_vessel_scenario(SCENARIOS / scenario_file)
    t0 = _start_ns(sc)
    runs, truth = simulate_vessels(sc, t0)
    settings = CloudSettings(database_url=f"sqlite:///{tmp_path / 'registry.sqlite'}", store="influx",
                             influx_url=influxdb.url, influx_bucket=f"{database}/autogen", influx_database=database)
    platform = Platform.open(settings, with_ingest=True)
    assert platform.ingest is not None and platform.rules is not None
    births = [_Msg(0, 0, topics.status(TENANT, f"gw-{r.asset_id}"), encode(GatewayStatus(
        tenant=TENANT, gateway=f"gw-{r.asset_id}", state="online", t_ns=t0, assets={r.asset_id: "vessel"})))
        for r in runs]
    platform.ingest.process(births)
    end = t0 + round(sc.duration * S)
    prev, seq = t0 - 1, 0
    for t in range(t0 + UPLOAD_S * S, end + UPLOAD_S * S, UPLOAD_S * S):
        msgs = [m for r in runs if (m := _uploads(r, seq, prev, min(t, end))) is not None]
        platform.ingest.process(msgs)
        platform.rules.assess_now(now_ns=min(t, end))
        prev, seq = min(t, end), seq + 1
    assert platform.ingest.counters["dead_letters"] == 0
    with platform.registry.session() as s:
        alerts = [{"id": a.id, "asset": a.asset, "rule": a.rule, "severity": a.severity, "state": a.state,
                   "title": a.title, "opened_ns": a.opened_ns, "evidence": a.evidence}
                  for a in s.scalars(select(Alert).where(Alert.tenant == TENANT).order_by(Alert.opened_ns))]
        models = {t.asset: t.model for t in s.scalars(select(Twin).where(Twin.tenant == TENANT))}
    return {"platform": platform, "runs": {r.asset_id: r for r in runs}, "truth": truth, "alerts": alerts,
            "models": models, "t0": t0, "end": end}


def close(platform: Platform) -> None:
    """Its threads never started (the replay drives ingest and rules itself): release the connections."""
    platform.store.close()
    platform.registry.engine.dispose()


@pytest.fixture(scope="module")
def influx_module(influxdb):
    name = f"test_{uuid.uuid4().hex[:12]}"
    influxdb.create_database(name)
    yield name
    influxdb.drop_database(name)


@pytest.fixture(scope="module")
def faults(tmp_path_factory, influxdb, influx_module):
    out = replay(tmp_path_factory.mktemp("vessel-faults"), influxdb, influx_module, "vessel-faults.yaml")
    yield out
    close(out["platform"])


def _describe(alerts: list[dict], t0: int) -> list[tuple]:
    return [(a["asset"], a["rule"], a["evidence"].get("classification"), round((a["opened_ns"] - t0) / DAY, 2))
            for a in alerts]


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_injected_fault_is_caught_with_its_classification(faults, kind):
    fault = next(f for f in faults["truth"]["faults"] if f["kind"] == kind)
    classification, part = EXPECTED[kind]
    mine = [a for a in faults["alerts"] if a["asset"] == fault["asset"]]
    assert mine, f"nothing raised on {fault['asset']} ({kind}): {_describe(faults['alerts'], faults['t0'])}"
    assert {a["evidence"]["classification"] for a in mine} == {classification}, _describe(mine, faults["t0"])
    first = mine[0]
    assert fault["start_ns"] <= first["opened_ns"] <= fault["end_ns"], _describe(mine, faults["t0"])
    if part is not None:  # the injector is named by its cylinder, the bearing by its number
        assert {a["evidence"][part] for a in mine} == {fault["params"][part]}
        assert f"{part} {fault['params'][part]}" in first["title"]


def test_the_healthy_ship_raises_nothing(faults):
    faulty = {f["asset"] for f in faults["truth"]["faults"]}
    healthy = [a["id"] for a in faults["truth"]["assets"] if a["id"] not in faulty]
    assert healthy == ["vessel-004"]
    assert [a for a in faults["alerts"] if a["asset"] in healthy] == []


def test_every_alarm_carries_its_evidence(faults):
    for a in faults["alerts"]:
        ev = a["evidence"]
        assert ev["source"] in VesselPack.sources and ev["rule"] == a["rule"]
        assert ev["window"]["start_ns"] < ev["window"]["end_ns"] <= ev["now_ns"]
        assert ev["values"] and ev["thresholds"]
    injector = next(a for a in faults["alerts"] if a["evidence"]["classification"] == "fuel_injector")
    row = injector["evidence"]["values"]["windows"][-1]
    assert row["deviation_k"] >= injector["evidence"]["thresholds"]["medium_k"]
    assert abs(row["cylinder_c"] - row["mean_c"] - row["deviation_k"]) < 0.02
    tc = next(a for a in faults["alerts"] if a["evidence"]["classification"] == "turbocharger_fouling")
    trends = tc["evidence"]["trends"]
    assert trends["exhaust_rise_k"]["rising"] and trends["scavenge_drop_pct"]["rising"]
    assert tc["evidence"]["maintenance_due"]["at_ns"] >= tc["evidence"]["now_ns"]


def test_the_fault_scenario_scored_against_its_ground_truth(faults):
    detections = [{"asset": a["asset"], "start_ns": a["opened_ns"], "classification": a["evidence"]["classification"]}
                  for a in faults["alerts"]]
    truth = faults["truth"]
    result = evaluate(truth, [Detection(d["asset"], int(d["start_ns"]), None, d["classification"])
                                          for d in detections], tolerance_s=0, grace_s=0)
    rows = []
    for f in truth["faults"]:
        first = min(a["opened_ns"] for a in faults["alerts"] if a["asset"] == f["asset"])
        rows.append(f"{f['kind']} on {f['asset']}: caught {(first - f['start_ns']) / DAY:.2f} days after onset, "
                    f"{(f['end_ns'] - first) / DAY:.2f} days before its end")
    asset_days = len(truth["assets"]) * (truth["end_ns"] - truth["start_ns"]) / DAY
    print(f"\nvessel-faults.yaml: {result.overall.caught}/{result.overall.faults} faults caught; "
          f"{result.false_alarms} false alarms in {asset_days:.0f} vessel-days; " + "; ".join(rows))
    assert (result.overall.caught, result.overall.faults, result.false_alarms) == (3, 3, 0)


def test_a_repaired_injector_resolves_its_alert(faults):
    """The injector is changed on day 11: back within 20 K of the mean, the rule resolves its alert."""
    a = next(a for a in faults["alerts"] if a["evidence"]["classification"] == "fuel_injector")
    assert a["state"] == "resolved"
    with faults["platform"].registry.session() as s:
        row = s.get(Alert, a["id"])
        assert row.resolved_by == "rules:vessel" and "cylinder 4 back within 20 K" in row.note


def test_predicted_maintenance_is_kept_in_the_twin(faults):
    maintenance = {asset: (m or {}).get("maintenance", {}) for asset, m in faults["models"].items()}
    assert "turbocharger" in maintenance["vessel-002"]
    tc = maintenance["vessel-002"]["turbocharger"]
    assert faults["t0"] < tc["at_ns"] and tc["at"].startswith("2025-06")
    assert "shaft_bearing_2" in maintenance["vessel-003"]
    assert set(maintenance["vessel-004"]) <= {"turbocharger"}  # a healthy ship: a cleaning months ahead at most
    if "turbocharger" in maintenance["vessel-004"]:
        assert maintenance["vessel-004"]["turbocharger"]["at_ns"] > faults["end"] + 60 * DAY


def test_explain_recomputes_each_alarm_from_the_stored_data(faults):
    """What ``GET /alerts/{id}/explain`` answers: every open alarm recomputed as of its moment, every key equal."""
    for a in faults["alerts"]:
        if a["state"] == "resolved":
            continue
        out = explain(faults["platform"], {**a, "tenant": TENANT})
        assert (out["recomputable"], out["matches"], "not_compared" in out) == (True, True, False), a["rule"]
        assert out["recomputed"] == out["stored"]
    assert PACKS["vessel"].sources == ("vessel-engine", "vessel-shaft")


def test_what_if_postponing_maintenance(faults):
    pack = PACKS["vessel"](faults["platform"])
    now = faults["end"]
    soon = pack.what_if(TENANT, "vessel-002", VesselQuestion(postpone_days=0), now)
    later = pack.what_if(TENANT, "vessel-002", VesselQuestion(postpone_days=30), now)
    scav = "engine_scavenge_drop_pct"
    assert later["limits"][scav]["probability_before"] >= soon["limits"][scav]["probability_before"]
    assert later["limits"][scav]["probability_before"] == 1.0
    healthy = pack.what_if(TENANT, "vessel-004", VesselQuestion(postpone_days=30), now)
    assert all(x["probability_before"] == 0.0 for x in healthy["limits"].values()), healthy


def test_the_store_is_read_as_the_same_ten_minute_means(faults):
    """What the live pack reads from InfluxDB equals what the offline evaluation computes from the samples."""
    run = faults["runs"]["vessel-001"]
    start, end = faults["t0"] + 2 * DAY, faults["t0"] + 3 * DAY
    every = round(default_config().steady.bin_s * S)
    points = ["me_shaft_power", "me_exh_temp_cyl4", "shaft_vib_1"]
    stored = read_bins(faults["platform"].store, TENANT, "vessel-001", points, start, end, every)
    computed = bins_from_samples({p: run.points[p][:2] for p in points}, start, end, every)
    np.testing.assert_array_equal(stored.t_ns, computed.t_ns)
    for p in points:
        np.testing.assert_allclose(stored.values[p], computed.values[p], rtol=1e-12, equal_nan=True)


def test_steady_windows_leave_out_manoeuvring_and_port():
    cfg = default_config()
    t = np.arange(24, dtype=np.int64) * 600 * S
    power = np.r_[np.full(6, 9000.0), np.linspace(2000, 9000, 6), np.zeros(6), np.full(6, 4000.0)]
    speed = np.r_[np.full(6, 90.0), np.linspace(50, 90, 6), np.zeros(6), np.full(6, 70.0)]
    w = steady_windows(Bins(t, 600 * S, {"me_shaft_power": power, "me_speed": speed}), cfg.engine, cfg.steady)
    assert w.t_ns.tolist() == [3600 * S]  # the steady hour; the ramp, the stop and 28 % load are not judged


@pytest.fixture(scope="module")
def normal_week(tmp_path_factory, influxdb):
    name = f"test_{uuid.uuid4().hex[:12]}"
    influxdb.create_database(name)
    out = replay(tmp_path_factory.mktemp("vessel-normal"), influxdb, name, "vessel-normal-week.yaml")
    yield out
    close(out["platform"])
    influxdb.drop_database(name)


def test_a_normal_week_of_voyages_raises_no_alarm(normal_week):
    truth = normal_week["truth"]
    passages = [e for e in truth["events"] if e["kind"] == "sea_passage"]
    print(f"\nvessel-normal-week.yaml: {len(normal_week['alerts'])} alarms over {len(truth['assets'])} ships x 7 days "
          f"({len(passages)} sea passages, Beaufort {min(e['beaufort'] for e in passages)}-"
          f"{max(e['beaufort'] for e in passages)})")
    assert normal_week["alerts"] == []
    assert len(passages) >= 6  # the week really was voyages, in more than one weather


def _offline(runs: list[VesselRun], t0: int, days: float, step_h: int = 6) -> dict[str, list]:
    """Every rule on each ship's 10-minute means computed from its samples (what the store answers: see
    ``test_the_store_is_read_as_the_same_ten_minute_means``), assessed every ``step_h`` hours of data; the first
    (rule, classification, part, opened) of each alert."""
    from cloud.packs.vessel import assess_windows

    cfg = default_config()
    out = {}
    for r in runs:
        end = t0 + round(days * DAY)
        bins = bins_from_samples({p: (t, v) for p, (t, v, _) in r.points.items()}, t0, end, round(cfg.steady.bin_s * S))
        opened: dict[str, tuple] = {}
        for now in range(t0 + step_h * 3600 * S, end + 1, step_h * 3600 * S):
            seen = bins.t_ns < now
            w = steady_windows(Bins(bins.t_ns[seen], bins.every_ns, {p: v[seen] for p, v in bins.values.items()}),
                               cfg.engine, cfg.steady)
            assessment, _ = assess_windows(w, cfg, r.asset_id, int(w.t_ns[-1]) if len(w) else now)
            for a in assessment.alarms:
                ev = a.evidence
                opened.setdefault(a.rule, (ev["classification"], ev.get("cylinder", ev.get("bearing")), a.at_ns))
        out[r.asset_id] = list(opened.values())
    return out


def test_over_many_seeds_every_fault_is_named_and_normal_voyages_raise_nothing():
    """Figures: ``VESSEL_SEEDS=40 .venv/bin/pytest -q -s --timeout 0 tests/test_vessel_pack.py -k many_seeds``
    (default 3 seeds)."""
    import os

    from simulators.vessel import Vessel, VesselFault, VesselParams

    seeds = int(os.environ.get("VESSEL_SEEDS", "3"))
    t0 = 1_748_822_400 * S
    kinds = {"injector-hot": ("fuel_injector", 4, dict(kind="fuel_injector", cylinder=4, deviation_k=70)),
             "injector-cold": ("fuel_injector", 2, dict(kind="fuel_injector", cylinder=2, deviation_k=-60)),
             "turbocharger": ("turbocharger_fouling", None, dict(kind="turbocharger_fouling", fouling_per_day=0.12)),
             "bearing": ("shaft_bearing_wear", 2, dict(kind="shaft_bearing_wear", bearing=2))}
    caught: dict[str, list[float]] = {k: [] for k in kinds}
    wrong, false_alarms = [], []
    for seed in range(seeds):
        runs, truth = [], {}
        for i, (name, (_, _, spec)) in enumerate(kinds.items()):
            start = t0 + (2 + seed % 3) * DAY
            fault = VesselFault(start_ns=start, end_ns=start + 10 * DAY, **spec)
            runs.append(Vessel(name, VesselParams(), seed=10_000 + 10 * seed + i, faults=[fault]).simulate(
                t0, 14 * 86_400, 60))
            truth[name] = fault
        for name, found in _offline(runs, t0, 14).items():
            classification, part, _ = kinds[name]
            fault = truth[name]
            right = [f for f in found if f[0] == classification and f[1] == part and f[2] >= fault.start_ns]
            wrong += [(seed, name, f) for f in found if f not in right]
            if right:
                caught[name].append((min(f[2] for f in right) - fault.start_ns) / DAY)
        normal = [Vessel(f"normal-{seed}-{j}", VesselParams(), seed=20_000 + 10 * seed + j).simulate(t0, 7 * 86_400, 60)
                  for j in range(5)]
        false_alarms += [(a, f) for a, found in _offline(normal, t0, 7).items() for f in found]
    summary = "; ".join(f"{k}: {len(v)}/{seeds} caught, median {np.median(v) if v else float('nan'):.2f} days after "
                        f"onset (max {max(v) if v else float('nan'):.2f})" for k, v in caught.items())
    print(f"\n{seeds} seeds x 4 faults (14 days each): {summary}; misclassified or early: {len(wrong)}; "
          f"{5 * seeds} normal ship-weeks: {len(false_alarms)} alarms")
    assert all(len(v) == seeds for v in caught.values()), caught
    assert wrong == [] and false_alarms == []
