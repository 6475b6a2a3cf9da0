"""The edge agent against real brokers: remote configuration, offline alarms, long outages, restarts."""

from __future__ import annotations

import json
import threading
import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from edge.agent import EdgeAgent
from edge.config import parse_config
from edge.outbox import RESERVE_BYTES
from models import topics
from models.wire import (
    AlarmEvent,
    Committed,
    DesiredConfig,
    ReportedConfig,
    TelemetryBatch,
    decode,
    decode_event,
    encode,
)
from tests.harness import MosquittoServer
from tests.harness.processes import EdgeProcess, gateway_config, wait_until

S = 1_000_000_000
T0 = 1_767_225_600 * S


class Listener:
    """A subscriber that records every message on a topic filter (started before the traffic)."""

    def __init__(self, url: str, topic_filter: str) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        self.c.on_subscribe = lambda *_: ready.set()
        self.c.on_message = lambda c, u, m: self._add(m)
        self.c.connect(host, int(port))
        self.c.loop_start()
        assert ready.wait(10)

    def _add(self, m) -> None:
        with self._lock:
            self.messages.append((m.topic, m.payload))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [p for _, p in self.messages]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _agent(tmp_path, uplink_url: str, source_url: str, **overrides) -> EdgeAgent:
    """Each test its own gateway id: retained config and status topics must not leak between tests."""
    gw = f"gw-{uuid.uuid4().hex[:8]}"
    cfg = parse_config(gateway_config(tmp_path, uplink_url, source_url, gateway=gw, **overrides))
    return EdgeAgent(cfg)


@pytest.fixture
def agent(tmp_path, mosquitto):
    a = _agent(tmp_path, mosquitto.url, mosquitto.url)
    a.start()
    wait_until(lambda: a.uplink.connected, what="uplink connected")
    yield a
    a.shutdown(flush_s=2)


def _feed(agent: EdgeAgent, point: str, values: list[float], t0: int = T0, step: int = 10 * S) -> int:
    for i, v in enumerate(values):
        agent.sink("trailer-001", point, t0 + i * step, v, 0)
    agent.tick()
    return t0 + len(values) * step


def _publish_retained(url: str, topic: str, payload: bytes) -> None:
    _publish(url, topic, payload, retain=True)


def _publish(url: str, topic: str, payload: bytes, retain: bool = False) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(host, int(port))
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def _reports(listener: Listener) -> list[ReportedConfig]:
    return [decode(p, ReportedConfig) for p in listener.payloads()]


def test_desired_config_changes_what_the_detector_flags_and_reports_the_version(agent, mosquitto):
    reported = Listener(mosquitto.url, topics.config_reported("acme", agent.cfg.gateway))
    steady = [4.0 + 0.1 * ((i % 5) - 2) for i in range(100)]
    t = _feed(agent, "supply_air", steady)
    t = _feed(agent, "supply_air", [4.5], t)  # about 3.5 sigma: no news to the type's novelty detector
    assert agent.counts["anomalies"] == 0

    desired = DesiredConfig(version=3, config={"assets": [{"id": "trailer-001", "type": "refrigerated-trailer",
        "detectors": {"supply_air": [{"kind": "ewma_z", "tau_s": 600, "threshold": 2.0, "warmup": 30}]}}]})
    _publish_retained(mosquitto.url, topics.config_desired("acme", agent.cfg.gateway), encode(desired))
    wait_until(lambda: not agent._desired.empty(), what="the desired config to arrive")
    agent._apply_pending_desired()
    assert [(r.version, r.applied) for r in wait_until(lambda: _reports(reported), what="a report")] == [(3, True)]
    assert agent.cfg.version == 3

    t = _feed(agent, "supply_air", steady[:40], t)  # a new kind starts cold: 30 samples of warm-up
    _feed(agent, "supply_air", [4.5], t)
    assert agent.counts["anomalies"] == 1
    reported.close()


