"""The broker as shipped (``deploy/mosquitto``): TLS only, a client certificate per gateway and per cloud
role, and an ACL that pins each gateway to its own topics. Every test runs against the real Mosquitto
started on the shipped config and ACL (``TlsMosquittoServer``; only port and paths are templated in), with
certificates from the shipped ``make-certs.sh``.

Mosquitto 2.0.11 behaviour the tests rely on (measured): a refused QoS 1 publish is answered PUBACK 0x87
(not authorised) on MQTT 5 and never delivered; a subscription outside the ACL is granted (SUBACK QoS 1) but
nothing the client may not read is delivered on it. After a refused publish 2.0.11 also closes the
connection; that is not asserted (a broker need not), so each refusal here uses a fresh connection.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud import mqttconn
from cloud.settings import CloudSettings
from edge.config import MqttLink
from edge.mqttlink import make_client
from models import topics
from models.wire import DesiredConfig, encode
from simulators.devices import interleave, publish_readings
from simulators.trailer import Trailer, TrailerParams
from tests.harness import TlsFiles, TlsMosquittoServer
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "deploy" / "mosquitto"
NOT_AUTHORIZED = 0x87
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


class Peer:
    """One MQTT 5 client over TLS with a certificate, recording exactly what the broker answers."""

    def __init__(self, broker: TlsMosquittoServer, files: TlsFiles, name: str, *, exact_id: bool = False,
                 properties: Properties | None = None, clean_start: bool = True) -> None:
        self.client_id = name if exact_id else f"{name}-{uuid.uuid4().hex[:6]}"
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        self.c.tls_set(ca_certs=files.ca, certfile=files.cert, keyfile=files.key, cert_reqs=ssl.CERT_REQUIRED)
        self.c.reconnect_delay_set(1, 1)
        self._cv = threading.Condition()
        self.connack: int | None = None
        self.pubacks: dict[int, int] = {}
        self.subacks: dict[int, list[int]] = {}
        self.messages: list[tuple[str, bytes, bool]] = []
        self.c.on_connect = self._on_connect
        self.c.on_publish = lambda _c, _u, mid, reason, _p: self._note(self.pubacks, mid, reason.value)
        self.c.on_subscribe = lambda _c, _u, mid, reasons, _p: self._note(self.subacks, mid, [r.value for r in reasons])
        self.c.on_message = self._on_message
        self.session_present = False
        self.c.connect(broker.host, broker.port, keepalive=30, clean_start=clean_start, properties=properties)
        self.c.loop_start()
        self._wait(lambda: self.connack is not None, "CONNACK")
        assert self.connack == 0, f"{name} refused: CONNACK {self.connack}"

    def _on_connect(self, _c, _u, flags, reason, _p) -> None:
        with self._cv:
            self.session_present = bool(flags.session_present)
            self.connack = reason.value
            self._cv.notify_all()

    def _on_message(self, _c, _u, m: mqtt.MQTTMessage) -> None:
        with self._cv:
            self.messages.append((m.topic, m.payload, bool(m.retain)))
            self._cv.notify_all()

    def _note(self, into: dict, mid: int, value) -> None:
        with self._cv:
            into[mid] = value
            self._cv.notify_all()

    def _wait(self, predicate, what: str, timeout: float = 10):
        with self._cv:
            assert self._cv.wait_for(predicate, timeout), f"{self.client_id}: no {what} in {timeout} s"

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """PUBACK reason code of one QoS 1 publish."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        self._wait(lambda: info.mid in self.pubacks, f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def subscribe(self, *filters: str) -> list[int]:
        """SUBACK reason codes; the broker sends matching retained messages before this SUBACK."""
        _, mid = self.c.subscribe([(f, 1) for f in filters])
        self._wait(lambda: mid in self.subacks, f"SUBACK for {filters}")
        return self.subacks[mid]

    def wait_message(self, topic: str, payload: bytes) -> None:
        self._wait(lambda: any(m[:2] == (topic, payload) for m in self.messages), f"{topic} {payload!r}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def attempt(broker: TlsMosquittoServer, *, tls: dict | None, username: str | None = None) -> str:
    """What one connection attempt ends in: ``connected``, ``refused: CONNACK <reason>``, or ``dropped: <why>``
    (the TLS handshake or the connection failed before any CONNACK)."""
    outcome: list[str] = []
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"intruder-{uuid.uuid4().hex[:6]}",
                    protocol=mqtt.MQTTv5)
    if tls is not None:
        c.tls_set(cert_reqs=ssl.CERT_REQUIRED, **tls)
    if username:
        c.username_pw_set(username, "a-guess")
    c.on_connect = lambda _c, _u, _f, r, _p: outcome.append(f"refused: CONNACK {r}" if r.is_failure else "connected")
    c.on_disconnect = lambda _c, _u, _f, r, _p: outcome.append(f"dropped: {r}")
    try:
        c.connect(broker.host, broker.port, keepalive=10)
        deadline = time.monotonic() + 5
        while not outcome and time.monotonic() < deadline:
            if c.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                outcome.append("dropped: connection lost")
    except (OSError, ssl.SSLError) as exc:
        outcome.append(f"dropped: {type(exc).__name__}: {exc}")
    finally:
        c.socket() and c.disconnect()
    assert outcome, "neither CONNACK nor disconnect within 5 s"
    return outcome[0]


