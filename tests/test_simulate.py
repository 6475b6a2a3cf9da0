"""What-if through the API: a trailer's twin, calibrated on its own stored history, says how long the
load has if the compressor fails now — and the simulator, failing the same trailer then, agrees."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.registry import Asset
from cloud.store import Rows
from simulators.trailer import Fault, Trailer, TrailerParams

S = 1_000_000_000
H = 3600 * S
T0 = 1_704_067_200 * S  # 2024-01-01T00:00Z; the ambient curve peaks at 15:00
DOORS = [Fault(kind="door_open", start_ns=T0 + round(h * H), end_ns=T0 + round(h * H) + m * 60 * S)
         for h, m in ((3, 15), (9.5, 20), (14, 10), (20, 25))]
ASK_AT = T0 + 39 * H  # day two, 15:00: the warmest hour, between defrosts


def test_compressor_off_what_if_matches_the_simulated_failure(influx_platform):
    p = influx_platform
    key = p.registry.create_api_key("acme", "viewer")
    with p.registry.session() as s:
        s.add(Asset(tenant="acme", id="trailer-001", type="refrigerated-trailer", gateway="gw1", first_seen_ns=0))
    history = Trailer("trailer-001", TrailerParams(), seed=1, faults=DOORS).run(T0, 39 * 3600 + 10, 10.0)
    rows = Rows()
    for point, ser in history.points.items():
        rows.extend_series("acme", "trailer-001", point, ser.t_ns.tolist(),
                           [None if np.isnan(v) else v for v in ser.values.tolist()], ser.quality.tolist())
    p.store.write(rows)
    fault = Fault(kind="compressor_failure", start_ns=ASK_AT, end_ns=ASK_AT + 6 * H)
    failed = Trailer("trailer-001", TrailerParams(), seed=1, faults=[*DOORS, fault]).run(T0, 45 * 3600, 10.0)
    crossing = np.flatnonzero((failed.t_ns >= ASK_AT) & (failed.truth["supply_air_c"] >= 8.0))[0]
    true_s = (int(failed.t_ns[crossing]) - ASK_AT) / S

    api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
    r = api.post("/api/v1/assets/trailer-001/simulate",
                 json={"compressor_off": True, "horizon_h": 6, "limit_c": 8.0, "at": str(ASK_AT)})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["t_ns"]) == len(out["supply_c"]) == len(out["supply_hi_c"]) > 100
    assert abs(out["time_to_excursion_s"] - true_s) <= 0.10 * true_s, (out["time_to_excursion_s"], true_s)
    assert out["earliest_s"] <= out["time_to_excursion_s"]
    assert out["baseline_time_to_excursion_s"] is None  # carrying on as now, it stays in range
    ev = out["evidence"]  # what "Apply" keeps in the audit trail: the forecast's figures, no series
    assert ev["time_to_excursion_s"] == out["time_to_excursion_s"] and ev["scenario"] == out["scenario"]
    assert ev["supply_end_c"] == out["supply_c"][-1] and ev["supply_max_c"] == max(out["supply_c"])
    assert ev["model"] == out["model"] and "supply_c" not in ev
    assert "thermal" in api.get("/api/v1/twins/trailer-001").json()["model"]  # kept on the twin
    assert api.post("/api/v1/assets/nope/simulate", json={}).status_code == 404


def test_postponing_maintenance_raises_the_chance_of_zone_d(influx_platform):
    p = influx_platform
    key = p.registry.create_api_key("acme", "viewer")
    with p.registry.session() as s:
        s.add(Asset(tenant="acme", id="pump-1", type="rotating-machine", gateway="gw1", first_seen_ns=0))
    day = 86_400 * S
    now = T0 + 60 * day
    rng = np.random.default_rng(0)
    t = [T0 + i * day // 24 for i in range(60 * 24)]  # hourly for 60 days
    # exponential wear: 1.2 mm/s growing towards zone D (4.5 mm/s, group 2 rigid) around day 80
    v = [1.2 * np.exp(np.log(4.5 / 1.2) * (ti - T0) / (80 * day)) * (1 + 0.03 * rng.standard_normal()) for ti in t]
    rows = Rows()
    rows.extend_series("acme", "pump-1", "vib_velocity_rms", t, v, [0] * len(t))
    p.store.write(rows)
    api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})

    def chance(days: float) -> float:
        r = api.post("/api/v1/assets/pump-1/simulate", json={"postpone_days": days, "at": str(now)})
        assert r.status_code == 200, r.text
        return r.json()["probability_zone_d"]

    soon, late = chance(3), chance(40)
    assert soon < 0.05 and late > 0.95, (soon, late)
    assert chance(0) <= soon <= chance(15) <= late  # monotone in the postponement
