"""One sample end to end, through real processes: simulated trailer → MQTT (real Mosquitto) → edge
agent (``twin edge run``) → outbox → uplink → ingest (``twin cloud run``) → real InfluxDB and
PostgreSQL → the API. And what happens to bad input at each hop."""

from __future__ import annotations

import json
import math
import uuid

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from simulators.devices import Reading, interleave, publish_readings
from simulators.trailer import Trailer, TrailerParams
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
ASSETS = ["trailer-001", "trailer-002", "trailer-003"]


@pytest.fixture(scope="module")
def platform(tmp_path_factory, mosquitto, influxdb, postgres):
    work = tmp_path_factory.mktemp("e2e")
    db = f"e2e_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    cloud = CloudProcess(work, mosquitto.url, postgres.url_for(db), influxdb.url, db)
    cloud.start()
    cloud.wait_ready()
    edge = EdgeProcess(work / "edge", gateway_config(work / "edge", mosquitto.url, mosquitto.url, assets=ASSETS))
    edge.start()
    edge.wait_log("source sensors: connected")
    edge.wait_log("uplink: connected")
    yield cloud, edge
    edge.stop()
    cloud.stop()
    influxdb.drop_database(db)
    postgres.drop_database(db)


def _read_all(api, asset: str, point: str, start: int, end: int) -> tuple[list[int], list[float | None]]:
    t, v, cursor = [], [], None
    while True:
        params = {"point": point, "start": start, "end": end, "limit": 5000}
        if cursor:
            params["cursor"] = cursor
        body = api.get(f"/api/v1/assets/{asset}/telemetry", params=params).raise_for_status().json()
        t += body["t_ns"]
        v += body["values"]
        cursor = body["next_cursor"]
        if not cursor:
            return t, v


def _get_ok(api, path: str, params: dict) -> dict:
    r = api.get(path, params=params)
    return r.json() if r.status_code == 200 else {}


def _gateway_counters(api) -> dict[str, int]:
    gws = api.get("/api/v1/gateways").raise_for_status().json()["items"]
    return next((g["counters"] for g in gws if g["id"] == "gw-e2e"), {})


def test_known_samples_arrive_exactly_once_with_equal_values(platform, mosquitto):
    cloud, _ = platform
    run = Trailer("trailer-001", TrailerParams(setpoint_c=4.0), seed=7).run(T0, 2400, 1.0)
    sent = {(run.asset_id, p): s for p, s in run.points.items()}
    n = sum(len(s.t_ns) for s in sent.values())
    assert n >= 10_000
    report = publish_readings(mosquitto.url, interleave({k: tuple(v) for k, v in sent.items()}))
    assert report.acked == n

    with cloud.client() as api:
        def arrived() -> int:
            return sum(len(_read_all(api, a, p, T0, T0 + 10**13)[0]) for a, p in sent)

        wait_until(lambda: arrived() >= n, timeout=60, what=f"{n} samples through the API")
        assert arrived() == n  # and not one more
        for (asset, point), s in sent.items():
            t, v = _read_all(api, asset, point, T0, T0 + 10**13)
            assert t == s.t_ns.tolist()
            expected = [None if math.isnan(x) else x for x in s.values.tolist()]
            assert v == expected, f"{asset}/{point} values differ"


def test_injected_spike_comes_back_as_an_anomaly_event_and_an_alert(platform, mosquitto):
    cloud, _ = platform
    t0 = T0 + 10**14
    steady = [4.0 + 0.05 * math.sin(i / 3) for i in range(400)]
    values = [*steady[:300], 30.0, *steady[300:]]  # after 300 samples: the default judges levels from then
    readings = [Reading("trailer-002", "supply_air", t0 + i * 10**9, v) for i, v in enumerate(values)]
    publish_readings(mosquitto.url, readings)
    spike_t = t0 + 300 * 10**9

    with cloud.client() as api:
        def closed_events():
            r = api.get("/api/v1/assets/trailer-002/anomalies")
            # this gateway's: the broker may still hold another module's gateway events for the ingest session
            return r.status_code == 200 and [e for e in r.json()["items"]
                                             if e["end_ns"] is not None and e["gateway"] == "gw-e2e"]

        events = wait_until(closed_events, timeout=30, what="the spike's anomaly event, closed")

        def anomaly_alerts():
            r = api.get("/api/v1/alerts", params={"asset": "trailer-002"})
            return r.status_code == 200 and [a for a in r.json()["items"] if a["rule"] == "anomaly:supply_air"]

        [alert] = wait_until(anomaly_alerts, timeout=30, what="the anomaly's alert")
    assert len(events) == 1
    ev = events[0]
    assert (ev["point"], ev["start_ns"], ev["peak_value"]) == ("supply_air", spike_t, 30.0)
    assert ev["detectors"][0] == "novelty" and "novelty.record" in ev["detectors"] and 0.5 <= ev["peak_score"] <= 1.0
    # held while the next sample is still news (the last value was 30), closed by the one after
    assert spike_t <= ev["end_ns"] <= spike_t + 2 * 10**9
    assert (alert["severity"], alert["state"]) == ("low", "open")
    assert alert["evidence"]["source"] == "edge-anomaly" and alert["evidence"]["start_ns"] == spike_t
    assert alert["evidence"]["detectors"] == ev["detectors"]


