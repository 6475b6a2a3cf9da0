"""Scale-out: three partitioned ingest workers on the real Mosquitto split a simulated fleet's load, lose and
duplicate nothing when one is killed mid-run, and raise exactly the alerts one worker raises on the same
input — rule state (cold-chain excursion counters) lives with the worker that owns the gateway."""

from __future__ import annotations

import json
import signal
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from models import topics
from models.wire import AlarmEvent, GatewayStatus, PointSeries, TelemetryBatch, encode
from tests.harness import MosquittoServer
from tests.harness.processes import CloudProcess, TwinProcess, wait_until

S = 1_000_000_000
GATEWAYS = [f"gw-{i}" for i in range(6)]
BATCHES = 30  # per gateway, each ten minutes of 6 points of 2 trailers at one sample per 10 s
POINTS = ("supply_air", "return_air", "setpoint", "door", "compressor_current", "ambient")


def _messages(t0: int) -> list[tuple[str, bytes]]:
    """Status (asset types), then telemetry; gw-1's trailers warm to 12 degC for 200 min (over the FSANZ
    2-hour rule), gw-4 raises a local alarm. Deterministic: both runs get exactly these bytes."""
    out = []
    for g in GATEWAYS:
        assets = {f"{g}-t{k}": "refrigerated-trailer" for k in range(2)}
        out.append((topics.status("acme", g), encode(GatewayStatus(tenant="acme", gateway=g, state="online",
                                                                    t_ns=t0, assets=assets))))
    for seq in range(BATCHES):
        for g in GATEWAYS:
            series = []
            for k in range(2):
                t = [t0 + (seq * 600 + i * 10) * S for i in range(60)]
                warm = g == "gw-1" and 5 <= seq < 25
                values = {"supply_air": 12.0 if warm else 4.0, "return_air": 12.5 if warm else 4.5, "setpoint": 4.0,
                          "door": 0.0, "compressor_current": 12.0, "ambient": 20.0}
                series += [PointSeries(asset=f"{g}-t{k}", point=p, t_ns=t, values=[values[p] + 0.001 * i for i in
                                                                                    range(60)], quality=[0] * 60)
                           for p in POINTS]
            b = TelemetryBatch(tenant="acme", gateway=g, seq=seq, series=series)
            out.append((topics.telemetry("acme", g), encode(b, compress=True)))
    alarm = AlarmEvent(tenant="acme", gateway="gw-4", event_id="gw-4:gw-4-t0:door-open-long:1", asset="gw-4-t0",
                       rule="door-open-long", severity="medium", start_ns=t0, evidence={"point": "door", "value": 1.0})
    out.append((topics.events("acme", "gw-4"), encode(alarm)))
    return out


def _publish(url: str, msgs: list[tuple[str, bytes]], between=None) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(host, int(port))
    c.loop_start()
    for i, (topic, payload) in enumerate(msgs):
        c.publish(topic, payload, qos=1).wait_for_publish(30)
        if between is not None:
            between(i, len(msgs))
        time.sleep(0.01)
    c.disconnect()
    c.loop_stop()


def _stored(influxdb, db: str) -> dict:
    res = influxdb.query("SELECT count(value), sum(value) FROM telemetry GROUP BY asset", db=db)
    return {s["tags"]["asset"]: (s["values"][0][1], round(s["values"][0][2], 6))
            for s in res["results"][0].get("series", [])}


def _run(tmp_path, name: str, workers: int, influxdb, postgres, msgs, kill_one: bool = False):
    broker = MosquittoServer()
    broker.start()
    db = f"so_{name}_{uuid.uuid4().hex[:6]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    work = tmp_path / name
    work.mkdir()
    env = {"TWIN_RULES_INTERVAL_S": "1", "TWIN_COLDCHAIN_PROFILE": "fsanz-2h-4h"}
    api = CloudProcess(work, broker.url, postgres.url_for(db), influxdb.url, db, workers=0, extra_env=env)
    procs = []
    for k in range(workers):
        procs.append(TwinProcess(["cloud", "ingest"], work / f"ingest-{k}.log", {
            **api.env, "TWIN_INGEST_PARTITION": str(k), "TWIN_INGEST_PARTITIONS": str(workers),
            "TWIN_INGEST_CLIENT_ID": f"ingest-{k}"}))
    try:
        api.start()
        for p in procs:
            p.start()
        for k, p in enumerate(procs):
            wait_until(lambda p=p: "running (partition" in p.log(), timeout=60, what=f"worker {k}")
        time.sleep(1.0)  # subscriptions in place

        def chaos(i: int, n: int) -> None:
            if kill_one and i == n // 3:
                procs[1].stop(signal.SIGKILL)
            if kill_one and i == 2 * n // 3:
                procs[1].start()

        _publish(broker.url, msgs, chaos)
        expected = len(GATEWAYS) * 2 * len(POINTS) * BATCHES * 60
        wait_until(lambda: sum(c for c, _ in _stored(influxdb, db).values()) >= expected, timeout=120, interval=1,
                   what=f"{expected} samples in InfluxDB")
        api.wait_ready()
        with api.client() as c:
            def alerts():
                items = c.get("/api/v1/alerts", params={"limit": 1000}).json()["items"]
                return {(a["asset"], a["rule"]) for a in items}
            wait_until(lambda: len(alerts()) >= 3, timeout=60, what="the alerts")
            time.sleep(3)  # a late duplicate would show now
            result = alerts(), _stored(influxdb, db)
        for p in procs:
            p.stop()
        counters = []
        for p in procs:
            lines = [json.loads(ln) for ln in p.log().splitlines() if ln.startswith("{")]
            last = [ln for ln in lines if ln["msg"].startswith("ingest counters")][-1]
            counters.append(json.loads(last["msg"].removeprefix("ingest counters ")))
        return (*result, counters)
    finally:
        for p in procs:
            p.stop()
        api.stop()
        broker.close()
        influxdb.drop_database(db)
        postgres.drop_database(db)


@pytest.mark.timeout(600)
def test_three_workers_split_the_load_lose_nothing_and_raise_the_same_alerts_as_one(tmp_path, influxdb, postgres):
    t0 = (time.time_ns() // S - 6 * 3600) * S
    msgs = _messages(t0)
    one_alerts, one_stored, _ = _run(tmp_path, "one", 1, influxdb, postgres, msgs)
    three_alerts, three_stored, counters = _run(tmp_path, "three", 3, influxdb, postgres, msgs, kill_one=True)
    per_asset = {f"{g}-t{k}": 6 * BATCHES * 60 for g in GATEWAYS for k in range(2)}
    assert {a: c for a, (c, _) in one_stored.items()} == per_asset
    assert three_stored == one_stored  # every sample exactly once, same checksums, despite the kill
    assert ("gw-4-t0", "door-open-long") in one_alerts
    assert any(a.startswith("gw-1-") and r.startswith("coldchain:") for a, r in one_alerts)
    assert three_alerts == one_alerts
    # the load was split: every worker wrote batches (the killed one after its restart too)
    assert all(c["ingest_batches_written"] > 0 for c in counters), counters