def broker_saw_client(broker: TlsMosquittoServer, client_prefix: str) -> bool:
    return f"as {client_prefix}" in broker.log_tail(100_000)


# -- the shipped configuration -------------------------------------------------------------------------------
def _conf_lines() -> list[tuple[str, str]]:
    lines = (SHIPPED / "mosquitto.conf").read_text().splitlines()
    return [tuple(ln.split(None, 1)) for ln in lines if ln.strip() and not ln.startswith("#")]  # type: ignore[misc]


def test_shipped_broker_has_one_tls_listener_that_requires_a_client_certificate():
    conf = _conf_lines()
    settings = dict(conf)
    assert [v for k, v in conf if k == "listener"] == ["8883"]  # no plain-TCP listener, not even on loopback
    assert settings["require_certificate"] == "true" and settings["use_identity_as_username"] == "true"
    assert settings["allow_anonymous"] == "false" and "password_file" not in settings
    assert {"cafile", "certfile", "keyfile", "crlfile", "acl_file"} <= settings.keys()


# -- publishing --------------------------------------------------------------------------------------------------
@pytest.fixture
def cloud_peer(mosquitto_tls):
    peer = Peer(mosquitto_tls, mosquitto_tls.client_files("cloud"), "cloud")
    assert peer.subscribe("twin/v1/+/+/telemetry", "twin/v1/+/+/status") == [1, 1]
    yield peer
    peer.close()


def test_gateway_publishes_its_own_telemetry_and_the_cloud_receives_it(mosquitto_tls, cloud_peer):
    a = Peer(mosquitto_tls, mosquitto_tls.gateway_files("acme", "gw-a"), "gw-a")
    assert a.publish(topics.telemetry("acme", "gw-a"), b"from A") == 0
    cloud_peer.wait_message(topics.telemetry("acme", "gw-a"), b"from A")
    a.close()


@pytest.mark.parametrize("topic", [
    topics.telemetry("acme", "gw-b"),           # another gateway of its tenant
    topics.status("acme", "gw-b"),              # ...its presence
    topics.config_reported("acme", "gw-b"),     # ...what it claims to have applied
    topics.telemetry("other", "gw-a"),          # a gateway with the same id in another tenant
    topics.config_desired("acme", "gw-a"),      # its own desired configuration: only the cloud writes it
    topics.topic("acme", "gw-a", "commands"),   # ...and its commands
    "twin/v1/acme/alerts",                      # tenant-wide notices
    "sensors/anything",                         # anything outside the platform's tree
])
def test_gateway_cannot_publish_as_anyone_else(mosquitto_tls, cloud_peer, topic):
    forged = f"forged by gw-a {uuid.uuid4().hex}".encode()
    a = Peer(mosquitto_tls, mosquitto_tls.gateway_files("acme", "gw-a"), "gw-a")
    assert a.publish(topic, forged) == NOT_AUTHORIZED
    a.close()
    # Refused means never delivered: a marker sent after the refusal arrives, the forged message never does.
    b = Peer(mosquitto_tls, mosquitto_tls.gateway_files("acme", "gw-b"), "gw-b")
    marker = f"marker {uuid.uuid4().hex}".encode()
    assert b.publish(topics.telemetry("acme", "gw-b"), marker) == 0
    cloud_peer.wait_message(topics.telemetry("acme", "gw-b"), marker)
    b.close()
    assert [m for m in cloud_peer.messages if m[1] == forged] == []