@pytest.mark.parametrize(("config", "reason"), [
    ({"tick_ms": 0}, "tick_ms: Input should be greater than or equal to 5"),
    ({"gateway": "gw-other"}, "gateway cannot change without a restart"),
    ({"sources": [{"type": "mqtt", "subscriptions": []}]}, "sources[0].subscriptions: List should have at least 1"),
])
def test_an_invalid_desired_config_is_refused_with_the_reason_and_the_running_one_stays(agent, mosquitto, config,
                                                                                      reason):
    reported = Listener(mosquitto.url, topics.config_reported("acme", agent.cfg.gateway))
    before = agent.cfg.model_dump()
    _publish_retained(mosquitto.url, topics.config_desired("acme", agent.cfg.gateway),
                      encode(DesiredConfig(version=7, config=config)))
    wait_until(lambda: not agent._desired.empty(), what="the desired config to arrive")
    agent._apply_pending_desired()
    [report] = wait_until(lambda: _reports(reported), what="a report")
    assert (report.version, report.applied) == (7, False)
    assert reason in report.reason
    assert agent.cfg.model_dump() == before
    assert agent.counts["config_rejected"] == 1
    reported.close()


@pytest.fixture
def cloud_broker():
    b = MosquittoServer()
    b.start()
    yield b
    b.close()


def test_a_local_alarm_fires_while_offline_and_is_delivered_later(tmp_path, mosquitto, cloud_broker):
    cloud_broker.stop()
    a = _agent(tmp_path, cloud_broker.url, mosquitto.url)
    a.start()
    try:
        _feed(a, "supply_air", [4.0] * 30)
        warm_start = T0 + 300 * S
        _feed(a, "supply_air", [9.5] * 100, t0=warm_start)  # above 8 degC for 16.5 min of sample time
        assert a.counts["alarms"] == 1
        cloud_broker.start()
        events = Listener(cloud_broker.url, topics.events("acme", a.cfg.gateway))
        alarms = wait_until(lambda: [e for e in map(decode_event, events.payloads()) if isinstance(e, AlarmEvent)],
                            timeout=60, what="the alarm after reconnect")
        assert [(e.rule, e.asset, e.start_ns, e.evidence["fired_ns"]) for e in alarms] == [
            ("supply-air-high", "trailer-001", warm_start, warm_start + 90 * 10 * S)]
        events.close()
    finally:
        a.shutdown(flush_s=2)


def _v(i: int, k: int) -> float:
    return 4.0 + ((i * 7) % 10) * 0.25 + k  # a healthy trailer: no alarm, no anomaly in the outbox


def test_an_8_hour_outage_replays_completely_and_in_order(tmp_path, mosquitto, cloud_broker):
    cloud_broker.stop()
    a = _agent(tmp_path, cloud_broker.url, mosquitto.url)
    a.start()
    try:
        points = ["supply_air", "return_air", "ambient"]
        n = 8 * 3600 // 10  # one sample per 10 s of simulated time, per point
        for chunk in range(0, n, 120):  # a tick per 20 simulated minutes
            for i in range(chunk, min(n, chunk + 120)):
                for k, p in enumerate(points):
                    a.sink("trailer-001", p, T0 + i * 10 * S, _v(i, k), 0)
            a.tick()
        depth = a.outbox.stats()["outbox_depth"]
        assert depth == n // 120
        cloud_broker.start()
        tel = Listener(cloud_broker.url, topics.telemetry("acme", a.cfg.gateway))
        wait_until(lambda: len(tel.payloads()) >= depth, timeout=90, what="the outbox to drain")
        batches = [decode(p, TelemetryBatch) for p in tel.payloads()]
        assert a.outbox.stats()["outbox_depth"] == depth  # acknowledged by the broker, kept until written
        # What ingest says once it has written them: only then do they leave the outbox.
        _publish(cloud_broker.url, topics.committed("acme", a.cfg.gateway),
                 encode(Committed(epoch=a.outbox.epoch, telemetry=[b.seq for b in batches])))
        wait_until(lambda: a.outbox.stats()["outbox_depth"] == 0, what="every row committed")
        assert [b.seq for b in batches] == list(range(depth))  # complete, in order, no duplicate
        for k, p in enumerate(points):
            ts = [t for b in batches for s in b.series if s.point == p for t in s.t_ns]
            vs = [v for b in batches for s in b.series if s.point == p for v in s.values]
            assert ts == [T0 + i * 10 * S for i in range(n)]  # original source timestamps
            assert vs == [_v(i, k) for i in range(n)]
        tel.close()
    finally:
        a.shutdown(flush_s=2)


