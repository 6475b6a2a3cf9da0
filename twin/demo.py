"""``twin demo``: the whole chain on one machine with nothing installed.

Simulated trailers publish sensor readings → an edge agent detects and batches them → an MQTT broker
(embedded amqtt unless ``--broker``) → cloud ingest → a time-series store (embedded SQLite unless
``--influx``) → the API, whose URL and key are printed. Runs until Ctrl-C (or ``--duration``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import threading
import time
import warnings
from pathlib import Path

log = logging.getLogger("twin.demo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """amqtt in a background event loop: MQTT 3.1.1, enough for a demo, no server to install."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"mqtt://127.0.0.1:{port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    def _run(self) -> None:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        from amqtt.broker import Broker

        asyncio.set_event_loop(self._loop)
        config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                  "sys_interval": 0, "auth": {"allow-anonymous": True}, "topic-check": {"enabled": False}}
        try:
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # reported to the caller of start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"embedded broker failed to start: {self._error}")

    def stop(self) -> None:
        if self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)


def _simulate(broker_url: str, assets: list[str], stop: threading.Event) -> None:
    """Live trailers: physics simulated ahead in chunks, each reading published at its wall-clock time."""
    from simulators.devices import interleave, publish_readings
    from simulators.trailer import Trailer, TrailerParams

    chunk_s = 600.0
    t0 = time.time_ns()
    k = 0
    while not stop.is_set():
        runs = [Trailer(a, TrailerParams(setpoint_c=4.0), seed=100 * i + k).run(t0, chunk_s, 2.0)
                for i, a in enumerate(assets)]
        series = {(r.asset_id, p): tuple(s) for r in runs for p, s in r.points.items()}
        try:
            publish_readings(broker_url, _until(interleave(series), stop), realtime=True, window=100,
                             client_id=f"demo-sim-{k}")
        except (TimeoutError, ConnectionError, OSError) as exc:
            log.warning("simulator: %s; retrying", exc)
            stop.wait(1)
        t0 += int(chunk_s * 1e9)
        k += 1


def _until(readings, stop: threading.Event):
    for r in readings:
        if stop.is_set():
            return
        yield r


def run_demo(*, broker: str | None, influx: str | None, port: int, data_dir: Path, trailers: int,
             duration: float) -> None:
    import uvicorn

    from cloud.api.app import create_app
    from cloud.platform import Platform
    from cloud.settings import CloudSettings
    from edge.agent import EdgeAgent
    from edge.config import parse_config

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    embedded = None
    if broker is None:
        embedded = EmbeddedBroker(_free_port())
        embedded.start()
        broker = embedded.url
    mqtt_version = "3.1.1" if embedded else "5"
    key = f"demo_{secrets.token_urlsafe(16)}"
    settings = CloudSettings(
        database_url=f"sqlite:///{data_dir / 'registry.sqlite'}",
        store="influx" if influx else "embedded", embedded_path=str(data_dir / "timeseries.sqlite"),
        influx_url=influx or "http://127.0.0.1:8086", mqtt_url=broker, mqtt_version=mqtt_version,
        ingest_shared=embedded is None, ingest_client_id=f"demo-ingest-{secrets.token_hex(3)}",
        api_port=port, bootstrap_api_key=key, bootstrap_tenant="demo",
    )
    platform = Platform.open(settings, with_ingest=True, with_link=True)
    platform.start()
    server = uvicorn.Server(uvicorn.Config(create_app(platform), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, name="api", daemon=True).start()

    assets = [f"trailer-{i + 1:03d}" for i in range(trailers)]
    cfg = parse_config({
        "tenant": "demo", "gateway": "gw-demo", "status_interval_s": 5,
        "uplink": {"url": broker, "mqtt_version": mqtt_version},
        "outbox": {"path": str(data_dir / "outbox.sqlite")}, "state_dir": str(data_dir / "state"),
        "assets": [{"id": a, "type": "refrigerated-trailer"} for a in assets],
        "sources": [{"type": "mqtt", "link": {"url": broker, "mqtt_version": mqtt_version},
                     "subscriptions": [{"topic": "sim/+/+", "asset": "{1}", "point": "{2}"}]}],
    }, "demo gateway")
    agent = EdgeAgent(cfg)
    agent.start()
    agent_thread = threading.Thread(target=agent.run, name="edge-agent", daemon=True)
    agent_thread.start()
    stop = threading.Event()
    threading.Thread(target=_simulate, args=(broker, assets, stop), name="simulator", daemon=True).start()

    url = f"http://127.0.0.1:{port}"
    print(f"""
assettwin demo is running ({len(assets)} simulated trailers → edge agent → {broker} → cloud)
  dashboard: {url}/                       (log in with the key below)
  API:      {url}/api/v1/assets          (OpenAPI: {url}/docs)
  API key:  {key}
  try:      curl -H 'Authorization: Bearer {key}' '{url}/api/v1/assets/trailer-001/latest'
  store:    {"InfluxDB at " + influx if influx else "embedded (" + str(data_dir / "timeseries.sqlite") + ")"}
Ctrl-C stops it.
""", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait(duration if duration > 0 else None)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    finally:
        stop.set()
        agent.stop()
        agent_thread.join(15)
        server.should_exit = True
        platform.close()
        if embedded is not None:
            embedded.stop()