def test_cloud_role_cannot_publish_telemetry_as_a_gateway(mosquitto_tls):
    cloud = Peer(mosquitto_tls, mosquitto_tls.client_files("cloud"), "cloud-writer")
    assert cloud.publish(topics.telemetry("acme", "gw-a"), b"not the cloud's to say") == NOT_AUTHORIZED
    cloud.close()


# -- reading ------------------------------------------------------------------------------------------------------
def test_gateway_reads_only_its_own_configuration(mosquitto_tls):
    cloud = Peer(mosquitto_tls, mosquitto_tls.client_files("cloud"), "cloud-config")
    tenant = f"t{uuid.uuid4().hex[:6]}"
    config = {gw: encode(DesiredConfig(version=1, config={"tick_ms": tick}))
              for gw, tick in (("gw-a", 100), ("gw-b", 200))}
    for gw, body in config.items():
        assert cloud.publish(topics.config_desired(tenant, gw), body, retain=True) in (0, 0x10)
    b = Peer(mosquitto_tls, mosquitto_tls.gateway_files(tenant, "gw-b"), "gw-b")
    a = Peer(mosquitto_tls, mosquitto_tls.gateway_files(tenant, "gw-a"), "gw-a")
    try:
        # B's retained configuration exists and B can read it...
        assert b.subscribe(topics.config_desired(tenant, "gw-b")) == [1]
        b.wait_message(topics.config_desired(tenant, "gw-b"), config["gw-b"])
        # ...A asks for it by name, by wildcard and for everything: the broker grants the filters (2.0.11) but
        # hands A only its own configuration.
        a.subscribe(topics.config_desired(tenant, "gw-b"), f"twin/v1/{tenant}/+/config/desired", "twin/v1/#", "#")
        a.wait_message(topics.config_desired(tenant, "gw-a"), config["gw-a"])
        # Live traffic too: a new configuration and telemetry for B, and commands for B.
        newer = encode(DesiredConfig(version=2, config={"tick_ms": 300}))
        assert cloud.publish(topics.config_desired(tenant, "gw-b"), newer, retain=True) == 0
        assert cloud.publish(topics.topic(tenant, "gw-b", "commands"), b"reboot") == 0
        assert b.publish(topics.telemetry(tenant, "gw-b"), b"B's data") in (0, 0x10)
        b.wait_message(topics.config_desired(tenant, "gw-b"), newer)
        # Barrier: whatever the broker would have sent A for the above precedes the SUBACK of a later subscribe.
        a.subscribe(topics.topic(tenant, "gw-a", "commands"))
        assert {m[0] for m in a.messages} == {topics.config_desired(tenant, "gw-a")}
    finally:
        for peer in (a, b, cloud):
            peer.close()
        cloud = Peer(mosquitto_tls, mosquitto_tls.client_files("cloud"), "cloud-cleanup")
        for gw in config:
            cloud.publish(topics.config_desired(tenant, gw), b"", retain=True)
        cloud.close()


def test_gateway_taking_another_gateways_client_id_receives_nothing_of_it(mosquitto_tls):
    # Mosquitto's ACL cannot bind client ids to identities (deploy/README.md, "Known limit"): A can take over
    # B's session by its client id. The ACL still decides by certificate: B's queued and live commands never
    # reach A.
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 3600
    b_id, commands = f"gw-acme-gw-b-{uuid.uuid4().hex[:4]}", topics.topic("acme", "gw-b", "commands")
    b = Peer(mosquitto_tls, mosquitto_tls.gateway_files("acme", "gw-b"), b_id, exact_id=True, properties=session)
    assert b.subscribe(commands) == [1]
    b.close()
    cloud = Peer(mosquitto_tls, mosquitto_tls.client_files("cloud"), "cloud-commands")
    assert cloud.publish(commands, b"queued for B") == 0  # B's session is subscribed: 0, not 0x10
    a = Peer(mosquitto_tls, mosquitto_tls.gateway_files("acme", "gw-a"), b_id, exact_id=True, properties=session,
             clean_start=False)
    assert a.session_present  # A did resume B's session...
    assert cloud.publish(commands, b"live for B") == 0
    a.subscribe(topics.topic("acme", "gw-a", "commands"))  # barrier: anything queued for A came before this
    assert a.messages == []  # ...and got nothing of it
    for peer in (a, cloud):
        peer.close()


