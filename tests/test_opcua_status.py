"""OPC-UA status codes beyond good / uncertain / bad: a real asyncua server sends BadSensorFailure,
UncertainLastUsableValue and Good; the agent's telemetry batch keeps the three-class ``quality`` and, beside
it, each sample's full code as the series' ``status`` (0 for plain Good), which the wire model validates."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
from asyncua import ua
from pydantic import ValidationError

from edge.agent import EdgeAgent
from edge.config import parse_config
from models.wire import PointSeries, TelemetryBatch
from simulators.opcua_server import SimOpcUaServer
from tests.harness import free_port
from tests.harness.processes import wait_until

ASSET = "trailer-331"


def test_the_full_status_code_travels_with_each_sample(tmp_path: Path) -> None:
    with SimOpcUaServer(free_port(), [(ASSET, "refrigerated-trailer")]) as sim:
        cfg = parse_config({
            "tenant": "acme", "gateway": "gw-st", "uplink": {"url": "mqtt://127.0.0.1:1"},
            "outbox": {"path": str(tmp_path / "outbox.sqlite")}, "state_dir": str(tmp_path / "state"),
            "assets": [{"id": ASSET, "type": "refrigerated-trailer"}],
            "sources": [{"type": "opcua", "endpoint": sim.endpoint, "publishing_interval_ms": 20, "nodes": [
                {"node": sim.node_id(ASSET, p), "asset": ASSET, "point": p} for p in ("supply_air", "ambient")]}]})
        agent = EdgeAgent(cfg)
        [src] = agent.sources
        src.on_status = agent.statuses  # what start() does, without the uplink
        src.start(agent.sink)
        try:
            wait_until(lambda: src.counters()["opcua_values"] >= 2, 15, what="the initial values")
            agent.tick()
            n0 = len(agent.outbox.pending_after(100, 0, 0))
            sim.set_value(ASSET, "supply_air", 4.5, status="UncertainLastUsableValue")
            sim.set_value(ASSET, "supply_air", None, status="BadSensorFailure")
            sim.set_value(ASSET, "supply_air", 4.75)
            sim.set_value(ASSET, "ambient", 21.0)
            wait_until(lambda: src.counters()["opcua_values"] >= 6, 10, what="four more values")
            agent.tick()
            rows = agent.outbox.pending_after(100, 0, 0)[n0:]
        finally:
            src.stop()
            agent.outbox.close()
    series = {}
    for row in rows:
        raw = row.payload if row.payload[:1] == b"{" else zlib.decompress(row.payload)
        batch = TelemetryBatch.model_validate(json.loads(raw))
        series.update({s.point: s for s in batch.series})
    s = series["supply_air"]
    assert s.quality == [1, 2, 0]
    assert s.values[0] == 4.5 and s.values[1] is None and s.values[2] == 4.75
    assert s.status == [ua.StatusCodes.UncertainLastUsableValue, ua.StatusCodes.BadSensorFailure, 0]
    assert series["ambient"].status is None and series["ambient"].quality == [0]


def test_a_status_list_must_match_the_samples() -> None:
    ok = {"asset": "a", "point": "p", "t_ns": [1, 2], "values": [1.0, None], "quality": [0, 2]}
    assert PointSeries.model_validate({**ok, "status": [0, 0x80320000]}).status == [0, 0x80320000]
    for bad in ([0], [0, -1], [0, 1 << 32]):
        with pytest.raises(ValidationError, match="one 32-bit status code per sample"):
            PointSeries.model_validate({**ok, "status": bad})
