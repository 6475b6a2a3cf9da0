"""The demo's tour: a week of history per asset in seconds, then a scripted story on a compressed clock.

Everything goes through the real ingest path: the tour is one more gateway (``gw-demo-tour``) that publishes
``TelemetryBatch`` messages with past timestamps through the broker to the running cloud, and a status naming
its assets and their types, as an edge agent does. The cloud's rules, RUL model and what-if twin then see
what they would see from the field.

The clock: history ends ``lag_s`` before the tour starts; from there the tour's time runs ``speed`` times faster
than the wall clock until it catches up with it, then in real time. Nothing is ever stamped in the future
(the cloud dead-letters that), and the trailer's failure falls within the last ``lag_s`` of data, where the
predictive cold-chain rule still believes the data current (``late_after_s``, 10 min).

The story (times after the tour's start, in simulated time):
- ``trailer-101`` (a hot day, a shipment of two lots in custody under ``fda-cold-holding``, > 5 °C): its
  compressor fails at 30 s; ~8.5 min in, warm past the rule's 5 min confirmation, the clock holds until the
  cloud has predicted the excursion (``play``'s ``hold``); at ~10-11 min the supply air passes 5 °C, the
  excursion alert quarantines both lots (and resolves the prediction);
- ``pump-001``: the bearing wears along an exponential trend through the week, RMS velocity passing ISO
  20816-3 zone B/C (2.8 mm/s, group 2, rigid) half a day before the tour (the cloud's 30-day trend fit lags a
  crossing by about a day, so a crossing within the tour's minutes would not show);
- ``engine-FD001-test-0NN``: C-MAPSS test engines (when the data set is there), cycles every 30 min through
  the week and every 30 s in the tour, each complete cycle estimated by the RUL model trained at start;
- ``vessel-001`` on its voyages and ``person-001`` (type 1 diabetes, their clinic's consent granted), beside.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("twin.tour")

_NS = 1_000_000_000
_DAY = 86_400 * _NS
TENANT = "demo"
GATEWAY = "gw-demo-tour"
TRAILER = "trailer-101"
PUMP = "pump-001"
SHIPMENT = "SHP-1001"
LOTS = ("LOT-VAX-0001", "LOT-VAX-0002")
PROFILE = "fda-cold-holding"
VESSEL = "vessel-001"
ENGINE_UNITS = (31, 34, 35)  # FD001 test engines with the most cycles observed: a short remaining life
FAULT_S = 30.0
PUMP_CROSS_S = -12 * 3600.0  # zone C half a day before the tour: the 30-day trend fit is then clearly in C

Triple = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class Story:
    """What the tour publishes: {(asset, point): (t_ns, values, quality)} over history and tour, the types."""

    start_ns: int  # the tour's first simulated instant: history is everything before it
    hold_s: float = 600.0  # where the clock waits for the predictive alert (seconds into the tour)
    series: dict[tuple[str, str], Triple] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def add(self, asset: str, typ: str, series: dict[str, Triple]) -> None:
        self.types[asset] = typ
        for point, s in series.items():
            self.series[(asset, point)] = s


def _trailers(story: Story, plain: list[str], now_ns: int, end_ns: int) -> None:
    from simulators.trailer import Fault, Trailer, TrailerParams, simulate_fleet

    t0 = story.start_ns - 7 * _DAY
    fault_ns = story.start_ns + int(FAULT_S * _NS)
    # A hot day and a light box: warming ~0.2 K/min once the compressor stops, so the story fits in minutes.
    hot = TrailerParams(setpoint_c=2.0, defrost_interval_s=0, ambient_mean_c=30.0, ambient_amplitude_c=2.0,
                        air_heat_capacity_j_per_k=1.2e6, cooling_capacity_w=20_000.0, cargo_air_w_per_k=150.0)
    failing = Trailer(TRAILER, hot, seed=3, faults=[Fault(kind="compressor_failure", start_ns=fault_ns,
                                                          end_ns=fault_ns + 30 * _DAY)])
    run = simulate_fleet([failing], t0, (end_ns - t0) / _NS, 10.0)[0]
    story.add(TRAILER, "refrigerated-trailer", _thin(run.points, story.start_ns - _DAY))
    # The hold: once the supply air has stayed above setpoint + 1.2 K (the rule's margin) with the compressor off
    # for the rule's 5 min confirmation (330 s, some margin), and before the air comes within 0.5 K of the
    # profile's 5 °C — 6.5 min after it warmed at the latest. Where the air was in its thermostat cycle at the
    # failure moves all of this by minutes: a fixed 6.5 min once held the clock with the air already at 5 °C,
    # when a prediction can no longer come.
    t, v = run.points["supply_air"].t_ns, run.points["supply_air"].values
    after = t >= fault_ns
    cold = np.flatnonzero(after & ~(v > 2.0 + 1.3))
    warm_ns = int(t[cold[-1] + 1]) if cold.size and cold[-1] + 1 < t.size else fault_ns
    near = np.flatnonzero(after & (v >= 5.0 - 0.5))
    near_ns = int(t[near[0]]) if near.size else warm_ns + 390 * _NS
    hold_ns = max(warm_ns + 330 * _NS, min(warm_ns + 390 * _NS, near_ns))
    story.hold_s = (hold_ns - story.start_ns) / _NS
    # The live trailers' week, up to now: the live simulator goes on from there through the edge agent.
    runs = simulate_fleet([Trailer(a, TrailerParams(setpoint_c=4.0), seed=100 * i) for i, a in enumerate(plain)],
                          now_ns - 7 * _DAY, 7 * 86_400.0 - 5.0, 10.0)
    for r in runs:
        story.add(r.asset_id, "refrigerated-trailer", _thin(r.points, now_ns - _DAY))


def _thin(points: dict, from_ns: int) -> dict[str, Triple]:
    """Every 10 s sample from ``from_ns`` on, one a minute before: a sixth of the week to ingest, and the last day
    at the rate the thermal twin needs (fitted on 1-min samples its evaporator lag, ~2 min, is not identifiable:
    the what-if then answers 422)."""
    out = {}
    for p, s in points.items():
        keep = (s.t_ns >= from_ns) | (np.arange(s.t_ns.size) % 6 == 0)
        out[p] = (s.t_ns[keep], s.values[keep], s.quality[keep])
    return out


def _pump(story: Story, end_ns: int, seed: int = 7) -> None:
    """RMS velocity 1.1 + 1.7·exp((t - cross)/2 days) mm/s: zone A a week ago, B for days, C since half a day."""
    rng = np.random.default_rng(seed)
    cross = story.start_ns + int(PUMP_CROSS_S * _NS)
    t = np.concatenate([np.arange(story.start_ns - 7 * _DAY, story.start_ns, 600 * _NS),
                        np.arange(story.start_ns, end_ns, 20 * _NS)]).astype(np.int64)
    days = (t - cross) / (2 * _DAY)
    wear = 1.7 * np.exp(days)
    vib = 1.1 + wear + rng.normal(0, 0.03, t.size)
    temp = 55 + 6 * wear / 1.7 + rng.normal(0, 0.1, t.size)
    current = 24 + 0.5 * wear / 1.7 + rng.normal(0, 0.15, t.size)
    speed = 1755 + rng.normal(0, 0.5, t.size)
    q = np.zeros(t.size, np.int8)
    story.add(PUMP, "rotating-machine", {
        "vib_velocity_rms": (t, vib.round(3), q), "bearing_temp": (t, temp.round(1), q),
        "motor_current": (t, current.round(2), q), "speed": (t, speed.round(1), q)})


def _engines(story: Story, data: Path) -> list[str]:
    """Test engines: their cycles every 30 min through the week, the last 20 every 30 s in the tour."""
    from simulators.turbofan import POINTS, load_engines

    if not (data / "test_FD001.txt").is_file():
        return []
    engines = [e for e in load_engines(data, "FD001", "test") if e.unit in ENGINE_UNITS]
    for e in engines:
        n = len(e.cycles)
        k = np.arange(n)
        t = np.where(k < n - 20, story.start_ns - (n - 20 - k) * 1800 * _NS,
                     story.start_ns + (k - (n - 20) + 1) * 30 * _NS).astype(np.int64)
        q = np.zeros(n, np.int8)
        story.add(e.asset_id, "turbofan", {p: (t, e.values[:, j], q) for j, p in enumerate(POINTS)})
    return [e.asset_id for e in engines]


def _vessel_and_person(story: Story, end_ns: int) -> None:
    """A ship on its voyages (5-min samples) and a person with type 1 diabetes (CGM every 5 min), over the week
    and the tour's hour."""
    from simulators.person import series as person_series
    from simulators.person import simulate_people
    from simulators.vessel import Vessel

    t0 = story.start_ns - 7 * _DAY
    run = Vessel(VESSEL, seed=2).simulate(t0, (end_ns - t0) / _NS, 300.0)
    story.add(VESSEL, "vessel", dict(run.points))
    people = simulate_people(1, days=8, seed=11, start_ns=t0 // (300 * _NS) * 300 * _NS, prefix="person")
    for (subject, point), (t, v, q) in person_series(people).items():
        keep = t < end_ns
        story.add(subject, "person", {point: (t[keep], v[keep], q[keep])})


def build_story(now_ns: int, plain_trailers: list[str], cmapss: Path, lag_s: float, run_s: float = 3600.0) -> Story:
    story = Story(start_ns=now_ns - int(lag_s * _NS))
    end_ns = now_ns + int(run_s * _NS)
    _trailers(story, plain_trailers, now_ns, end_ns)
    _pump(story, end_ns)
    _engines(story, cmapss)
    _vessel_and_person(story, end_ns)
    return story


EXCERPT = Path(__file__).parent / "data" / "cmapss"


def cmapss_for_demo(shared: Path, out: Path) -> Path:
    """Where the tour reads C-MAPSS FD001: the shared data sets when they are there, else the excerpt shipped in
    ``twin/data/cmapss`` (the 30 train engines the demo's model learns from, its three test engines and the RUL
    file; see its README), unpacked once into ``out``. A fresh clone then shows the RUL step too."""
    import gzip

    if (shared / "test_FD001.txt").is_file() and (shared / "train_FD001.txt").is_file():
        return shared
    out.mkdir(parents=True, exist_ok=True)
    for src in EXCERPT.iterdir():
        dest = out / src.name.removesuffix(".gz")
        if src.suffix in (".gz", ".txt") and not dest.is_file():
            data = gzip.decompress(src.read_bytes()) if src.suffix == ".gz" else src.read_bytes()
            tmp = dest.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(dest)  # whole or not at all: a demo stopped mid-way unpacks again
    return out


def train_rul(cmapss: Path, out: Path) -> Path | None:
    """A small FD001 model (30 engines, 60 iterations: seconds, not the tuned minutes), cached in ``out``."""
    from cloud.pdm.data import dataset_files, file_sha256, load_trajectories
    from cloud.pdm.model import RulModel, RulParams
    from cloud.pdm.registry import ModelRegistry

    files = dataset_files(cmapss, "FD001")
    if not files["train"].is_file():
        return None
    reg = ModelRegistry(out)
    if reg.versions("FD001"):
        return out
    traj = load_trajectories(files["train"])
    model = RulModel(RulParams(n_folds=2, max_iter=60)).fit(traj.subset(traj.units[:30]), jobs=1)
    reg.register("FD001", model, metrics={"demo": True}, data_sha256=file_sha256(files["train"]),
                 data_file=files["train"].name)
    return out


class Wire:
    """The tour's gateway on the broker: telemetry batches (compressed, gap-free seq) and an online status.

    Paced as a gateway's uplink is: at most ``window`` batches the cloud has not yet committed (its ``committed``
    topic). A broker's PUBACK only says the broker has the batch; without the pace a week of history outran the
    ingest subscriber and the embedded broker (amqtt waits 5 s for the subscriber's PUBACK) dropped batches."""

    window = 3

    def __init__(self, broker_url: str, mqtt_version: str) -> None:
        import paho.mqtt.client as mqtt

        from models import topics
        from simulators.devices import parse_broker_url

        host, port, user, password = parse_broker_url(broker_url)
        proto = mqtt.MQTTv311 if mqtt_version == "3.1.1" else mqtt.MQTTv5
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"demo-tour-{uuid.uuid4().hex[:6]}",
                                  protocol=proto)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.epoch = uuid.uuid4().hex[:12]
        self.seq = 0
        self._done: set[int] = set()
        self._upto = -1  # every seq up to this one is committed
        self._cv = threading.Condition()
        committed = topics.committed(TENANT, GATEWAY)
        self.client.on_message = self._on_committed
        self.client.on_connect = lambda c, *_: c.subscribe(committed, qos=1)
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_committed(self, _client, _userdata, msg) -> None:
        from models.wire import Committed, WireError, decode

        try:
            done = decode(msg.payload, Committed)
        except WireError:
            return
        if done.epoch != self.epoch:
            return
        with self._cv:
            self._done.update(done.telemetry)
            while self._upto + 1 in self._done:
                self._upto += 1
                self._done.discard(self._upto)
            self._cv.notify_all()

    def drain(self, timeout_s: float = 120.0) -> bool:
        """Wait until the cloud has committed every batch sent (False: not within the timeout)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._upto >= self.seq - 1, timeout_s)

    def status(self, types: dict[str, str]) -> None:
        from models import topics
        from models.wire import GatewayStatus, encode

        msg = GatewayStatus(tenant=TENANT, gateway=GATEWAY, state="online", t_ns=time.time_ns(), assets=types)
        self.client.publish(topics.status(TENANT, GATEWAY), encode(msg), qos=1, retain=True).wait_for_publish(30)

    def send(self, series: dict[tuple[str, str], Triple], lo_ns: int, hi_ns: int, max_samples: int = 10_000) -> int:
        """Publish every sample with lo_ns <= t < hi_ns, in batches of at most ``max_samples``."""
        from models import topics
        from models.wire import PointSeries, TelemetryBatch, encode

        parts: list[PointSeries] = []
        n = total = 0
        for (asset, point), (t, v, q) in series.items():
            a, b = np.searchsorted(t, [lo_ns, hi_ns])
            for i in range(a, b, max_samples):
                j = min(b, i + max_samples)
                vals = [None if x != x else float(x) for x in v[i:j].tolist()]
                parts.append(PointSeries(asset=asset, point=point, t_ns=t[i:j].tolist(), values=vals,
                                         quality=q[i:j].astype(int).tolist()))
                n += j - i
                if n >= max_samples:
                    self._batch(parts, topics, TelemetryBatch, encode)
                    total, n, parts = total + n, 0, []
        if parts:
            self._batch(parts, topics, TelemetryBatch, encode)
            total += n
        return total

    def _batch(self, parts, topics, batch_cls, encode) -> None:
        with self._cv:  # the pace: a slow ingest holds the tour back instead of losing its batches
            if not self._cv.wait_for(lambda: self.seq - self._upto <= self.window, 60.0):
                log.warning("tour: the cloud committed nothing for 60 s; sending batch %d anyway", self.seq)
        msg = batch_cls(tenant=TENANT, gateway=GATEWAY, epoch=self.epoch, seq=self.seq, sent_ns=time.time_ns(),
                        series=parts)
        self.seq += 1
        self.client.publish(topics.telemetry(TENANT, GATEWAY), encode(msg, compress=True), qos=1).wait_for_publish(60)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def play(wire: Wire, story: Story, *, speed: float, stop: threading.Event,
         hold: tuple[float, Callable[[], bool], float] | None = None, step_s: float = 0.5) -> None:
    """Publish the story from its start on the compressed clock until its data ends (or ``stop``).

    ``hold = (at_s, done, timeout_s)``: the clock stops ``at_s`` into the tour until ``done()`` (or the timeout),
    so a moment the rules must see (the trailer warming before its excursion) is not run past between two of
    their cycles, however busy the machine."""
    w0 = time.time_ns()
    sent = story.start_ns
    last = max(int(t[-1]) for t, _, _ in story.series.values())
    held = 0
    while not stop.is_set() and sent <= last:
        now = time.time_ns()
        clock = min(story.start_ns + int(speed * (now - w0 - held)), now)
        if hold is not None and clock >= story.start_ns + int(hold[0] * _NS):
            clock = story.start_ns + int(hold[0] * _NS)
            if clock > sent:
                wire.send(story.series, sent, clock)
                sent = clock
            t = time.monotonic()
            while not stop.is_set() and time.monotonic() - t < hold[2] and not hold[1]():
                stop.wait(1.0)
            held += int((time.monotonic() - t) * _NS)
            hold = None
            continue
        if clock > sent:
            wire.send(story.series, sent, clock)
            sent = clock
        stop.wait(step_s)


def predicted(url: str, key: str) -> Callable[[], bool]:
    """Whether the cloud has raised the trailer's predictive alert (open or already resolved)."""
    import httpx

    def done() -> bool:
        try:
            r = httpx.get(f"{url}/api/v1/alerts", params={"asset": TRAILER},
                          headers={"Authorization": f"Bearer {key}"}, timeout=10)
            return any(a["title"].startswith("excursion expected") for a in r.json().get("items", []))
        except (httpx.HTTPError, ValueError, KeyError):
            return False
    return done


