"""The edge OPC-UA source speaks the current security policies besides Basic256Sha256: Aes128_Sha256_RsaOaep
and Aes256_Sha256_RsaPss (OPC 10000-7), each against a real asyncua server offering only that policy with
SignAndEncrypt, the server's certificate pinned; a source asking for a policy the server does not offer gets
no session (the server refuses the secure channel) and keeps retrying."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import OpcUaSource
from edge.sources.opcua import OpcUaSourceRunner
from simulators.opcua_server import SimOpcUaServer
from tests.harness import free_port
from tests.harness.opcua import Recorder, client_certificate
from tests.harness.processes import wait_until

ASSET = "trailer-311"
FAST = {"publishing_interval_ms": 20, "keepalive_s": 1.0, "reconnect_min_s": 0.1, "reconnect_max_s": 0.3,
        "request_timeout_s": 3}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("policies")


@pytest.fixture(scope="module")
def aes128(pki: Path) -> Iterator[SimOpcUaServer]:
    with SimOpcUaServer(free_port(), [(ASSET, "refrigerated-trailer")], security=["SignAndEncrypt"],
                        policy="Aes128_Sha256_RsaOaep", cert_dir=pki / "aes128") as sim:
        yield sim


@pytest.fixture(scope="module")
def aes256(pki: Path) -> Iterator[SimOpcUaServer]:
    with SimOpcUaServer(free_port(), [(ASSET, "refrigerated-trailer")], security=["SignAndEncrypt"],
                        policy="Aes256_Sha256_RsaPss", cert_dir=pki / "aes256") as sim:
        yield sim


def _source(sim: SimOpcUaServer, policy: str, pki: Path, **options: object) -> OpcUaSourceRunner:
    cert, key = client_certificate(pki / f"client-{policy}")
    return OpcUaSourceRunner(OpcUaSource.model_validate({
        "type": "opcua", "endpoint": sim.endpoint, "security": "SignAndEncrypt", "security_policy": policy,
        "cert_file": cert, "key_file": key, "server_cert_file": sim.cert_file,
        "nodes": [{"node": sim.node_id(ASSET, "supply_air"), "asset": ASSET, "point": "supply_air"}],
        **{**FAST, **options}}))


@pytest.mark.parametrize("policy", ["Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"])
def test_values_arrive_over_each_aes_policy(policy: str, aes128: SimOpcUaServer, aes256: SimOpcUaServer,
                                            pki: Path) -> None:
    sim = aes128 if policy.startswith("Aes128") else aes256
    rec = Recorder()
    runner = _source(sim, policy, pki)
    runner.start(rec)
    try:
        sim.set_value(ASSET, "supply_air", 3.25)
        assert rec.wait_value(ASSET, "supply_air", 3.25, timeout=15)[4] == 0
        assert runner.counters()["opcua_errors"] == 0
    finally:
        runner.stop()


def test_a_policy_the_server_does_not_offer_gets_no_session(aes128: SimOpcUaServer, pki: Path) -> None:
    rec = Recorder()
    runner = _source(aes128, "Aes256_Sha256_RsaPss", pki, request_timeout_s=1)
    runner.start(rec)
    try:
        wait_until(lambda: runner.counters()["opcua_errors"] >= 2, 15, what="two refused connects")
        assert rec.samples == [] and runner.counters()["opcua_reconnects"] == 0
    finally:
        runner.stop()
