"""Cold-chain acceptance: simulated trailers with injected faults (the ground truth) replayed through the
live path — the wire messages a gateway would send, decoded, de-duplicated and stored by the real ingest
worker (``Ingest.process``, the same code its MQTT threads run), whose hooks feed the rule runner, which
assesses after every upload in simulated time. Every injected failure must be caught with the right
classification and nothing else; a normal week must raise nothing.

Each trailer has its own gateway. A gateway uploads every ``TICK_S`` (the edge's outbox batches); while
its link is down it keeps samples and sends them when the link returns (the outbox), announcing itself
offline (last will) and online (birth) as the real one does. A power loss silences the unit's sensors
(the simulator's ``power_loss``) and takes the gateway down with it.

The fleets run in-process (``Ingest.process`` on an embedded store) to keep two days and a week of
ticks quick; the last test sends a power loss and a late excursion over the real wire: Mosquitto, a
started ingest worker, InfluxDB.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import select

from cloud.ingest import Ingest, _Msg
from cloud.platform import Platform
from cloud.registry import Alert, Asset, Site, Tenant
from cloud.rules.runner import RuleRunner
from cloud.settings import CloudSettings
from cloud.shipments import attach
from models import topics
from models.wire import GatewayStatus, PointSeries, TelemetryBatch, encode
from simulators.trailer import Fault, Trailer, TrailerParams, TrailerRun, simulate_fleet
from tests.harness.processes import wait_until

S = 10**9
MIN = 60 * S
H = 3600 * S
T0 = 1_748_822_400 * S  # 2025-06-02T00:00:00Z; ambient peaks at 15:00
TENANT = "acme"
TICK_S = 600
WINDOW_S = 4 * 3600
LIMIT_C = 8.0
PROFILE = """\
name: chilled-2-8
description: chilled food and pharma in a reefer, 2-8 degC; half an hour above 8 degC is an excursion
boundaries:
  - {name: warm,   above: 8.0,  after: 30m, mode: single, severity: high}
  - {name: freeze, below: -0.5, after: 1h,  mode: single, severity: high}
"""


@dataclass
class Gateway:
    """One trailer's gateway in the replay: what it has sent, and when it is down."""

    run: TrailerRun
    down: list[tuple[int, int]] = field(default_factory=list)  # link outages and power losses
    sent_until_ns: int = T0 - 1
    seq: int = 0

    @property
    def id(self) -> str:
        return f"gw-{self.run.asset_id}"

    def is_down(self, t_ns: int) -> bool:
        return any(a <= t_ns < b for a, b in self.down)

    def status(self, state: str, t_ns: int) -> _Msg:
        msg = GatewayStatus(tenant=TENANT, gateway=self.id, state=state, t_ns=t_ns,
                            assets={self.run.asset_id: "refrigerated-trailer"} if state == "online" else {})
        return _Msg(0, 0, topics.status(TENANT, self.id), encode(msg))

    def upload(self, prev_ns: int, t_ns: int) -> list[_Msg]:
        """What reaches the cloud in (prev_ns, t_ns]: status changes, then every kept sample not yet sent."""
        out = []
        if prev_ns < T0:
            out.append(self.status("online", T0))
        for a, b in self.down:
            if prev_ns < a <= t_ns:
                out.append(self.status("offline", a))
            if prev_ns < b <= t_ns:
                out.append(self.status("online", b))
        if self.is_down(t_ns):
            return out
        series = []
        for point, s in self.run.points.items():
            keep = (s.t_ns > self.sent_until_ns) & (s.t_ns <= t_ns)
            if keep.any():
                series.append(PointSeries(asset=self.run.asset_id, point=point, t_ns=s.t_ns[keep].tolist(),
                                          values=s.values[keep].tolist(), quality=s.quality[keep].tolist()))
        self.sent_until_ns = t_ns
        if series:
            batch = TelemetryBatch(tenant=TENANT, gateway=self.id, seq=self.seq, sent_ns=t_ns, series=series)
            self.seq += 1
            out.append(_Msg(0, 0, topics.telemetry(TENANT, self.id), encode(batch)))
        return out


