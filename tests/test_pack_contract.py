"""The pack contract, run against every registered pack (cloud/packs/README.md): the kind of asset it gives meaning
to is in the catalogue, its parts are where the README says, a gateway accepts its sample configuration, the
runner can schedule it on an asset with no data, explain says why it cannot recompute evidence it lacks, its
panel is served and listed, and its what-if answers only the question it asks."""

from __future__ import annotations

import re
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.api.web import WEB_DIR
from cloud.packs import PACKS, Pack, pack_for_source
from cloud.registry import Alert, Asset
from cloud.rules import explain
from cloud.rules.runner import RuleRunner
from edge.config import parse_config
from models.catalogue import builtin_types
from models.wire import PointSeries, TelemetryBatch

TYPES = sorted(PACKS)
SOURCES = sorted((t, s) for t, p in PACKS.items() for s in p.sources)
S = 1_000_000_000


@pytest.fixture
def api(influx_platform):
    key = influx_platform.registry.create_api_key("acme", "viewer")
    with influx_platform.registry.session() as s:
        s.add_all([Asset(tenant="acme", id=f"empty-{t}", type=t, gateway="gw1", first_seen_ns=0) for t in TYPES])
    return TestClient(create_app(influx_platform), headers={"Authorization": f"Bearer {key}"})


def test_the_shipped_packs_are_registered():
    assert {"refrigerated-trailer", "rotating-machine", "turbofan"} <= set(PACKS)


@pytest.mark.parametrize("type_id", TYPES)
def test_its_parts_are_where_the_readme_says(type_id):
    pack = PACKS[type_id]
    assert issubclass(pack, Pack) and pack.type_id == type_id
    assert type_id in builtin_types()
    assert pack.folder is not None and f"# {type_id}" in (pack.folder / "README.md").read_text()
    panel = pack.panel()
    assert panel is not None and panel.name == "panel.js"
    for module in re.findall(r"""from ['"]\.\./\.\./js/([\w.-]+)['"]""", panel.read_text()):
        assert (WEB_DIR / "js" / module).is_file(), f"{panel} imports js/{module}, which the dashboard lacks"


@pytest.mark.parametrize("type_id", TYPES)
def test_a_gateway_accepts_its_sample_configuration(type_id):
    sample = PACKS[type_id].folder / "gateway.sample.yaml"
    cfg = parse_config(yaml.safe_load(sample.read_text()), str(sample))
    assert type_id in {a.type for a in cfg.assets}
    assert cfg.points(), "an asset of the kind has numeric points"


@pytest.mark.parametrize("type_id", TYPES)
def test_the_runner_schedules_it_on_an_asset_without_data_and_nothing_is_raised(type_id, influx_platform, api):
    rules = RuleRunner(influx_platform)
    rules.on_written([TelemetryBatch(tenant="acme", gateway="gw1", seq=0, series=[
        PointSeries(asset=f"empty-{type_id}", point="nothing", t_ns=[], values=[], quality=[])])])
    assert rules.assess_now(now_ns=time.time_ns()) == 0
    with influx_platform.registry.session() as s:
        assert s.query(Alert).count() == 0
    assert set(PACKS[type_id].counter_names) <= set(rules.counters)


@pytest.mark.parametrize(("type_id", "source"), SOURCES)
def test_explain_says_why_it_cannot_recompute_evidence_that_lacks_what_it_needs(type_id, source, influx_platform):
    assert pack_for_source(source) is PACKS[type_id]
    alert = {"tenant": "acme", "asset": f"empty-{type_id}", "rule": "some-rule", "evidence": {"source": source}}
    out = explain.explain(influx_platform, alert)
    assert out["recomputable"] is False and out["reason"]
    assert out["stored"] == {"source": source}


@pytest.mark.parametrize("type_id", TYPES)
def test_its_panel_is_served_and_listed_with_its_what_if(type_id, api):
    pack = PACKS[type_id]
    [listed] = [p for p in api.get("/api/v1/packs").json()["items"] if p["type"] == type_id]
    assert listed == {"type": type_id, "panel": f"packs/{type_id}/panel.js", "sources": list(pack.sources),
                      "what_if": pack.question.model_json_schema() if pack.question else None}
    served = api.get(f"/static/{listed['panel']}")
    assert served.status_code == 200 and served.content == pack.panel().read_bytes()


@pytest.mark.parametrize("type_id", TYPES)
def test_its_what_if_answers_only_the_question_it_asks(type_id, api):
    r = api.post(f"/api/v1/assets/empty-{type_id}/simulate", json={"no_such_field": 1})
    assert r.status_code == 422
    if PACKS[type_id].question is None:
        assert r.json()["detail"] == f"no what-if model for asset type {type_id!r}"
    else:
        assert [e["where"] for e in r.json()["errors"]] == ["body.no_such_field"]
        assert PACKS[type_id].question.model_config.get("extra") == "forbid"
        asked = api.post(f"/api/v1/assets/empty-{type_id}/simulate", json={})  # the defaults, on no history
        assert asked.status_code == 422 and asked.json()["title"] == "Cannot simulate", asked.text
