"""The shipping fleet through the processes a user starts: ``twin sim vessels`` publishes the fault scenario's four
ships (``simulators/scenarios/vessel-faults.yaml``, logged every 10 minutes here to keep the run short) as sensor
topics on the real Mosquitto; a ``twin edge run`` gateway reads them as ``vessel`` assets and uplinks them; ``twin
cloud run`` ingests into the real InfluxDB and runs the vessel pack in its rule runner. Every fault must come back
through the API as an alert with its classification (the injector by its cylinder, the bearing by its number),
nothing on the healthy ship; and a charterer's key, made through the API, sees its ship's health, open alerts and
predicted maintenance, and a 404 for the ship it was not shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from cloud.rules import local
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "simulators" / "scenarios" / "vessel-faults.yaml"
SHIPS = ["vessel-001", "vessel-002", "vessel-003", "vessel-004"]
EXPECTED = {"fuel_injector": ("fuel_injector", "cylinder"), "turbocharger_fouling": ("turbocharger_fouling", None),
            "shaft_bearing_wear": ("shaft_bearing_wear", "bearing")}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, mosquitto, influxdb):
    work = tmp_path_factory.mktemp("vessel-e2e")
    db = f"vessel_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    topic = f"ams-{uuid.uuid4().hex[:6]}"
    cloud = CloudProcess(work, mosquitto.url, f"sqlite:///{work / 'registry.sqlite'}", influxdb.url, db,
                         extra_env={"TWIN_RULES_INTERVAL_S": "1", "TWIN_INGEST_CLIENT_ID": f"ingest-{db}"})
    cfg = gateway_config(work / "edge", mosquitto.url, mosquitto.url, gateway=f"gw-{topic}")
    cfg["assets"] = [{"id": s, "type": "vessel"} for s in SHIPS]
    cfg["sources"][0]["subscriptions"][0]["topic"] = f"{topic}/+/+"
    edge = EdgeProcess(work / "edge", cfg)
    scenario = yaml.safe_load(SCENARIO.read_text()) | {
        "sample_period": "600s", "topic_template": f"{topic}/{{asset}}/{{point}}", "broker": mosquitto.url}
    (work / "scenario.yaml").write_text(yaml.safe_dump(scenario))
    cloud.start()
    try:
        cloud.wait_ready()
        edge.start()
        edge.wait_log("uplink: connected")
        edge.wait_log("source sensors: connected")
        started = time.monotonic()
        sim = subprocess.run([sys.executable, "-m", "twin", "sim", "vessels", str(work / "scenario.yaml"),
                              "--out", str(work / "sim")], capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert sim.returncode == 0, sim.stderr[-3000:]
        truth = json.loads((work / "sim" / "ground_truth.json").read_text())
        with cloud.client() as api:
            last = truth["end_ns"] - 600 * 1_000_000_000
            for ship in SHIPS:  # every ship's last reading is in the cloud ...
                wait_until(lambda s=ship: api.get(f"/api/v1/assets/{s}/latest").json()
                           .get("me_shaft_power", {}).get("t_ns") == last,
                           timeout=300, interval=1, what=f"{ship}'s last reading in the cloud")

            def judged() -> list[dict]:
                items = api.get("/api/v1/alerts", params={"limit": 1000}).json()["items"]
                found = {a["evidence"].get("classification") for a in items}
                return items if {c for c, _ in EXPECTED.values()} <= found else []

            # ... and the runner has judged it (it runs every second): then three more cycles, for anything late
            wait_until(judged, timeout=120, interval=1, what="the three faults' alerts")
            time.sleep(3)
            alerts = api.get("/api/v1/alerts", params={"limit": 1000}).json()["items"]
        print(f"\nvessel-faults.yaml at 10-minute logging through sim -> edge -> cloud: {len(SHIPS)} ships in "
              f"{time.monotonic() - started:.0f} s; alerts: "
              + "; ".join(f"{a['asset']} {a['rule']} ({a['evidence'].get('classification', a['evidence']['source'])})"
                          for a in sorted(alerts, key=lambda a: a["opened_ns"])))
        yield cloud, truth, alerts
    finally:
        edge.stop()
        cloud.stop()
        influxdb.drop_database(db)


@pytest.mark.timeout(900)  # the first one also sets up the fleet: simulated sensors, gateway and cloud
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_fault_comes_back_through_the_api_with_its_classification(fleet, kind):
    _, truth, alerts = fleet
    fault = next(f for f in truth["faults"] if f["kind"] == kind)
    classification, part = EXPECTED[kind]
    mine = [a for a in alerts if a["asset"] == fault["asset"]]
    judged = [a for a in mine if "classification" in a["evidence"]]
    assert judged and {a["evidence"]["classification"] for a in judged} == {classification}, mine
    assert fault["start_ns"] <= min(a["opened_ns"] for a in judged) <= fault["end_ns"]
    if part is not None:
        assert {a["evidence"][part] for a in judged} == {fault["params"][part]}
    # anything else on that ship is the gateway's own alarm on the failing part, after the fault began
    for a in mine:
        if a not in judged:
            assert a["evidence"]["source"] in (local.SOURCE, local.ANOMALY_SOURCE)
            assert a["evidence"]["point"] == f"shaft_bearing_{fault['params'].get('bearing')}_temp", a
            assert a["opened_ns"] >= fault["start_ns"]


def test_the_healthy_ship_raises_nothing(fleet):
    _, _, alerts = fleet
    assert [a for a in alerts if a["asset"] == "vessel-004"] == []


def test_a_charterer_sees_its_ship_and_nothing_else(fleet):
    cloud, truth, _ = fleet
    with cloud.client() as api:
        assert api.put("/api/v1/shares/charterer-a/assets/vessel-002").status_code == 201
        key = api.post("/api/v1/shares/charterer-a/keys", json={"name": "fleet desk"}).json()["key"]
    with httpx.Client(base_url=cloud.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        assert [a["id"] for a in c.get("/api/v1/shared/assets").json()["items"]] == ["vessel-002"]
        ship = c.get("/api/v1/shared/assets/vessel-002").json()
        assert [a["classification"] for a in ship["open_alerts"]] == ["turbocharger_fouling"]
        assert ship["health"] < 1.0
        due = [m for m in ship["predicted_maintenance"] if m["what"].startswith("turbocharger")]
        assert due and all(m["at_ns"] >= truth["start_ns"] for m in due)
        for other in ("vessel-001", "vessel-003", "vessel-004"):
            assert c.get(f"/api/v1/shared/assets/{other}").status_code == 404
        for path in ("/api/v1/assets", "/api/v1/assets/vessel-002", "/api/v1/twins/vessel-002", "/api/v1/alerts",
                     "/api/v1/assets/vessel-002/telemetry?point=me_shaft_power", "/metrics", "/api/v1/me"):
            assert c.get(path).status_code == 404, path


def test_what_if_the_turbocharger_cleaning_is_postponed(fleet):
    """``POST /assets/{id}/simulate`` with the vessel pack's question, against the trends the running cloud fits."""
    cloud, _, _ = fleet
    with cloud.client() as api:
        now = api.post("/api/v1/assets/vessel-002/simulate", json={"postpone_days": 0})
        later = api.post("/api/v1/assets/vessel-002/simulate", json={"postpone_days": 30})
        healthy = api.post("/api/v1/assets/vessel-004/simulate", json={"postpone_days": 30})
        wrong = api.post("/api/v1/assets/vessel-002/simulate", json={"horizon_h": 6})
    assert (now.status_code, later.status_code, healthy.status_code, wrong.status_code) == (200, 200, 200, 422)
    scav = "engine_scavenge_drop_pct"
    assert later.json()["limits"][scav]["probability_before"] == 1.0  # fouled on: past -10 % within the month
    assert all(x["probability_before"] == 0.0 for x in healthy.json()["limits"].values())