def replay(tmp_path, gateways: list[Gateway], duration_s: float, tick_s: int = TICK_S,
           setup: Callable[[Platform], None] | None = None) -> tuple[Platform, list[dict]]:
    """Feed the gateways' uploads through ingest tick by tick, assessing after each; the alerts raised.

    The rules look back ``WINDOW_S`` (what the chilled profile and the fault rules need) rather than the
    runner's default day, which keeps a week of ticks quick; the thermal twin still fits on a day."""
    (tmp_path / "chilled-2-8.yaml").write_text(PROFILE)
    settings = CloudSettings(database_url=f"sqlite:///{tmp_path / 'registry.sqlite'}", store="embedded",
                             embedded_path=str(tmp_path / "ts.sqlite"),
                             coldchain_profile=str(tmp_path / "chilled-2-8.yaml"))
    platform = Platform.open(settings, with_ingest=True)
    assert platform.ingest is not None and platform.rules is not None
    platform.rules.window_s = WINDOW_S
    if setup is not None:
        setup(platform)
    prev = T0 - 1
    for t in range(T0 + tick_s * S, T0 + round(duration_s * S) + 1, tick_s * S):
        msgs = [m for gw in gateways for m in gw.upload(prev, t)]
        if msgs:
            platform.ingest.process(msgs)
        platform.rules.assess_now(now_ns=t)
        prev = t
    platform.notifier.drain()  # alert listeners (the shipments' quarantine) run on the notifier's thread
    assert platform.ingest.counters["dead_letters"] == 0
    return platform, alert_rows(platform)


def alert_rows(platform: Platform) -> list[dict]:
    with platform.registry.session() as s:
        rows = s.scalars(select(Alert).where(Alert.tenant == TENANT).order_by(Alert.opened_ns)).all()
        return [{"asset": a.asset, "rule": a.rule, "state": a.state, "opened_ns": a.opened_ns,
                 "evidence": a.evidence, "note": a.note, "title": a.title} for a in rows]


def close(platform: Platform) -> None:
    """Its threads never started (the replay drives ingest and rules itself): release the files."""
    platform.store.close()
    platform.registry.engine.dispose()


def kinds(alerts: list[dict], asset: str) -> list[str]:
    return sorted(a["evidence"]["classification"] for a in alerts if a["asset"] == asset)


def fault(kind: str, start_h: float, minutes: float, **kw) -> Fault:
    start = T0 + round(start_h * H)
    return Fault(kind=kind, start_ns=start, end_ns=start + round(minutes * MIN), **kw)


DOOR = fault("door_open", 30, 40)  # left open at a delivery, 06:00 on day two
COMPRESSOR = fault("compressor_failure", 32, 240)  # 08:00, the morning warming up
REPAIRED = fault("compressor_failure", 32, 30)  # the same morning, but it restarts after half an hour
POWER = fault("power_loss", 34, 180)  # shore power pulled at 10:00; the sensors go silent
STUCK = fault("sensor_stuck", 30, 240, point="supply_air")
OUTAGE = (T0 + 36 * H, T0 + 38 * H)  # the gateway's link is down 12:00-14:00 ...
IN_OUTAGE = fault("compressor_failure", 36.5, 85)  # ... and the compressor fails inside it (after a defrost)


def load_every_trailer(platform: Platform) -> None:
    """One shipment per trailer for the whole run, one lot each (``LOT-<trailer>``), judged by the chilled
    profile the deployment configured (a shipment names its own; the live rules judge by it)."""
    with platform.registry.session() as s:
        s.add(Tenant(id=TENANT, name=TENANT))
        s.add_all([Site(tenant=TENANT, id="dc-1"), Site(tenant=TENANT, id="store-7")])
        s.add_all([Asset(tenant=TENANT, id=a, type="refrigerated-trailer", gateway=f"gw-{a}", first_seen_ns=T0)
                   for a in TRAILERS])
    shipments = attach(platform)
    for a in TRAILERS:
        shipments.create_shipment(TENANT, "dispatcher", profile="chilled-2-8", origin_site="dc-1",
                                  destination_site="store-7", shipment_id=f"shp-{a}")
        shipments.add_leg(TENANT, "dispatcher", f"shp-{a}", a, T0)
        shipments.add_batch(TENANT, "dispatcher", f"shp-{a}", lot=f"LOT-{a}", product="vaccine", quantity=100)


