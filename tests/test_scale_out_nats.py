"""Scale-out on a clustered engine (issue 24): three ingest workers on a 3-node NATS JetStream cluster each receive
only their share of a simulated fleet (counted by each worker), lose and duplicate nothing, raise exactly the alerts
one worker raises; then one engine node and one worker are SIGKILLed mid-run and still nothing is lost or doubled.

The fleet behaves as edge agents do: MQTT 3.1.1 QoS 1 to the engine's MQTT front, every batch kept until ingest's
commit for it arrives (sent again otherwise), another node tried when its own is lost."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nats
import paho.mqtt.client as mqtt
import yaml

from cloud.settings import CloudSettings
from models import topics
from models.wire import AlarmEvent, Committed, GatewayStatus, PointSeries, TelemetryBatch, decode, encode
from simulators.rig import MosquittoServer
from simulators.rig.nats import NatsCluster, mapping
from tests.harness.processes import CloudProcess, TwinProcess, wait_until

S = 1_000_000_000
GATEWAYS = [f"gw-{i}" for i in range(48)]
BATCHES = 16  # per gateway, each ten minutes of 6 points of one trailer at one sample per 10 s
POINTS = ("supply_air", "return_air", "setpoint", "door", "compressor_current", "ambient")
EPOCH = "fleet-epoch-1"
RESEND_S = 2.0


def _fleet(t0: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, int, str, bytes]]]:
    """Statuses (asset types) first, then the batches (gateway, seq, topic, payload), gateway-interleaved; gw-1's
    trailer warms to 12 degC for 140 min (over the FSANZ 2-hour rule), gw-4 raises a local alarm (seq 0 of its
    events). Deterministic: every run gets exactly these bytes."""
    first = [(topics.status("acme", g), encode(GatewayStatus(tenant="acme", gateway=g, state="online", t_ns=t0,
                                                                 assets={f"{g}-t0": "refrigerated-trailer"})))
             for g in GATEWAYS]
    batches = []
    for seq in range(BATCHES):
        for g in GATEWAYS:
            t = [t0 + (seq * 600 + i * 10) * S for i in range(60)]
            warm = g == "gw-1" and 2 <= seq < 16
            values = {"supply_air": 12.0 if warm else 4.0, "return_air": 12.5 if warm else 4.5, "setpoint": 4.0,
                      "door": 0.0, "compressor_current": 12.0, "ambient": 20.0}
            series = [PointSeries(asset=f"{g}-t0", point=p, t_ns=t, values=[values[p] + 0.001 * i for i in range(60)],
                                  quality=[0] * 60) for p in POINTS]
            b = TelemetryBatch(tenant="acme", gateway=g, epoch=EPOCH, seq=seq, series=series)
            batches.append((g, seq, topics.telemetry("acme", g), encode(b, compress=True)))
    alarm = AlarmEvent(tenant="acme", gateway="gw-4", epoch=EPOCH, seq=0, event_id="gw-4:gw-4-t0:door-open-long:1",
                       asset="gw-4-t0", rule="door-open-long", severity="medium", start_ns=t0,
                       evidence={"point": "door", "value": 1.0})
    batches.append(("gw-4", -1, topics.events("acme", "gw-4"), encode(alarm)))
    return first, batches


class Fleet:
    """Gateways on the engine's MQTT front (one client per node, gateways spread over them) that keep what is not
    committed and send it again, and reconnect to the next node when theirs is gone."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.pending: dict[tuple[str, int], tuple[str, bytes, float]] = {}
        self.lock = threading.Lock()
        self.resent = 0
        self.commits = 0
        self.clients = [self._connect(i) for i in range(len(urls))]

    def _connect(self, i: int, node: int | None = None) -> mqtt.Client:
        """Client ``i`` (its gateways' commits subscribed) on node ``node`` or, when that is gone, the next one."""
        for k in range(len(self.urls)):
            host, port = self.urls[((i if node is None else node) + k) % len(self.urls)].removeprefix("mqtt://").split(":")
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fleet-{i}-{uuid.uuid4().hex[:6]}",
                            protocol=mqtt.MQTTv311, clean_session=True)
            c.on_message = self._on_commit
            try:
                c.connect(host, int(port), keepalive=5)
            except OSError:
                continue
            subscribed = threading.Event()
            c.on_subscribe = lambda *_, ev=subscribed: ev.set()
            c.loop_start()
            c.subscribe([(f"twin/v1/acme/{g}/committed", 0) for g in GATEWAYS[i % len(self.urls)::len(self.urls)]])
            if not subscribed.wait(10):  # commits must not be published before anyone listens
                raise AssertionError(f"no SUBACK from {host}:{port}")
            return c
        raise AssertionError("no engine node accepts MQTT")

    def _on_commit(self, client, userdata, msg) -> None:
        gw = topics.parse(msg.topic).gateway
        done = decode(msg.payload, Committed)
        self.commits += 1
        with self.lock:
            for seq in done.telemetry:
                self.pending.pop((gw, seq), None)
            for _ in done.events:
                self.pending.pop((gw, -1), None)

    def _client(self, gateway: str) -> mqtt.Client:
        i = GATEWAYS.index(gateway) % len(self.clients)
        if not self.clients[i].is_connected():
            self.clients[i].loop_stop()
            self.clients[i] = self._connect(i, i + 1)  # its node is gone: another one
        return self.clients[i]

    def send(self, gateway: str, topic: str, payload: bytes, key: tuple[str, int] | None = None,
             again: bool = False) -> None:
        if key is not None:
            with self.lock:
                if again and key not in self.pending:
                    return  # committed meanwhile
                self.pending[key] = (topic, payload, time.monotonic())
        with contextlib.suppress(RuntimeError, ValueError, AssertionError):  # not accepted: pending, sent again
            self._client(gateway).publish(topic, payload, qos=1).wait_for_publish(5)

    def resend_due(self) -> int:
        now = time.monotonic()
        with self.lock:
            due = [(k, v) for k, v in self.pending.items() if now - v[2] > RESEND_S]
        for (gw, seq), (topic, payload, _) in due:
            self.resent += 1
            self.send(gw, topic, payload, (gw, seq), again=True)
        with self.lock:
            return len(self.pending)

    def close(self) -> None:
        for c in self.clients:
            c.disconnect()
            c.loop_stop()


