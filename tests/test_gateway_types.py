"""Asset types defined in the cloud reach gateways through their desired configuration (``asset_types``), are
validated there, and a running agent takes assets of them on without a restart, keeping what its detectors
learned about the points it already had; the configuration applied is where its next start begins."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from cloud.gateway_config import with_asset_types
from cloud.registry import AssetTypeRecord
from edge.agent import DESIRED_FILE, EdgeAgent, with_saved_desired
from edge.config import ConfigError, parse_config
from edge.watch import PointWatch
from models import topics
from models.wire import DesiredConfig, ReportedConfig, TelemetryBatch, decode, encode
from tests.harness.processes import gateway_config, wait_until
from tests.test_edge_agent import Listener, _publish_retained

S = 1_000_000_000
T0 = 1_767_225_600 * S
GOOD = {"tenant": "acme", "gateway": "gw1", "assets": [{"id": "t1", "type": "refrigerated-trailer"}],
        "sources": [{"type": "mqtt", "subscriptions": [{"topic": "s/+/+", "asset": "{1}", "point": "{2}"}]}]}
PUMP = {"id": "acme-pump", "name": "Booster pump", "description": "defined through the API",
        "points": {"flow_m3h": {"unit": "m3/h", "normal_range": [5.0, 40.0],
                                "detectors": [{"kind": "ewma_z", "tau_s": 600, "threshold": 6.0, "warmup": 10}]},
                   "operator": {"unit": "id", "kind": "text", "personal": True}},
        "local_rules": [{"name": "no-flow", "point": "flow_m3h", "below": 1.0, "for_s": 30, "severity": "medium"}]}
TRAILER = {"id": "trailer-001", "type": "refrigerated-trailer"}


# -- the gateway validates the types it is sent ----------------------------------------------------------------

def test_a_gateway_config_may_define_the_types_its_assets_use():
    cfg = parse_config({**GOOD, "asset_types": {"acme-pump": PUMP}, "assets": [*GOOD["assets"],
                                                                                {"id": "p1", "type": "acme-pump"}]})
    assert cfg.points()[-1] == ("p1", "flow_m3h") and len(cfg.points()) == 8  # the trailer's 7, the pump's
    assert cfg.text_points() == {("t1", "driver_id"): True, ("p1", "operator"): True}
    assert cfg.assets[1].asset_type.local_rules[0].name == "no-flow"
    again = parse_config(cfg.model_dump(mode="json"))  # what the agent merges a desired configuration into
    assert again.points() == cfg.points() and again.assets[1].asset_type.name == "Booster pump"


@pytest.mark.parametrize(("patch", "message"), [
    ({"asset_types": {"pump": PUMP}}, "asset_types: Value error, pump: its id is 'acme-pump'; a type is listed "
                                      "under its own id"),
    ({"asset_types": {"refrigerated-trailer": {**PUMP, "id": "refrigerated-trailer"}}},
     "asset_types: Value error, refrigerated-trailer: a built-in type; this gateway runs its own definition of it"),
    ({"assets": [{"id": "p1", "type": "acme-pump"}]}, "assets[0].type: Value error, unknown asset type 'acme-pump'"),
    ({"asset_types": {"acme-pump": {**PUMP, "points": {"flow_m3h": {"unit": "m3/h", "colour": "red"}}}}},
     "asset_types.acme-pump.points.flow_m3h.colour: Extra inputs are not permitted"),
    ({"asset_types": {"acme-pump": {**PUMP, "local_rules": [{"name": "r", "point": "nope", "above": 1, "for_s": 1}]}}},
     "asset_types.acme-pump: Value error, rule r: unknown point 'nope'"),
])
def test_a_bad_type_definition_is_refused_naming_it(patch, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**GOOD, **patch}, "desired")
    assert f"desired: {message}" in str(err.value)


# -- the cloud sends the definitions gateways do not ship ----------------------------------------------------------

def test_the_cloud_sends_the_definitions_of_the_types_gateways_do_not_ship(registry):
    with registry.session() as s:
        s.add(AssetTypeRecord(tenant="acme", id="acme-pump", definition=PUMP))
        s.add(AssetTypeRecord(tenant="other", id="acme-pump", definition={**PUMP, "name": "someone else's"}))
    config = {"tick_ms": 200, "assets": [TRAILER, {"id": "p1", "type": "acme-pump"}, {"id": "g1", "type": "ghost"}]}
    with registry.session() as s:
        sent = with_asset_types(s, "acme", config)
        assert sent == {**config, "asset_types": {"acme-pump": PUMP}}  # shipped and unknown types are not sent
        # the assets no longer name it: its definition goes; a configuration without assets keeps what it had
        assert with_asset_types(s, "acme", {**sent, "assets": [TRAILER]}) == {"tick_ms": 200, "assets": [TRAILER]}
        assert with_asset_types(s, "acme", {"tick_ms": 100, "asset_types": {"x": {}}}) == \
            {"tick_ms": 100, "asset_types": {"x": {}}}


# -- a running agent takes assets of a new type on ----------------------------------------------------------------

@pytest.fixture
def agent(tmp_path, mosquitto):
    cfg = parse_config(gateway_config(tmp_path, mosquitto.url, mosquitto.url, gateway=f"gw-{uuid.uuid4().hex[:8]}"))
    a = EdgeAgent(cfg)
    a.start()
    wait_until(lambda: a.uplink.connected, what="uplink connected")
    yield a
    a.shutdown(flush_s=2)


def _desired(agent: EdgeAgent, mosquitto, version: int, config: dict) -> ReportedConfig:
    reported = Listener(mosquitto.url, topics.config_reported("acme", agent.cfg.gateway))
    _publish_retained(mosquitto.url, topics.config_desired("acme", agent.cfg.gateway),
                      encode(DesiredConfig(version=version, config=config)))
    wait_until(lambda: not agent._desired.empty(), what="the desired config to arrive")
    agent._apply_pending_desired()
    [report] = wait_until(lambda: [decode(p, ReportedConfig) for p in reported.payloads()], what="a report")
    reported.close()
    return report


def _rows(watch: PointWatch, rows: list[int]) -> dict[str, dict[str, np.ndarray]]:
    return {d.name: {k: np.array(v)[rows] for k, v in d.state().items()} for d in watch.ensemble.detectors}


def test_an_asset_of_a_cloud_defined_type_is_added_live_and_the_detectors_keep_what_they_learned(agent, mosquitto,
                                                                                                  tmp_path):
    for i in range(300):  # a trailer the detectors have learned
        agent.sink("trailer-001", "supply_air", T0 + i * 10 * S, 4.0 + 0.1 * (i % 5), 0)
        agent.sink("trailer-001", "return_air", T0 + i * 10 * S, 6.0 + 0.1 * (i % 3), 0)
    agent.tick()
    trailer_rows = list(range(len(agent.points)))
    learned = _rows(agent.watch, trailer_rows)
    telemetry = Listener(mosquitto.url, topics.telemetry("acme", agent.cfg.gateway))

    report = _desired(agent, mosquitto, 5, {"assets": [TRAILER, {"id": "pump-7", "type": "acme-pump"}],
                                            "asset_types": {"acme-pump": PUMP}})
    assert (report.version, report.applied, report.reason) == (5, True, "")
    assert agent.points[len(trailer_rows):] == [("pump-7", "flow_m3h")]
    kept = _rows(agent.watch, trailer_rows)
    assert kept.keys() == learned.keys() | {"ewma_z"}  # the pump's kind joins; the trailer's stay
    for kind, state in learned.items():
        for key, rows in state.items():
            np.testing.assert_array_equal(kept[kind][key], rows, err_msg=f"{kind}.{key}")
    ewma = next(d for d in agent.watch.ensemble.detectors if d.name == "ewma_z")
    assert ewma.state()["count"].tolist() == [0] * len(agent.points)  # the kind the new type brought: all cold

    t1 = T0 + 3000 * S
    flows = [12.0] * 10 + [0.5] * 5  # then no flow for 40 s: the type's own local rule fires at the edge
    for i, v in enumerate(flows):
        agent.sink("pump-7", "flow_m3h", t1 + i * 10 * S, v, 0)
    agent.sink("pump-7", "operator", t1, "badge-42", 0)  # a personal text point: dropped without a key
    agent.tick()
    assert agent.counts["alarms"] == 1 and agent.counts["personal_dropped"] == 1

    def pump_series():
        batches = [decode(p, TelemetryBatch) for p in telemetry.payloads()]
        return [(s.t_ns, s.values) for b in batches for s in b.series if s.asset == "pump-7"]

    [(t, v)] = wait_until(pump_series, what="the pump's samples upstream")
    assert (t, v) == ([t1 + i * 10 * S for i in range(15)], flows)
    telemetry.close()
    assert (agent.cfg.state_dir / DESIRED_FILE).is_file()


def test_a_desired_type_the_detectors_cannot_run_is_refused_and_nothing_changes(agent, mosquitto):
    before, sources = list(agent.points), list(agent.sources)
    bad = {**PUMP, "points": {"flow_m3h": {"unit": "m3/h", "detectors": [{"kind": "crystal-ball"}]}}, "local_rules": []}
    report = _desired(agent, mosquitto, 6, {"assets": [TRAILER, {"id": "pump-7", "type": "acme-pump"}],
                                            "asset_types": {"acme-pump": bad}})
    assert (report.version, report.applied) == (6, False)
    assert "point 'pump-7/flow_m3h': detectors[0]: unknown kind 'crystal-ball'" in report.reason
    assert agent.points == before and agent.sources == sources and agent.cfg.version == 0
    assert not (agent.cfg.state_dir / DESIRED_FILE).exists()


def test_a_restart_starts_from_the_desired_config_last_applied(tmp_path):
    file_cfg = parse_config(gateway_config(tmp_path, "mqtt://127.0.0.1:1", "mqtt://127.0.0.1:1"))
    assert with_saved_desired(file_cfg) is file_cfg  # nothing saved yet
    saved = DesiredConfig(version=4, config={"assets": [TRAILER, {"id": "pump-7", "type": "acme-pump"}],
                                             "asset_types": {"acme-pump": PUMP}, "tick_ms": 250,
                                             "uplink": {"url": "mqtt://elsewhere:1883"}})
    file_cfg.state_dir.mkdir(parents=True)
    (file_cfg.state_dir / DESIRED_FILE).write_bytes(encode(saved))
    cfg = with_saved_desired(file_cfg)
    assert (cfg.version, cfg.tick_ms, cfg.points()[-1]) == (4, 250, ("pump-7", "flow_m3h"))
    assert cfg.uplink == file_cfg.uplink  # what only a restart may change stays the file's
    current = file_cfg.model_copy(update={"version": 4})
    assert with_saved_desired(current) is current  # the file is as new: it stands
    (file_cfg.state_dir / DESIRED_FILE).write_bytes(b"{not json")
    assert with_saved_desired(file_cfg) is file_cfg