# -- who may connect at all ----------------------------------------------------------------------------------------
def test_client_without_a_certificate_is_refused(mosquitto_tls):
    ca = mosquitto_tls.client_files("cloud").ca
    outcome = attempt(mosquitto_tls, tls={"ca_certs": ca}, username="cloud")
    assert outcome.startswith("dropped"), outcome
    assert not broker_saw_client(mosquitto_tls, "intruder-")
    wait_until(lambda: "peer did not return a certificate" in mosquitto_tls.log_tail(200), timeout=5,
               what="the broker's reason in its log")


def test_certificate_from_another_ca_is_refused(mosquitto_tls, tmp_path):
    script = SHIPPED / "make-certs.sh"
    for args in (["ca"], ["gateway", "acme", "gw-a"]):
        subprocess.run(["sh", str(script), "-d", str(tmp_path / "rogue"), *args], check=True, capture_output=True)
    rogue = tmp_path / "rogue" / "gateways" / "acme"
    outcome = attempt(mosquitto_tls, tls={"ca_certs": mosquitto_tls.client_files("cloud").ca,
                                          "certfile": str(rogue / "gw-a.pem"), "keyfile": str(rogue / "gw-a.key")})
    assert outcome.startswith("dropped"), outcome
    assert not broker_saw_client(mosquitto_tls, "intruder-")


def test_plain_tcp_client_is_refused(mosquitto_tls):
    # A well-formed MQTT 3.1.1 CONNECT (client id "plain") sent without TLS: the TLS listener never answers it
    # with a CONNACK (packet type 0x20); it closes the connection.
    connect = bytes([0x10, 17, 0, 4, *b"MQTT", 4, 2, 0, 30, 0, 5, *b"plain"])
    with socket.create_connection((mosquitto_tls.host, mosquitto_tls.port), timeout=5) as sock:
        sock.sendall(connect)
        try:
            answer = sock.recv(64)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer[0] != 0x20, f"the TLS port answered plain MQTT: {answer!r}"
    assert answer == b""  # closed, not left hanging
    assert attempt(mosquitto_tls, tls=None).startswith("dropped")
    assert not broker_saw_client(mosquitto_tls, "intruder-")
    wait_until(lambda: "wrong version number" in mosquitto_tls.log_tail(200), timeout=5,
               what="the broker's reason in its log")


def test_revoked_gateway_certificate_is_refused_after_the_broker_restarts(tmp_path, mosquitto):
    broker = TlsMosquittoServer()
    edge = None
    try:
        broker.start()
        stolen, kept = broker.gateway_files("acme", "gw-stolen"), broker.gateway_files("acme", "gw-kept")
        Peer(broker, stolen, "gw-stolen").close()
        broker.make_certs("revoke", stolen.cert)
        broker.restart()  # Mosquitto reads the CRL at start
        outcome = attempt(broker, tls={"ca_certs": stolen.ca, "certfile": stolen.cert, "keyfile": stolen.key})
        assert outcome.startswith("dropped"), outcome
        wait_until(lambda: "certificate verify failed" in broker.log_tail(50), timeout=5, what="the broker's reason")
        Peer(broker, kept, "gw-kept").close()
        # The gateway's agent says why in its log, and keeps its data for when it has a valid certificate.
        edge = EdgeProcess(tmp_path, gateway_config(
            tmp_path, broker.url, mosquitto.url, gateway="gw-stolen",
            uplink={"url": broker.url, "ca_file": stolen.ca, "cert_file": stolen.cert, "key_file": stolen.key}))
        edge.start()
        edge.wait_log("certificate revoked")
        assert "uplink: connected" not in edge.log()
    finally:
        if edge is not None:
            edge.stop()
        broker.close()


def test_edge_and_cloud_clients_verify_the_broker_host_name(mosquitto_tls):
    # A broker whose certificate (from the right CA) names another host: both sides refuse it.
    other = TlsMosquittoServer(broker_hosts=("broker.example",))
    try:
        other.start()
        gw = other.gateway_files("acme", "gw-a")
        link = MqttLink(url=f"mqtts://127.0.0.1:{other.port}", ca_file=gw.ca, cert_file=gw.cert, key_file=gw.key)
        edge_client = make_client(link, "gw-acme-gw-a")
        with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch.*127\.0\.0\.1"):
            edge_client.connect(other.host, other.port)
        files = other.client_files("cloud")
        settings = CloudSettings(mqtt_url=f"mqtts://127.0.0.1:{other.port}", mqtt_ca_file=files.ca,
                                 mqtt_cert_file=files.cert, mqtt_key_file=files.key)
        cloud_client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        mqttconn.configure(cloud_client, settings)
        with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch.*127\.0\.0\.1"):
            cloud_client.connect(*mqttconn.broker_address(settings))
    finally:
        other.close()


