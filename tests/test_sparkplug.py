"""Sparkplug B 3.0 both ways, against the real Mosquitto and an independent implementation (pysparkplug, PyPI).

One gateway (``twin edge run``) is both: a host application reading group ``plant`` (a pysparkplug edge node feeds
it, and its data reaches ``twin cloud run``), and an edge node in group ``twin`` publishing what it reads, which a
pysparkplug host client decodes. Each test names the requirements of the Sparkplug 3.0 specification it checks.
The host's own state machine (births, aliases, seq, deaths, STATE) is checked in-process beside them.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
import warnings

import orjson
import paho.mqtt.client as mqtt
import pytest

from edge.config import ConfigError, SparkplugSource, parse_config
from edge.sources.sparkplug import SparkplugHost
from models import sparkplug as spb
from models.wire import Quality
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import pysparkplug as psp

# pysparkplug 0.6.1 pins paho-mqtt < 2 (installed with --no-deps, see the Makefile) and calls one setter paho 2
# removed, message_retry_set, which paho 1.6 had already made a no-op ("no longer used"). Everything else it uses
# is paho 2's version-1 callback API, unchanged; the bytes on the wire are pysparkplug's own.
if not hasattr(mqtt.Client, "message_retry_set"):
    mqtt.Client.message_retry_set = lambda self, retry: None

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
POINTS = ("supply_air", "return_air")


def _psp_client() -> psp.Client:
    with warnings.catch_warnings():  # pysparkplug drives paho through its version-1 callback API
        warnings.simplefilter("ignore", DeprecationWarning)
        return psp.Client(client_id=f"psp-{uuid.uuid4().hex[:8]}")


def _metric(name: str, value: float, t_ms: int, historical: bool = False) -> psp.Metric:
    return psp.Metric(timestamp=t_ms, name=name, datatype=psp.DataType.DOUBLE, value=value, is_historical=historical)


class Recorder:
    """Every Sparkplug message of group ``twin`` as the independent host client decodes it."""

    def __init__(self, mosquitto) -> None:
        self.messages: list[psp.Message] = []
        self.client = _psp_client()
        self.client.subscribe(psp.Topic.from_str("spBv1.0/twin/#"), psp.QoS.AT_LEAST_ONCE,
                              lambda _c, m: self.messages.append(m))
        self.client.connect(mosquitto.host, port=mosquitto.port)

    def of(self, kind: str) -> list[psp.Message]:
        return [m for m in list(self.messages) if str(m.topic.message_type) == kind]


@pytest.fixture(scope="module")
def platform(tmp_path_factory, mosquitto, influxdb, postgres):
    work = tmp_path_factory.mktemp("spb")
    db = f"spb_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    cloud = CloudProcess(work, mosquitto.url, postgres.url_for(db), influxdb.url, db)
    cloud.start()
    recorder = Recorder(mosquitto)
    cfg = gateway_config(work / "edge", mosquitto.url, mosquitto.url, gateway="gw-spb", assets=["trailer-001"])
    cfg["sources"] = [{"type": "sparkplug", "name": "plant", "link": {"url": mosquitto.url}, "host_id": "twin-host",
                       "group": "+", "rebirth_interval_s": 0.5,  # "+": its own edge node's group too
                       "rules": [{"device": "trailer-*", "asset": "{device}", "point": "{metric}"}]}]
    cfg["sparkplug"] = {"link": {"url": mosquitto.url}, "group": "twin"}
    edge = EdgeProcess(work / "edge", cfg)
    cloud.wait_ready()
    edge.start()
    edge.wait_log("source plant: connected")
    # the host's STATE follows its subscriptions on the same connection: once it is there, nothing is missed
    wait_until(lambda: _state_seen(mosquitto, "twin-host"), what="the host online")
    edge.wait_log("sparkplug edge node twin/gw-spb: born")
    yield cloud, edge, recorder
    recorder.client.disconnect()
    edge.stop()
    cloud.stop()
    influxdb.drop_database(db)
    postgres.drop_database(db)


def _telemetry(api, point: str) -> tuple[list[int], list[float | None]]:
    r = api.get("/api/v1/assets/trailer-001/telemetry",
                params={"point": point, "start": T0_MS * 10**6, "end": (T0_MS + 10**7) * 10**6, "limit": 5000})
    if r.status_code != 200:
        return [], []
    body = r.json()
    return body["t_ns"], body["values"]


def _counters(api) -> dict[str, int]:
    r = api.get("/api/v1/gateways")
    gws = r.json()["items"] if r.status_code == 200 else []
    return next((g["counters"] for g in gws if g["id"] == "gw-spb"), {})


def test_third_party_edge_node_reaches_the_twin_including_after_a_rebirth_forced_by_a_seq_gap(platform, mosquitto):
    """[tck-id-host-topic-phid-birth-required] [tck-id-operational-behavior-host-reordering-rebirth]
    [tck-id-payloads-sequence-num-incrementing] A pysparkplug edge node's births and DDATA (by name, with their
    timestamps) reach the cloud through ``twin edge run`` and ``twin cloud run``; one seq number lost makes our host
    publish NCMD ``Node Control/Rebirth``, the node answers with a new session (NDEATH, NBIRTH, DBIRTH) and what it
    sends after that reaches the cloud too. A historical metric is stored at its own time."""
    cloud, _, _ = platform
    rebirth = threading.Event()

    def on_cmd(_node, message) -> None:
        if any(m.name == spb.REBIRTH and m.value is True for m in message.payload.metrics):
            rebirth.set()

    node = _connected_node(mosquitto, [_metric(p, 4.0, T0_MS) for p in POINTS], on_cmd)
    sent: dict[str, dict[int, float]] = {p: {T0_MS: 4.0} for p in POINTS}
    try:
        for i in range(1, 6):
            t, v = T0_MS + i * 1000, 4.0 + i / 10
            node.update_device("trailer-001", [_metric("supply_air", v, t), _metric("return_air", v + 2, t)])
            sent["supply_air"][t], sent["return_air"][t] = v, v + 2
        node.update_device("trailer-001", [_metric("supply_air", 1.5, T0_MS - 3_600_000 + 0, historical=True)])
        node._seq  # noqa: B018 - a seq number consumed and never sent: the message that carried it is lost
        t = T0_MS + 6000
        node.update_device("trailer-001", [_metric("supply_air", 7.0, t)])  # arrives after the gap: kept
        sent["supply_air"][t] = 7.0
        assert rebirth.wait(15), "no NCMD Node Control/Rebirth after the seq gap"
        # pysparkplug leaves the answer to the application: a new session births again. A new client for it (one
        # paho client reconnected at once sometimes sent the births but nothing after them, under paho 2)
        node.disconnect()
        node = _connected_node(mosquitto, [_metric("supply_air", 7.0, T0_MS + 6000),
                                           _metric("return_air", 6.5, T0_MS + 5000)], on_cmd)
        for i in range(7, 10):
            t = T0_MS + i * 1000
            node.update_device("trailer-001", [_metric("supply_air", 8.0 + i, t)])
            sent["supply_air"][t] = 8.0 + i
    finally:
        node.disconnect()

    with cloud.client() as api:
        for point, expected in sent.items():
            want = sorted(expected.items())
            deadline = time.monotonic() + 30
            while len((got := _telemetry(api, point))[0]) < len(want) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert list(zip([t // 10**6 for t in got[0]], got[1], strict=True)) == want, _counters(api)
        hist = api.get("/api/v1/assets/trailer-001/telemetry", params={
            "point": "supply_air", "start": (T0_MS - 3_700_000) * 10**6, "end": (T0_MS - 1) * 10**6}).json()
        assert hist["values"] == [1.5] and hist["t_ns"] == [(T0_MS - 3_600_000) * 10**6]
        c = wait_until(lambda: (lambda c: c if c.get("sparkplug_births", 0) >= 2 else None)(_counters(api)),
                       what="two births counted")
        assert c["sparkplug_seq_gaps"] == 1 and c["sparkplug_rebirths_requested"] >= 1
        assert c["sparkplug_historical"] == 1


def test_gateway_as_edge_node_every_metric_decoded_by_an_independent_host(platform, mosquitto):
    """[tck-id-message-flow-edge-node-ncmd-subscribe] [tck-id-operational-behavior-data-publish-dbirth]
    [tck-id-operational-behavior-data-publish-dbirth-values] [tck-id-payloads-ddata-seq-inc]
    [tck-id-payloads-name-birth-data-requirement] [tck-id-message-flow-edge-node-birth-publish-nbirth-payload-bdSeq]
    Our gateway as edge node ``gw-spb`` of group ``twin``: pysparkplug resolves every DDATA metric's alias through
    the DBIRTH, and decodes the values the third-party node sent with their timestamps; asked to rebirth by NCMD, the
    gateway sends NBIRTH (seq 0, the session's bdSeq) and a DBIRTH with every point of the asset's type, aliased, at
    its last value; when the source device dies its points go out as null; seq runs on by one from the birth."""
    _, _, rec = platform
    from models.catalogue import get_type

    trailer = get_type("refrigerated-trailer")
    node = _connected_node(mosquitto, [_metric(p, 5.0, T0_MS + 20_000) for p in POINTS])
    try:
        for i in range(1, 4):
            node.update_device("trailer-001", [_metric("supply_air", 5.0 + i, T0_MS + 20_000 + i * 1000)])
        [*_, born_first] = wait_until(lambda: rec.of("DBIRTH") or None, what="the gateway's DBIRTH")
        aliases = {m.alias: m.name for m in born_first.payload.metrics}

        def decoded() -> list[tuple[str, int, float]]:
            return [(m.name or aliases[m.alias], m.timestamp, m.value)
                    for msg in rec.of("DDATA") for m in msg.payload.metrics]

        want = [("supply_air", T0_MS + 20_000 + i * 1000, 5.0 + i) for i in range(1, 4)]
        wait_until(lambda: all(w in decoded() for w in want), timeout=15, what="the new readings as DDATA")
        assert ("return_air", T0_MS + 20_000, 5.0) in decoded()

        n_births = len(rec.of("NBIRTH"))
        cmd = psp.NCmd(timestamp=psp.get_current_timestamp(), metrics=(psp.Metric(
            timestamp=psp.get_current_timestamp(), name=spb.REBIRTH, datatype=psp.DataType.BOOLEAN, value=True),))
        rec.client.publish(psp.Message(topic=psp.Topic(message_type=psp.MessageType.NCMD, group_id="twin",
                                                       edge_node_id="gw-spb"), payload=cmd,
                                       qos=psp.QoS.AT_MOST_ONCE, retain=False), include_dtypes=True)
        wait_until(lambda: len(rec.of("NBIRTH")) > n_births and _after_last_nbirth(rec, "DBIRTH"), timeout=15,
                   what="NBIRTH and DBIRTH after the rebirth request")
        node.deregister("trailer-001")  # its DDEATH
    finally:
        node.disconnect()
    nbirth = rec.of("NBIRTH")[-1]
    [dbirth] = _after_last_nbirth(rec, "DBIRTH")
    assert nbirth.payload.seq == 0 and dbirth.payload.seq == 1
    assert {m.name for m in nbirth.payload.metrics} == {spb.BDSEQ, spb.REBIRTH}  # [tck-id-payloads-nbirth-rebirth-req]
    assert all(m.timestamp for m in (*nbirth.payload.metrics, *dbirth.payload.metrics))
    assert {m.name: m.value for m in nbirth.payload.metrics}[spb.BDSEQ] == \
        {m.name: m.value for m in rec.of("NBIRTH")[0].payload.metrics}[spb.BDSEQ]  # same session, same bdSeq
    born = {m.name: m for m in dbirth.payload.metrics}
    assert set(born) == set(trailer.points)
    assert len({m.alias for m in born.values()}) == len(born)
    for name, m in born.items():
        want_type = psp.DataType.STRING if trailer.points[name].kind == "text" else psp.DataType.DOUBLE
        assert m.datatype == want_type, name
    assert (born["supply_air"].value, born["supply_air"].timestamp) == (8.0, T0_MS + 23_000)
    assert born["setpoint"].is_null  # never read: null, no value ([...-dbirth-values])

    # the source device's DDEATH: its points leave the gateway as null DDATA, numbered on from the rebirth
    nulls = wait_until(lambda: [m for msg in _after_last_nbirth(rec, "DDATA") for m in msg.payload.metrics
                                if m.is_null] or None, timeout=15, what="null DDATA after the device's death")
    assert sorted(m.name or aliases[m.alias] for m in nulls) == sorted(POINTS)
    seqs = [m.payload.seq for m in _after_last_nbirth(rec, "DBIRTH", "DDATA")]
    assert seqs == list(range(1, len(seqs) + 1))


def _after_last_nbirth(rec: Recorder, *kinds: str) -> list:
    msgs = list(rec.messages)
    last = max(i for i, m in enumerate(msgs) if str(m.topic.message_type) == "NBIRTH")
    return [m for m in msgs[last + 1:] if str(m.topic.message_type) in kinds]


def _connected_node(mosquitto, metrics, on_cmd=None) -> psp.EdgeNode:
    node = psp.EdgeNode("plant", "line1", [], client=_psp_client(),
                        **({"cmd_callback": on_cmd} if on_cmd else {}))
    node.register(psp.Device("trailer-001", metrics))
    # Data only once its DBIRTH is out: pysparkplug marks itself connected before it sends the births, so a
    # DDATA sent at once can come before the DBIRTH, and a host rightly refuses that (it asks for a rebirth).
    births: list[str] = []
    subscribed = threading.Event()
    watch = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    watch.on_message = lambda cl, u, m: births.append(m.topic)
    watch.on_subscribe = lambda *a: subscribed.set()
    watch.connect(mosquitto.host, mosquitto.port)
    watch.subscribe("spBv1.0/plant/DBIRTH/line1/#", qos=1)
    watch.loop_start()
    try:
        assert subscribed.wait(10), "the watcher's SUBACK"
        node.connect(mosquitto.host, port=mosquitto.port)
        wait_until(lambda: births, what="the pysparkplug node's DBIRTH")
    finally:
        watch.disconnect()
        watch.loop_stop()
    return node


def test_gateway_stopping_sends_ndeath_with_its_births_bdseq_and_goes_offline_as_host(platform, mosquitto):
    """[tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath]
    [tck-id-message-flow-edge-node-birth-publish-will-message-payload-bdSeq] [tck-id-host-topic-phid-death-payload]
    [tck-id-operational-behavior-host-application-death-retained] SIGTERM: the edge node's NDEATH carries the bdSeq of
    its NBIRTH; the host's retained STATE becomes ``{"online": false, "timestamp": …}`` with its birth's timestamp."""
    _, edge, rec = platform
    online = _retained(mosquitto, "spBv1.0/STATE/twin-host")
    assert online["online"] is True
    edge.stop()
    [death] = wait_until(lambda: rec.of("NDEATH") or None, what="the gateway's NDEATH")
    births = rec.of("NBIRTH")
    assert death.payload.bd_seq_metric.value == \
        {m.name: m.value for m in births[-1].payload.metrics}["bdSeq"]
    assert _retained(mosquitto, "spBv1.0/STATE/twin-host") == {"online": False, "timestamp": online["timestamp"]}


def _retained(mosquitto, topic: str) -> dict:
    got: list[bytes] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
    c.on_message = lambda cl, u, m: got.append(m.payload)
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    try:
        wait_until(lambda: got, timeout=10, what=f"the retained message on {topic}")
    finally:
        c.disconnect()
        c.loop_stop()
    return orjson.loads(got[-1])


# -- the host's state machine, in-process on the real broker ----------------------------------------------------

class _Sink:
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def __call__(self, asset, point, t_ns, value, quality, historical=False) -> None:
        self.rows.append((asset, point, t_ns, value, quality, historical))


@pytest.fixture
def host(mosquitto):
    group = f"g{uuid.uuid4().hex[:6]}"
    cfg = SparkplugSource(type="sparkplug", host_id=f"h-{group}", group=group, rebirth_interval_s=0,
                          link={"url": mosquitto.url},
                          rules=[{"device": "", "asset": "{edge_node}", "point": "{metric}"}, {}])
    sink = _Sink()
    cmds: list[spb.Payload] = []
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.on_connect = lambda cl, *a: cl.subscribe(f"spBv1.0/{group}/NCMD/#", qos=1)
    pub.on_message = lambda cl, u, m: cmds.append(spb.decode(m.payload))
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    h = SparkplugHost(cfg, f"test-{group}")
    h.start(sink)
    wait_until(lambda: h.counters() and _state_seen(mosquitto, cfg.host_id), what="host online")

    def send(kind: str, payload: spb.Payload, device: str | None = None) -> None:
        pub.publish(spb.topic(group, kind, "n1", device), payload.SerializeToString(), qos=1).wait_for_publish(5)

    yield h, sink, cmds, send
    h.stop()
    pub.disconnect()
    pub.loop_stop()


def _state_seen(mosquitto, host_id: str) -> bool:
    return _retained(mosquitto, f"spBv1.0/STATE/{host_id}")["online"] is True


def _births(send, bdseq: int = 3) -> None:
    p = spb.new_payload(0, T0_MS)
    spb.add_metric(p, bdseq, name=spb.BDSEQ, datatype=spb.DataType.Int64)
    spb.add_metric(p, 1.0, name="load", alias=1, t_ms=T0_MS)
    send("NBIRTH", p)
    p = spb.new_payload(1, T0_MS)
    spb.add_metric(p, -5, name="temp", alias=2, t_ms=T0_MS, datatype=spb.DataType.Int16)
    spb.add_metric(p, "run", name="mode", alias=3, t_ms=T0_MS, datatype=spb.DataType.String)
    send("DBIRTH", p, "d1")


def test_host_data_before_birth_asks_for_a_rebirth(host):
    """[tck-id-operational-behavior-host-reordering-rebirth] DDATA from a node whose NBIRTH the host never saw is not
    guessed at: nothing reaches the sink, an NCMD ``Node Control/Rebirth`` = true goes to the node."""
    h, sink, cmds, send = host
    p = spb.new_payload(5, T0_MS)
    spb.add_metric(p, 1.0, alias=2, t_ms=T0_MS)
    send("DDATA", p, "d1")
    wait_until(lambda: cmds, what="the NCMD")
    assert [(m.name, m.datatype, m.boolean_value) for m in cmds[0].metrics] == [(spb.REBIRTH, spb.DataType.Boolean,
                                                                                 True)]
    assert sink.rows == [] and h.counters()["sparkplug_rebirths_requested"] == 1


def test_host_resolves_aliases_from_births_and_marks_a_dead_device_then_node_bad(host):
    """[tck-id-payloads-alias-uniqueness] [tck-id-operational-behavior-edge-node-termination-host-action-ddeath-devices-
    tags-stale] [tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-tags-stale] DDATA by alias
    only is named from the DBIRTH (an Int16 in two's complement read as -7); DDEATH hands that device's points on as
    bad at the DDEATH's time; an NDEATH whose bdSeq is not the birth's is ignored, the matching one marks the node's."""
    h, sink, cmds, send = host
    _births(send)
    p = spb.new_payload(2, T0_MS + 1000)
    spb.add_metric(p, -7, alias=2, t_ms=T0_MS + 1000, datatype=spb.DataType.Int16)
    spb.add_metric(p, 2.5, alias=1, t_ms=T0_MS + 1000)
    send("DDATA", p, "d1")
    send("DDEATH", spb.new_payload(3, T0_MS + 2000), "d1")
    wrong = spb.new_payload(None, T0_MS)
    spb.add_metric(wrong, 2, name=spb.BDSEQ, datatype=spb.DataType.Int64)
    send("NDEATH", wrong)
    right = spb.new_payload(None, T0_MS)
    spb.add_metric(right, 3, name=spb.BDSEQ, datatype=spb.DataType.Int64)
    send("NDEATH", right)
    wait_until(lambda: h.counters()["sparkplug_deaths"] == 2, what="the DDEATH and the NDEATH counted")
    ms = 10**6
    live = [r for r in sink.rows if not (isinstance(r[3], float) and math.isnan(r[3]))]
    assert live == [("n1", "load", T0_MS * ms, 1.0, Quality.GOOD, False),
                    ("d1", "temp", T0_MS * ms, -5.0, Quality.GOOD, False),
                    ("d1", "mode", T0_MS * ms, "run", Quality.GOOD, False),
                    ("d1", "temp", (T0_MS + 1000) * ms, -7.0, Quality.GOOD, False),
                    ("d1", "load", (T0_MS + 1000) * ms, 2.5, Quality.GOOD, False)]
    dead = [(r[0], r[1], r[4]) for r in sink.rows if isinstance(r[3], float) and math.isnan(r[3])]
    assert dead == [("d1", "load", Quality.BAD), ("d1", "mode", Quality.BAD), ("d1", "temp", Quality.BAD),
                    ("n1", "load", Quality.BAD)]
    assert [r[2] for r in sink.rows if r[1] == "mode" and r[4] == Quality.BAD] == [(T0_MS + 2000) * ms]
    assert cmds == [] and h.counters()["sparkplug_seq_gaps"] == 0


def test_host_does_not_read_back_its_own_gateways_edge_node(mosquitto):
    """A gateway that is host and edge node on one broker must not take its own DDATA as new readings (they would
    go round for ever): the host skips the (group, edge node) its gateway publishes as, and reads every other."""
    group = f"g{uuid.uuid4().hex[:6]}"
    cfg = SparkplugSource(type="sparkplug", host_id=f"h-{group}", link={"url": mosquitto.url})
    sink = _Sink()
    h = SparkplugHost(cfg, f"test-{group}", own_node=(group, "me"))
    h.start(sink)
    wait_until(lambda: _state_seen(mosquitto, cfg.host_id), what="host online")
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        for node in ("me", "other"):
            p = spb.new_payload(0, T0_MS)
            spb.add_metric(p, 0, name=spb.BDSEQ, datatype=spb.DataType.Int64)
            pub.publish(spb.topic(group, "NBIRTH", node), p.SerializeToString(), qos=1).wait_for_publish(5)
            p = spb.new_payload(1, T0_MS)
            spb.add_metric(p, 3.0, name="x", alias=1, t_ms=T0_MS)
            pub.publish(spb.topic(group, "DBIRTH", node, "d"), p.SerializeToString(), qos=1).wait_for_publish(5)
        wait_until(lambda: sink.rows, what="the other node's reading")
    finally:
        pub.disconnect()
        pub.loop_stop()
        h.stop()
    assert sink.rows == [("d", "x", T0_MS * 10**6, 3.0, Quality.GOOD, False)]
    assert h.counters()["sparkplug_births"] == 1  # the other node's NBIRTH; its own (sent first) never seen


def test_host_counts_what_is_not_sparkplug_and_keeps_reading(host, mosquitto):
    """A payload that is not the protobuf, or a topic not of the namespace's shape, is counted (``bad_payloads``)
    and logged by topic; the host reads on."""
    h, sink, _, send = host
    group = h.cfg.group
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    for topic, raw in ((f"spBv1.0/{group}/DDATA/n1/d1", b"\xff\xff\xff"), (f"spBv1.0/{group}/NDATA/n1/extra", b"")):
        c.publish(topic, raw, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    _births(send)
    wait_until(lambda: len(sink.rows) == 3, what="the births after the garbage")
    assert h.counters()["bad_payloads"] == 2


def test_host_losing_its_broker_marks_every_point_stale():
    """Sparkplug 3.0, 5.3: a host that loses its MQTT Server marks every metric of every edge node it knew STALE
    (here: bad quality), and waits for births again."""
    from tests.harness import MosquittoServer

    broker = MosquittoServer()
    broker.start()
    cfg = SparkplugSource(type="sparkplug", host_id="h-lost", link={"url": broker.url}, group="g")
    sink = _Sink()
    h = SparkplugHost(cfg, "test-lost")
    h.start(sink)
    try:
        wait_until(lambda: _state_seen(broker, "h-lost"), what="host online")
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        pub.connect(broker.host, broker.port)
        pub.loop_start()
        _births(lambda kind, p, device=None: pub.publish(spb.topic("g", kind, "n1", device), p.SerializeToString(),
                                                           qos=1).wait_for_publish(5))
        wait_until(lambda: len(sink.rows) == 3, what="the births")
        pub.disconnect()
        pub.loop_stop()
        broker.close()
        wait_until(lambda: len(sink.rows) == 6, what="every point stale")
    finally:
        h.stop()
        broker.close()
    assert sorted((r[0], r[1], r[4]) for r in sink.rows[3:]) == [
        ("d1", "mode", Quality.BAD), ("d1", "temp", Quality.BAD), ("n1", "load", Quality.BAD)]
    assert all(math.isnan(r[3]) for r in sink.rows[3:])


def test_host_seq_wraps_at_255_without_a_rebirth(host):
    """[tck-id-payloads-sequence-num-zero-nbirth] [tck-id-payloads-sequence-num-incrementing] seq runs 0..255 then 0:
    255 -> 0 is no gap; 0 -> 2 is one, and brings an NCMD."""
    h, sink, cmds, send = host
    _births(send)
    for seq in [*range(2, 256), 0]:
        p = spb.new_payload(seq, T0_MS)
        spb.add_metric(p, float(seq), alias=1, t_ms=T0_MS + seq)
        send("NDATA", p)
    wait_until(lambda: len(sink.rows) == 3 + 255, what="255 NDATA")
    assert cmds == [] and h.counters()["sparkplug_seq_gaps"] == 0
    send("NDATA", spb.new_payload(2, T0_MS))
    wait_until(lambda: cmds, what="the NCMD after 0 -> 2")
    assert h.counters()["sparkplug_seq_gaps"] == 1


def test_host_republishes_online_when_its_state_is_overwritten_offline(host, mosquitto):
    """[tck-id-message-flow-hid-sparkplug-state-message-delivered] [tck-id-host-topic-phid-birth-payload] an offline
    STATE on the host's own topic (a late will of an earlier session) is answered at once with online, retained."""
    h, *_ = host
    topic = spb.state_topic(h.cfg.host_id)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    c.publish(topic, spb.state_payload(False, 1), qos=1, retain=True).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not _retained(mosquitto, topic)["online"]:
        time.sleep(0.1)
    state = _retained(mosquitto, topic)
    assert state["online"] is True and set(state) == {"online", "timestamp"}


def test_sparkplug_config_errors_name_the_field():
    base = {"tenant": "t", "gateway": "g", "assets": [{"id": "a", "type": "refrigerated-trailer"}]}
    with pytest.raises(ConfigError, match=r"sources\[0\]\.host_id"):
        parse_config({**base, "sources": [{"type": "sparkplug", "host_id": "a/b"}]})
    with pytest.raises(ConfigError, match=r"sparkplug\.group"):
        parse_config({**base, "sources": [{"type": "sparkplug", "host_id": "h"}], "sparkplug": {"group": "x+"}})


def test_historical_samples_are_stored_but_not_judged_by_local_rules(tmp_path):
    """Sparkplug 3.0, 6.4.6 (Metric ``is_historical``): historical values are not current values: the agent stores
    them at their own times and keeps them from the detectors and local rules. The door open for 1,300 s fires the
    trailer's door-open-long rule live, and nothing when the same samples come as history."""
    from edge.agent import EdgeAgent

    counts = {}
    for historical in (False, True):
        cfg = parse_config(gateway_config(tmp_path / str(historical), "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:1"))
        agent = EdgeAgent(cfg)
        for t_s in (0, 600, 1300):
            agent.sink("trailer-001", "door", T0_MS * 10**6 + t_s * 10**9, 1.0, Quality.GOOD, historical=historical)
        assert agent.tick() == 3
        counts[historical] = (agent.counts["alarms"], agent.outbox.stats()["outbox_depth"])
        agent.outbox.close()
    assert counts == {False: (1, 2), True: (0, 1)}  # live: the batch and the alarm event; history: the batch only
