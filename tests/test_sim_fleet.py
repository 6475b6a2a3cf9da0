"""Fleet load against a real broker: every scheduled message arrives once, and the report adds up."""

from __future__ import annotations

import itertools
import json
import math
import threading
import uuid
from collections import Counter

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from typer.testing import CliRunner

from simulators.cli import app
from simulators.fleet import FleetConfig, _utf8, _varint, due_between, publish_packet, run_fleet
from tests.harness import free_port


class Counting:
    """A QoS 1 subscriber that keeps every (topic, payload) and signals when it has ``expect`` of them."""

    def __init__(self, broker, topic_filter: str, expect: int) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.expect = expect
        self.done, subscribed = threading.Event(), threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"count-{uuid.uuid4().hex[:8]}")
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "subscriber did not get its SUBACK"

    def _on_message(self, client, userdata, msg) -> None:
        self.received.append((msg.topic, msg.payload))
        if len(self.received) >= self.expect:
            self.done.set()

    def settle(self, timeout: float) -> None:
        """Wait for ``expect`` messages, then a little longer so that extra (duplicate) ones would show."""
        self.done.wait(timeout)
        threading.Event().wait(0.3)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def fleet_config(**kw) -> FleetConfig:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    return FleetConfig(topic_template=prefix + "/{asset}/{point}", **kw)


def test_2000_devices_for_2_s_at_qos1_deliver_exactly_the_schedule(mosquitto):
    cfg = fleet_config(devices=2000, rate=1.0, duration_s=2.0, qos=1, connections=4)
    assert cfg.expected() == 4000
    sub = Counting(mosquitto, cfg.topic_template.split("/")[0] + "/#", cfg.expected())
    try:
        report = run_fleet(mosquitto.url, cfg)
        sub.settle(10)
    finally:
        sub.close()
    assert (report.sent, report.acked, report.dropped, report.unacked) == (4000, 4000, 0, 0)
    assert len(sub.received) == 4000
    per_topic = Counter(topic for topic, _ in sub.received)
    assert len(per_topic) == 2000 and set(per_topic.values()) == {2}
    json_devices = {f"{cfg.topic_template.split('/')[0]}/{cfg.device_id(i)}/value"
                    for i in np.flatnonzero(cfg.json_devices())}
    assert len(json_devices) == report.json_devices == 1000
    for topic, payload in sub.received:
        if topic in json_devices:
            msg = json.loads(payload)
            assert set(msg) == {"t", "v", "q"} and isinstance(msg["t"], int) and msg["q"] == 0
            assert math.isfinite(msg["v"])
        else:
            assert math.isfinite(float(payload))
    assert report.per_second == pytest.approx(2000, rel=0.05)
    assert report.lag_ms_p99 < 1000 and report.ack_ms_p50 is not None


def test_one_connection_per_device_at_qos0_delivers_every_message(mosquitto):
    cfg = fleet_config(devices=300, rate=2.0, duration_s=1.5, qos=0, connections=300, json_share=0.0)
    assert cfg.expected() == 900  # 3 messages per device
    sub = Counting(mosquitto, cfg.topic_template.split("/")[0] + "/#", cfg.expected())
    try:
        report = run_fleet(mosquitto.url, cfg)
        sub.settle(10)
    finally:
        sub.close()
    assert (report.sent, report.dropped, report.connections) == (900, 0, 300)
    assert len(sub.received) == 900
    assert set(Counter(t for t, _ in sub.received).values()) == {3}
    assert report.json_devices == 0 and all(not p.startswith(b"{") for _, p in sub.received)


def test_a_broker_restart_is_counted_as_drops_and_the_devices_reconnect(mosquitto):
    cfg = fleet_config(devices=400, rate=5.0, duration_s=5.0, qos=1, connections=2)
    restart = threading.Timer(1.0, mosquitto.restart)
    restart.start()
    try:
        report = run_fleet(mosquitto.url, cfg)
    finally:
        restart.join()
    assert report.reconnects == 2
    assert report.dropped > 0
    assert report.sent + report.dropped == report.expected == 10_000  # every due message is one or the other
    assert report.acked + report.unacked == report.sent


def test_an_unreachable_broker_fails_fast_with_a_clear_error():
    cfg = FleetConfig(devices=10, duration_s=1.0, connections=2, connect_timeout_s=2.0)
    with pytest.raises(ConnectionError, match="2 of 2 connections failed"):
        run_fleet(f"mqtt://127.0.0.1:{free_port()}", cfg)


@pytest.mark.parametrize(("devices", "rate", "duration"), [(2000, 1.0, 2.0), (7, 3.0, 2.5), (1000, 0.2, 12.0)])
def test_schedule_windows_partition_the_expected_messages(devices, rate, duration):
    cfg = FleetConfig(devices=devices, rate=rate, duration_s=duration, connections=1)
    edges = np.sort(np.random.default_rng(1).uniform(0, duration, 57))
    edges = [0.0, *edges.tolist(), duration]
    parts = [due_between(cfg, a, b) for a, b in itertools.pairwise(edges)]
    idx = np.concatenate([p[0] for p in parts])
    due = np.concatenate([p[1] for p in parts])
    assert len(idx) == cfg.expected()
    assert np.all(np.diff(due) >= 0) and due.min() >= 0 and due.max() < duration
    expected_per_device = np.ceil((duration - np.arange(devices) / devices / rate) * rate)
    np.testing.assert_array_equal(np.bincount(idx, minlength=devices), expected_per_device)


def test_json_share_spreads_json_devices_evenly():
    cfg = FleetConfig(devices=10, json_share=0.3, connections=1)
    assert cfg.json_devices().tolist() == [False, False, False, True, False, False, True, False, False, True]


def test_publish_packets_follow_mqtt_311():
    topic = _utf8("sim/a/b")
    assert topic == b"\x00\x07sim/a/b"
    assert publish_packet(topic, b"1.5", 0) == b"\x30\x0c\x00\x07sim/a/b1.5"
    assert publish_packet(topic, b"1.5", 1, 0x0102) == b"\x32\x0e\x00\x07sim/a/b\x01\x021.5"
    assert _varint(127) == b"\x7f" and _varint(128) == b"\x80\x01" and _varint(16_383) == b"\xff\x7f"
    long = publish_packet(topic, b"x" * 200, 0)
    assert long[:3] == b"\x30" + _varint(209) and len(long) == 3 + 209


def test_cli_writes_the_report_and_exits_zero_when_nothing_was_lost(mosquitto, tmp_path):
    out = tmp_path / "fleet.json"
    result = CliRunner().invoke(app, ["fleet", "--devices", "200", "--rate", "2", "--duration", "1s", "--qos", "1",
                                      "--connections", "3", "--prefix", f"cli{uuid.uuid4().hex[:6]}",
                                      "--broker", mosquitto.url, "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert (report["sent"], report["acked"], report["expected"], report["connections"]) == (400, 400, 400, 3)
