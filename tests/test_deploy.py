"""The deployment files under ``deploy/`` are valid, consistent with each other, and with the platform.

Validators are real tools, and a missing one FAILS (never skips): ``docker-compose config`` (Debian's
docker-compose package; it needs no Docker engine), the Kubernetes JSON schemas of ``kubernetes-validate``
(PyPI), the Mosquitto binary for the broker configuration, and the harness's real InfluxDB for the
Grafana dashboard's InfluxQL. EMQX has no binary here: its ACL is evaluated with EMQX's matching rules,
re-implemented below, and must agree with the Mosquitto ACL that the real Mosquitto enforces.
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
from models import topics
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
        for generated in spec.get("configMapGenerator", []):
            for file in generated["files"]:
                assert (kustomization.parent / file).is_file(), f"{kustomization}: {file} does not exist"
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
            # A *FILE key names where a secret is mounted (EMQX_..._KEYFILE), not the secret itself.
            leaked = [k for k in doc["data"] if SECRET_WORDS.search(k) and not k.endswith("FILE")
                      and k != "EMQX_DASHBOARD__DEFAULT_USERNAME"]
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


# -- EMQX: who may connect, and what each may do --------------------------------------------------------------
# No EMQX binary runs here, so the files are checked the way EMQX 5.8 reads them: the environment of the
# StatefulSet (values are HOCON; ours are JSON, which is HOCON) and the ACL file, whose Erlang terms are parsed
# and evaluated with EMQX's own matching rules (apps/emqx_auth/src/emqx_authz/emqx_authz_rule.erl: first
# matching rule wins; ${username}/${clientid} rendered, then the topic matched level by level; a $share/<group>/
# prefix is not part of what a subscription is authorized on). Every client, topic and action is then evaluated
# against deploy/mosquitto/acl as well, with Mosquitto's rules, and the two must agree: the real-broker checks of
# tests/test_broker_security.py then speak for both.
EMQX_ACL = DEPLOY / "emqx" / "acl.conf"
MOSQUITTO_ACL = DEPLOY / "mosquitto" / "acl"
EMQX_ETC = "/opt/emqx/etc/assettwin"
_ERL_TOKEN = re.compile(r"""\s+|%[^\n]*|(?P<str>"(?:[^"\\]|\\.)*")|(?P<qatom>'[^']*')|(?P<int>-?\d+)"""
                        r"""|(?P<atom>[a-z][A-Za-z0-9_@]*)|(?P<punct>[{}\[\],.])""")


class Atom(str):
    """An Erlang atom (``allow``, ``'and'``), kept apart from strings (``"cloud"``)."""


