"""A bad gateway file stops start-up with a message that names the field and why."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from edge.config import ConfigError, load_config, parse_config

GOOD = {"tenant": "acme", "gateway": "gw1", "assets": [{"id": "t1", "type": "refrigerated-trailer"}],
        "sources": [{"type": "mqtt", "subscriptions": [{"topic": "s/+/+", "asset": "{1}", "point": "{2}"}]}]}


def test_a_good_config_loads_with_paths_relative_to_the_file(tmp_path):
    p = tmp_path / "gateway.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    cfg = load_config(p)
    assert cfg.outbox.path == tmp_path / "outbox.sqlite"
    assert len(cfg.points()) == 7  # the trailer's six sampled points and its run mode


@pytest.mark.parametrize(("patch", "message"), [
    ({"tenant": "a b"}, "tenant: String should match pattern"),
    ({"assets": [{"id": "t1", "type": "toaster"}]}, "assets[0].type: Value error, unknown asset type 'toaster'"),
    ({"sources": [{"type": "opcua", "endpoint": "http://x", "nodes": [{"node": "ns=2;i=1", "asset": "t1",
                                                                       "point": "door"}]}]},
     "sources[0].endpoint: Value error, not an opc.tcp URL"),
    ({"uplink": {"url": "http://broker"}}, "uplink.url: Value error, not an mqtt:// or mqtts:// URL"),
    ({"uplink": {"url": "mqtts://broker:8883", "cert_file": "gw.pem"}},
     "uplink: Value error, give both cert_file and key_file"),
    ({"tick_ms": 0}, "tick_ms: Input should be greater than or equal to 5"),
    ({"surprise": 1}, "surprise: Extra inputs are not permitted"),
])
def test_bad_fields_are_named(patch, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**GOOD, **patch}, "gateway.yaml")
    assert f"gateway.yaml: {message}" in str(err.value)


def test_missing_tls_files_are_named_before_start(tmp_path):
    (tmp_path / "ca.pem").write_text("a CA")
    p = tmp_path / "gateway.yaml"
    p.write_text(yaml.safe_dump({**GOOD, "uplink": {"url": "mqtts://broker:8883", "ca_file": "ca.pem",
                                                    "cert_file": "gw1.pem", "key_file": "gw1.key"}}))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == f"{p}: uplink.cert_file: file not found: {tmp_path / 'gw1.pem'}"


def test_twin_edge_run_refuses_a_bad_file_with_exit_code_2(tmp_path):
    p = tmp_path / "gateway.yaml"
    p.write_text(yaml.safe_dump({**GOOD, "tick_ms": "fast"}))
    r = subprocess.run([sys.executable, "-m", "twin", "edge", "run", "--config", str(p)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "tick_ms: Input should be a valid integer" in r.stderr
