"""``twin demo``: the whole chain on one machine with nothing installed.

Simulated trailers publish sensor readings → an edge agent detects and batches them → an MQTT broker
(embedded amqtt unless ``--broker``) → cloud ingest → a time-series store (embedded SQLite unless
``--influx``) → the API, whose URL and key are printed. Runs until Ctrl-C (or ``--duration``).

With the tour (the default; ``--tour off`` for the plain version) a week of history is seeded first and a
scripted story plays on a compressed clock (``twin/tour.py``): a compressor failure, a wearing bearing, engines
with their remaining useful life.
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


class _SlowAckFilter(logging.Filter):
    """amqtt gives a subscriber 5 s to acknowledge a QoS 1 message it has sent, then logs that message's task as
    failed, with a traceback, once per message: hundreds while a loaded machine stores the tour's history, for
    messages already sent. Counted, and said once."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "Timeout waiting for PUBACK" not in record.getMessage():
            return True
        self.count += 1
        if self.count == 1:
            log.warning("embedded broker: a subscriber took over 5 s to acknowledge a message (a loaded machine); "
                        "it was sent, and later ones are not reported")
        return False


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
        slow_acks = _SlowAckFilter()
        for name in ("amqtt.broker", "amqtt.mqtt.protocol.handler"):
            logging.getLogger(name).addFilter(slow_acks)
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


def _wait_api(url: str, timeout_s: float = 30.0) -> None:
    import httpx

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code < 500:
                return
        time.sleep(0.2)


def _guide(url: str, story) -> str:
    from twin import tour as t

    engines = [a for a, typ in story.types.items() if typ == "turbofan"]
    return f"""
The tour ({len(story.types)} assets, a week of history; the story plays in the next minutes):
  alerts:    {url}/#/alerts                 {t.TRAILER}'s compressor fails: predicted, then real excursion
  shipment:  {url}/#/shipments/{t.SHIPMENT}     its lots are quarantined by the excursion
  machine:   {url}/#/asset/{t.PUMP}           bearing wear: ISO 20816-3 zone B -> C
""" + (f"  turbofan:  {url}/#/asset/{engines[0]}   remaining useful life per cycle\n" if engines else "") + \
        f"  what-if:   {url}/#/asset/trailer-001       its thermal twin: 'what if the compressor stops?'\n" + \
        "".join(f"  {typ + ':':<10} {url}/#/asset/{a}\n" for a, typ in story.types.items()
                if typ in ("vessel", "person"))


def run_demo(*, broker: str | None, influx: str | None, port: int, data_dir: Path, trailers: int,
             duration: float, tour: bool = True, speed: float = 10.0) -> None:
    import os

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
    engines_data = None
    if tour:
        # The story is told from the start each time: the last run's stores go (the RUL model cache stays).
        import shutil

        for name in ("registry.sqlite", "timeseries.sqlite", "outbox.sqlite", "outbox.sqlite.reserve", "state"):
            for f in data_dir.glob(f"{name}*"):
                shutil.rmtree(f) if f.is_dir() else f.unlink()
        # The thermal twin's bootstrap warns on the failing trailer's draws; the visitor reads the tour's lines.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="cloud.thermal")
        from cloud.pdm.data import default_data_dir
        from twin import tour as story_mod

        engines_data = story_mod.cmapss_for_demo(default_data_dir(), data_dir / "cmapss")
        t = time.monotonic()
        rul_dir = story_mod.train_rul(engines_data, data_dir / "rul-models")
        if rul_dir is not None:
            os.environ.setdefault("TWIN_RUL_MODEL", str(rul_dir))
            print(f"RUL model ready ({rul_dir}, {time.monotonic() - t:.1f} s)", flush=True)
    key = f"demo_{secrets.token_urlsafe(16)}"
    settings = CloudSettings(
        database_url=f"sqlite:///{data_dir / 'registry.sqlite'}",
        store="influx" if influx else "embedded", embedded_path=str(data_dir / "timeseries.sqlite"),
        influx_url=influx or "http://127.0.0.1:8086", mqtt_url=broker, mqtt_version=mqtt_version,
        ingest_shared=embedded is None, ingest_client_id=f"demo-ingest-{secrets.token_hex(3)}",
        api_port=port, bootstrap_api_key=key, bootstrap_tenant="demo",
        **({"rules_interval_s": 2.0} if tour else {}),
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
    url = f"http://127.0.0.1:{port}"
    story = wire = None
    if tour:
        t = time.monotonic()
        lag_s = 840.0  # the tour starts 14 min back: the excursion (~11.5 min in) still plays on the compressed
        # clock, not in real time after it caught up (at 11 min it came ~3.5 min after the prediction), and at the
        # hold the data is ~6.5 min old, within the 10 min the predictive rule believes current (the history is
        # paced by the cloud's commits, so ingest does not run minutes behind)
        story = story_mod.build_story(time.time_ns(), assets, engines_data, lag_s)
        wire = story_mod.Wire(broker, mqtt_version)
        wire.status(story.types)
        n = wire.send(story.series, 0, story.start_ns)
        _wait_api(url)
        story_mod.setup_shipment(url, key, story.start_ns,
                                 [a for a, typ in story.types.items() if typ == "person"])
        stored = "stored" if wire.drain() else "published (the cloud is still storing it)"
        print(f"history: {n:,} samples of {len(story.types)} assets over a week, {stored} in "
              f"{time.monotonic() - t:.1f} s", flush=True)
    threading.Thread(target=_simulate, args=(broker, assets, stop), name="simulator", daemon=True).start()
    print(f"""
assettwin demo is running ({len(assets)} simulated trailers → edge agent → {broker} → cloud)
  dashboard: {url}/                       (log in with the key below)
  API:      {url}/api/v1/assets          (OpenAPI: {url}/docs)
  API key:  {key}
  try:      curl -H 'Authorization: Bearer {key}' '{url}/api/v1/assets/trailer-001/latest'
  store:    {"InfluxDB at " + influx if influx else "embedded (" + str(data_dir / "timeseries.sqlite") + ")"}
{_guide(url, story) if story else ""}Ctrl-C stops it.
""", flush=True)
    if story is not None:
        engines = [a for a, typ in story.types.items() if typ == "turbofan"]
        # At most 2 min: a loaded machine took the rules over 45 s to reach the trailer (CI, stop 29); the data is
        # then ~8.5 min old, still inside the 10 min the predictive rule believes current.
        hold = (story.hold_s, story_mod.predicted(url, key), 120.0)
        threading.Thread(target=story_mod.play, args=(wire, story), kwargs={"speed": speed, "stop": stop,
                         "hold": hold}, name="tour", daemon=True).start()
        threading.Thread(target=story_mod.watch, args=(url, key, engines, stop, lambda m: print(m, flush=True)),
                         name="tour-watch", daemon=True).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait(duration if duration > 0 else None)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    finally:
        stop.set()
        if wire is not None:
            wire.close()
        agent.stop()
        agent_thread.join(15)
        server.should_exit = True
        platform.close()
        if embedded is not None:
            embedded.stop()
