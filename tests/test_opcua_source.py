"""The OPC-UA source against the simulators' real asyncua server: values, time, quality, security, outages.

Every test subscribes a real ``OpcUaSourceRunner`` to a real ``SimOpcUaServer`` on a free loopback port and
waits for the samples it expects (no fixed sleeps). Servers shared by a module use one asset per test, so
tests do not see each other's writes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.config import OpcUaSource
from edge.sources.opcua import OpcUaSourceRunner
from simulators.opcua_server import NAMESPACE_URI, SimOpcUaServer
from tests.harness import free_port
from tests.harness.opcua import FlakyLink, Recorder, client_certificate
from tests.harness.processes import wait_until

TYPE = "refrigerated-trailer"
T0 = 1_700_000_000_000_000_000  # a fixed source time, whole µs (OPC-UA carries 100 ns, Python datetime µs)
FAST = {"publishing_interval_ms": 20, "keepalive_s": 1.0, "reconnect_min_s": 0.1, "reconnect_max_s": 1.0,
        "reconnect_jitter": 0.2, "unknown_node_retry_s": 0.3, "request_timeout_s": 3}
USERS = {"edge": "s3cret-pw"}

RunSource = Callable[..., OpcUaSourceRunner]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimOpcUaServer]:
    """An anonymous, unsecured simulator with one asset per test below."""
    assets = [(f"trailer-{i:03d}", TYPE) for i in range(1, 6)]
    with SimOpcUaServer(free_port(), assets) as server:
        yield server


@pytest.fixture(scope="module")
def secure_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimOpcUaServer]:
    """Only Basic256Sha256 Sign and SignAndEncrypt endpoints, and only the user ``edge`` may log in."""
    with SimOpcUaServer(free_port(), [("trailer-101", TYPE)], security=["Sign", "SignAndEncrypt"], users=USERS,
                        cert_dir=tmp_path_factory.mktemp("server-pki")) as server:
        yield server


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return client_certificate(tmp_path_factory.mktemp("client-pki"))


@pytest.fixture
def run_source() -> Iterator[RunSource]:
    """Start sources (fast reconnect settings) feeding a sink; all are stopped after the test."""
    runners: list[OpcUaSourceRunner] = []

    def start(endpoint: str, nodes: list[dict], sink: Recorder, **options: object) -> OpcUaSourceRunner:
        cfg = OpcUaSource.model_validate({"type": "opcua", "endpoint": endpoint, "nodes": nodes, **FAST, **options})
        runner = OpcUaSourceRunner(cfg)
        runner.start(sink)
        runners.append(runner)
        return runner

    yield start
    for r in runners:
        r.stop()


def node(sim: SimOpcUaServer, asset: str, point: str, **options: object) -> dict:
    return {"node": sim.node_id(asset, point), "asset": asset, "point": point, **options}


def values(samples: list) -> list[tuple[int, float, int]]:
    return [(t, v, q) for _, _, t, v, q in samples]


def test_values_arrive_exactly_with_the_servers_source_timestamps(sim: SimOpcUaServer, run_source: RunSource) -> None:
    a = "trailer-001"
    sim.set_value(a, "supply_air", 3.5, source_ts_ns=T0)  # the value a new subscription starts with
    rec = Recorder()
    run_source(sim.endpoint, [node(sim, a, "supply_air")], rec)
    rec.wait_value(a, "supply_air", 3.5)
    sent = [(T0 + 1_123_456_000, 4.25), (T0 + 2_000_001_000, -1.5), (T0 + 3_999_999_000, 7.0)]
    for t, v in sent:
        sim.set_value(a, "supply_air", v, source_ts_ns=t)
    rec.wait_value(a, "supply_air", 7.0)
    assert values(rec.of(a, "supply_air")) == [(T0, 3.5, 0)] + [(t, v, 0) for t, v in sent]


def test_absolute_deadband_suppresses_small_changes(sim: SimOpcUaServer, run_source: RunSource) -> None:
    a = "trailer-002"
    sim.set_value(a, "return_air", 20.0, source_ts_ns=T0)
    rec = Recorder()
    runner = run_source(sim.endpoint, [node(sim, a, "return_air", deadband_abs=0.5)], rec)
    rec.wait_value(a, "return_air", 20.0)
    for v in (20.2, 21.0, 21.1, 20.9, 19.0, 30.0):  # 20.2, 21.1 and 20.9 are within 0.5 of their predecessor
        sim.set_value(a, "return_air", v)
    rec.wait_value(a, "return_air", 30.0)
    assert [v for *_, v, _ in rec.of(a, "return_air")] == [20.0, 21.0, 19.0, 30.0]
    assert runner.counters()["opcua_values"] == 4


def test_bad_status_arrives_as_quality_2_with_nan_and_uncertain_as_1(sim: SimOpcUaServer,
                                                                     run_source: RunSource) -> None:
    a = "trailer-003"
    sim.set_value(a, "compressor_current", 12.5, source_ts_ns=T0)
    rec = Recorder()
    runner = run_source(sim.endpoint, [node(sim, a, "compressor_current")], rec)
    rec.wait_value(a, "compressor_current", 12.5)
    sim.set_value(a, "compressor_current", 99.0, status="BadSensorFailure", source_ts_ns=T0 + 1_000)
    sim.set_value(a, "compressor_current", 13.0, status="UncertainLastUsableValue", source_ts_ns=T0 + 2_000)
    sim.set_value(a, "compressor_current", 14.0, source_ts_ns=T0 + 3_000)
    rec.wait_value(a, "compressor_current", 14.0)
    got = values(rec.of(a, "compressor_current"))
    assert [(t, q) for t, _, q in got] == [(T0, 0), (T0 + 1_000, 2), (T0 + 2_000, 1), (T0 + 3_000, 0)]
    assert math.isnan(got[1][1]), "a Bad value must never pass as a number"
    assert [v for _, v, _ in got[2:]] == [13.0, 14.0]
    assert runner.counters()["opcua_bad_quality"] == 1


def test_browse_paths_and_namespace_uris_resolve_and_a_missing_node_is_retried_and_counted(
        sim: SimOpcUaServer, run_source: RunSource, caplog: pytest.LogCaptureFixture) -> None:
    a = "trailer-004"
    sim.set_value(a, "door", 1.0, source_ts_ns=T0)
    sim.set_value(a, "setpoint", 4.0, source_ts_ns=T0)
    missing = "/Objects/2:trailer-004/2:no_such_point"
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="edge.sources.opcua"):
        runner = run_source(sim.endpoint, [{"node": sim.browse_path(a, "door"), "asset": a, "point": "door"},
                                           {"node": f"nsu={NAMESPACE_URI};s={a}.setpoint", "asset": a,
                                            "point": "setpoint"},
                                           {"node": missing, "asset": a, "point": "ambient"}], rec)
        rec.wait_value(a, "door", 1.0)
        rec.wait_value(a, "setpoint", 4.0)
        wait_until(lambda: runner.counters()["opcua_unknown_nodes"] >= 3, 10, what="the missing node to be retried")
    assert values(rec.of(a, "door")) == [(T0, 1.0, 0)]
    assert values(rec.of(a, "setpoint")) == [(T0, 4.0, 0)]
    assert rec.of(a, "ambient") == []
    logged = [r for r in caplog.records if getattr(r, "node", None) == missing]
    assert len(logged) == 1, "a node that stays unknown is logged once, not on every retry"
    assert logged[0].reason == "BadNoMatch" and logged[0].endpoint == sim.endpoint


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
def test_basic256sha256_with_client_certificate_and_password(secure_sim: SimOpcUaServer, client_cert: tuple[Path, Path],
                                                             run_source: RunSource, mode: str) -> None:
    a = "trailer-101"
    value = 2.5 if mode == "Sign" else 3.5
    secure_sim.set_value(a, "setpoint", value, source_ts_ns=T0)
    rec = Recorder()
    cert, key = client_cert
    runner = run_source(secure_sim.endpoint, [node(secure_sim, a, "setpoint")], rec, security=mode, cert_file=cert,
                        key_file=key, server_cert_file=secure_sim.cert_file, username="edge",
                        password=USERS["edge"])
    rec.wait_value(a, "setpoint", value)
    assert values(rec.of(a, "setpoint")) == [(T0, value, 0)]
    assert runner.counters()["opcua_errors"] == 0


def test_server_certificate_is_fetched_from_the_endpoints_when_not_given(
        secure_sim: SimOpcUaServer, client_cert: tuple[Path, Path], run_source: RunSource, tmp_path: Path) -> None:
    """Not pinned: the endpoint list supplies the certificate and the trust list vouches for it
    (tests/test_opcua_trust.py: what it refuses)."""
    a = "trailer-101"
    rec = Recorder()
    cert, key = client_cert
    assert secure_sim.cert_file is not None
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "plc.der").write_bytes(secure_sim.cert_file.read_bytes())
    run_source(secure_sim.endpoint, [node(secure_sim, a, "ambient")], rec, security="SignAndEncrypt",
               cert_file=cert, key_file=key, trust_dir=tmp_path / "trusted", username="edge", password=USERS["edge"])
    secure_sim.set_value(a, "ambient", 31.25, source_ts_ns=T0)
    assert rec.wait_value(a, "ambient", 31.25)[2] == T0


def test_a_wrong_password_is_counted_and_logged_and_retried_without_crashing(
        secure_sim: SimOpcUaServer, client_cert: tuple[Path, Path], run_source: RunSource,
        caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    cert, key = client_cert
    with caplog.at_level(logging.WARNING, logger="edge.sources.opcua"):
        runner = run_source(secure_sim.endpoint, [node(secure_sim, "trailer-101", "door")], rec,
                            security="SignAndEncrypt", cert_file=cert, key_file=key,
                            server_cert_file=secure_sim.cert_file, username="edge", password="wrong")
        wait_until(lambda: runner.counters()["opcua_errors"] >= 2, 15, what="two refused connection attempts")
    assert runner._thread is not None and runner._thread.is_alive(), "the source keeps retrying"
    assert runner.counters()["opcua_values"] == 0 and rec.samples == []
    refused = [r for r in caplog.records if "BadUserAccessDenied" in getattr(r, "reason", "")]
    assert refused and refused[0].endpoint == secure_sim.endpoint


@pytest.fixture(scope="module")
def restart_sim() -> Iterator[SimOpcUaServer]:
    """A simulator the tests below restart (one asset each)."""
    with SimOpcUaServer(free_port(), [("trailer-201", TYPE), ("trailer-202", TYPE)]) as server:
        yield server


def test_source_resumes_by_itself_after_a_server_restart(restart_sim: SimOpcUaServer, run_source: RunSource) -> None:
    a = "trailer-201"
    restart_sim.set_value(a, "supply_air", 1.0, source_ts_ns=T0)
    rec = Recorder()
    runner = run_source(restart_sim.endpoint, [node(restart_sim, a, "supply_air")], rec)
    rec.wait_value(a, "supply_air", 1.0)
    restart_sim.restart()  # sessions and subscriptions are gone; the port refuses while it reloads (~2 s)
    restart_sim.set_value(a, "supply_air", 2.0, source_ts_ns=T0 + 10_000)
    assert rec.wait_value(a, "supply_air", 2.0, timeout=15)[2] == T0 + 10_000
    c = runner.counters()
    assert c["opcua_reconnects"] == 1 and c["opcua_errors"] >= 1


def test_nodes_briefly_unknown_after_a_restart_are_subscribed_again_by_themselves(
        restart_sim: SimOpcUaServer, run_source: RunSource, caplog: pytest.LogCaptureFixture) -> None:
    a = "trailer-202"
    restart_sim.set_value(a, "return_air", 5.0, source_ts_ns=T0)
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="edge.sources.opcua"):
        runner = run_source(restart_sim.endpoint, [node(restart_sim, a, "return_air")], rec)
        rec.wait_value(a, "return_air", 5.0)
        restart_sim.restart(absent_s=60)  # the server is back after ~2 s, its asset nodes when restored below
        wait_until(lambda: runner.counters()["opcua_unknown_nodes"] >= 2, 20, what="BadNodeIdUnknown, then a retry")
        restart_sim.set_value(a, "return_air", 6.0, source_ts_ns=T0 + 20_000)
        restart_sim.restore_nodes()
        assert rec.wait_value(a, "return_air", 6.0, timeout=15)[2] == T0 + 20_000
    assert runner.counters()["opcua_reconnects"] == 1
    unknown = [r for r in caplog.records if getattr(r, "reason", "") == "BadNodeIdUnknown"]
    assert unknown and unknown[0].node == restart_sim.node_id(a, "return_air")


def test_source_notices_a_silent_network_loss_and_resumes_when_the_link_is_back(
        sim: SimOpcUaServer, run_source: RunSource, caplog: pytest.LogCaptureFixture) -> None:
    a = "trailer-005"
    link = FlakyLink(sim.port)
    try:
        sim.set_value(a, "ambient", 25.0, source_ts_ns=T0)
        rec = Recorder()
        with caplog.at_level(logging.WARNING, logger="edge.sources.opcua"):
            runner = run_source(link.endpoint, [node(sim, a, "ambient")], rec, request_timeout_s=1)
            rec.wait_value(a, "ambient", 25.0)
            link.drop()  # no FIN, no RST: only the keep-alive probe can tell
            wait_until(lambda: runner.counters()["opcua_errors"] >= 1, 10, what="the silent loss to be noticed")
            sim.set_value(a, "ambient", 26.0, source_ts_ns=T0 + 30_000)
            link.restore()
            assert rec.wait_value(a, "ambient", 26.0, timeout=20)[2] == T0 + 30_000
    finally:
        link.close()
    assert runner.counters()["opcua_reconnects"] == 1
    assert any(getattr(r, "reason", "").startswith("connection lost") for r in caplog.records)


def test_reconnect_delays_double_up_to_the_maximum_with_jitter() -> None:
    runner = OpcUaSourceRunner(OpcUaSource.model_validate({
        "type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840", "reconnect_min_s": 0.5, "reconnect_max_s": 30,
        "reconnect_jitter": 0.2, "nodes": [{"node": "ns=2;i=1", "asset": "a", "point": "p"}]}))
    for attempt, base in enumerate([0.5, 1, 2, 4, 8, 16, 30, 30, 30]):
        delays = [runner._backoff(attempt) for _ in range(200)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
        assert max(delays) - min(delays) > base * 0.2, "jitter spreads a fleet's reconnects"


def test_server_timestamp_then_arrival_time_stand_in_for_a_missing_source_timestamp() -> None:
    """Some servers send no SourceTimestamp; the hot path is fed a PublishResult directly (no server does this
    on demand: asyncua stamps every write)."""
    from datetime import UTC, datetime

    from asyncua import ua

    runner = OpcUaSourceRunner(OpcUaSource.model_validate({
        "type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840",
        "nodes": [{"node": "ns=2;i=1", "asset": "a", "point": "p"}]}))
    rec = Recorder()
    runner._sink = rec
    server_ts = datetime(2024, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)

    def item(value: object, server: datetime | None) -> ua.MonitoredItemNotification:
        return ua.MonitoredItemNotification(ClientHandle=1, Value=ua.DataValue(Value=ua.Variant(value),
                                                                                 ServerTimestamp=server))

    before = time.time_ns()
    runner._on_publish(ua.PublishResult(NotificationMessage=ua.NotificationMessage(NotificationData=[
        ua.DataChangeNotification(MonitoredItems=[item(1.5, server_ts), item(2.5, None), item("text", None)])])))
    (a, b) = rec.samples
    assert a == ("a", "p", 1_714_564_800_250_000_000, 1.5, 0)
    assert before <= b[2] <= time.time_ns() and b[3] == 2.5
    assert runner.counters()["opcua_values"] == 2 and runner.counters()["opcua_errors"] == 1, "text is no number"
