"""Explainable decisions: every alert kind is recomputed by the explain endpoint from the stored data (real
InfluxDB; the simulated fleet on the embedded store), through the same code as its live rule, as of the moment
its evidence records: the same evidence while the data is unchanged, different evidence (``matches`` false)
once a stored value is altered."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import tests.test_coldchain_scenarios as sc
from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.registry import Alert, Asset
from cloud.rules.coldchain.profiles import parse_profile
from cloud.rules.local import alert_from_alarm
from cloud.rules.runner import RuleRunner
from cloud.store import Rows
from edge.buffer import Tick
from edge.rules import LocalRules
from models.catalogue import get_type
from models.wire import AlarmEvent, PointSeries, TelemetryBatch
from simulators.trailer import Trailer, TrailerParams, simulate_fleet

S = 1_000_000_000
T0 = 1_767_225_600 * S


def test_an_edge_alarm_is_an_alert_whose_evidence_the_cloud_can_recompute(influx_platform):
    p = influx_platform
    key = p.registry.create_api_key("acme", "viewer")
    with p.registry.session() as s:
        s.add(Asset(tenant="acme", id="trailer-001", type="refrigerated-trailer", gateway="gw1", first_seen_ns=0))
    # 20 min at 4 degC then 30 min at 9 degC, one sample a minute: what the gateway saw and what was stored
    t = [T0 + i * 60 * S for i in range(50)]
    x = [4.0] * 20 + [9.0] * 30
    rows = Rows()
    rows.extend_series("acme", "trailer-001", "supply_air", t, x, [0] * 50)
    p.store.write(rows)
    rule = next(r for r in get_type("refrigerated-trailer").local_rules if r.name == "supply-air-high")
    [f] = LocalRules([("trailer-001", rule, 0)], 1).evaluate(
        Tick(np.zeros(50, np.int64), np.array(t, np.int64), np.array(x), np.zeros(50, np.int8)))
    ev = AlarmEvent(tenant="acme", gateway="gw1", event_id="gw1:trailer-001:supply-air-high:1", asset="trailer-001",
                    rule=rule.name, severity=rule.severity, start_ns=f.start_ns,
                    evidence={"point": "supply_air", "value": f.value, "fired_ns": f.fired_ns, "limit": rule.limit,
                              "for_s": rule.for_s})
    alert_id, new = alert_from_alarm(p.alerts, ev, "refrigerated-trailer")
    assert new
    api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
    alert = api.get(f"/api/v1/alerts/{alert_id}").json()
    assert alert["title"] == "supply_air above 8.0 for 900.0 s"
    assert (alert["evidence"]["start_ns"], alert["evidence"]["fired_ns"]) == (t[20], t[35])
    out = api.get(f"/api/v1/alerts/{alert_id}/explain").json()
    assert out["recomputable"] and out["matches"]
    assert out["recomputed"] == {"point": "supply_air", "start_ns": t[20], "fired_ns": t[35], "value": 9.0,
                                 "limit": 8.0, "for_s": 900.0, "samples_examined": 36}


# -- every other alert kind: the live rules' alerts, recomputed from what InfluxDB holds ----------------------

MIN = 60 * S
DAY = 86_400 * S
CHILLED = parse_profile({"name": "chilled-2-8", "boundaries": [
    {"name": "warm", "above": 8.0, "after": "30m", "mode": "single", "severity": "high"},
    {"name": "freeze", "below": -0.5, "after": "1h", "mode": "single", "severity": "high"}]})


@pytest.fixture
def platform(influx_platform):
    return influx_platform


def stored(p: Platform, asset: str, point: str, t: list[int], x: list[float]) -> TelemetryBatch:
    """Write the samples to the store, as ingest does; the batch the rule runner's hook is told about."""
    rows = Rows()
    rows.extend_series("acme", asset, point, t, x, [0] * len(t))
    p.store.write(rows)
    return TelemetryBatch(tenant="acme", gateway="gw1", seq=0, series=[
        PointSeries(asset=asset, point=point, t_ns=t, values=x, quality=[0] * len(t))])


