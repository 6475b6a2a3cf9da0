"""Packs and cloud-defined types end to end, through the processes a user starts: ``twin cloud run`` (with the toy
pack of ``tests/packs/toy_kettle`` named in TWIN_PACK_DIRS, nothing else of the platform edited) and ``twin edge
run`` gateways that learn the types they do not ship from their desired configuration."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from simulators.devices import Reading, publish_readings
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

TOY = Path(__file__).resolve().parent / "packs" / "toy_kettle"
S = 1_000_000_000
PUMP = {"id": "acme-pump", "name": "Booster pump", "description": "defined through the API",
        "points": {"flow_m3h": {"unit": "m3/h", "normal_range": [5.0, 40.0],
                                "detectors": [{"kind": "ewma_z", "tau_s": 600, "threshold": 6.0, "warmup": 10}]}},
        "local_rules": [{"name": "no-flow", "point": "flow_m3h", "below": 1.0, "for_s": 30, "severity": "medium"}]}
TRAILER = {"id": "trailer-001", "type": "refrigerated-trailer"}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory, mosquitto, influxdb) -> Iterator[CloudProcess]:
    work = tmp_path_factory.mktemp("packs")
    db = f"packs_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    c = CloudProcess(work, mosquitto.url, f"sqlite:///{work / 'registry.sqlite'}", influxdb.url, db,
                     extra_env={"TWIN_PACK_DIRS": str(TOY), "TWIN_RULES_INTERVAL_S": "0.5",
                                "TWIN_INGEST_CLIENT_ID": f"ingest-{db}"})
    c.start()
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()
        influxdb.drop_database(db)


class Gateway:
    """A ``twin edge run`` gateway with one trailer in its file, reading sensors on ``<topic>/<asset>/<point>``."""

    def __init__(self, workdir: Path, broker_url: str) -> None:
        self.id = f"gw-{uuid.uuid4().hex[:8]}"  # retained configuration must not leak between tests
        self.topic = f"sensors-{self.id}"
        self.broker_url = broker_url
        self.config = gateway_config(workdir, broker_url, broker_url, gateway=self.id)
        self.config["sources"][0]["subscriptions"][0]["topic"] = f"{self.topic}/+/+"
        self.workdir = workdir
        self.process = EdgeProcess(workdir, self.config)

    def start(self) -> None:
        self.process.start()
        self.process.wait_log("uplink: connected")
        self.process.wait_log("source sensors: connected")

    def publish(self, readings: list[Reading]) -> None:
        publish_readings(self.broker_url, readings, topic_template=f"{self.topic}/{{asset}}/{{point}}",
                         client_id=f"sensors-{self.id}")

    def push(self, api: httpx.Client, config: dict) -> dict:
        """PUT the desired configuration; the gateway's report on it, once it made one."""
        wait_until(lambda: api.get(f"/api/v1/gateways/{self.id}").status_code == 200, what="the cloud to know it")
        current = api.get(f"/api/v1/gateways/{self.id}").json()["desired_version"]
        r = api.put(f"/api/v1/gateways/{self.id}/config", json={"config": config, "reason": "new assets"},
                    headers={"If-Match": f'"{current}"'})
        assert r.status_code == 200, r.text
        version = r.json()["version"]
        return wait_until(lambda: ((g := api.get(f"/api/v1/gateways/{self.id}").json())["config_report"] or {})
                          .get("version") == version and g["config_report"], what=f"a report on v{version}")


@pytest.fixture
def gateway(tmp_path, mosquitto) -> Iterator[Gateway]:
    g = Gateway(tmp_path / "edge", mosquitto.url)
    g.start()
    yield g
    g.process.stop()


def _telemetry(api: httpx.Client, asset: str, point: str, start: int) -> tuple[list[int], list[float]]:
    body = api.get(f"/api/v1/assets/{asset}/telemetry", params={"point": point, "start": start}).json()
    return body.get("t_ns", []), body.get("values", [])


def test_a_type_created_through_the_api_runs_on_a_gateway_whose_samples_reach_the_cloud(cloud, gateway, tmp_path):
    with cloud.client() as api:
        assert api.post("/api/v1/asset-types", json=PUMP).status_code == 201
        assert api.post("/api/v1/assets", json={"id": "pump-7", "type": "acme-pump",
                                                "gateway": gateway.id}).status_code == 201
        report = gateway.push(api, {"assets": [TRAILER, {"id": "pump-7", "type": "acme-pump"}]})
        assert (report["applied"], report["reason"]) == (True, "")
        gateway.process.wait_log("assets now trailer-001 (refrigerated-trailer), pump-7 (acme-pump): 8 points")

        t0 = time.time_ns() - 120 * S
        flows = [12.0, 12.5, 13.0, 12.5, 12.0, 0.5, 0.5, 0.5, 0.5, 0.5]  # then no flow for 40 s: its own rule
        gateway.publish([Reading("pump-7", "flow_m3h", t0 + i * 10 * S, v) for i, v in enumerate(flows)])
        t, v = wait_until(lambda: (got := _telemetry(api, "pump-7", "flow_m3h", t0))[0] and len(got[0]) == 10 and got,
                          what="the pump's samples in the cloud")
        assert (t, v) == ([t0 + i * 10 * S for i in range(10)], flows)

        [alert] = wait_until(lambda: api.get("/api/v1/alerts", params={"asset": "pump-7"}).json()["items"],
                             what="the type's local rule, fired at the gateway, as an alert")
        assert (alert["rule"], alert["severity"], alert["title"]) == \
            ("no-flow", "medium", "flow_m3h below 1.0 for 30.0 s")
        assert alert["evidence"]["rule"]["below"] == 1.0  # the tenant's rule, as the gateway applied it
        explained = api.get(f"/api/v1/alerts/{alert['id']}/explain").json()
        assert (explained["recomputable"], explained["matches"]) == (True, True)

    # a restart runs the configuration the cloud sent, though gateway.yaml still names only the trailer
    assert gateway.process.stop() == 0
    gateway.process.start()
    gateway.process.wait_log(f"starting from the desired configuration v{report['version']}")
    gateway.process.wait_log("source sensors: connected")
    t1 = time.time_ns() - 10 * S
    gateway.publish([Reading("pump-7", "flow_m3h", t1, 14.0)])
    with cloud.client() as api:
        assert wait_until(lambda: _telemetry(api, "pump-7", "flow_m3h", t1)[1], what="after the restart") == [14.0]


