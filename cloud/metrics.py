"""The cloud processes' Prometheus metrics: the platform's counters typed as what they are, and the
latency histograms (ingest lag, store write time), exposed by the API's ``/metrics`` and, for a standalone
ingest worker (``twin cloud ingest``), by a small health + metrics endpoint (``TWIN_METRICS_PORT``).

prometheus_client rather than hand-written text: typed exposition (a gauge is not a counter), histograms with
buckets Grafana's ``histogram_quantile`` reads, and the format every operator's scraper already speaks.
Counters keep their old names in ``# TYPE`` and gain the standard ``_total`` on their samples.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("cloud.metrics")
disable_created_metrics()  # no ``_created`` series: they double the page and no dashboard reads them

GAUGES = frozenset({"live_clients"})
"""Platform counters that are levels, not totals."""

REGISTRY = CollectorRegistry(auto_describe=True)
"""This process's histograms; the platform's counters join it per app (``platform_registry``)."""

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INGEST_LAG = Histogram("twin_ingest_lag_seconds", "From a batch's newest sample to its durable store write",
                       buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
                       registry=REGISTRY)
STORE_WRITE = Histogram("twin_store_write_seconds", "One store write call (InfluxDB line protocol, gzip)",
                        buckets=_LATENCY_BUCKETS, registry=REGISTRY)


def observe_ingest_lag(newest_ns: Iterable[int], now_ns: int | None = None) -> None:
    """One observation per written batch; a sample stamped ahead of this clock counts as no lag."""
    now = time.time_ns() if now_ns is None else now_ns
    for t in newest_ns:
        INGEST_LAG.observe(max(0, now - t) / 1e9)


class CounterCollector:
    """The platform's counters dict read at scrape time: totals as counters, levels (``GAUGES``) as gauges."""

    def __init__(self, counters: Callable[[], dict[str, int]], prefix: str = "twin_") -> None:
        self._counters, self._prefix = counters, prefix

    def collect(self):
        for k, v in sorted(self._counters().items()):
            name = self._prefix + k
            if k in GAUGES:
                yield GaugeMetricFamily(name, k.replace("_", " "), value=v)
            else:
                yield CounterMetricFamily(name, k.replace("_", " "), value=v)


def platform_registry(counters: Callable[[], dict[str, int]]) -> CollectorRegistry:
    """A registry with this process's histograms and the given counters (one per app: tests run several)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(CounterCollector(counters))
    reg.register(_Histograms())
    return reg


class _Histograms:
    def collect(self):
        yield from REGISTRY.collect()


def exposition(reg: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(reg), CONTENT_TYPE_LATEST


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *_args) -> None:  # scrapes every 15 s would flood the log
        pass


def serve(host: str, port: int, reg: CollectorRegistry, health: Callable[[], dict]) -> WSGIServer:
    """``GET /health`` (JSON, 200 when ``status`` is ok, else 503) and ``GET /metrics`` on a daemon thread."""

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            body, ctype = exposition(reg)
            start_response("200 OK", [("Content-Type", ctype)])
            return [body]
        if path == "/health":
            h = health()
            start_response("200 OK" if h.get("status") == "ok" else "503 Service Unavailable",
                           [("Content-Type", "application/json")])
            return [json.dumps(h).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /health or /metrics\n"]

    server = make_server(host, port, app, server_class=_Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("health and metrics on http://%s:%d/health and /metrics", host, server.server_port)
    return server
