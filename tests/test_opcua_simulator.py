"""The simulators' OPC-UA server: generated values with live source timestamps, and its command's arguments."""

from __future__ import annotations

import time

import pytest
import typer
from typer.testing import CliRunner

from edge.config import OpcUaSource
from edge.sources.opcua import OpcUaSourceRunner
from simulators.opcua_server import SimOpcUaServer, eu_information, opcua_server_command
from tests.harness import free_port
from tests.harness.opcua import Recorder


def test_generated_values_come_from_the_value_function_stamped_with_the_current_time() -> None:
    rec = Recorder()
    started_ns = time.time_ns()
    with SimOpcUaServer(free_port(), [("trailer-401", "refrigerated-trailer")], rate_hz=20,
                        values=lambda asset, point, t: 100.0 if point == "door" else t % 1000) as sim:
        runner = OpcUaSourceRunner(OpcUaSource.model_validate({
            "type": "opcua", "endpoint": sim.endpoint, "publishing_interval_ms": 20,
            "nodes": [{"node": sim.node_id("trailer-401", "ambient"), "asset": "trailer-401", "point": "ambient"},
                      {"node": sim.node_id("trailer-401", "door"), "asset": "trailer-401", "point": "door"}]}))
        runner.start(rec)
        try:
            rec.wait_for(lambda ss: sum(s[1] == "ambient" and s[2] >= started_ns for s in ss) >= 5, 10,
                         "five generated values")
            rec.wait_value("trailer-401", "door", 100.0)
        finally:
            runner.stop()
    generated = [s for s in rec.of("trailer-401", "ambient") if s[2] >= started_ns]
    for _, _, t_ns, value, quality in generated:
        # the value is the generator's clock (mod 1000 s); the source timestamp is taken right after it
        assert -1e-5 <= (t_ns / 1e9 % 1000) - value < 0.5 and quality == 0
    assert [s[2] for s in generated] == sorted(s[2] for s in generated)


def test_engineering_units_carry_the_unece_code_of_the_catalogue_unit() -> None:
    eu = eu_information("degC")
    assert (eu.UnitId, eu.DisplayName.Text) == (4408652, "degC")  # "CEL"
    assert eu_information("bool").UnitId == -1  # no UNECE code: say so rather than invent one


@pytest.mark.parametrize(("args", "message"), [
    (["--user", "edge"], "expected name:password"),
    (["--security", "Encrypt"], "use None, Sign or SignAndEncrypt"),
    (["--assets", "t1=toaster"], "unknown asset type 'toaster'"),
])
def test_the_command_refuses_bad_options_before_serving(args: list[str], message: str) -> None:
    app = typer.Typer()
    app.command()(opcua_server_command)
    result = CliRunner().invoke(app, ["--port", str(free_port()), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
