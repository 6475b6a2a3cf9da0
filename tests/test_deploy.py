"""The deployment files under ``deploy/`` are valid, consistent with each other, and with the platform.

Validators are real tools, and a missing one FAILS (never skips): ``docker-compose config`` (Debian's
docker-compose package; it needs no Docker engine), the Kubernetes JSON schemas of ``kubernetes-validate``
(PyPI), the Mosquitto binary for the broker configuration, and the harness's real InfluxDB for the
Grafana dashboard's InfluxQL.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from cloud.influx_admin import RAW_FIELDS, ROLLUP_FIELDS, InitSpec, backfill_statement, init
from tests.harness.servers import HarnessError, TlsMosquittoServer

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
K8S_DIRS = (DEPLOY / "k8s", DEPLOY / "emqx")
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "assettwin-telemetry.json"
DATASOURCE = DEPLOY / "grafana" / "provisioning" / "datasources" / "influxdb.yaml"
K8S_VERSIONS = ("1.28.0", "1.37.0")  # 1.28: the first with the StatefulSet pod-index label on by default
TAGS = {"tenant", "asset", "point"}
SECRET_WORDS = re.compile(r"TOKEN|PASSWORD|SECRET|COOKIE|_KEY|DATABASE_URL", re.IGNORECASE)


# -- compose ----------------------------------------------------------------------------------------
@functools.cache
def _compose_command() -> tuple[str, ...] | None:
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ("docker", "compose")
    return None


def _compose(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run Compose's own validation (`config` reads and checks the file; no engine is contacted)."""
    cmd = _compose_command()
    if cmd is None:
        pytest.fail("no Compose to validate deploy/compose.yaml: apt-get install -y docker-compose", pytrace=False)
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _resolved_compose(tmp_path: Path) -> dict:
    out = _compose("--env-file", str(DEPLOY / ".env.example"), "-f", str(COMPOSE), "config", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_file_validates(tmp_path):
    out = _compose("--env-file", str(DEPLOY / ".env.example"), "-f", str(COMPOSE), "config", "-q", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_compose_validation_rejects_an_unknown_key(tmp_path):
    """The validator is not a no-op: a misspelt key fails."""
    shutil.copy(DEPLOY / "cloud.env", tmp_path / "cloud.env")
    (tmp_path / "compose.yaml").write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_perod:"))
    out = _compose("--env-file", str(DEPLOY / ".env.example"), "-f", "compose.yaml", "config", "-q", cwd=tmp_path)
    assert out.returncode != 0
    assert "stop_grace_perod" in out.stderr


def test_compose_refuses_to_start_without_the_secrets(tmp_path):
    shutil.copy(DEPLOY / "cloud.env", tmp_path / "cloud.env")
    shutil.copy(COMPOSE, tmp_path / "compose.yaml")  # no .env beside it
    out = _compose("-f", "compose.yaml", "config", "-q", cwd=tmp_path)
    assert out.returncode != 0
    assert "in deploy/.env" in out.stderr


def test_every_partition_has_exactly_one_ingest_worker(tmp_path):
    services = _resolved_compose(tmp_path)["services"]
    ingest = {name: s for name, s in services.items() if s.get("command") == ["cloud", "ingest"]}
    envs = [s["environment"] for s in ingest.values()]
    n = len(ingest)
    assert n >= 2
    assert {e["TWIN_INGEST_PARTITIONS"] for e in envs} == {str(n)}
    assert sorted(int(e["TWIN_INGEST_PARTITION"]) for e in envs) == list(range(n))
    assert len({e["TWIN_INGEST_CLIENT_ID"] for e in envs}) == n
    assert {e["TWIN_INGEST_MODE"] for e in envs} == {"partitioned"}  # the stack's broker is Mosquitto


def test_the_api_container_runs_no_ingest_of_its_own(tmp_path):
    """`--workers 1` would add an ingest worker owning every partition: everything written twice."""
    api = _resolved_compose(tmp_path)["services"]["api"]
    assert api["command"] == ["cloud", "run", "--workers", "0"]
    assert api["environment"]["TWIN_API_HOST"] == "0.0.0.0"


def test_compose_keeps_configuration_and_secrets_apart():
    config = dict(line.split("=", 1) for line in (DEPLOY / "cloud.env").read_text().splitlines()
                  if line and not line.startswith("#"))
    # A *_FILE variable names where a secret is mounted (TWIN_MQTT_KEY_FILE), not the secret itself.
    assert not [k for k in config if SECRET_WORDS.search(k) and not k.endswith("_FILE")]
    # Every secret the stack reads is a required variable of deploy/.env, with a placeholder in .env.example.
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    example = {line.split("=", 1)[0] for line in (DEPLOY / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required and required <= example
    assert {"POSTGRES_PASSWORD", "INFLUXDB_ADMIN_TOKEN", "INFLUX_INGEST_TOKEN", "INFLUX_READ_TOKEN"} <= required


def test_compose_mounts_the_shipped_broker_and_grafana_files(tmp_path):
    services = _resolved_compose(tmp_path)["services"]

    def sources(name: str) -> set[str]:
        return {v["source"] if isinstance(v, dict) else v.split(":")[0] for v in services[name]["volumes"]}

    assert str(DEPLOY / "mosquitto" / "mosquitto.conf") in sources("mosquitto")
    assert str(DEPLOY / "grafana" / "provisioning") in sources("grafana")
    assert str(DEPLOY / "grafana" / "dashboards") in sources("grafana")
    init_cmd = services["influx-init"]["command"]
    assert init_cmd[:2] == ["influx", "init"] and services["influx-init"]["restart"] == "no"


# -- the broker configuration ------------------------------------------------------------------------
def _conf(path: Path) -> dict[str, str]:
    pairs = (line.split(None, 1) for line in path.read_text().splitlines() if line.strip() and line[0] != "#")
    return {k: v.strip() for k, v in pairs}


def test_mosquitto_config_sets_queue_limits_deliberately_and_persists():
    conf = _conf(DEPLOY / "mosquitto" / "mosquitto.conf")
    assert conf["max_queued_messages"] == "0"  # Mosquitto's default 1000 drops QoS 1 messages (MEASURED.md)
    assert int(conf["max_queued_bytes"]) >= 1 << 30
    assert 100 <= int(conf["max_inflight_messages"]) < 65_535
    assert conf["persistence"] == "true" and conf["queue_qos0_messages"] == "false"


def test_real_mosquitto_accepts_the_shipped_config():
    # The harness runs deploy/mosquitto/mosquitto.conf and acl as shipped (only port and paths templated in)
    # and is ready once a client certificate gets a CONNACK over TLS; tests/test_broker_security.py checks
    # what the configuration enforces.
    try:
        with TlsMosquittoServer() as broker:
            assert broker.running and broker.url.startswith("mqtts://")
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)


# -- Kubernetes ---------------------------------------------------------------------------------------
def _validator():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: pip install -e '.[dev]' (or pip install "
                    "kubernetes-validate)", pytrace=False)
    return kubernetes_validate


def _manifests() -> list[tuple[Path, dict]]:
    docs = []
    for directory in K8S_DIRS:
        for path in sorted(directory.rglob("*.yaml")):
            if path.name != "kustomization.yaml":
                docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _one(kind: str, name: str) -> dict:
    found = [d for _, d in _manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_against_the_schemas(version):
    kv = _validator()
    manifests = _manifests()
    assert len(manifests) >= 15
    for path, doc in manifests:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}: {doc['kind']}/{doc['metadata']['name']}: {exc}", pytrace=False)


def test_kubernetes_validation_rejects_a_misspelt_field():
    """The schemas are strict: a field Kubernetes would ignore is an error, not a silent default."""
    kv = _validator()
    sts = json.loads(json.dumps(_one("StatefulSet", "assettwin-ingest")))
    sts["spec"]["replica"] = sts["spec"].pop("replicas")
    with pytest.raises(kv.ValidationError):
        kv.validate(sts, K8S_VERSIONS[0], strict=True)


def test_kustomizations_name_files_that_exist():
    for kustomization in [p for d in K8S_DIRS for p in d.rglob("kustomization.yaml")]:
        spec = yaml.safe_load(kustomization.read_text())
        for resource in spec["resources"]:
            assert (kustomization.parent / resource).exists(), f"{kustomization}: {resource} does not exist"
    listed = set(yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk - listed == {"secret.example.yaml"}  # placeholders are never applied by accident


def test_shared_ingest_variant_switches_only_the_mode():
    spec = yaml.safe_load((DEPLOY / "k8s" / "shared-ingest" / "kustomization.yaml").read_text())
    (patch,) = spec["patches"]
    ops = yaml.safe_load(patch["patch"])
    assert ops == [{"op": "replace", "path": "/data/TWIN_INGEST_MODE", "value": "shared"}]
    assert "TWIN_INGEST_MODE" in _one("ConfigMap", "assettwin-config")["data"]


def test_each_ingest_pod_owns_the_partition_of_its_ordinal_and_partitions_match_replicas():
    sts = _one("StatefulSet", "assettwin-ingest")
    config = _one("ConfigMap", "assettwin-config")["data"]
    assert int(config["TWIN_INGEST_PARTITIONS"]) == sts["spec"]["replicas"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TWIN_INGEST_PARTITION"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["TWIN_INGEST_CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["args"] == ["cloud", "ingest"]


def test_api_is_probed_on_health_and_runs_no_ingest():
    deployment = _one("Deployment", "assettwin-api")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["cloud", "run", "--workers", "0"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
    service = _one("Service", "assettwin-api")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_every_container_has_requests_and_limits():
    for path, doc in _manifests():
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + pod["containers"]:
            res = c.get("resources", {})
            assert {"cpu", "memory"} <= set(res.get("requests", {})) and {"memory"} <= set(res.get("limits", {})), \
                f"{path.name}: {doc['metadata']['name']}/{c['name']} lacks requests/limits"


def test_credentials_come_from_secrets_never_from_configmaps():
    for path, doc in _manifests():
        if doc["kind"] == "ConfigMap":
            leaked = [k for k in doc["data"] if SECRET_WORDS.search(k) and k != "EMQX_DASHBOARD__DEFAULT_USERNAME"]
            assert not leaked, f"{path.name}: {leaked} belong in a Secret"
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for e in c.get("env", []):
                    if SECRET_WORDS.search(e["name"]):
                        assert "secretKeyRef" in e.get("valueFrom", {}), f"{path.name}: {e['name']} is not secret"


def test_emqx_cluster_sets_its_shared_subscription_strategy_and_queue_on_purpose():
    sts = _one("StatefulSet", "emqx")
    env = _one("ConfigMap", "emqx-env")["data"]
    assert sts["spec"]["replicas"] == 3
    assert env["EMQX_MQTT__SHARED_SUBSCRIPTION_STRATEGY"] == "hash_clientid"
    assert int(env["EMQX_MQTT__MAX_MQUEUE_LEN"]) > 1000  # EMQX's default 1000 drops QoS 1 messages
    image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"emqx/emqx:5\.8\.\d+", image), "5.9+ needs a licence to cluster"


# -- Grafana ------------------------------------------------------------------------------------------
def _targets(dashboard: dict) -> list[str]:
    return [t["query"] for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_queries_read_measurement_telemetry_and_only_its_fields_and_tags():
    dashboard = json.loads(DASHBOARD.read_text())
    queries = _targets(dashboard)
    assert len(queries) >= 3
    for q in queries:
        assert re.search(r'FROM "\$rp"\."telemetry"', q), q
        fields = set(re.findall(r'\b(?:mean|last|count|max|min)\("(\w+)"\)', q))
        fields |= set(re.findall(r'AS "\w+", "(\w+)"', q))
        assert fields and fields <= set(RAW_FIELDS) & set(ROLLUP_FIELDS), q
        assert set(re.findall(r'"(\w+)" =~', q)) <= TAGS, q
    assert any('mean("value")' in q and "GROUP BY time($__interval)" in q for q in queries)
    assert any(p["type"] == "table" and 'last("value")' in p["targets"][0]["query"] for p in dashboard["panels"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"tenant", "asset", "point", "rp"} <= set(variables)
    assert [o["value"] for o in variables["rp"]["options"]] == [InitSpec().raw_policy, InitSpec().rollup_policy]


def test_dashboard_uses_the_provisioned_datasource():
    provisioned = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    (ds,) = provisioned
    assert ds["type"] == "influxdb" and ds["jsonData"]["httpMode"] in ("GET", "POST")
    assert ds["secureJsonData"]["httpHeaderValue1"].startswith("Token ${")
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"]}
    uids |= {v["datasource"]["uid"] for v in dashboard["templating"]["list"] if "datasource" in v}
    assert uids == {ds["uid"]}
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "assettwin.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def _grafana_interpolate(q: str, rp: str) -> str:
    """What Grafana sends for one selection: variables as anchored regexes, its macros as InfluxQL."""
    return (q.replace("/^$tenant$/", "/^acme$/").replace("/^$asset$/", "/^trailer-001$/")
            .replace("/^$point$/", "/^(supply_air|return_air)$/").replace("$rp", rp)
            .replace("$timeFilter", "time >= now() - 6h").replace("$__interval", "1m"))


def test_dashboard_queries_run_on_real_influxdb(influxdb, influx_db):
    """Every panel and variable query, as Grafana would send it, on data written the way ingest writes it."""
    spec = InitSpec(bucket=f"{influx_db}/autogen", database=influx_db)
    init(influxdb.raw_url, "", spec)
    now = int(time.time())
    lines = [f"telemetry,asset=trailer-001,point={p},tenant=acme value={20 + i % 7}.5,quality={i % 3}i "
             f"{now - 3600 + i * 30}" for p in ("supply_air", "return_air") for i in range(100)]
    r = httpx.post(f"{influxdb.raw_url}/write", params={"db": influx_db, "precision": "s"}, content="\n".join(lines),
                   timeout=10)
    assert r.status_code == 204, r.text
    influxdb.query(backfill_statement(spec, "1970-01-01T00:00:00Z", "2100-01-01T00:00:00Z"), db=influx_db,
                   method="POST")

    dashboard = json.loads(DASHBOARD.read_text())
    for rp in (spec.raw_policy, spec.rollup_policy):
        for q in _targets(dashboard):
            body = influxdb.query(_grafana_interpolate(q, rp), db=influx_db)
            series = body["results"][0].get("series", [])
            assert {s["tags"]["point"] for s in series} == {"supply_air", "return_air"}, (rp, q, body)
    for v in dashboard["templating"]["list"]:
        if v["type"] == "query":
            body = influxdb.query(_grafana_interpolate(v["query"], ""), db=influx_db)
            values = {row[1] for s in body["results"][0]["series"] for row in s["values"]}
            assert values == {"tenant": {"acme"}, "asset": {"trailer-001"},
                              "point": {"supply_air", "return_air"}}[v["name"]]
