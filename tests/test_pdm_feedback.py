"""The loop back to the gateway, through real processes: a simulated pump's healthy hour → MQTT (real Mosquitto) →
``twin edge run`` → ``twin cloud run`` → real InfluxDB; then ``POST /api/v1/assets/pump-001/baseline`` fits the
pump's multivariate baseline on that hour and pushes it as desired configuration; the gateway applies it, reports
the version, and from then on flags what its per-point detectors let pass: motor current up 2 A with the speed
unchanged (friction where the load did not change), each value ordinary on its own."""

from __future__ import annotations

import json
import re
import time
import uuid

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from models import topics
from models.wire import AnomalyEvent, decode_event
from simulators.machine import SLOW_POINTS, Machine, MachineParams
from tests.harness.processes import CloudProcess, EdgeProcess, wait_until
from tests.test_edge_agent import Listener

S = 1_000_000_000
ASSET = "pump-001"
HEALTHY_S = 1200  # rows at 1 s: two load cycles of 10 min
TEST_S = 600  # the input judged before and after the push, one load cycle: 540 ordinary rows, then 60 shifted
SHIFT_AT = 540
SHIFT_A = 2.0


@pytest.fixture
def plant(tmp_path, mosquitto, influxdb, influx_db):
    gw = f"gw-pdm-{uuid.uuid4().hex[:6]}"
    cloud = CloudProcess(tmp_path, mosquitto.url, f"sqlite:///{tmp_path / 'registry.sqlite'}", influxdb.url,
                         influx_db, extra_env={"TWIN_RULES_INTERVAL_S": "3600"})
    cloud.start()
    cloud.wait_ready()
    edge = EdgeProcess(tmp_path / "edge", {
        "tenant": "acme", "gateway": gw, "uplink": {"url": mosquitto.url},
        "outbox": {"path": str(tmp_path / "edge" / "outbox.sqlite")}, "state_dir": str(tmp_path / "edge" / "state"),
        "tick_ms": 50, "status_interval_s": 0.5,
        # The type's day-long CUSUM on bearing_temp alarms on a load cycle compressed to 10 minutes; the
        # other per-point detectors are the type's own.
        "assets": [{"id": ASSET, "type": "rotating-machine", "detectors": {
            "bearing_temp": [{"kind": "ewma_z", "tau_s": 3600, "threshold": 6.0, "warmup": 60}]}}],
        "sources": [{"type": "mqtt", "name": "plc", "link": {"url": mosquitto.url},
                     "subscriptions": [{"topic": f"{gw}/+/cycle", "asset": "{1}", "point": "*",
                                        "payload": "json_map"}]}]})
    edge.start()
    edge.wait_log("source plc: connected")
    edge.wait_log("uplink: connected")
    yield cloud, edge, gw
    edge.stop()
    cloud.stop()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)  # the retained desired config must not outlive the test
    host, port = mosquitto.url.removeprefix("mqtt://").split(":")
    c.connect(host, int(port))
    c.loop_start()  # the PUBACK needs the network loop: without it wait_for_publish sat out its 10 s timeout
    c.publish(topics.config_desired("acme", gw), b"", qos=1, retain=True).wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def _cycles(machine: Machine, t0_ns: int, seconds: int) -> dict[str, np.ndarray]:
    """The PLC's read cycles, one a second: each point's values at the same timestamps."""
    slow = machine.slow_points(t0_ns, float(seconds), 1.0)
    return {"t_ns": slow["speed"][0], **{p: slow[p][1].astype(float) for p in SLOW_POINTS}}


def _publish(url: str, gw: str, t_ns: np.ndarray, cycles: dict[str, np.ndarray]) -> None:
    """One json_map message per cycle, as a controller reports its whole read cycle."""
    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(host, int(port))
    c.loop_start()
    infos = [c.publish(f"{gw}/{ASSET}/cycle", json.dumps(
        {"t": int(t), "v": {p: float(cycles[p][i]) for p in SLOW_POINTS}}), qos=1) for i, t in enumerate(t_ns)]
    for info in infos:
        info.wait_for_publish(30)
    c.disconnect()
    c.loop_stop()


def _stored(api, t0: int, t1: int) -> int:
    r = api.get(f"/api/v1/assets/{ASSET}/telemetry", params={"point": "motor_current", "start": t0, "end": t1,
                                                             "limit": 5000})
    return len(r.json()["t_ns"]) if r.status_code == 200 else 0


