"""Every long-running process exposes typed Prometheus metrics, scraped over HTTP as Prometheus would: the
gateway agent (``twin edge run``, ``metrics_port``), a standalone ingest worker (``twin cloud ingest``,
``TWIN_METRICS_PORT``) and the API (``twin cloud run``, ``/metrics``). The platform's Grafana dashboard
queries only metrics these processes really expose."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from simulators.devices import interleave, publish_readings
from simulators.rig.processes import parse_metrics
from simulators.rig.servers import free_port
from simulators.trailer import Trailer, TrailerParams
from tests.harness.processes import CloudProcess, EdgeProcess, TwinProcess, gateway_config, wait_until

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "assettwin-platform.json"


def _types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def scraped(tmp_path_factory, mosquitto, influxdb):
    """A trailer's 60 samples through agent → ingest worker → InfluxDB; then every endpoint scraped once quiet."""
    work = tmp_path_factory.mktemp("metrics")
    db = f"metrics_{int(time.time() * 1000) % 10**8}"
    influxdb.create_database(db)
    reg = f"sqlite:///{work / 'registry.sqlite'}"
    api = CloudProcess(work, mosquitto.url, reg, influxdb.url, db, workers=0)
    ingest_port, edge_port = free_port(), free_port()
    ingest = TwinProcess(["cloud", "ingest"], work / "ingest.log", {**api.env, "TWIN_API_PORT": "0",
                                                                  "TWIN_METRICS_PORT": str(ingest_port)})
    cfg = gateway_config(work / "edge", mosquitto.url, mosquitto.url, metrics_port=edge_port)
    topic = f"metrics-{db}"  # its own: the broker is shared with the worker's other modules (their sim/+/+ readings)
    cfg["sources"][0]["subscriptions"][0]["topic"] = f"{topic}/+/+"
    edge = EdgeProcess(work / "edge", cfg)
    procs = [api, ingest, edge]
    try:
        api.start()
        api.wait_ready()
        ingest.start()
        edge.start()
        edge.wait_log("source sensors: connected")
        edge.wait_log("uplink: connected")
        ingest_url, edge_url = f"http://127.0.0.1:{ingest_port}", f"http://127.0.0.1:{edge_port}"
        wait_until(lambda: _get(f"{ingest_url}/health").get("status") == "ok", what="the ingest worker's health")
        run = Trailer("trailer-001", TrailerParams(setpoint_c=4.0), seed=3).run(time.time_ns() - 120 * 10**9, 60, 1.0)
        n = sum(len(s.t_ns) for s in run.points.values())
        publish_readings(mosquitto.url, interleave({(run.asset_id, p): tuple(s) for p, s in run.points.items()}),
                         topic_template=f"{topic}/{{asset}}/{{point}}")
        wait_until(lambda: parse_metrics(httpx.get(f"{ingest_url}/metrics").text)
                   .get("twin_ingest_points_written_total") == n, timeout=30, what=f"{n} points written")
        wait_until(lambda: parse_metrics(httpx.get(f"{edge_url}/metrics").text)
                   .get("twin_edge_outbox_depth") == 0, what="the outbox emptied by the cloud's commits")
        with api.client() as c:
            api_text = c.get("/metrics").text
        yield {"n": n, "api": api_text, "edge": httpx.get(f"{edge_url}/metrics").text,
               "ingest": httpx.get(f"{ingest_url}/metrics").text,
               "edge_health": _get(f"{edge_url}/health"), "ingest_health": _get(f"{ingest_url}/health")}
    finally:
        for p in reversed(procs):
            p.stop()
        influxdb.drop_database(db)


def _get(url: str) -> dict:
    try:
        return httpx.get(url, timeout=2).json()
    except httpx.HTTPError:
        return {}


def test_the_agent_types_its_outbox_as_gauges_and_its_ticks_as_histograms(scraped):
    types, m = _types(scraped["edge"]), parse_metrics(scraped["edge"])
    expected = {"twin_edge_outbox_depth": "gauge", "twin_edge_outbox_age_seconds": "gauge",
                "twin_edge_outbox_bytes": "gauge", "twin_edge_samples_in_total": "counter",
                "twin_edge_batches_sent_total": "counter", "twin_edge_tick_seconds": "histogram",
                "twin_edge_detect_seconds": "histogram"}
    assert {k: types.get(k) for k in expected} == expected
    assert m["twin_edge_samples_in_total"] == scraped["n"]
    assert (m["twin_edge_outbox_depth"], m["twin_edge_outbox_age_seconds"]) == (0, 0)
    # The detectors run once per tick that brought samples: no more, no less.
    assert m["twin_edge_detect_seconds_count"] == m["twin_edge_ticks_total"] > 0
    assert m["twin_edge_tick_seconds_count"] >= m["twin_edge_ticks_total"]
    assert m['twin_edge_tick_seconds_bucket{le="+Inf"}'] == m["twin_edge_tick_seconds_count"]
    assert scraped["edge_health"] == {"status": "ok", "gateway": "acme/gw-e2e", "uplink": "connected",
                                      "outbox_depth": 0, "config_version": 0}


def test_the_ingest_worker_times_its_store_writes_and_the_lag_of_every_batch(scraped):
    types, m = _types(scraped["ingest"]), parse_metrics(scraped["ingest"])
    expected = {"twin_ingest_batches_written_total": "counter", "twin_ingest_dead_letters_total": "counter",
                "twin_ingest_lag_seconds": "histogram", "twin_store_write_seconds": "histogram"}
    assert {k: types.get(k) for k in expected} == expected
    assert m["twin_ingest_lag_seconds_count"] == m["twin_ingest_batches_written_total"] > 0
    assert m["twin_store_write_seconds_count"] == m["twin_ingest_groups_written_total"] > 0
    assert m["twin_ingest_dead_letters_total"] == 0
    assert m["twin_ingest_dead_letters_total"] == 0  # the harness's parser answers the old name too
    # Samples stamped 60 to 120 s ago: no batch waited less than a minute.
    assert m['twin_ingest_lag_seconds_bucket{le="30.0"}'] == 0
    assert scraped["ingest_health"]["status"] == "ok" and scraped["ingest_health"]["role"] == "ingest"


def test_the_api_exposes_gauges_as_gauges(scraped):
    types = _types(scraped["api"])
    assert types["twin_live_clients"] == "gauge"
    assert types["twin_live_messages_total"] == types["twin_webhooks_sent_total"] == "counter"
    assert types["twin_ingest_lag_seconds"] == "histogram"
    assert set(types.values()) <= {"counter", "gauge", "histogram"}


def test_the_platform_dashboard_queries_only_metrics_the_processes_expose(scraped):
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    queried = {name for e in exprs for name in re.findall(r"\btwin_[a-z_]+", e)}
    exposed = {s.split("{")[0] for text in (scraped["edge"], scraped["ingest"], scraped["api"])
               for s in parse_metrics(text)}
    assert len(queried) >= 10
    assert queried - exposed == set()
    assert {p["datasource"]["uid"] for p in dash["panels"] if "targets" in p} == {"assettwin-prometheus"}
