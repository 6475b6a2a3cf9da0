"""The gateway agent's health and Prometheus metrics (``metrics_port`` in gateway.yaml; off by default,
the documented port is 9464): ``GET /health`` (JSON) and ``GET /metrics``.

The agent's counters are read at scrape time and typed: totals as counters (``twin_edge_<name>_total``), levels as
gauges (outbox depth, bytes and the age of its oldest batch, uplink connected); the tick loop feeds two
histograms, the whole tick and the detectors' share of it. prometheus_client: typed exposition and histogram
buckets that Grafana's ``histogram_quantile`` reads, the format the operators' scrapers already speak.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("edge.health")
disable_created_metrics()

GAUGES = frozenset({"outbox_depth", "outbox_bytes", "next_seq", "disk_full", "events_waiting_for_disk",
                    "kernels_ahead_of_time"})
"""Agent counters that are levels, not totals."""

REGISTRY = CollectorRegistry(auto_describe=True)
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
TICK_SECONDS = Histogram("twin_edge_tick_seconds", "One tick: detectors, local rules, outbox commit",
                         buckets=_BUCKETS, registry=REGISTRY)
DETECT_SECONDS = Histogram("twin_edge_detect_seconds", "The detectors' batch call in one tick",
                           buckets=_BUCKETS, registry=REGISTRY)


class AgentCollector:
    """What ``agent.counters()`` and the outbox say, typed, at scrape time."""

    def __init__(self, agent) -> None:
        self.agent = agent

    def collect(self):
        for k, v in sorted(self.agent.counters().items()):
            name, doc = f"twin_edge_{k}", k.replace("_", " ")
            yield GaugeMetricFamily(name, doc, value=v) if k in GAUGES else CounterMetricFamily(name, doc, value=v)
        oldest = self.agent.outbox.oldest_ns()
        yield GaugeMetricFamily("twin_edge_outbox_age_seconds", "Age of the oldest batch not yet confirmed stored",
                                value=0.0 if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9))
        yield GaugeMetricFamily("twin_edge_uplink_connected", "1 while the uplink is connected to the cloud broker",
                                value=int(self.agent.uplink.connected))
        yield from REGISTRY.collect()


def health(agent) -> dict:
    up = agent.uplink.connected
    return {"status": "ok", "gateway": f"{agent.cfg.tenant}/{agent.cfg.gateway}",
            "uplink": "connected" if up else "connecting", "outbox_depth": agent.outbox.stats()["outbox_depth"],
            "config_version": agent.cfg.version}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_args) -> None:  # a scrape every 15 s would flood the log
        pass


def serve(host: str, port: int, reg: CollectorRegistry, status: Callable[[], dict]) -> WSGIServer:
    """``/health`` and ``/metrics`` on a daemon thread (a scrape never waits for a tick)."""

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(reg)]
        if path == "/health":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(status()).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /health or /metrics\n"]

    server = make_server(host, port, app, server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    log.info("health and metrics on http://%s:%d/health and /metrics", host, server.server_port)
    return server


def start(agent, host: str, port: int) -> WSGIServer:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(AgentCollector(agent))
    return serve(host, port, reg, lambda: health(agent))
