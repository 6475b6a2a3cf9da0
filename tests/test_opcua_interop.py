"""Interoperability with a second OPC-UA implementation (node-opcua), both ways.

- the edge source (asyncua) against a node-opcua server: exact values and source timestamps, deadband,
  Bad status, and SignAndEncrypt/Basic256Sha256 with the server trusting the client's certificate and the
  source pinning the server's on first use;
- a node-opcua client against the simulators' asyncua server: read, EngineeringUnits, subscription.

node-opcua is installed into ``tests/harness/node_opcua/node_modules`` on first use; without node/npm these
tests fail with the command to install them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import OpcUaSource
from edge.sources.opcua import OpcUaSourceRunner
from simulators.opcua_server import SimOpcUaServer
from tests.harness import HarnessError, free_port
from tests.harness.opcua import NodeOpcUaServer, Recorder, client_certificate, ensure_node_opcua, run_node_client

FAST = {"publishing_interval_ms": 20, "keepalive_s": 1.0, "reconnect_min_s": 0.1, "reconnect_max_s": 1.0,
        "unknown_node_retry_s": 0.3, "request_timeout_s": 5}
CLIENT_URI = "urn:assettwin:edge:interop-test"


@pytest.fixture(scope="module")
def node_server() -> Iterator[NodeOpcUaServer]:
    """A node-opcua server offering None and SignAndEncrypt (Basic256Sha256), accepting unknown client certs."""
    try:
        server = NodeOpcUaServer(modes=("None", "SignAndEncrypt"))
        server.start()
    except HarnessError as exc:
        error = str(exc)
    else:
        error = ""
    if error:
        pytest.fail(error, pytrace=False)
    yield server
    server.close()


@pytest.fixture
def source() -> Iterator[list[OpcUaSourceRunner]]:
    runners: list[OpcUaSourceRunner] = []
    yield runners
    for r in runners:
        r.stop()


def start(runners: list[OpcUaSourceRunner], rec: Recorder, endpoint: str, nodes: list[dict],
          **options: object) -> OpcUaSourceRunner:
    runner = OpcUaSourceRunner(OpcUaSource.model_validate({"type": "opcua", "endpoint": endpoint, "nodes": nodes,
                                                           **FAST, **options}))
    runner.start(rec)
    runners.append(runner)
    return runner


def test_source_receives_node_opcua_values_exactly_as_the_server_set_them(
        node_server: NodeOpcUaServer, source: list[OpcUaSourceRunner]) -> None:
    rec, ns = Recorder(), node_server.namespace
    start(source, rec, node_server.endpoint,
          [{"node": node_server.node_id("counter"), "asset": "pump-01", "point": "counter", "sampling_interval_ms": 0},
           {"node": f"/Objects/{ns}:pump-01/{ns}:fault", "asset": "pump-01", "point": "fault"}])
    rec.wait_for(lambda ss: sum(s[1] == "counter" for s in ss) >= 6, 15, "six counter values")
    rec.wait_for(lambda ss: any(s[1] == "fault" for s in ss), 5, "the fault value")
    counter = [(t, v) for _, _, t, v, _ in rec.of("pump-01", "counter")]
    sent = node_server.sent("counter")
    assert all(sent.get(tv) == "Good" for tv in counter), f"not what the server set: {counter}"
    vs = [v for _, v in counter]
    assert vs == [vs[0] + k for k in range(len(vs))], "every change arrives, in order"
    assert {q for *_, q in rec.of("pump-01", "counter")} == {0}
    (fault,) = rec.of("pump-01", "fault")[:1]
    assert math.isnan(fault[3]) and fault[4] == 2
    assert (fault[2], 42.0) in node_server.sent("fault")


def test_source_deadband_against_node_opcua(node_server: NodeOpcUaServer, source: list[OpcUaSourceRunner]) -> None:
    rec = Recorder()
    start(source, rec, node_server.endpoint, [{"node": node_server.node_id("ramp"), "asset": "pump-01",
                                               "point": "ramp", "sampling_interval_ms": 0, "deadband_abs": 1.0}])
    rec.wait_for(lambda ss: len(ss) >= 4, 15, "four ramp values")
    got = [(t, v) for _, _, t, v, _ in rec.samples]
    assert all(tv in node_server.sent("ramp") for tv in got)
    # The ramp climbs 0.25 per step: with a 1.0 deadband only every fifth step (+1.25) is reported.
    steps = [b - a for (_, a), (_, b) in itertools.pairwise(got)]
    assert steps == [1.25] * len(steps)


def test_source_sign_and_encrypt_with_node_opcua_trusting_the_client_certificate(
        node_server: NodeOpcUaServer, source: list[OpcUaSourceRunner], tmp_path: Path) -> None:
    cert, key = client_certificate(tmp_path, CLIENT_URI)
    rec = Recorder()
    trust = tmp_path / "trusted"
    runner = start(source, rec, node_server.endpoint,
                   [{"node": node_server.node_id("counter"), "asset": "pump-01", "point": "counter"}],
                   security="SignAndEncrypt", cert_file=cert, key_file=key, trust_dir=trust,
                   trust_on_first_use=True)
    rec.wait_for(lambda ss: len(ss) >= 3, 20, "three counter values over SignAndEncrypt")
    assert all((t, v) in node_server.sent("counter") for _, _, t, v, _ in rec.samples)
    session = node_server.process.wait_event("session", 5, clientUri=CLIENT_URI)
    assert session["securityMode"] == "SignAndEncrypt"
    assert session["securityPolicy"].endswith("#Basic256Sha256")
    c = runner.counters()
    assert (c["opcua_errors"], c["opcua_pinned"], c["opcua_untrusted"]) == (0, 1, 0)
    # node-opcua's own certificate (its PKI, its extensions) was pinned as it is, and is trusted from then on.
    (pinned,) = trust.iterdir()
    again = Recorder()
    second = start(source, again, node_server.endpoint,
                   [{"node": node_server.node_id("counter"), "asset": "pump-02", "point": "counter"}],
                   security="SignAndEncrypt", cert_file=cert, key_file=key, trust_dir=trust)
    again.wait_for(lambda ss: len(ss) >= 1, 20, "a value with the pin as the trust list")
    assert [p.name for p in trust.iterdir()] == [pinned.name] and second.counters()["opcua_untrusted"] == 0


def test_node_opcua_client_reads_and_subscribes_the_simulators_server(tmp_path: Path) -> None:
    t0 = 1_700_000_000_000_000_000  # whole ms: JavaScript dates carry milliseconds
    with SimOpcUaServer(free_port(), [("trailer-301", "refrigerated-trailer")]) as sim:
        sim.set_value("trailer-301", "supply_air", 4.5, source_ts_ns=t0)
        try:
            client = run_node_client(sim.endpoint, sim.node_id("trailer-301", "supply_air"), tmp_path, samples=3)
            client.wait_event("subscribed", 30)
        except HarnessError as exc:
            pytest.fail(str(exc), pytrace=False)
        sim.set_value("trailer-301", "supply_air", 5.25, source_ts_ns=t0 + 1_000_000)
        sim.set_value("trailer-301", "supply_air", 6.0, status="BadSensorFailure", source_ts_ns=t0 + 2_000_000)
        try:
            client.wait_event("done", 15)
        finally:
            rc = client.wait_exit(10)
    assert rc == 0, client.log_tail()
    ms = t0 // 1_000_000
    read = client.of("read")[0]
    assert (read["value"], read["status"], read["source_ts_ms"]) == (4.5, "Good", ms)
    eu = client.of("eu")[0]
    assert (eu["displayName"], eu["unitId"]) == ("degC", 4408652)  # UNECE "CEL"
    changes = [(e["value"], e["status"], e["source_ts_ms"]) for e in client.of("change")]
    assert changes[:2] == [(4.5, "Good", ms), (5.25, "Good", ms + 1)]
    assert changes[2][1:] == ("BadSensorFailure", ms + 2)  # node-opcua hands no value with a Bad status


def test_without_node_the_interop_tests_fail_saying_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no npm
    with pytest.raises(HarnessError, match=r"node not found on PATH.*install Node\.js"):
        ensure_node_opcua()