def _wait_committed(fleet):
    """Every batch committed. After the kills a free partition is taken over when its lease (TTL) runs out; on a
    machine loaded by other tests that took over 30 s once, so this waits up to 90."""
    try:
        wait_until(lambda: fleet.resend_due() == 0, timeout=90, interval=0.2, what="committed")
    except AssertionError:
        raise AssertionError(f"commits {fleet.commits} resent {fleet.resent} pending {sorted(fleet.pending)[:20]} "
                             f"{len(fleet.pending)} connected {[c.is_connected() for c in fleet.clients]}") from None


def _stored(influxdb, db: str) -> dict:
    res = influxdb.query("SELECT count(value), sum(value) FROM telemetry GROUP BY asset", db=db)
    return {s["tags"]["asset"]: (s["values"][0][1], round(s["values"][0][2], 6))
            for s in res["results"][0].get("series", [])}


def _counters(p: TwinProcess) -> dict:
    lines = [json.loads(ln) for ln in p.log().splitlines() if ln.startswith("{")]
    last = [ln for ln in lines if ln["msg"].startswith("ingest counters")]
    return json.loads(last[-1]["msg"].removeprefix("ingest counters ")) if last else {}


def _run(tmp_path, name: str, workers: int, influxdb, postgres, t0: int, chaos: bool = False) -> dict:
    cluster = NatsCluster(3, partitions=12)
    cluster.start()
    db = f"son_{name}_{uuid.uuid4().hex[:6]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    work = tmp_path / name
    work.mkdir()
    env = {"TWIN_RULES_INTERVAL_S": "1", "TWIN_COLDCHAIN_PROFILE": "fsanz-2h-4h", "TWIN_MQTT_VERSION": "3.1.1"}
    api = CloudProcess(work, cluster.mqtt_urls[0], postgres.url_for(db), influxdb.url, db, workers=0, extra_env=env)
    procs = [TwinProcess(["cloud", "ingest"], work / f"ingest-{k}.log", {
        **api.env, "TWIN_INGEST_ENGINE": "nats", "TWIN_NATS_URL": cluster.url, "TWIN_INGEST_LEASE_TTL_S": "3",
        "TWIN_INGEST_COUNTERS_INTERVAL_S": "0.5", "TWIN_INGEST_PARTITION": str(k),
        "TWIN_INGEST_PARTITIONS": str(workers), "TWIN_INGEST_CLIENT_ID": f"ingest-{k}"}) for k in range(workers)]
    fleet = None
    out: dict = {}
    try:
        api.start()
        for p in procs:
            p.start()
        share = 12 // workers
        wait_until(lambda: all(_counters(p).get("ingest_partitions_held") == share for p in procs), timeout=60,
                   what=f"each worker holding {share} of the 12 partitions")
        first, batches = _fleet(t0)
        fleet = Fleet(cluster.mqtt_urls)
        for topic, payload in first:
            fleet.send(topics.parse(topic).gateway, topic, payload)
        half = len(batches) // 2
        for gw, seq, topic, payload in batches[:half]:
            fleet.send(gw, topic, payload, (gw, seq))
        _wait_committed(fleet)
        time.sleep(1.2)  # two counter lines: the acknowledged messages are counted in the last one
        out["shares"] = [_counters(p)["ingest_messages"] - _counters(p)["ingest_duplicates"] for p in procs]
        for i, (gw, seq, topic, payload) in enumerate(batches[half:]):
            if chaos and i == (len(batches) - half) // 3:
                cluster.nodes[2].kill()
                procs[1].stop(signal.SIGKILL)
            fleet.send(gw, topic, payload, (gw, seq))
        _wait_committed(fleet)
        out["resent"] = fleet.resent
        api.wait_ready()
        with api.client() as c:
            def alerts():
                items = c.get("/api/v1/alerts", params={"limit": 1000}).json()["items"]
                return sorted((a["asset"], a["rule"]) for a in items)
            wait_until(lambda: ("gw-4-t0", "door-open-long") in alerts() and any(
                a == "gw-1-t0" and r.startswith("coldchain:") for a, r in alerts()), timeout=60, what="the alerts")
            time.sleep(1)  # a late duplicate or a late alert would show now
            out["alerts"], out["stored"] = alerts(), _stored(influxdb, db)
        return out
    finally:
        if fleet is not None:
            fleet.close()
        for p in procs:  # all told at once, then each awaited
            if p.alive:
                p.proc.send_signal(signal.SIGTERM)
        for p in procs:
            p.stop()
        api.stop()
        cluster.close()
        influxdb.drop_database(db)
        postgres.drop_database(db)