def explained(p: Platform, asset: str) -> tuple[dict, dict]:
    """The asset's one alert and what the explain endpoint says about it."""
    key = p.registry.create_api_key("acme", "viewer")
    api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
    [alert] = api.get("/api/v1/alerts", params={"asset": asset}).json()["items"]
    return alert, api.get(f"/api/v1/alerts/{alert['id']}/explain").json()


def test_a_cold_chain_excursion_is_recomputed_from_the_stored_samples_until_they_change(platform):
    p = platform
    with p.registry.session() as s:
        s.add(Asset(tenant="acme", id="trailer-002", type="refrigerated-trailer", gateway="gw1", first_seen_ns=T0))
    rules = RuleRunner(p, window_s=4 * 3600, profile=CHILLED)
    # an hour at 5 degC, then 10 degC: the warm boundary (above 8 for 30 min) fires at minute 90, and again
    # (a logger's second occurrence) when the last reading's minute ends; the alert keeps the latest
    t = [T0 + i * MIN for i in range(120)]
    x = [5.0] * 60 + [10.0] * 60
    rules.on_written([stored(p, "trailer-002", "supply_air", t, x)])
    assert rules.assess_now(now_ns=t[-1]) == 1
    alert, out = explained(p, "trailer-002")
    assert alert["rule"] == "coldchain:chilled-2-8:warm"
    assert alert["evidence"]["assessment"]["as_of_ns"] == t[-1]
    assert out["recomputable"] and out["matches"], out
    assert out["recomputed"]["window"] == alert["evidence"]["window"] == {
        "start": "2026-01-01T01:00:00Z", "end": "2026-01-01T02:00:00Z", "start_ns": t[60], "end_ns": t[60] + 60 * MIN}
    assert out["recomputed"]["values"]["occurrence"] == 2
    assert "detected_late" not in out["recomputed"] and "detected_late" in out["not_compared"]

    # one reading back in range (an auditor's copy differs from what fired): the episode starts later
    p.store.write(rows_of("trailer-002", "supply_air", [t[70]], [7.5]))
    _, out = explained(p, "trailer-002")
    assert out["recomputable"] and not out["matches"]
    assert out["recomputed"]["window"]["start_ns"] == t[71]
    assert out["stored"]["window"]["start_ns"] == t[60]