TRAILERS = ("trailer-door", "trailer-power", "trailer-defrost", "trailer-stuck", "trailer-outage",
            "trailer-compressor", "trailer-repaired")


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    """Two days of seven trailers, one fault each (the defrost trailer's is its defrosting), replayed."""
    trailers = [
        Trailer("trailer-door", TrailerParams(), seed=11, faults=[DOOR]),
        Trailer("trailer-power", TrailerParams(), seed=13, faults=[POWER]),
        # a hot day and a defrost every 3 h: eight defrosts a day that warm the air past 8 °C
        Trailer("trailer-defrost", TrailerParams(ambient_mean_c=35.0, defrost_interval_s=3 * 3600.0,
                                                  defrost_duration_s=1800.0, defrost_heat_w=3000.0), seed=14),
        Trailer("trailer-stuck", TrailerParams(), seed=15, faults=[STUCK]),
        Trailer("trailer-outage", TrailerParams(), seed=16, faults=[IN_OUTAGE]),
    ]
    runs = simulate_fleet(trailers, T0, 2 * 86_400, 60)
    # The thermal twin needs a compressor run to span several samples, so this unit reports every 10 s
    # (tests/test_coldchain_thermal.py says why); the others every minute.
    runs += simulate_fleet([Trailer("trailer-compressor", TrailerParams(), seed=12, faults=[COMPRESSOR]),
                            Trailer("trailer-repaired", TrailerParams(), seed=17, faults=[REPAIRED])], T0,
                           2 * 86_400, 10)
    gws = [Gateway(r) for r in runs]
    by = {g.run.asset_id: g for g in gws}
    by["trailer-power"].down.append((POWER.start_ns, POWER.end_ns))
    by["trailer-outage"].down.append(OUTAGE)
    platform, alerts = replay(tmp_path_factory.mktemp("coldchain"), gws, 2 * 86_400, setup=load_every_trailer)
    yield {g.run.asset_id: g.run for g in gws}, alerts, platform
    close(platform)


def first_crossing(run: TrailerRun, after_ns: int) -> int:
    sa = run.points["supply_air"]
    return int(sa.t_ns[np.argmax((sa.t_ns >= after_ns) & (sa.values >= LIMIT_C))])


def test_door_left_open_is_a_door_alarm(faults):
    _, alerts, _ = faults
    assert kinds(alerts, "trailer-door") == ["door_open"]
    (door,) = [a for a in alerts if a["asset"] == "trailer-door"]
    assert door["rule"] == "coldchain:door-open-long"
    assert door["opened_ns"] == DOOR.start_ns + 20 * MIN
    assert door["evidence"]["values"]["open_s"] == 40 * 60.0
    assert door["evidence"]["detected_late"] is False


def test_compressor_failure_is_predicted_15_minutes_before_the_excursion(faults):
    runs, alerts, _ = faults
    mine = {a["evidence"]["classification"]: a for a in alerts if a["asset"] == "trailer-compressor"}
    assert kinds(alerts, "trailer-compressor") == ["compressor_failure", "excursion", "excursion_predicted"]
    predicted, failure, excursion = mine["excursion_predicted"], mine["compressor_failure"], mine["excursion"]
    crossing = first_crossing(runs["trailer-compressor"], COMPRESSOR.start_ns)
    lead_s = (crossing - predicted["opened_ns"]) / S
    assert COMPRESSOR.start_ns < predicted["opened_ns"] and lead_s >= 15 * 60
    assert predicted["opened_ns"] < failure["opened_ns"] < excursion["opened_ns"]
    ev = predicted["evidence"]
    assert ev["limit_c"] == LIMIT_C and ev["forecast"]["scenario"] == "compressor_off"
    assert ev["lead_s"] > 0 and "excursion expected in" in predicted["title"]
    assert "calibrated thermal twin" in ev["explanation"]
    # The forecast said when; the truth agrees within a quarter of an hour.
    assert abs(ev["forecast"]["excursion_ns"] - crossing) <= 15 * MIN
    # One alert for the whole episode, resolved once the real excursion began.
    assert (predicted["state"], predicted["note"]) == ("resolved", "the real excursion began")
    assert excursion["rule"] == "coldchain:chilled-2-8:warm:shp-trailer-compressor"  # the shipment's profile
    assert excursion["evidence"]["values"]["shipment"] == "shp-trailer-compressor"
    assert not any(a["evidence"]["detected_late"] for a in mine.values())


def test_a_prediction_that_no_longer_holds_is_resolved(faults):
    runs, alerts, _ = faults
    # It ran again before the failure rule's 15 min of confirmation: the prediction was the only word.
    assert kinds(alerts, "trailer-repaired") == ["excursion_predicted"]
    predicted = next(a for a in alerts if a["asset"] == "trailer-repaired" and a["rule"].endswith("predicted"))
    assert REPAIRED.start_ns < predicted["opened_ns"] < REPAIRED.end_ns
    assert (predicted["state"], predicted["note"]) == ("resolved", "the forecast no longer reaches the limit")
    sa = runs["trailer-repaired"].points["supply_air"]
    assert float(sa.values[(sa.t_ns >= REPAIRED.start_ns) & (sa.t_ns < REPAIRED.end_ns + H)].max()) < LIMIT_C


