"""Hostile requests at the API: schemathesis generates requests for every operation in ``/openapi.json`` (valid
and invalid parameters, bodies, headers) against the real app on a real registry (PostgreSQL), store (InfluxDB)
and broker (Mosquitto), with an admin key and without one. No request may cause a 5xx, and a documented status
must come with its documented content type, headers and body schema.

Half of the admin's requests name resources that exist (an asset with telemetry, its gateway, an alert), so the
fuzzed query and body reach the code behind the 404. At 60 examples per operation and mode this found what the
outside probes found before ``cloud/api/params.py`` existed (a cursor, a point with a newline, a time out of
range: 500s); ``tests/test_api_params.py`` keeps those cases, and every hostile value in every parameter, exact.
The suite runs 25 (the API has grown to ~100 operations: 60 took over four minutes of the 15 the suite may
take); ``FUZZ_API_EXAMPLES=60`` (or more) for a longer hunt."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.registry import Alert, AnomalyRecord, Asset, Gateway
from cloud.settings import CloudSettings
from cloud.store import Rows

S = 1_000_000_000
T0 = 1_767_225_600 * S
ADMIN_KEY = "fuzz-admin-key-0123456789"


@pytest.fixture(scope="module")
def fuzz_platform(postgres, influxdb, mosquitto):
    import uuid

    db = f"fuzzapi_{uuid.uuid4().hex[:10]}"
    postgres.create_database(db)
    influxdb.create_database(db)
    settings_ = CloudSettings(database_url=postgres.url_for(db), store="influx", influx_url=influxdb.url,
                              influx_bucket=f"{db}/autogen", influx_database=db, mqtt_url=mosquitto.url,
                              api_rate_per_s=1e6, api_rate_burst=1_000_000, bootstrap_api_key=ADMIN_KEY,
                              bootstrap_tenant="acme")
    p = Platform.open(settings_, with_link=True)  # a gateway's new configuration goes out, as in production
    p.start()
    assert p.link.connected.wait(10)
    with p.registry.session() as s:  # something for the generated ids to find now and then
        for asset in ("trailer-001", "0", "a"):
            s.add(Asset(tenant="acme", id=asset, type="refrigerated-trailer", gateway="gw-a", first_seen_ns=0))
        s.add(Gateway(tenant="acme", id="gw-a"))
        s.add(AnomalyRecord(tenant="acme", event_id="ev-1", gateway="gw-a", asset="trailer-001", point="supply_air",
                            start_ns=T0, end_ns=T0 + S, peak_score=5.0, peak_value=9.0, detectors=["spike"]))
        s.add(Alert(tenant="acme", asset="trailer-001", rule="too-warm", dedup_key="trailer-001/too-warm",
                    severity="high", title="too warm", evidence={}, opened_ns=T0, last_seen_ns=T0))
    rows = Rows()
    rows.extend_series("acme", "trailer-001", "supply_air", [T0 + i * S for i in range(60)], [4.0] * 60, [0] * 60)
    p.store.write(rows)
    yield p
    p.close()
    influxdb.drop_database(db)
    postgres.drop_database(db)


HOSTILE = ["W10", "e30", "MA", "²", "99999999999999999999999", "-99999999999999999999999", "9999-12-31T23:59:59Z",
           "99999999999999999999d", "²s", "a\nb", "\x00", "a\\b", "'"]
"""A fuzzing dictionary (schemathesis ``dictionaries``) that a generated string is drawn from, now and then: what
outside probes once broke the API with (a cursor of the wrong shape, a digit that is not ASCII, a time or a
window beyond int64, control characters and a backslash)."""
KNOWN = {"path.asset": "trailer-001", "path.gateway": "gw-a", "path.alert_id": 1}
"""Half of the requests name what exists, so the fuzzed query and body reach the code behind the 404."""


def _config(openapi: dict) -> SchemathesisConfig:
    """Every query and path parameter draws from ``HOSTILE`` now and then (strings anywhere else too), except
    the ones that name what exists half of the time."""
    names = {f"{p['in']}.{p['name']}" for ops in openapi["paths"].values() for op in ops.values()
             for p in op.get("parameters", []) if p["in"] in ("query", "path")}
    bindings = {name: {"dictionary": "hostile", "probability": 0.3} for name in sorted(names - set(KNOWN))}
    bindings |= {name: {"dictionary": name, "probability": 0.5} for name in KNOWN}
    return SchemathesisConfig.from_dict({
        "dictionaries": {"hostile": {"values": HOSTILE}} | {name: {"values": [v]} for name, v in KNOWN.items()},
        "generation": {"dictionaries": {"string": {"dictionary": "hostile", "probability": 0.3}}},
        "parameters": bindings,
    })


@pytest.fixture(scope="module")
def api_schema(fuzz_platform):
    app = create_app(fuzz_platform)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=_config(app.openapi()))


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, response_headers_conformance]
EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", 25))
SEED = int(os.environ.get("FUZZ_API_SEED", 0))
"""The same requests on every run; another seed (or more examples) for a longer hunt."""
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _fuzz(schema, headers: dict[str, str], fuzz: settings = FUZZ) -> tuple[int, int, list[str]]:
    """Every operation, with valid and with invalid inputs; (operations, requests, failures)."""
    failures: list[str] = []
    operations = requests = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            def run(case) -> None:
                nonlocal requests
                requests += 1
                response = case.call(headers=headers)
                case.validate_response(response, checks=CHECKS)

            try:
                seed(SEED)(fuzz(given(case=op.as_strategy(generation_mode=mode))(run)))()
            except Unsatisfiable:  # nothing in this operation can be made invalid (no parameters, no body)
                assert mode is GenerationMode.NEGATIVE, op.path
            except (Exception, BaseExceptionGroup) as exc:  # every operation's failures are collected, then shown
                failures.append(f"{op.method.upper()} {op.path} ({mode.value}): {str(exc)[:1500]}")
    return operations, requests, failures


def test_no_admin_request_causes_a_server_error_and_responses_match_the_schema(api_schema):
    operations, requests, failures = _fuzz(api_schema, {"Authorization": f"Bearer {ADMIN_KEY}"})
    print(f"\nschemathesis (admin): {operations} operations, {requests} requests, {len(failures)} failing")
    assert operations >= 40
    assert not failures, "\n\n".join(failures)


def test_no_anonymous_request_causes_a_server_error_and_responses_match_the_schema(api_schema):
    """Without a key every operation but ``/health`` stops at the 401: a tenth of the examples covers it."""
    operations, requests, failures = _fuzz(api_schema, {}, settings(FUZZ, max_examples=max(5, EXAMPLES // 10)))
    print(f"\nschemathesis (anonymous): {operations} operations, {requests} requests, {len(failures)} failing")
    assert not failures, "\n\n".join(failures)