def _anomalies(listener: Listener, t0: int, t1: int) -> list[tuple[str, str, tuple[str, ...], int]]:
    """Distinct anomaly events that started in [t0, t1): (asset, point, detectors, start_ns)."""
    out = set()
    for p in listener.payloads():
        ev = decode_event(p)
        if isinstance(ev, AnomalyEvent) and t0 <= ev.start_ns < t1:
            out.add((ev.asset, ev.point, tuple(ev.detectors), ev.start_ns))
    return sorted(out)


def test_a_baseline_pushed_from_the_cloud_makes_the_edge_flag_a_shift_its_point_detectors_let_pass(plant, mosquitto):
    cloud, _, gw = plant
    api = cloud.client()
    events = Listener(mosquitto.url, topics.events("acme", gw))
    machine = Machine(ASSET, MachineParams(defect="none", load_period_s=600.0, thermal_tau_s=60.0,
                                           bad_quality_prob=0.0), seed=3)
    t0 = (time.time_ns() // S - 3 * 3600) * S
    cycles = _cycles(machine, t0, HEALTHY_S + TEST_S)
    healthy = {k: v[:HEALTHY_S] for k, v in cycles.items()}
    judged = {k: v[HEALTHY_S:].copy() for k, v in cycles.items()}
    judged["motor_current"][SHIFT_AT:] += SHIFT_A  # current up, speed as before: each value within its range
    assert judged["motor_current"].max() < 30.0  # the type's normal range: nothing a limit would see

    _publish(mosquitto.url, gw, healthy["t_ns"], healthy)
    wait_until(lambda: _stored(api, t0, t0 + HEALTHY_S * S) == HEALTHY_S, timeout=60, what="the healthy hour stored")

    # Before: the type's per-point detectors let the shift pass.
    first = judged["t_ns"]
    _publish(mosquitto.url, gw, first, judged)
    wait_until(lambda: _stored(api, first[0], first[-1] + 1) == TEST_S, timeout=60, what="the first pass stored")
    assert _anomalies(events, first[0], first[-1] + 1) == []

    r = api.post(f"/api/v1/assets/{ASSET}/baseline", json={
        "start": str(t0), "end": str(t0 + HEALTHY_S * S), "limit_scale": 1.5, "smooth_tau_s": 10.0,
        "reason": "healthy after overhaul"})
    assert r.status_code == 200, r.text
    pushed = r.json()
    assert (pushed["gateway"], pushed["rows"]) == (gw, HEALTHY_S)
    assert pushed["baseline"]["points"] == list(SLOW_POINTS)  # the vibration features have no data: skipped
    assert pushed["baseline"]["smooth_tau_s"] == 10.0
    assert set(pushed["skipped"]) == {"vib_velocity_rms", "vib_accel_rms", "vib_kurtosis", "vib_accel_peak",
                                      "vib_crest_factor", "vib_env_bpfo", "vib_env_bpfi", "vib_env_bsf", "vib_env_ftf"}
    g = wait_until(lambda: (x := api.get(f"/api/v1/gateways/{gw}").json())["config_version"] == pushed["version"]
                   and x, what="the gateway's report of the applied baseline")
    assert g["config_report"]["applied"] is True and g["desired_version"] == pushed["version"]

    # After: the same input again (the load cycles every 10 min, so it follows on smoothly) is flagged within
    # two cycles of the shift (rows are smoothed over 10 s), by the baseline alone, as one event.
    second = first + TEST_S * S
    _publish(mosquitto.url, gw, second, judged)
    wait_until(lambda: _stored(api, second[0], second[-1] + 1) == TEST_S, timeout=60, what="the second pass stored")
    got = wait_until(lambda: _anomalies(events, second[0], second[-1] + 1), timeout=10, what="the anomaly event")
    assert len(got) == 1, got
    [(asset, point, detectors, start_ns)] = got
    assert (asset, point, detectors) == (ASSET, "speed", ("mspc",))  # a row's score goes to its last point
    assert second[SHIFT_AT] <= start_ns <= second[SHIFT_AT + 2]
    events.close()


def test_a_baseline_needs_a_window_with_data(plant):
    cloud, _, _ = plant
    api = cloud.client()
    wait_until(lambda: api.get(f"/api/v1/assets/{ASSET}").status_code == 200, what="the gateway's birth")
    r = api.post(f"/api/v1/assets/{ASSET}/baseline", json={"start": "2020-01-01T00:00:00Z",
                                                            "end": "2020-01-02T00:00:00Z"})
    assert r.status_code == 422
    assert "needs 2 or more points with data in the window" in r.json()["detail"]
    assert api.post("/api/v1/assets/no-such-pump/baseline", json={}).status_code == 404


@pytest.mark.parametrize(("change", "reason"), [
    ({"points": ["speed", "torque"]}, "baselines.pump-001.points: torque not numeric points of rotating-machine"),
    ({"mean": [1.0]}, "mean and scale need one value per point (2)"),
    ({"eigvals": [1.0, 0.0]}, "eigvals and scale must be > 0"),
])
def test_a_gateway_refuses_a_baseline_that_does_not_fit_its_asset_and_says_why(change, reason):
    from edge.config import ConfigError, parse_config

    base = {"id": "b1", "points": ["speed", "motor_current"], "mean": [1780.0, 20.0], "scale": [5.0, 2.0],
            "loadings": [[0.7071, -0.7071], [0.7071, 0.7071]], "eigvals": [1.9, 0.1], "t2_limit": 13.8,
            "spe_limit": 0.0}
    cfg = {"tenant": "acme", "gateway": "gw-1", "assets": [{"id": ASSET, "type": "rotating-machine"}],
           "sources": [{"type": "mqtt", "subscriptions": [{"topic": "m/+", "asset": "{1}", "point": "*",
                                                           "payload": "json_map"}]}]}
    assert parse_config({**cfg, "baselines": {ASSET: base}}).baselines[ASSET].id == "b1"
    with pytest.raises(ConfigError, match=re.escape(reason)):
        parse_config({**cfg, "baselines": {ASSET: {**base, **change}}})
    with pytest.raises(ConfigError, match=r"baselines\.pump-002: not an asset of this gateway"):
        parse_config({**cfg, "baselines": {"pump-002": base}})


def test_a_gateway_restarted_without_its_pushed_baseline_keeps_what_its_point_detectors_learned(tmp_path):
    """gateway.yaml has no baseline (it came from the cloud and comes back, retained, after start-up): the saved
    state, which has the mspc detector, still gives the per-point detectors back what they had learned."""
    from edge.buffer import Tick
    from edge.config import parse_config
    from edge.watch import PointWatch

    plain = {"tenant": "acme", "gateway": "gw-1", "assets": [{"id": ASSET, "type": "rotating-machine"}],
             "sources": [{"type": "mqtt", "subscriptions": [{"topic": "m/+", "asset": "{1}", "point": "*",
                                                             "payload": "json_map"}]}]}
    base = {"id": "b1", "points": ["speed", "motor_current"], "mean": [1780.0, 20.0], "scale": [5.0, 2.0],
            "loadings": [[0.7071, -0.7071], [0.7071, 0.7071]], "eigvals": [1.9, 0.1], "t2_limit": 13.8,
            "spe_limit": 0.0}
    pushed = parse_config({**plain, "baselines": {ASSET: base}})
    points = pushed.points()
    running = PointWatch(pushed, points)
    cyc = _cycles(Machine(ASSET, MachineParams(defect="none"), seed=1), 1_767_225_600 * S, 300)
    cols = [points.index((ASSET, p)) for p in SLOW_POINTS]
    for i in range(300):
        running.process(Tick(np.array(cols, np.int64), np.full(3, cyc["t_ns"][i], np.int64),
                             np.array([cyc[p][i] for p in SLOW_POINTS]), np.zeros(3, np.int8)))
    running.save(tmp_path / "detectors.npz")

    restarted = PointWatch(parse_config(plain), points)
    restarted.load(tmp_path / "detectors.npz")
    assert running.ensemble.names == ["ewma_z", "cusum", "limits", "mspc"]
    assert restarted.ensemble.names == ["ewma_z", "cusum", "limits"]  # mspc comes back with the retained baseline
    learned = running.ensemble.detectors[0].state()
    again = restarted.ensemble.detectors[0].state()
    assert again["count"][cols].tolist() == [300, 300, 300]  # not a cold start
    for k, v in again.items():
        np.testing.assert_array_equal(v, learned[k])
