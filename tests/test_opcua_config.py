"""An OPC-UA source section that cannot work is refused at start-up, naming the field and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge.agent import build_sources
from edge.config import ConfigError, OpcUaSource, load_config, parse_config

NODE = {"node": "ns=2;s=trailer-001.door", "asset": "t1", "point": "door"}
GOOD = {"tenant": "acme", "gateway": "gw1", "assets": [{"id": "t1", "type": "refrigerated-trailer"}],
        "sources": [{"type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840", "nodes": [NODE]}]}


def with_source(**fields: object) -> dict:
    return {**GOOD, "sources": [{**GOOD["sources"][0], **fields}]}


@pytest.mark.parametrize("node", ["ns=2;s=trailer-001.door", "ns=2;i=1042", "i=2258", "nsu=urn:assettwin:sim;s=t1.door",
                                  "/Objects/2:trailer-001/2:door", "/Objects/Server"])
def test_node_ids_and_browse_paths_are_accepted(node: str) -> None:
    cfg = parse_config(with_source(nodes=[{**NODE, "node": node}]))
    assert cfg.sources[0].nodes[0].node == node


@pytest.mark.parametrize(("patch", "message"), [
    ({"nodes": [{**NODE, "node": "trailer-001.door"}]},
     "sources[0].nodes[0].node: Value error, not a NodeId (ns=2;s=name, ns=2;i=42) or a browse path"),
    ({"nodes": [{**NODE, "node": "/Objects//2:door"}]},
     "sources[0].nodes[0].node: Value error, not a browse path like /Objects/2:asset/2:point"),
    ({"security": "SignAndEncrypt"},
     "sources[0]: Value error, security SignAndEncrypt needs cert_file and key_file"),
    ({"security": "Sign", "cert_file": "c.der", "key_file": "k.pem"},
     "sources[0]: Value error, security Sign needs the server's certificate pinned (server_cert_file) or a trust "
     "list (trust_dir; trust_on_first_use: true pins the first one seen)"),
    ({"trust_dir": "trusted"},
     "sources[0]: Value error, trust_dir and trust_on_first_use need security Sign or SignAndEncrypt"),
    ({"security": "Sign", "cert_file": "c.der", "key_file": "k.pem", "server_cert_file": "s.der",
      "trust_on_first_use": True},
     "sources[0]: Value error, trust_on_first_use needs trust_dir: where the first certificate seen is pinned"),
    ({"username": "edge"}, "sources[0]: Value error, give both username and password, or neither"),
    ({"reconnect_min_s": 5, "reconnect_max_s": 1}, "sources[0]: Value error, reconnect_max_s must be at least"),
    ({"security_policy": "Basic128Rsa15"}, "sources[0].security_policy: Input should be 'Basic256Sha256'"),
])
def test_unworkable_opcua_sections_are_refused_with_the_field_named(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(with_source(**patch), "gateway.yaml")
    assert f"gateway.yaml: {message}" in str(err.value)


def test_the_agent_builds_an_opcua_runner_that_speaks_the_source_protocol() -> None:
    (runner,) = build_sources(parse_config(with_source(publishing_interval_ms=250)))
    assert type(runner).__name__ == "OpcUaSourceRunner" and runner.name == "opcua"
    assert runner.mark() == 0 and runner.commit(0) is None
    assert runner.counters() == {"opcua_values": 0, "opcua_bad_quality": 0, "opcua_reconnects": 0,
                                 "opcua_unknown_nodes": 0, "opcua_errors": 0, "opcua_untrusted": 0,
                                 "opcua_pinned": 0, "opcua_blocks": 0}


def test_a_relative_trust_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(with_source(
        security="SignAndEncrypt", cert_file="c.der", key_file="k.pem", trust_dir="pki/trusted",
        trust_on_first_use=True)))
    src = load_config(tmp_path / "gateway.yaml").sources[0]
    assert isinstance(src, OpcUaSource)
    assert (src.trust_dir, src.trust_on_first_use) == (tmp_path / "pki" / "trusted", True)
