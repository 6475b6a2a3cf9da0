"""The MQTT device front against a real broker: what is published is what a subscriber receives."""

from __future__ import annotations

import json
import threading
import uuid
from collections import defaultdict
from itertools import islice

import paho.mqtt.client as mqtt
import pytest

from simulators.devices import Reading, interleave, publish_readings
from simulators.replay import replay_csv
from simulators.scenario import Scenario, run_scenario
from simulators.trailer import Trailer, TrailerParams

T0 = 1_748_822_400 * 10**9


class Subscriber:
    """A paho QoS 1 subscriber that records payloads per topic and signals when it has ``expect``."""

    def __init__(self, broker, topic_filter: str, expect: int) -> None:
        self.messages: dict[str, list[bytes]] = defaultdict(list)
        self.count, self.expect = 0, expect
        self.done, subscribed = threading.Event(), threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:8]}")
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic_filter, qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10), "subscriber did not get its SUBACK"

    def _on_message(self, client, userdata, msg) -> None:
        self.messages[msg.topic].append(msg.payload)
        self.count += 1
        if self.count >= self.expect:
            self.done.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def trailer_readings(n: int) -> list[Reading]:
    run = Trailer("trailer-001", TrailerParams(bad_quality_prob=0.02), seed=3).run(T0, 3600 * 6, 60)
    readings = list(islice(interleave({("trailer-001", p): s for p, s in run.points.items()}), n))
    assert len(readings) == n
    return readings


@pytest.mark.parametrize("style", ["json", "bare"])
def test_2000_readings_at_qos1_arrive_exactly_in_both_payload_styles(mosquitto, style):
    readings = trailer_readings(2000)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    sub = Subscriber(mosquitto, f"{prefix}/#", expect=len(readings))
    try:
        report = publish_readings(mosquitto.url, readings, qos=1, style=style,
                                  topic_template=prefix + "/{asset}/{point}")
        assert sub.done.wait(20), f"received {sub.count} of {len(readings)}"
    finally:
        sub.close()
    assert (report.sent, report.acked) == (2000, 2000)
    assert sub.count == 2000
    expected: dict[str, list[Reading]] = defaultdict(list)
    for r in readings:
        expected[f"{prefix}/{r.asset}/{r.point}"].append(r)
    assert set(sub.messages) == set(expected)
    for topic, sent in expected.items():
        got = sub.messages[topic]
        if style == "json":
            assert [json.loads(p) for p in got] == [{"t": r.t_ns, "v": r.value, "q": r.quality} for r in sent]
        else:
            assert [float(p) for p in got] == [r.value for r in sent]
            assert all(p == repr(r.value).encode() for p, r in zip(got, sent, strict=True))


def test_replay_as_fast_as_possible_keeps_the_csv_timestamps(mosquitto, tmp_path):
    csv_path = tmp_path / "log.csv"
    csv_path.write_text("timestamp,temp,label\n2025-06-02T00:00:00Z,4.5,a\n2025-06-02T00:01:00Z,,b\n"
                        "2025-06-02T00:02:00Z,4.7,c\n")
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    sub = Subscriber(mosquitto, f"{prefix}/#", expect=2)
    try:
        report = replay_csv(csv_path, "logger-1", mosquitto.url, speed=0,
                            topic_template=prefix + "/{asset}/{point}")
        assert sub.done.wait(10)
    finally:
        sub.close()
    assert report.acked == 2
    got = [json.loads(p) for p in sub.messages[f"{prefix}/logger-1/temp"]]
    assert got == [{"t": T0, "v": 4.5, "q": 0}, {"t": T0 + 120 * 10**9, "v": 4.7, "q": 0}]


def test_a_compressed_scenario_publishes_every_simulated_sample_with_its_simulated_time(mosquitto, tmp_path):
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    scenario = Scenario.model_validate({
        "name": "tiny", "seed": 1, "duration": "2h", "sample_period": 60, "fleet": [{"count": 2}],
        "faults": [{"asset": "trailer-002", "kind": "sensor_dropout", "point": "ambient", "start": "1h",
                    "duration": "30m"}],
        "topic_template": prefix + "/{asset}/{point}", "style": "json"})
    sub = Subscriber(mosquitto, f"{prefix}/#", expect=2 * 6 * 120 - 30)
    try:
        result = run_scenario(scenario, tmp_path, broker_url=mosquitto.url)
        assert sub.done.wait(20), f"received {sub.count}"
    finally:
        sub.close()
    assert result.report is not None and result.report.acked == result.n_readings == sub.count == 1410
    sent = result.runs[1].points["supply_air"]
    got = [json.loads(p) for p in sub.messages[f"{prefix}/trailer-002/supply_air"]]
    assert [g["t"] for g in got] == sent.t_ns.tolist() and [g["v"] for g in got] == sent.values.tolist()
    assert json.loads((tmp_path / "ground_truth.json").read_text())["faults"][0]["kind"] == "sensor_dropout"