def test_sigterm_flushes_saves_detector_state_and_a_restart_continues_learning(tmp_path, mosquitto):
    cfg = gateway_config(tmp_path, mosquitto.url, mosquitto.url)
    edge = EdgeProcess(tmp_path, cfg)
    edge.start()
    edge.wait_log("source sensors: connected")
    from simulators.devices import Reading, publish_readings

    steady = [Reading("trailer-001", "supply_air", T0 + i * S, 4.0 + 0.1 * (i % 3)) for i in range(400)]
    publish_readings(mosquitto.url, steady)
    time.sleep(0.5)
    assert edge.stop() == 0
    state = tmp_path / "state" / "detectors.npz"
    assert state.exists()
    log_lines = [json.loads(ln) for ln in edge.log().splitlines() if ln.startswith("{")]
    assert any("running" in ln["msg"] for ln in log_lines)
    # restarted, the detector is already warm: the very first outlier is flagged
    edge2 = EdgeProcess(tmp_path / "again", {**cfg, "gateway": "gw-e2e"})
    edge2.start()
    edge2.wait_log("detector state restored")
    edge2.wait_log("source sensors: connected")
    events = Listener(mosquitto.url, topics.events("acme", "gw-e2e"))
    publish_readings(mosquitto.url, [Reading("trailer-001", "supply_air", T0 + 401 * S, 20.0)])
    got = wait_until(lambda: [decode_event(p) for p in events.payloads()], what="an anomaly after restart")
    assert got[0].start_ns == T0 + 401 * S
    events.close()
    edge2.stop()


def test_the_outbox_bound_holds_through_a_long_outage_alarms_survive_and_thinning_is_reported(
        tmp_path, mosquitto, cloud_broker):
    cloud_broker.stop()
    limit = 256 * 1024
    a = _agent(tmp_path, cloud_broker.url, mosquitto.url, outbox={"path": str(tmp_path / "outbox.sqlite"),
                                                                 "max_bytes": limit}, compress=False)
    a.start()
    try:
        sizes = []
        for hour in range(24):  # a day offline, a tick per simulated 10 minutes, 6 points at 1 Hz
            for tick in range(6):
                base = T0 + (hour * 3600 + tick * 600) * S
                for i in range(600):
                    for p in ("supply_air", "return_air", "ambient", "door", "setpoint", "compressor_current"):
                        v = 12.0 if (p == "supply_air" and hour == 5) else 4.0 + (i % 7) * 0.1
                        v = 0.0 if p == "door" else v
                        a.sink("trailer-001", p, base + i * S, v, 0)
                a.tick()
                files = list(tmp_path.glob("outbox.sqlite*"))
                sizes.append(sum(f.stat().st_size for f in files))
        st = a.outbox.stats()
        assert st["outbox_bytes"] <= limit
        # file + WAL stay bounded (SQLite pages, one WAL), beside the fixed reserve kept for events on a full disk
        assert max(sizes) <= 4 * limit + 4 * 1024 * 1024 + RESERVE_BYTES
        assert st["thinned_samples"] > 0 and a.counters()["thinned_samples"] == st["thinned_samples"]
        assert a.counts["alarms"] == 1
        cloud_broker.start()
        events = Listener(cloud_broker.url, topics.events("acme", a.cfg.gateway))
        status = Listener(cloud_broker.url, topics.status("acme", a.cfg.gateway))
        alarms = wait_until(lambda: [e for e in map(decode_event, events.payloads()) if isinstance(e, AlarmEvent)],
                            timeout=60, what="the alarm raised during the outage")
        assert [x.rule for x in alarms] == ["supply-air-high"]
        from models.wire import GatewayStatus
        reported = wait_until(lambda: [s for s in (decode(p, GatewayStatus) for p in status.payloads() if p)
                                       if s.counters.get("thinned_samples")], timeout=30, what="a status")
        assert reported[-1].counters["thinned_samples"] == st["thinned_samples"]
        events.close()
        status.close()
    finally:
        a.shutdown(flush_s=2)