def setup_shipment(url: str, key: str, start_ns: int, people: list[str] = ()) -> None:
    """A shipment of two vaccine lots on ``trailer-101`` since a day before the tour, judged by FDA cold holding."""
    import httpx

    with httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        if c.get(f"/shipments/{SHIPMENT}").status_code == 200:
            return
        end = time.monotonic() + 60  # the cloud registers the assets from the tour gateway's status or batches
        for asset in (TRAILER, *people):
            while c.get(f"/assets/{asset}").status_code != 200 and time.monotonic() < end:
                time.sleep(0.2)
        for site, name in (("dc-rotterdam", "Rotterdam distribution centre"), ("clinic-utrecht", "Utrecht clinic")):
            r = c.post("/sites", json={"id": site, "name": name})
            if r.status_code != 409:
                _ok(r)
        _ok(c.post("/shipments", json={"id": SHIPMENT, "profile": PROFILE, "origin_site": "dc-rotterdam",
                                       "destination_site": "clinic-utrecht", "reference": "demo tour"}))
        _ok(c.post(f"/shipments/{SHIPMENT}/custody", json={"asset": TRAILER, "from": start_ns - _DAY}))
        for lot in LOTS:
            _ok(c.post(f"/shipments/{SHIPMENT}/batches", json={"lot": lot, "product": "measles vaccine, 10-dose vials",
                                                               "quantity": 400, "unit": "vials"}))
        for subject in people:  # their clinic may read them (a person's values are read only through consent)
            _ok(c.post(f"/people/{subject}/consents", json={"grantee": "clinic", "points": ["*"]}))