def _erl_terms(text: str) -> list:
    """The terms of an Erlang ``file:consult`` file: tuples, lists, atoms, strings, integers, each ended by a dot."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _ERL_TOKEN.match(text, pos)
        assert m, f"not an Erlang term at {text[pos:pos + 40]!r}"
        pos = m.end()
        if m.lastgroup:
            tokens.append((m.lastgroup, m.group(m.lastgroup)))
    i = 0

    def term() -> object:
        nonlocal i
        kind, value = tokens[i]
        i += 1
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", value[1:-1])
        if kind in ("atom", "qatom"):
            return Atom(value.strip("'"))
        if kind == "int":
            return int(value)
        if value in "{[":
            items, close = [], "}" if value == "{" else "]"
            while tokens[i][1] != close:
                items.append(term())
                if tokens[i][1] == ",":
                    i += 1
            i += 1
            return tuple(items) if close == "}" else items
        raise AssertionError(f"unexpected {value!r}")

    terms = []
    while i < len(tokens):
        terms.append(term())
        assert tokens[i][1] == ".", f"term {terms[-1]!r} is not ended by a dot"
        i += 1
    return terms


def _emqx_words(topic: str) -> list[str]:
    return topic.split("/")


def _emqx_topic_match(name: list[str], flt: list[str]) -> bool:
    """emqx_topic:match/2 on words: '+' one level, '#' the rest; a '+' or '#' in the name is a word like any
    other (so a subscription filter matches a rule only when the rule's filter covers it)."""
    if not flt:
        return not name
    if flt == ["#"]:
        return True
    if not name:
        return False
    return (flt[0] == "+" or flt[0] == name[0]) and _emqx_topic_match(name[1:], flt[1:])


class EmqxAcl:
    """EMQX's file authorization source, evaluated as emqx_authz_rule does; no_match applies after the last rule."""

    def __init__(self, text: str, no_match: str = "deny") -> None:
        self.rules = _erl_terms(text)
        self.no_match = no_match
        for rule in self.rules:
            assert rule[0] in ("allow", "deny") and len(rule) in (2, 4), f"not an authorization rule: {rule!r}"
            if len(rule) == 2:
                assert rule[1] == "all", f"not an authorization rule: {rule!r}"
            else:
                assert rule[2] in ("publish", "subscribe", "all"), f"action {rule[2]!r}: extend this checker"

    def _who(self, who: object, username: str, clientid: str) -> bool:
        if who == "all":
            return True
        assert isinstance(who, tuple), f"client condition {who!r}: extend this checker"
        kind, arg = who
        if kind in ("and", "or"):
            results = [self._who(w, username, clientid) for w in arg]
            return all(results) if kind == "and" else any(results)
        value = {"username": username, "user": username, "clientid": clientid, "client": clientid}.get(kind)
        assert value is not None, f"client condition {who!r}: extend this checker"
        if isinstance(arg, tuple):
            assert arg[0] == "re", f"client condition {who!r}"
            return re.search(arg[1], value) is not None  # re:run matches anywhere, like re.search
        return value == arg

    def allows(self, username: str, clientid: str, action: str, topic: str) -> bool:
        if action == "subscribe":
            topic = re.sub(r"^\$share/[^/]+/|^\$queue/", "", topic)
        name = _emqx_words(topic)
        for rule in self.rules:
            perm, who, act, topics = (rule[0], "all", "all", ["#"]) if len(rule) == 2 else rule
            if act not in (action, "all") or not self._who(who, username, clientid):
                continue
            for t in topics:
                if isinstance(t, tuple):
                    assert t[0] == "eq", f"topic {t!r}"
                    hit = topic == t[1]
                else:
                    rendered = t.replace("${username}", username).replace("${clientid}", clientid)
                    assert "${" not in rendered, f"placeholder in {t!r}: extend this checker"
                    hit = _emqx_topic_match(name, _emqx_words(rendered))
                if hit:
                    return perm == "allow"
        return self.no_match == "allow"


def _mosquitto_match(flt: str, topic: str) -> bool:
    """mosquitto_topic_matches_sub: '+' one level, '#' the rest (and the parent), no wildcard matches a leading $."""
    if topic.startswith("$") and flt[:1] in ("+", "#"):
        return False
    f, t = flt.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


class MosquittoAcl:
    """A Mosquitto 2 acl_file: ``topic`` lines under ``user``, ``pattern`` lines for everybody (%u, %c)."""

    def __init__(self, text: str) -> None:
        self.lines: list[tuple[str | None, str, str]] = []  # (user or None for patterns, access, filter)
        user: str | None = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            word, rest = line.split(None, 1)
            if word == "user":
                user = rest.strip()
                continue
            assert word in ("topic", "pattern"), f"acl line {line!r}: extend this checker"
            parts = rest.split(None, 1)
            access, flt = (parts[0], parts[1]) if parts[0] in ("read", "write", "readwrite", "deny") \
                else ("readwrite", rest)
            self.lines.append((None if word == "pattern" else user, access, flt.strip()))

    def allows(self, username: str, clientid: str, access: str, topic: str) -> bool:
        granted = False
        for user, how, flt in self.lines:
            if user is None:
                flt = flt.replace("%u", username).replace("%c", clientid)
            elif user != username:
                continue
            if _mosquitto_match(flt, topic):
                if how == "deny":
                    return False
                granted |= how in (access, "readwrite")
        return granted


def _emqx_env() -> dict[str, str]:
    return _one("ConfigMap", "emqx-env")["data"]


def _emqx_acl(text: str | None = None) -> EmqxAcl:
    return EmqxAcl(EMQX_ACL.read_text() if text is None else text, _emqx_env()["EMQX_AUTHORIZATION__NO_MATCH"])


GW_A = ("acme/gw-a", "acme/gw-a")  # (username, client id): on the gateway listener both are the certificate's CN
CLOUD = ("cloud", "assettwin-ingest-0")
CLIENTS = {"gateway acme/gw-a": GW_A, "gateway acme/gw-b": ("acme/gw-b", "acme/gw-b"),
           "gateway other/gw-a": ("other/gw-a", "other/gw-a"), "cloud": CLOUD}
# What tests/test_broker_security.py shows a gateway cannot publish, on the real Mosquitto.
FORGED = [topics.telemetry("acme", "gw-b"), topics.status("acme", "gw-b"), topics.config_reported("acme", "gw-b"),
          topics.telemetry("other", "gw-a"), topics.config_desired("acme", "gw-a"),
          topics.topic("acme", "gw-a", "commands"), "twin/v1/acme/alerts", "sensors/anything"]


def _matrix_topics() -> list[str]:
    out = [topics.topic(t, g, k) for t in ("acme", "other") for g in ("gw-a", "gw-b") for k in topics.KINDS]  # type: ignore[arg-type]
    return [*out, "twin/v1/acme/alerts", "twin/v1/other/alerts", "twin/v1/acme/notifications/dc/site-1",
            "twin/v1/acme/gw-a/telemetry/extra", "twin/v1/acme/gw-a", "sensors/anything", "$SYS/broker/uptime"]


def _gateway_violations(acl: EmqxAcl) -> list[str]:
    """What would let a gateway speak for another gateway or tenant, or read what is not its own — or stop it
    from doing its job. Empty for a sound ACL."""
    user, cid = GW_A
    bad = [f"may publish {t}" for t in FORGED if acl.allows(user, cid, "publish", t)]
    own_writes = [topics.telemetry("acme", "gw-a"), topics.events("acme", "gw-a"), topics.status("acme", "gw-a"),
                  topics.config_reported("acme", "gw-a")]
    bad += [f"may not publish its own {t}" for t in own_writes if not acl.allows(user, cid, "publish", t)]
    foreign = [topics.config_desired("acme", "gw-b"), topics.topic("acme", "gw-b", "commands"),
               topics.config_desired("other", "gw-a"), topics.telemetry("acme", "gw-b"),
               "twin/v1/acme/+/config/desired", "twin/v1/+/gw-a/commands", "twin/v1/#", "#", "$SYS/#"]
    bad += [f"may subscribe {t}" for t in foreign if acl.allows(user, cid, "subscribe", t)]
    own_reads = [topics.config_desired("acme", "gw-a"), topics.topic("acme", "gw-a", "commands")]
    bad += [f"may not subscribe its own {t}" for t in own_reads if not acl.allows(user, cid, "subscribe", t)]
    # A certificate whose CN holds a wildcard must not widen its own rules.
    bad += [f"CN {cn!r} may publish {t}" for cn in ("acme/+", "acme/#", "+/+") for t in FORGED[:4]
            if acl.allows(cn, cn, "publish", t)]
    return bad


def test_emqx_acl_pins_each_gateway_to_its_own_topics():
    assert _gateway_violations(_emqx_acl()) == []


@pytest.mark.parametrize("mutation", [
    ("{deny, all}.", "{allow, all}."),                                               # a permissive last line
    ('{allow, {username, "cloud"}, publish,', "{allow, all, publish,"),               # cloud rights for everyone
    ("twin/v1/${username}/telemetry", "twin/v1/+/+/telemetry"),                       # a wildcard for the identity
    ("twin/v1/${username}/commands", "twin/v1/+/+/commands"),                         # every gateway's commands
    ('{username, {re, "^[^/+#$][^/+#]*/[^/+#$][^/+#]*$"}}, publish', "all, publish"),  # any CN is a gateway
])
def test_the_acl_check_catches_an_acl_that_lets_a_gateway_speak_or_read_for_another(mutation):
    """The check is not a no-op: each of these edits to the shipped ACL is a violation it reports."""
    old, new = mutation
    text = EMQX_ACL.read_text()
    assert old in text
    assert _gateway_violations(_emqx_acl(text.replace(old, new, 1)))


def test_emqx_and_mosquitto_acls_agree_on_every_client_topic_and_action():
    """Mosquitto "write" is EMQX publish; "read" (checked at delivery) is EMQX subscribe on the same topic."""
    emqx, mosquitto = _emqx_acl(), MosquittoAcl(MOSQUITTO_ACL.read_text())
    disagree = []
    for who, (user, cid) in CLIENTS.items():
        for topic in _matrix_topics():
            for action, access in (("publish", "write"), ("subscribe", "read")):
                e, m = emqx.allows(user, cid, action, topic), mosquitto.allows(user, cid, access, topic)
                if e != m:
                    disagree.append(f"{who} {action} {topic}: EMQX {'allows' if e else 'denies'}, Mosquitto "
                                    f"{'allows' if m else 'denies'}")
    assert disagree == [], "deploy/emqx/acl.conf and deploy/mosquitto/acl must say the same; change both"
    # Not vacuous: each side of the matrix is exercised.
    assert emqx.allows(*GW_A, "publish", topics.telemetry("acme", "gw-a"))
    assert emqx.allows(*CLOUD, "subscribe", topics.telemetry("other", "gw-b"))


def test_emqx_acl_grants_the_cloud_exactly_what_ingest_and_the_api_use():
    acl = _emqx_acl()
    filters = [topics.ingest_filter(k, shared=shared) for k in ("telemetry", "events", "status")  # type: ignore[arg-type]
               for shared in (True, False)] + [topics.ingest_filter("config/reported", shared=False)]
    assert [f for f in filters if not acl.allows(*CLOUD, "subscribe", f)] == []
    writes = [topics.config_desired("acme", "gw-a"), topics.topic("acme", "gw-a", "commands"),
              "twin/v1/acme/alerts", "twin/v1/acme/notifications/dc/site-1"]
    assert [t for t in writes if not acl.allows(*CLOUD, "publish", t)] == []
    # ...and is no gateway: it cannot make up telemetry, nor read what gateways are told.
    assert not acl.allows(*CLOUD, "publish", topics.telemetry("acme", "gw-a"))
    assert not acl.allows(*CLOUD, "subscribe", "#")


def test_a_cloud_certificate_on_the_gateway_listener_gets_nothing():
    """On the gateway listener the client id is the CN, and no cloud process uses "cloud" as its client id: a
    certificate with CN "cloud" (which a CA shared with the Mosquitto stack issues) carries no cloud rights."""
    acl = _emqx_acl()
    for action, topic in (("subscribe", topics.ingest_filter("telemetry", shared=False)),
                          ("publish", topics.config_desired("acme", "gw-a")), ("publish", "twin/v1/acme/alerts")):
        assert not acl.allows("cloud", "cloud", action, topic), (action, topic)


def _emqx_security_problems(env: dict[str, str]) -> list[str]:
    """What would let a client in without a credential, or past the ACL. Empty for the shipped configuration."""
    problems = []
    ssl = "EMQX_LISTENERS__SSL__DEFAULT__"
    expect = {ssl + "SSL_OPTIONS__VERIFY": "verify_peer", ssl + "SSL_OPTIONS__FAIL_IF_NO_PEER_CERT": "true",
              ssl + "ZONE": "gateway", "EMQX_ZONES__GATEWAY__MQTT__PEER_CERT_AS_USERNAME": "cn",
              "EMQX_ZONES__GATEWAY__MQTT__PEER_CERT_AS_CLIENTID": "cn", "EMQX_AUTHORIZATION__NO_MATCH": "deny",
              "EMQX_LISTENERS__WS__DEFAULT__ENABLE": "false", "EMQX_LISTENERS__WSS__DEFAULT__ENABLE": "false"}
    problems += [f"{k} is {env.get(k)!r}, not {v!r}" for k, v in expect.items() if env.get(k) != v]
    if not env.get(ssl + "SSL_OPTIONS__CACERTFILE", "").startswith(EMQX_ETC + "/tls/"):
        problems.append("the gateway listener does not check client certificates against our CA")
    # Only the gateway listener may skip the password chain (its certificate is the credential).
    problems += [f"{k}: {v}" for k, v in env.items() if k.endswith("__ENABLE_AUTHN") and k != ssl + "ENABLE_AUTHN"]
    authn = json.loads(env.get("EMQX_AUTHENTICATION", "[]"))
    if not any(a.get("mechanism") == "password_based" and a.get("backend") == "built_in_database"
               and a.get("enable", True) for a in authn):
        problems.append("no password authentication: the cloud's listener (1883) would take anybody")
    sources = json.loads(env.get("EMQX_AUTHORIZATION__SOURCES", "[]"))
    shipped = [("file", True, EMQX_ETC + "/acl/acl.conf")]
    if [(s.get("type"), s.get("enable"), s.get("path")) for s in sources] != shipped:
        problems.append(f"authorization sources {sources!r}: not exactly the shipped ACL file")
    return problems


def test_emqx_authenticates_gateways_by_certificate_and_the_cloud_by_password():
    assert _emqx_security_problems(_emqx_env()) == []
    (authn,) = json.loads(_emqx_env()["EMQX_AUTHENTICATION"])
    assert authn["user_id_type"] == "username" and authn["password_hash_algorithm"]["name"] == "pbkdf2"
    assert authn["bootstrap_type"] == "plain" and authn["bootstrap_file"] == EMQX_ETC + "/users/cloud-users.csv"


@pytest.mark.parametrize("change", [
    {"EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__VERIFY": "verify_none"},
    {"EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__FAIL_IF_NO_PEER_CERT": "false"},
    {"EMQX_ZONES__GATEWAY__MQTT__PEER_CERT_AS_USERNAME": None},
    {"EMQX_ZONES__GATEWAY__MQTT__PEER_CERT_AS_CLIENTID": "disabled"},
    {"EMQX_LISTENERS__TCP__DEFAULT__ENABLE_AUTHN": "false"},
    {"EMQX_AUTHENTICATION": None},
    {"EMQX_AUTHORIZATION__SOURCES": None},
    {"EMQX_AUTHORIZATION__NO_MATCH": "allow"},
])
def test_the_emqx_check_catches_missing_authentication_or_authorization(change):
    env = dict(_emqx_env())
    for key, value in change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    assert _emqx_security_problems(env)


def test_emqx_mounts_the_shipped_acl_certificates_and_cloud_password_where_its_settings_point():
    sts = _one("StatefulSet", "emqx")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    env = _emqx_env()
    assert mounts["acl"] == EMQX_ETC + "/acl" and volumes["acl"]["configMap"]["name"] == "emqx-acl"
    generator = yaml.safe_load((DEPLOY / "emqx" / "kustomization.yaml").read_text())["configMapGenerator"]
    assert generator == [{"name": "emqx-acl", "files": ["acl.conf"]}]  # mounted as <mount>/acl.conf
    assert mounts["tls"] == EMQX_ETC + "/tls" and volumes["tls"]["secret"]["secretName"] == "emqx-tls"
    for name in ("CACERTFILE", "CERTFILE", "KEYFILE"):
        assert env[f"EMQX_LISTENERS__SSL__DEFAULT__SSL_OPTIONS__{name}"].startswith(EMQX_ETC + "/tls/")
    users = volumes["users"]["secret"]
    assert mounts["users"] == EMQX_ETC + "/users" and users["secretName"] == "emqx-secrets"
    assert users["items"] == [{"key": "cloud-users.csv", "path": "cloud-users.csv"}]
    # Secrets readable by EMQX's user (its group, fsGroup 1000) only.
    assert volumes["tls"]["secret"]["defaultMode"] == users["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == 1000


def test_only_the_tls_port_is_reachable_from_outside_the_cluster():
    exposed = {}
    for _, doc in _manifests():
        if doc["kind"] == "Service" and doc["spec"].get("type", "ClusterIP") in ("LoadBalancer", "NodePort"):
            exposed[doc["metadata"]["name"]] = [p["port"] for p in doc["spec"]["ports"]]
    assert exposed == {"emqx-gateways": [8883]}
    assert _one("Service", "emqx")["spec"]["type"] == "ClusterIP"


def test_cloud_pods_log_in_to_the_broker_as_cloud_with_the_secret_password():
    for kind, name in (("StatefulSet", "assettwin-ingest"), ("Deployment", "assettwin-api")):
        (container,) = _one(kind, name)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
               if e["name"] in ("TWIN_MQTT_USERNAME", "TWIN_MQTT_PASSWORD")}
        # Required, not optional: without them the broker refuses the pod, so Kubernetes should not start it.
        assert env == {"TWIN_MQTT_USERNAME": {"name": "assettwin-secrets", "key": "mqtt-username"},
                       "TWIN_MQTT_PASSWORD": {"name": "assettwin-secrets", "key": "mqtt-password"}}, name
    example = yaml.safe_load((DEPLOY / "k8s" / "secret.example.yaml").read_text())["stringData"]
    assert example["mqtt-username"] == "cloud"
    assert _one("ConfigMap", "assettwin-config")["data"]["TWIN_MQTT_URL"] == "mqtt://emqx.assettwin.svc:1883"


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