def test_a_maintenance_alert_is_recomputed_with_the_same_bootstrap_until_the_history_changes(platform):
    p = platform
    with p.registry.session() as s:
        s.add(Asset(tenant="acme", id="pump-001", type="rotating-machine", gateway="gw1", first_seen_ns=T0))
    rules = RuleRunner(p)
    # 30 days, a reading every 6 h, rising from 1.0 to 3.0 mm/s with noise: zone D (4.5) about 3 weeks ahead
    n = 120
    t = [T0 + i * DAY // 4 for i in range(n)]
    rng = np.random.default_rng(7)
    x = (1.0 + 2.0 * np.arange(n) / (n - 1) + rng.normal(0, 0.05, n)).round(4).tolist()
    rules.on_written([stored(p, "pump-001", "vib_velocity_rms", t, x)])
    assert rules.assess_now(now_ns=t[-1] + MIN) == 1
    alert, out = explained(p, "pump-001")
    assert alert["rule"] == "pdm-vibration-trend" and alert["severity"] == "high"
    assert alert["evidence"]["now_ns"] == t[-1] and alert["evidence"]["fit"]["seed"] == 0
    assert out["recomputable"] and out["matches"], out
    assert out["recomputed"]["zone_d"] == alert["evidence"]["zone_d"]  # dates and bootstrap interval alike
    assert out["recomputed"]["points"]["n"] == n

    # a later reading does not change what the alert was judged on (as of its newest reading then) ...
    p.store.write(rows_of("pump-001", "vib_velocity_rms", [t[-1] + DAY], [3.1]))
    assert explained(p, "pump-001")[1]["matches"]
    # ... an overwritten one in its window does
    p.store.write(rows_of("pump-001", "vib_velocity_rms", [t[100]], [6.0]))
    _, out = explained(p, "pump-001")
    assert out["recomputable"] and not out["matches"]
    assert out["recomputed"]["fit"]["a"] != out["stored"]["fit"]["a"]


def test_an_alert_whose_evidence_names_no_known_rule_is_not_recomputable(platform):
    p = platform
    alert_id, _ = p.alerts.raise_alert("acme", "pump-002", "manual", "low", "a note", {"source": "operator"})
    key = p.registry.create_api_key("acme", "viewer")
    api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
    out = api.get(f"/api/v1/alerts/{alert_id}/explain").json()
    assert out == {"alert_id": alert_id, "rule": "manual", "recomputable": False,
                   "reason": "no explainer for source 'operator'", "stored": {"source": "operator"}}


def test_a_cold_chain_alert_without_its_assessment_says_why_it_cannot_be_recomputed(platform):
    p = platform
    alert_id, _ = p.alerts.raise_alert("acme", "trailer-003", "coldchain:door-open-long", "medium", "door open",
                                       {"source": "coldchain", "rule": "door-open-long"})
    key = p.registry.create_api_key("acme", "viewer")
    api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
    out = api.get(f"/api/v1/alerts/{alert_id}/explain").json()
    assert not out["recomputable"] and out["reason"].startswith("the evidence records no assessment")


def rows_of(asset: str, point: str, t: list[int], x: list[float]) -> Rows:
    rows = Rows()
    rows.extend_series("acme", asset, point, t, x, [0] * len(t))
    return rows


FLEET_S = 38 * 3600  # the faults of the cold-chain scenarios all end by hour 37


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Four simulated trailers, one fault each, replayed through ingest and the rule runner (the cold-chain
    scenarios' replay, on the embedded store): every kind of cold-chain alert the live rules raise."""
    runs = simulate_fleet([Trailer("trailer-door", TrailerParams(), seed=11, faults=[sc.DOOR]),
                           Trailer("trailer-power", TrailerParams(), seed=13, faults=[sc.POWER]),
                           Trailer("trailer-stuck", TrailerParams(), seed=15, faults=[sc.STUCK])], sc.T0, FLEET_S, 60)
    # the thermal twin (the predictive alert) needs a compressor run to span several samples: every 10 s
    runs += simulate_fleet([Trailer("trailer-compressor", TrailerParams(), seed=12, faults=[sc.COMPRESSOR])], sc.T0,
                           FLEET_S, 10)
    gws = [sc.Gateway(r) for r in runs]
    gws[1].down.append((sc.POWER.start_ns, sc.POWER.end_ns))  # the gateway goes down with the unit's power
    platform, alerts = sc.replay(tmp_path_factory.mktemp("explain"), gws, FLEET_S)
    yield platform, alerts
    sc.close(platform)


def test_every_cold_chain_alert_kind_is_recomputed_from_the_stored_samples(fleet):
    platform, alerts = fleet
    with platform.registry.session() as s:
        ids = {(a.asset, a.rule): a.id for a in s.scalars(select(Alert))}
    key = platform.registry.create_api_key(sc.TENANT, "viewer")
    api = TestClient(create_app(platform), headers={"Authorization": f"Bearer {key}"})
    kinds = set()
    for a in alerts:
        out = api.get(f"/api/v1/alerts/{ids[a['asset'], a['rule']]}/explain").json()
        assert out["recomputable"] and out["matches"], (a["asset"], a["rule"], out.get("recomputed"))
        kinds.add(a["evidence"]["classification"])
    assert kinds == {"door_open", "power_loss", "sensor_fault", "compressor_failure", "excursion_predicted",
                     "excursion"}