def test_cloud_refuses_to_start_naming_a_missing_tls_file(tmp_path):
    env = {**os.environ, "TWIN_MQTT_URL": "mqtts://127.0.0.1:8883", "TWIN_MQTT_CERT_FILE": str(tmp_path / "cloud.pem"),
           "TWIN_MQTT_KEY_FILE": str(tmp_path / "cloud.key"), "TWIN_DATABASE_URL": f"sqlite:///{tmp_path}/r.sqlite"}
    r = subprocess.run([sys.executable, "-m", "twin", "cloud", "ingest"], env=env, capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 2
    assert f"TWIN_MQTT_CERT_FILE: file not found: {tmp_path / 'cloud.pem'}" in r.stderr


# -- the platform over TLS ---------------------------------------------------------------------------------------
def test_edge_agent_and_cloud_deliver_telemetry_and_configuration_over_tls(tmp_path, mosquitto, mosquitto_tls,
                                                                           influxdb):
    """``twin edge run`` reads sensors on a plain site broker and uplinks over TLS with its certificate;
    ``twin cloud run`` ingests over TLS as the cloud role; a configuration pushed through the API reaches
    the gateway over TLS and its report comes back."""
    db = f"tls_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    cloud_files = mosquitto_tls.client_files("cloud")
    cloud = CloudProcess(tmp_path, mosquitto_tls.url, f"sqlite:///{tmp_path / 'registry.sqlite'}", influxdb.url, db,
                         extra_env={"TWIN_MQTT_CA_FILE": cloud_files.ca, "TWIN_MQTT_CERT_FILE": cloud_files.cert,
                                    "TWIN_MQTT_KEY_FILE": cloud_files.key})
    gw = mosquitto_tls.gateway_files("acme", "gw-tls")
    asset = f"trailer-tls-{uuid.uuid4().hex[:6]}"
    edge = EdgeProcess(tmp_path / "edge", gateway_config(
        tmp_path / "edge", mosquitto_tls.url, mosquitto.url, gateway="gw-tls", assets=[asset],
        uplink={"url": mosquitto_tls.url, "ca_file": gw.ca, "cert_file": gw.cert, "key_file": gw.key}))
    try:
        cloud.start()
        cloud.wait_ready()
        edge.start()
        edge.wait_log("source sensors: connected")
        edge.wait_log("uplink: connected")
        run = Trailer(asset, TrailerParams(setpoint_c=4.0), seed=3).run(T0, 120, 1.0)
        sent = {(asset, p): tuple(s) for p, s in run.points.items()}
        n = sum(len(s[0]) for s in sent.values())
        assert publish_readings(mosquitto.url, interleave(sent)).acked == n

        with cloud.client() as api:
            def stored() -> int:
                total = 0
                for _, point in sent:
                    r = api.get(f"/api/v1/assets/{asset}/telemetry",
                                params={"point": point, "start": T0, "end": T0 + 10**12, "limit": 5000})
                    total += len(r.json()["t_ns"]) if r.status_code == 200 else 0
                return total

            wait_until(lambda: stored() == n, timeout=60, what=f"{n} samples through TLS into the API")
            (_, point), (t_ns, values, _) = next(iter(sent.items()))
            body = api.get(f"/api/v1/assets/{asset}/telemetry",
                           params={"point": point, "start": T0, "end": T0 + 10**12, "limit": 5000}).json()
            assert body["t_ns"] == [int(t) for t in t_ns] and body["values"] == pytest.approx(list(values))

            r = api.put("/api/v1/gateways/gw-tls/config", json={"config": {"tick_ms": 200}, "reason": "tls test"},
                        headers={"If-Match": '"0"'})
            assert r.status_code == 200, r.text
            version = r.json()["version"]
            g = wait_until(lambda: (x := api.get("/api/v1/gateways/gw-tls").json())["config_version"] == version
                           and x, what="the gateway's report of the pushed configuration")
            assert g["config_report"]["applied"] is True
        edge.wait_log(f"applied desired configuration v{version}")
        assert "broker refused" not in edge.log() and "broker refused" not in cloud.log()
    finally:
        edge.stop()
        cloud.stop()
        influxdb.drop_database(db)