def test_power_loss_is_told_from_a_compressor_failure(faults):
    _, alerts, _ = faults
    assert kinds(alerts, "trailer-power") == ["power_loss"]
    (power,) = [a for a in alerts if a["asset"] == "trailer-power"]
    values = power["evidence"]["values"]
    assert power["rule"] == "coldchain:power-loss"
    assert values["gateway_offline"] is True and values["compressor_running_after"] is True
    assert values["rise_c"] >= 1.0
    assert power["evidence"]["window"]["start_ns"] == POWER.start_ns - MIN  # the last sample before
    assert power["opened_ns"] == power["evidence"]["window"]["end_ns"] == POWER.end_ns
    assert power["evidence"]["detected_late"] is False


def test_defrost_cycles_raise_nothing(faults):
    runs, alerts, _ = faults
    defrosts = [e for e in runs["trailer-defrost"].events if e.kind == "defrost"]
    sa = runs["trailer-defrost"].points["supply_air"]
    assert len(defrosts) == 15 and float(sa.values.max()) > LIMIT_C  # they do warm the air past the limit
    assert kinds(alerts, "trailer-defrost") == []


def test_a_stuck_sensor_is_a_sensor_fault_not_an_excursion(faults):
    _, alerts, _ = faults
    assert kinds(alerts, "trailer-stuck") == ["sensor_fault"]
    (stuck,) = [a for a in alerts if a["asset"] == "trailer-stuck"]
    assert stuck["rule"] == "coldchain:sensor-stuck:supply_air"
    assert STUCK.start_ns <= stuck["evidence"]["window"]["start_ns"] < STUCK.start_ns + MIN
    assert stuck["opened_ns"] <= STUCK.start_ns + 40 * MIN


def test_an_excursion_inside_a_two_hour_gateway_outage_is_found_and_marked_late(faults):
    runs, alerts, _ = faults
    assert kinds(alerts, "trailer-outage") == ["compressor_failure", "excursion"]
    for a in (a for a in alerts if a["asset"] == "trailer-outage"):
        assert OUTAGE[0] < a["opened_ns"] < OUTAGE[1]  # when it happened, not when it arrived
        assert a["evidence"]["detected_late"] is True
    excursion = next(a for a in alerts if a["asset"] == "trailer-outage" and ":warm" in a["rule"])
    crossing = first_crossing(runs["trailer-outage"], IN_OUTAGE.start_ns)
    assert excursion["evidence"]["window"]["start_ns"] >= crossing


def test_only_a_product_excursion_quarantines_the_load(faults):
    _, _, platform = faults
    states = {a: attach(platform).get_batch(TENANT, f"LOT-{a}")["state"] for a in TRAILERS}
    assert states == {"trailer-door": "available", "trailer-power": "available", "trailer-defrost": "available",
                      "trailer-stuck": "available", "trailer-outage": "quarantined",
                      "trailer-compressor": "quarantined",
                      "trailer-repaired": "available"}  # a prediction that did not come true quarantines nothing


def test_nothing_else_was_raised(faults):
    _, alerts, platform = faults
    assert sorted({a["asset"] for a in alerts}) == ["trailer-compressor", "trailer-door", "trailer-outage",
                                                   "trailer-power", "trailer-repaired", "trailer-stuck"]
    assert platform.rules.counters["rules_forecast_failures"] == 0


def test_a_normal_week_raises_no_alarm(tmp_path):
    trailers = [
        Trailer("trailer-a", TrailerParams(door_openings_per_day=4, door_open_mean_s=240), seed=42),
        Trailer("trailer-b", TrailerParams(ambient_mean_c=32.0, door_openings_per_day=6, door_open_mean_s=300),
                seed=43),
        # cold nights (the compressor off for hours) and samples lost on the way while the gateway is up
        Trailer("trailer-c", TrailerParams(ambient_mean_c=12.0, ambient_amplitude_c=8.0, gaps_per_day=4,
                                           gap_mean_s=1800), seed=44),
    ]
    runs = simulate_fleet(trailers, T0, 7 * 86_400, 60)
    sa = runs[2].points["supply_air"]
    assert int((np.diff(sa.t_ns) >= 15 * MIN).sum()) >= 10  # holes a power loss would also leave
    assert sum(e.kind == "defrost" for r in runs for e in r.events) == 3 * 27
    assert sum(e.kind == "door_open" for r in runs for e in r.events) > 40
    platform, alerts = replay(tmp_path, [Gateway(r) for r in runs], 7 * 86_400, tick_s=1800)
    try:
        assert alerts == []
        ticks = T0 + np.arange(1, 7 * 24 * 2 + 1) * 1800 * S  # a trailer is assessed after a tick it sent data in
        sent = sum(int(np.unique(np.searchsorted(ticks, r.points["supply_air"].t_ns)).size) for r in runs)
        assert platform.rules.counters["rules_assessments"] == sent < 3 * 7 * 24 * 2
    finally:
        close(platform)