def test_three_workers_on_a_nats_cluster_share_the_fleet_and_survive_a_node_and_a_worker_killed(
        tmp_path, influxdb, postgres):
    t0 = (time.time_ns() // S - 6 * 3600) * S
    with ThreadPoolExecutor(2) as pool:  # the two runs side by side: each on its own cluster, API and databases
        one_run = pool.submit(_run, tmp_path, "one", 1, influxdb, postgres, t0)
        three = _run(tmp_path, "three", 3, influxdb, postgres, t0, chaos=True)
        one = one_run.result()
    per_asset = {f"{g}-t0": 6 * BATCHES * 60 for g in GATEWAYS}
    assert {a: c for a, (c, _) in one["stored"].items()} == per_asset  # every sample once
    assert three["stored"] == one["stored"]  # every sample exactly once, same checksums, despite the kills
    assert ("gw-4-t0", "door-open-long") in one["alerts"]
    assert three["alerts"] == one["alerts"]  # the same alerts, none twice
    # The first half (48 statuses, 384 batches) went to the three workers in shares of about a third each, and
    # nothing to two of them: each receives only its partitions, not the whole stream.
    total = len(GATEWAYS) + BATCHES * len(GATEWAYS) // 2
    assert sum(three["shares"]) == total, three["shares"]
    assert all(0.2 * total <= n <= 0.47 * total for n in three["shares"]), three["shares"]
    assert one["shares"] == [total]


def test_the_shipped_engine_config_partitions_as_the_rig_and_the_compose_workers_use_it():
    """deploy/nats/nats.conf maps gateways to partitions exactly as the cluster this test ran (the rig's lines), with
    the count the workers assume by default; the compose stack's ingest workers consume from its three nodes."""
    deploy = Path(__file__).resolve().parents[1] / "deploy"
    conf = (deploy / "nats" / "nats.conf").read_text()
    assert mapping(CloudSettings.model_fields["ingest_nats_partitions"].default) in conf
    assert "server_name:" in conf and "jetstream" in conf and "mqtt {" in conf
    services = yaml.safe_load((deploy / "compose.yaml").read_text())["services"]
    workers = {n: s for n, s in services.items() if s.get("command") == ["cloud", "ingest"]}
    nodes = {n for n in services if n.startswith("nats-")}
    assert len(workers) == 3 and len(nodes) == 3
    for s in workers.values():
        env = s["environment"]
        assert env["TWIN_INGEST_ENGINE"] == "nats"
        assert {u.removeprefix("nats://").split(":")[0] for u in env["TWIN_NATS_URL"].split(",")} == nodes
        assert nodes <= set(s["depends_on"])
    bridge = (deploy / "mosquitto" / "bridge-nats.conf").read_text()
    assert all(f"topic twin/v1/+/+/{k} out 1" in bridge for k in ("telemetry", "events", "status"))
    assert "topic twin/v1/+/+/committed in" in bridge


def test_the_shipped_mosquitto_bridge_hands_the_ingest_kinds_to_the_engine_and_commits_back():
    """The compose stack's path, on the real servers: a gateway publishes on Mosquitto, the shipped bridge
    (deploy/mosquitto/bridge-nats.conf, only the node addresses templated) puts it on its partition's subject in
    NATS; a commit published on NATS reaches the gateway's subscription on Mosquitto; other kinds stay home."""
    bridge = (Path(__file__).resolve().parents[1] / "deploy" / "mosquitto" / "bridge-nats.conf").read_text()
    with NatsCluster(1, partitions=12) as cluster:
        node = cluster.nodes[0]
        lines = bridge.replace("address nats-1:1883 nats-2:1883 nats-3:1883",
                               f"address {node.host}:{node.mqtt_port}").splitlines()
        broker = MosquittoServer(extra_config=lines)
        broker.start()
        got: list[str] = []

        async def engine_side() -> list[str]:
            nc = await nats.connect(node.url)
            sub = await nc.subscribe("twin.>")
            await nc.flush()
            gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-bridge", protocol=mqtt.MQTTv311)
            gw.on_message = lambda c, u, m: got.append(m.topic)
            gw.connect(broker.host, broker.port)
            gw.loop_start()
            gw.subscribe(topics.committed("acme", "gw-1"), 1)
            deadline = time.monotonic() + 20
            seen: list[str] = []
            while "twin.in.3.acme.gw-1.telemetry" not in seen and time.monotonic() < deadline:  # the bridge is up
                gw.publish(topics.config_reported("acme", "gw-1"), b"{}", qos=1)
                gw.publish(topics.telemetry("acme", "gw-1"), b"batch", qos=1)
                with contextlib.suppress(nats.errors.TimeoutError):
                    while True:
                        seen.append((await sub.next_msg(0.5)).subject)
            while not got and time.monotonic() < deadline:
                await nc.publish("twin.v1.acme.gw-1.committed", b"commit")
                await nc.flush()
                await asyncio.sleep(0.3)
            gw.disconnect()
            gw.loop_stop()
            await nc.close()
            return seen

        try:
            seen = asyncio.run(engine_side())
        finally:
            broker.close()
    assert "twin.in.3.acme.gw-1.telemetry" in seen  # partition(12, acme, gw-1) = 3 on every node
    assert not any("config" in s for s in seen)  # what the engine does not own stays on Mosquitto
    assert got and set(got) == {topics.committed("acme", "gw-1")}