def _ok(r) -> None:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")


MILESTONES = ("predicted", "excursion", "quarantined", "zone C", "RUL", "what-if")


def watch(url: str, key: str, engines: list[str], stop: threading.Event, say: Callable[[str], None],
          poll_s: float = 2.0) -> None:
    """Tell the visitor each step of the story as the cloud shows it (read back from the public API)."""
    import httpx

    seen: set[str] = set()

    def once(name: str, ok: bool, text: str) -> None:
        if ok and name not in seen:
            seen.add(name)
            say(f"tour: {text}")

    with httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=10) as c:
        while not stop.is_set() and len(seen) < len(MILESTONES) - (not engines):
            try:
                # Every state: the prediction is resolved by the excursion a few seconds later at --speed 20,
                # which a poll behind a slow what-if could miss; an excursion counts while it is active.
                alerts = c.get("/alerts", params={"asset": TRAILER}).json().get("items", [])
                for a in alerts:
                    pred = "predict" in a["rule"] or "expected" in a["title"].lower()
                    once("predicted" if pred else "excursion", pred or a["state"] != "resolved",
                         f"{'predictive alert' if pred else 'alert'} on {TRAILER}: {a['title']}  (#/alerts/{a['id']})")
                if "quarantined" not in seen:
                    lots = [c.get(f"/batches/{lot}").json().get("state") for lot in LOTS]
                    once("quarantined", "quarantined" in lots, f"lots {', '.join(LOTS)} of {SHIPMENT} quarantined "
                         f"(#/shipments/{SHIPMENT})")
                if "zone C" not in seen:
                    z = c.get(f"/assets/{PUMP}/zone")
                    zone = z.json().get("zone") if z.status_code == 200 else None
                    once("zone C", zone in ("C", "D"), f"{PUMP} in zone {zone}: its bearing wears (#/asset/{PUMP})")
                for e in engines if "RUL" not in seen else ():
                    r = c.get(f"/twins/{e}")
                    rul = (r.json().get("model") or {}).get("rul") if r.status_code == 200 else None
                    once("RUL", bool(rul), f"{e}: {rul and round(rul['estimate'])} cycles of life left "
                         f"(#/asset/{e})")
                if "what-if" not in seen:
                    r = c.post("/assets/trailer-001/simulate", json={"horizon_h": 6, "compressor_off": True})
                    once("what-if", r.status_code == 200, "the what-if answers (#/asset/trailer-001)")
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                log.debug("tour watch: %s", exc)
            stop.wait(poll_s)