def _publish_raw(url: str, topic: str, payloads: list[bytes]) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(host, int(port))
    c.loop_start()
    for p in payloads:
        c.publish(topic, p, qos=1).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def test_malformed_sensor_payload_is_logged_counted_and_the_agent_keeps_running(platform, mosquitto):
    cloud, edge = platform
    with cloud.client() as api:
        before = wait_until(lambda: _gateway_counters(api), what="gateway status").get("bad_payloads", 0)
        _publish_raw(mosquitto.url, "sim/trailer-003/supply_air", [b"{not json", b'{"t": 1}', b'{"v": "warm"}'])
        edge.wait_log("bad payload on sim/trailer-003/supply_air")
        wait_until(lambda: _gateway_counters(api).get("bad_payloads") == before + 3, timeout=20,
                   what="bad_payloads + 3 in the gateway status")
        assert edge.alive
        t = T0 + 2 * 10**14
        publish_readings(mosquitto.url, [Reading("trailer-003", "supply_air", t, 5.5)])
        body = wait_until(lambda: _get_ok(api, "/api/v1/assets/trailer-003/telemetry",
                                          {"point": "supply_air", "start": t, "end": t + 1}).get("t_ns"),
                          what="a good sample after the bad ones")
        assert body == [t]


def test_malformed_batch_is_dead_lettered_counted_and_ingest_keeps_running(platform, mosquitto):
    cloud, _ = platform
    before = cloud.metrics().get("twin_ingest_dead_letters", 0)
    good = {"v": "v1", "kind": "telemetry", "tenant": "acme", "gateway": "gw-e2e", "seq": 0, "series": []}
    bad = [
        b"\x00\x01garbage",
        json.dumps({**good, "v": "v9"}).encode(),
        json.dumps({**good, "series": [{"asset": "a", "point": "p", "t_ns": [1, 2], "values": [1.0],
                                        "quality": [0, 0]}]}).encode(),
        json.dumps({**good, "gateway": "someone-else"}).encode(),
    ]
    _publish_raw(mosquitto.url, "twin/v1/acme/gw-e2e/telemetry", bad)
    wait_until(lambda: cloud.metrics().get("twin_ingest_dead_letters") == before + 4, timeout=20,
               what="4 new dead letters")
    with cloud.client() as api:
        reasons = [d["reason"] for d in api.get("/api/v1/dead-letters").json()["items"]][:4]
    assert any("neither JSON nor zlib" in r for r in reasons)
    assert any("unsupported schema version 'v9'" in r for r in reasons)
    assert any("same length" in r for r in reasons)
    assert any("topic says acme/gw-e2e" in r for r in reasons)
    assert "dead letter from twin/v1/acme/gw-e2e/telemetry" in cloud.log()
    assert cloud.alive
    # and real data still flows behind the bad messages
    t = T0 + 3 * 10**14
    publish_readings(mosquitto.url, [Reading("trailer-003", "return_air", t, 6.25)])
    with cloud.client() as api:
        got = wait_until(lambda: _get_ok(api, "/api/v1/assets/trailer-003/telemetry",
                                         {"point": "return_air", "start": t, "end": t + 1}).get("values"),
                         what="a good batch after the dead letters")
    assert got == [6.25]


def test_bad_api_calls_get_problem_details_and_the_api_keeps_serving(platform):
    cloud, _ = platform
    with cloud.client() as api:
        r = api.get("/api/v1/assets/trailer-001/telemetry")
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        assert "point" in r.json()["detail"]
        r = api.get("/api/v1/assets/trailer-001/telemetry", params={"point": "supply_air", "start": "yesterday"})
        assert r.status_code == 422 and "start" in r.json()["detail"]
        r = api.get("/api/v1/assets/trailer-001/telemetry", params={"point": "supply_air", "every": "sometimes"})
        assert r.status_code == 422 and "every" in r.json()["detail"]
        assert api.get("/api/v1/assets/no-such-asset").status_code == 404
        assert api.get("/api/v1/assets", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert cloud.alive
        assert api.get("/api/v1/assets/trailer-001").json()["gateway"] == "gw-e2e"


def test_aggregated_window_query_matches_the_raw_samples(platform, mosquitto):
    cloud, _ = platform
    minute = 60 * 10**9
    t0 = (T0 + 4 * 10**14) // minute * minute
    vals = np.arange(120, dtype=float)
    publish_readings(mosquitto.url, [Reading("trailer-001", "ambient", t0 + i * 10**9, v) for i, v in enumerate(vals)])
    with cloud.client() as api:
        def windows():
            return api.get("/api/v1/assets/trailer-001/telemetry",
                           params={"point": "ambient", "start": t0, "end": t0 + 120 * 10**9, "every": "1m",
                                   "agg": "mean"}).json()
        body = wait_until(lambda: (w := windows())["values"] == [29.5, 89.5] and w, what="two 1-minute means")
        assert body["t_ns"] == [t0, t0 + 60 * 10**9]
        cnt = api.get("/api/v1/assets/trailer-001/telemetry",
                      params={"point": "ambient", "start": t0, "end": t0 + 120 * 10**9, "every": "1m",
                              "agg": "count"}).json()
        assert cnt["values"] == [60, 60]