def test_a_toy_pack_from_a_test_folder_is_picked_up_end_to_end(cloud, gateway):
    with cloud.client() as api:
        types = {t["id"]: t for t in api.get("/api/v1/asset-types").json()["items"]}
        assert types["toy-kettle"]["points"]["water_c"]["unit"] == "degC"  # its type.yaml
        packs = {p["type"]: p for p in api.get("/api/v1/packs").json()["items"]}
        assert packs["toy-kettle"]["panel"] == "packs/toy-kettle/panel.js"
        assert list(packs["toy-kettle"]["what_if"]["properties"]) == ["minutes"]
        assert packs["toy-kettle"]["sources"] == ["toy-kettle"]
        panel = httpx.get(f"{cloud.url}/static/{packs['toy-kettle']['panel']}")
        assert panel.status_code == 200 and panel.content == (TOY / "panel.js").read_bytes()
        assert "javascript" in panel.headers["content-type"]

        # the gateway does not ship the type: it comes with the configuration
        assert api.post("/api/v1/assets", json={"id": "kettle-1", "type": "toy-kettle"}).status_code == 201
        report = gateway.push(api, {"assets": [TRAILER, {"id": "kettle-1", "type": "toy-kettle"}]})
        assert (report["applied"], report["reason"]) == (True, "")

        t0 = time.time_ns() - 60 * S
        heating = [20.0, 40.0, 60.0, 80.0, 101.0]
        gateway.publish([Reading("kettle-1", "water_c", t0 + i * 10 * S, v) for i, v in enumerate(heating)])
        [alert] = wait_until(lambda: api.get("/api/v1/alerts", params={"asset": "kettle-1"}).json()["items"],
                             timeout=60, what="the toy pack's rule to raise its alert")
        assert (alert["rule"], alert["severity"], alert["title"]) == ("toy-kettle:boiling", "high", "boiling: 101.0 °C")
        ev = alert["evidence"]
        assert (ev["source"], ev["value"], ev["limit"], ev["at_ns"], ev["samples_examined"]) == \
            ("toy-kettle", 101.0, 100.0, t0 + 40 * S, 5)
        explained = api.get(f"/api/v1/alerts/{alert['id']}/explain").json()
        assert (explained["recomputable"], explained["matches"]) == (True, True)

        answer = api.post("/api/v1/assets/kettle-1/simulate", json={"minutes": 1})
        assert answer.status_code == 200, answer.text
        assert answer.json()["water_c_then"] == pytest.approx(101.0 + 81.0 / 40.0 * 60)  # its heating rate
        bad = api.post("/api/v1/assets/kettle-1/simulate", json={"minutes": 0, "postpone_days": 3})
        assert bad.status_code == 422
        assert [e["where"] for e in bad.json()["errors"]] == ["body.minutes", "body.postpone_days"]

        gateway.publish([Reading("kettle-1", "water_c", t0 + 50 * S, 90.0)])  # cooled down: the pack resolves it
        resolved = wait_until(lambda: (a := api.get(f"/api/v1/alerts/{alert['id']}").json())["state"] == "resolved"
                              and a, what="the alert resolved")
        assert resolved["state"] == "resolved"


def test_a_type_defined_again_reaches_the_gateways_running_it(cloud, gateway):
    meter = {"id": "acme-meter", "name": "Meter", "points": {"energy_kwh": {"unit": "kWh"}}}
    with cloud.client() as api:
        assert api.post("/api/v1/asset-types", json=meter).status_code == 201
        first = gateway.push(api, {"assets": [TRAILER, {"id": "meter-1", "type": "acme-meter"}]})
        assert first["applied"] is True
        again = {**meter, "points": {**meter["points"], "power_kw": {"unit": "kW"}}}
        assert api.post("/api/v1/asset-types", json=again).status_code == 201
        report = wait_until(lambda: ((r := api.get(f"/api/v1/gateways/{gateway.id}").json()["config_report"])
                                     ["version"] > first["version"]) and r, what="the new definition pushed")
        assert (report["version"], report["applied"], report["reason"]) == (first["version"] + 1, True, "")
        gateway.process.wait_log("meter-1 (acme-meter): 8 points")
        t0 = time.time_ns() - 10 * S
        gateway.publish([Reading("meter-1", "power_kw", t0, 7.5)])
        assert wait_until(lambda: _telemetry(api, "meter-1", "power_kw", t0)[1], what="the new point") == [7.5]