def test_through_mosquitto_and_influxdb_power_loss_and_a_late_excursion(tmp_path, mosquitto, influxdb, influx_db):
    """The same replay over the real wire: the gateways publish to Mosquitto, a started ingest worker
    subscribes, writes InfluxDB and feeds the rule runner, which reads its samples back from InfluxDB."""
    power = fault("power_loss", 7, 120)
    failure = fault("compressor_failure", 9.5, 80)  # inside the link outage 09:00-11:00
    runs = simulate_fleet([Trailer("trailer-power", TrailerParams(), seed=21, faults=[power]),
                           Trailer("trailer-outage", TrailerParams(), seed=22, faults=[failure])], T0, 14 * 3600, 60)
    gws = [Gateway(r) for r in runs]
    gws[0].down.append((power.start_ns, power.end_ns))
    gws[1].down.append((T0 + 9 * H, T0 + 11 * H))
    (tmp_path / "chilled-2-8.yaml").write_text(PROFILE)
    settings = CloudSettings(database_url=f"sqlite:///{tmp_path / 'registry.sqlite'}", store="influx",
                             influx_url=influxdb.url, influx_bucket=f"{influx_db}/autogen", influx_database=influx_db,
                             mqtt_url=mosquitto.url, ingest_client_id=f"ingest-{uuid.uuid4().hex[:8]}",
                             coldchain_profile=str(tmp_path / "chilled-2-8.yaml"))
    platform = Platform.open(settings)
    rules = RuleRunner(platform, profile=settings.coldchain_profile)
    rules.window_s = WINDOW_S
    seen = {"batches": 0, "statuses": 0}
    lock = threading.Lock()

    def counted(hook, key):
        def call(items):
            hook(items)
            with lock:
                seen[key] += len(items)
        return call

    ingest = Ingest(settings, platform.store, platform.registry, on_written=counted(rules.on_written, "batches"),
                    on_events=rules.on_events, on_status=counted(rules.on_status, "statuses"))
    ingest.start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"gateways-{uuid.uuid4().hex[:8]}")
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        wait_until(ingest.connected.is_set, what="ingest connected")
        sent = {"batches": 0, "statuses": 0}
        prev = T0 - 1
        for t in range(T0 + TICK_S * S, T0 + 14 * H, TICK_S * S):
            for m in (m for gw in gws for m in gw.upload(prev, t)):
                pub.publish(m.topic, m.payload, qos=1).wait_for_publish(10)
                sent["statuses" if "/status" in m.topic else "batches"] += 1
            # At least what was sent: a QoS 1 redelivery (a reconnect on a loaded machine) may hand one over twice.
            wait_until(lambda: all(seen[k] >= n for k, n in sent.items()), timeout=60, interval=0.01,
                       what=f"ingest to deliver {sent}")
            rules.assess_now(now_ns=t)
            prev = t
    finally:
        ingest.stop()
        pub.loop_stop()
        pub.disconnect()
    alerts = alert_rows(platform)
    close(platform)
    assert ingest.counters["dead_letters"] == 0
    assert kinds(alerts, "trailer-power") == ["power_loss"]
    (lost,) = [a for a in alerts if a["asset"] == "trailer-power"]
    assert lost["opened_ns"] == power.end_ns and lost["evidence"]["values"]["gateway_offline"] is True
    assert kinds(alerts, "trailer-outage") == ["compressor_failure", "excursion"]
    for a in (a for a in alerts if a["asset"] == "trailer-outage"):
        assert T0 + 9 * H < a["opened_ns"] < T0 + 11 * H and a["evidence"]["detected_late"] is True


def test_a_fault_in_a_new_trailers_first_readings_is_reported(tmp_path):
    """Episodes starting at the first sample looked at are dropped only where data reaches back further."""
    stuck = Fault(kind="sensor_stuck", point="supply_air", start_ns=T0, end_ns=T0 + 2 * H)
    (run,) = simulate_fleet([Trailer("trailer-new", TrailerParams(), seed=31, faults=[stuck])], T0, 6 * 3600, 60)
    platform, alerts = replay(tmp_path, [Gateway(run)], 6 * 3600)
    close(platform)
    assert [(a["rule"], a["evidence"]["window"]["start_ns"]) for a in alerts] == [
        ("coldchain:sensor-stuck:supply_air", T0)]
