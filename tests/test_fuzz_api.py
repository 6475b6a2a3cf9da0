"""Hostile requests at the API: schemathesis generates requests for every operation in ``/openapi.json`` (valid
and invalid parameters, bodies, headers) against the real app on a real registry (PostgreSQL) and store
(InfluxDB), with an admin key and without one. No request may cause a 5xx, and a documented status must come
with its documented content type, headers and body schema."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)

from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.registry import Asset
from cloud.settings import CloudSettings
from cloud.store import Rows

S = 1_000_000_000
T0 = 1_767_225_600 * S
ADMIN_KEY = "fuzz-admin-key-0123456789"


@pytest.fixture(scope="module")
def fuzz_platform(postgres, influxdb, tmp_path_factory):
    import uuid

    db = f"fuzzapi_{uuid.uuid4().hex[:10]}"
    postgres.create_database(db)
    influxdb.create_database(db)
    settings_ = CloudSettings(database_url=postgres.url_for(db), store="influx", influx_url=influxdb.url,
                              influx_bucket=f"{db}/autogen", influx_database=db, mqtt_url="mqtt://127.0.0.1:1",
                              api_rate_per_s=1e6, api_rate_burst=1_000_000, bootstrap_api_key=ADMIN_KEY,
                              bootstrap_tenant="acme")
    p = Platform.open(settings_)
    with p.registry.session() as s:  # something for the generated ids to find now and then
        for asset in ("trailer-001", "0", "a"):
            s.add(Asset(tenant="acme", id=asset, type="refrigerated-trailer", gateway="gw-a", first_seen_ns=0))
    rows = Rows()
    rows.extend_series("acme", "trailer-001", "supply_air", [T0 + i * S for i in range(60)], [4.0] * 60, [0] * 60)
    p.store.write(rows)
    yield p
    p.close()
    influxdb.drop_database(db)
    postgres.drop_database(db)


@pytest.fixture(scope="module")
def api_schema(fuzz_platform):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzz_platform))


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, response_headers_conformance]
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_API_EXAMPLES", 10)), deadline=None, derandomize=True,
                database=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _fuzz(schema, headers: dict[str, str]) -> tuple[int, int, list[str]]:
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
                FUZZ(given(case=op.as_strategy(generation_mode=mode))(run))()
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
    operations, requests, failures = _fuzz(api_schema, {})
    print(f"\nschemathesis (anonymous): {operations} operations, {requests} requests, {len(failures)} failing")
    assert not failures, "\n\n".join(failures)
