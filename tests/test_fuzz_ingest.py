"""Hostile input at ingest: hypothesis-generated and mutated device messages against the real stores.

Every message is built with what it should become: stored (valid batches with extreme values, NaN,
infinities, empty and large arrays, unicode and line-protocol metacharacters in names, duplicate
sequence numbers), dead-lettered (wrong types, bad lengths, out-of-range numbers, truncated, bit-flipped or
oversized payloads, zlib bombs, wrong topics, limits exceeded), an event or a status. Randomly mutated
payloads whose fate cannot be known ahead are sent under a tenant of their own, so they are counted but
can never be mistaken for, or overwrite, the data being checked.

The bulk goes through ``Ingest.process`` (both halves of the pipeline, in this process) against the real
InfluxDB and PostgreSQL; a few hundred go through the real Mosquitto into a running ``twin cloud run``.
Checked: nothing raises or dies, the counters add up to the messages sent, the dead letters are exactly
the ones expected, and InfluxDB holds exactly the valid samples (every series of the tenant, compared
value by value).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import struct
import time
import unicodedata
import zlib
from dataclasses import dataclass, field

import httpx
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from cloud.ingest import Ingest, _Msg
from cloud.registry import AlarmRecord, AnomalyRecord, DeadLetter, Registry
from cloud.settings import CloudSettings
from cloud.store.influx import InfluxStore
from tests.harness.processes import CloudProcess, wait_until

S = 1_000_000_000
T0 = 1_767_225_600 * S
MAX_PAYLOAD = 64 * 1024
MAX_SAMPLES = 2_000
MAX_TOPIC = 256
LIMITS = {"ingest_max_payload_bytes": MAX_PAYLOAD, "ingest_max_batch_samples": MAX_SAMPLES,
          "ingest_max_topic_bytes": MAX_TOPIC,
          # Any int64 time is fair game here, up to 292 years ahead: the model below stores every sample. Refusing
          # future-stamped ones (TWIN_INGEST_FUTURE_TOLERANCE_S) is tested in test_time_sanity.py.
          "ingest_future_tolerance_s": 10**12}
T_MIN, T_MAX = -(2**63) + 2, 2**63 - 2  # what InfluxDB (and an int64 of ns) can hold
GATEWAYS = ("gw-a", "gw-b", "gw-ü")
NASTY_NAMES = ("t1", "a b", "a,b=c", "ü-温度-🌡", "'; DROP MEASUREMENT telemetry; --", '"q"', "x" * 128, " lead",
               "trail ", "=", ",", "a'b", "\u2028", "é\u0301", "\ufeffbom", "$share", "#", "+", "/", "a/b")
_examples = itertools.count()


@dataclass
class Case:
    """One message and what ingest must make of it."""

    topic: str
    payload: bytes
    expect: str  # "stored", "dead", "event", "status", "unknown" (mutated: counted only)
    batch: dict | None = None
    why: str = ""


@dataclass
class Expected:
    cases: list[Case]
    series: dict[tuple[str, str], dict[int, tuple[float | None, int]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


# -- generators ------------------------------------------------------------------------------------------
# Hypothesis draws each message's kind and a seed; the seed drives the message's contents. Drawing every
# sample through hypothesis would cost ~1 s per hundred messages and overrun its buffers on large arrays.
EDGE_FLOATS = (0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -1.7976931348623157e308,
               math.nan, math.inf, -math.inf, 1e-7, 0.1, 1 / 3, 2.0**53 + 1, 9.5)
EDGE_TIMES = (T_MIN, T_MAX, 0, -1, 1, T0, T0 + 1, -(10**18), 10**18)


def _name(rnd: random.Random) -> str:
    if rnd.random() < 0.5:
        return rnd.choice(NASTY_NAMES)
    chars = []
    while len(chars) < rnd.randint(1, 24):
        c = chr(rnd.choice((rnd.randint(0x20, 0x7e), rnd.randint(0xa0, 0xffff), rnd.randint(0x10000, 0x10ffff))))
        if unicodedata.category(c) not in ("Cc", "Cs") and c != "\\":
            chars.append(c)
    return "".join(chars)


def _value(rnd: random.Random) -> float | int | None:
    r = rnd.random()
    if r < 0.3:
        return rnd.choice(EDGE_FLOATS)
    if r < 0.4:
        return None
    if r < 0.5:
        return rnd.randint(-(2**64), 2**64)
    if r < 0.7:  # any bit pattern: subnormals, NaN payloads, huge and tiny
        return struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0]
    return rnd.uniform(-1e6, 1e6)


def _time(rnd: random.Random) -> int:
    r = rnd.random()
    if r < 0.2:
        return rnd.choice(EDGE_TIMES)
    if r < 0.4:
        return rnd.randint(T_MIN, T_MAX)
    return T0 + rnd.randint(0, 10**6) * S


def _series(rnd: random.Random, bulk: bool = False, nonempty: bool = False) -> dict:
    asset, point = _name(rnd), _name(rnd)
    if bulk:
        n = rnd.randint(200, 1_200)
        g = np.random.default_rng(rnd.getrandbits(64))
        t = (T0 + np.sort(g.choice(10**7, n, replace=False)) * 1_000_000).tolist()
        v = g.normal(0, 1e6, n)
        v[g.random(n) < 0.05] = np.nan
        return {"asset": asset, "point": point, "t_ns": t, "values": v.tolist(),
                "quality": g.integers(0, 3, n).tolist()}
    n = rnd.randint(1 if nonempty else 0, 8)
    return {"asset": asset, "point": point, "t_ns": [_time(rnd) for _ in range(n)],
            "values": [_value(rnd) for _ in range(n)], "quality": [rnd.randint(0, 2) for _ in range(n)]}


def _batch(rnd: random.Random, tenant: str, nonempty: bool = False) -> dict:
    series = [_series(rnd, nonempty=nonempty and i == 0) for i in range(rnd.randint(1 if nonempty else 0, 4))]
    if rnd.random() < 0.1:
        series.append(_series(rnd, bulk=True))
    # The largest seq goes to a gateway of its own: after it, a small seq on the same gateway is below ingest's
    # window, where "written before?" has no answer and the batch is written again (a real gateway resends the
    # same batch under a seq, so that is harmless; two different fuzzed batches under one seq would make the
    # stored data depend on how messages happened to be grouped).
    big = rnd.random() >= 0.95
    seq, gateway = (2**63 - 1, "gw-max") if big else (rnd.randint(0, 60), rnd.choice(GATEWAYS))
    return {"v": "v1", "kind": "telemetry", "tenant": tenant, "gateway": gateway, "seq": seq,
            "sent_ns": _time(rnd), "series": series}


def _topic(tenant: str, gateway: str, kind: str = "telemetry") -> str:
    return f"twin/v1/{tenant}/{gateway}/{kind}"


def _json(obj: object, ascii_: bool = False) -> bytes:
    return json.dumps(obj, allow_nan=True, ensure_ascii=ascii_).encode("utf-8", errors="surrogatepass")


def _encode(rnd: random.Random, obj: object) -> bytes:
    raw = _json(obj, rnd.random() < 0.5)
    return zlib.compress(raw, rnd.randint(0, 9)) if rnd.random() < 0.5 else raw


def valid_case(rnd: random.Random, tenant: str) -> Case:
    b = _batch(rnd, tenant)
    payload = _encode(rnd, b)
    too_big = max(len(payload), len(_json(b))) > MAX_PAYLOAD
    return Case(_topic(tenant, b["gateway"]), payload, "dead" if too_big else "stored", b, "valid")


# Changes to a valid (non-empty) batch that make it invalid; each returns the changed dict.
def _set(path: tuple, value: object):
    def change(b: dict) -> dict:
        b = json.loads(json.dumps(b))
        node = b
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
        return b
    change.__name__ = f"{'.'.join(map(str, path))}={value!r}"[:80]
    return change


def _drop(key: str):
    def change(b: dict) -> dict:
        return {k: v for k, v in b.items() if k != key}
    change.__name__ = f"without {key}"
    return change


SERIES0 = ("series", 0)
SCHEMA_BREAKS = [
    _set(("v",), "v2"), _set(("v",), 1), _set(("v",), None), _set(("kind",), "status"), _drop("tenant"),
    _drop("gateway"), _drop("seq"), _drop("series"), _set(("extra",), 1), _set(("seq",), -1), _set(("seq",), 2**63),
    _set(("seq",), "abc"), _set(("seq",), 1.5), _set(("seq",), None), _set(("seq",), [1]), _set(("series",), "x"),
    _set(("series",), {}), _set(("series",), None), _set(("series",), [1]), _set((*SERIES0, "extra"), 1),
    _set((*SERIES0, "t_ns"), [T0 + i for i in range(9)]), _set((*SERIES0, "values", 0), "abc"),
    _set((*SERIES0, "values", 0), [1.0]), _set((*SERIES0, "values", 0), {"v": 1}),
    _set((*SERIES0, "t_ns", 0), 2**63), _set((*SERIES0, "t_ns", 0), -(2**63) - 1), _set((*SERIES0, "t_ns", 0), 10**30),
    _set((*SERIES0, "t_ns", 0), 2**63 - 1), _set((*SERIES0, "t_ns", 0), -(2**63)), _set((*SERIES0, "t_ns", 0), 1.5),
    _set((*SERIES0, "t_ns", 0), "x"), _set((*SERIES0, "t_ns", 0), None), _set((*SERIES0, "quality", 0), 3),
    _set((*SERIES0, "quality", 0), -1), _set((*SERIES0, "quality", 0), 2**40), _set((*SERIES0, "quality", 0), 0.5),
    _set((*SERIES0, "asset"), ""), _set((*SERIES0, "asset"), "x" * 129), _set((*SERIES0, "asset"), "a\nb"),
    _set((*SERIES0, "asset"), "a\x00b"), _set((*SERIES0, "point"), "p\rq"), _set((*SERIES0, "point"), "\t"),
    _set((*SERIES0, "asset"), "x value=1 0\ntelemetry,asset=victim,point=p,tenant=other value=666"),
    _set((*SERIES0, "asset"), "a\\"), _set((*SERIES0, "point"), "\\"), _set((*SERIES0, "point"), "a\\ b"),
    _set((*SERIES0, "asset"), 7), _set((*SERIES0, "asset"), None), _set(("tenant",), "someone-else"),
    _set(("gateway",), "gw-other"), _set(("tenant",), ""), _set(("text",), [{"asset": "a"}]), _set(("text",), "x"),
]


def schema_break_case(rnd: random.Random, tenant: str) -> Case:
    b = _batch(rnd, tenant, nonempty=True)
    change = rnd.choice(SCHEMA_BREAKS)
    return Case(_topic(tenant, b["gateway"]), _encode(rnd, change(b)), "dead", why=change.__name__)


ENCODING_BREAKS = ("garbage", "array", "number", "string", "truncated-json", "truncated-zlib", "flipped-zlib",
                   "trailing-zlib", "bomb", "padded", "bad-utf8", "surrogate", "deep", "big-int", "empty",
                   "too-many-samples", "nul")


def encoding_break_case(rnd: random.Random, tenant: str) -> Case:
    b = _batch(rnd, tenant, nonempty=True)
    raw = _json(b)
    z = zlib.compress(raw, 6)
    kind = rnd.choice(ENCODING_BREAKS)
    if kind == "garbage":
        payload = bytes([rnd.choice([c for c in range(256) if c not in b"{[\x78"])]) + rnd.randbytes(rnd.randint(0, 63))
    elif kind == "array":
        payload = _json([b])
    elif kind == "number":
        payload = rnd.choice([b"1e999", b"-0", b"[]", b"null", b"true", b'"x"'])
    elif kind == "string":
        payload = b'["' + b"x" * rnd.randint(0, 100) + b'"]'
    elif kind == "truncated-json":
        payload = raw[:rnd.randint(1, len(raw) - 1)]
    elif kind == "truncated-zlib":
        payload = z[:rnd.randint(1, len(z) - 1)]
    elif kind == "flipped-zlib":
        i = rnd.randrange(len(z))
        payload = z[:i] + bytes([z[i] ^ (1 << rnd.randrange(8))]) + z[i + 1:]
    elif kind == "trailing-zlib":
        payload = z + rnd.randbytes(rnd.randint(1, 8))
    elif kind == "bomb":
        payload = zlib.compress(b'{"v": "v1", "pad": "' + b" " * (MAX_PAYLOAD * rnd.randint(1, 64)) + b'"}', 9)
    elif kind == "padded":
        payload = raw[:-1] + b" " * (MAX_PAYLOAD - len(raw) + rnd.randint(1, 1000)) + b"}"
        if rnd.random() < 0.5:
            payload = zlib.compress(payload, 1)
    elif kind == "bad-utf8":
        payload = raw.replace(b'"asset": "', b'"asset": "\xff\xfe', 1)
    elif kind == "surrogate":
        payload = raw.replace(b'"asset": "', b'"asset": "\\ud800', 1)
    elif kind == "deep":
        depth = rnd.randint(100, 100_000)
        payload = raw.replace(b'"series": [', b'"series": [' + b"[" * depth + b"]" * depth + b",", 1)
    elif kind == "big-int":
        payload = raw.replace(b'"seq": ', b'"seq": ' + b"9" * rnd.randint(20, 6000), 1)
    elif kind == "empty":
        payload = b""
    elif kind == "too-many-samples":
        n = rnd.randint(MAX_SAMPLES + 1, MAX_SAMPLES + 500)
        big = {**b, "series": [{"asset": "a", "point": "p", "t_ns": list(range(T0, T0 + n)), "values": [1.0] * n,
                                "quality": [0] * n}]}
        payload = zlib.compress(_json(big), 1)
    else:  # a NUL character in a name, escaped the JSON way
        payload = raw.replace(b'"asset": "', b'"asset": "\\u0000', 1)
    return Case(_topic(tenant, b["gateway"]), payload, "dead", why=kind)


def topic_break_case(rnd: random.Random, tenant: str) -> Case:
    b = _batch(rnd, tenant)
    gw = b["gateway"]
    kind, topic = rnd.choice([
        ("prefix", f"twin/v2/{tenant}/{gw}/telemetry"), ("kind", f"twin/v1/{tenant}/{gw}/telemetryx"),
        ("levels", f"twin/v1/{tenant}/{gw}/telemetry/extra"), ("long-tenant", f"twin/v1/{'t' * 65}/{gw}/telemetry"),
        ("long", f"twin/v1/{tenant}/{gw}/telemetry" + "/x" * 200),
        ("long-gateway", f"twin/v1/{tenant}/{'g' * 65}/telemetry"), ("empty-tenant", f"twin/v1//{gw}/telemetry"),
        ("short", "twin/v1"), ("commands", f"twin/v1/{tenant}/{gw}/commands"),
        ("other-ids", f"twin/v1/{'t' * 64}/{'g' * 64}/telemetry"),  # deliverable; the payload names others
    ])
    return Case(topic, _json(b), "dead", why=f"topic {kind}")


def event_case(rnd: random.Random, tenant: str) -> Case:
    gw = rnd.choice(GATEWAYS)
    eid = f"ev-{rnd.getrandbits(40)}"
    if rnd.random() < 0.5:
        ev = {"v": "v1", "kind": "anomaly", "tenant": tenant, "gateway": gw, "event_id": eid, "asset": _name(rnd),
              "point": _name(rnd), "start_ns": T0, "end_ns": None, "peak_score": 4.5, "peak_value": 9.0,
              "detectors": ["ewma"]}
        oddities = [("peak_value", -math.inf), ("peak_value", math.nan)]  # stored, as null
        breaks = [("peak_score", math.nan), ("peak_score", math.inf), ("event_id", "e" * 129), ("asset", "a" * 129),
                  ("asset", "a\x00"), ("start_ns", 2**63), ("detectors", "ewma"), ("seq", -1), ("gateway", "gw-other")]
    else:
        ev = {"v": "v1", "kind": "alarm", "tenant": tenant, "gateway": gw, "event_id": eid, "asset": _name(rnd),
              "rule": "too-warm", "severity": "high", "start_ns": T0, "evidence": {"value": 9.5, "unit": "degC"}}
        oddities = [("evidence", {"value": math.nan}), ("evidence", {"value": -math.inf})]  # stored, as null
        breaks = [("evidence", {"value": [1]}), ("event_id", "e" * 201),
                  ("rule", "r" * 129), ("severity", "apocalyptic"), ("start_ns", -(2**63) - 1), ("event_id", "")]
    r = rnd.random()
    if r < 0.4:
        return Case(_topic(tenant, gw, "events"), _encode(rnd, ev), "event", ev, why="event")
    if r < 0.5:
        k, v = rnd.choice(oddities)
        return Case(_topic(tenant, gw, "events"), _encode(rnd, {**ev, k: v}), "event", ev, why=f"event {k}={v!r}")
    k, v = rnd.choice(breaks)
    return Case(_topic(tenant, gw, "events"), _encode(rnd, {**ev, k: v}), "dead", why=f"event {k}={v!r}"[:80])


def status_case(rnd: random.Random, tenant: str) -> Case:
    gw = rnd.choice(GATEWAYS)
    status = {"v": "v1", "kind": "status", "tenant": tenant, "gateway": gw, "state": rnd.choice(["online", "offline"]),
              "t_ns": T0, "config_version": rnd.randint(0, 1000), "counters": {"sent": 1},
              "assets": {_name(rnd): "refrigerated-trailer"}}
    if rnd.random() < 0.5:
        return Case(_topic(tenant, gw, "status"), _encode(rnd, status), "status", why="status")
    k, v = rnd.choice([("config_version", 2**40), ("config_version", -1), ("state", "weird"),
                       ("counters", {"sent": 1.5}), ("t_ns", 2**64), ("assets", {"a\x00": "x"}),
                       ("assets", {"a" * 129: "x"}), ("assets", {"a": "type\x00"}), ("assets", {"a": "t" * 65}),
                       ("counters", {"x": 2**63})])
    return Case(_topic(tenant, gw, "status"), _encode(rnd, {**status, k: v}), "dead", why=f"status {k}={v!r}"[:80])


def mutated_case(rnd: random.Random, tenant: str) -> Case:
    """A valid batch with random byte-level damage: its fate is unknown, so it goes to a tenant of its own."""
    b = _batch(rnd, tenant, nonempty=True)
    raw = bytearray(_json(b))
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(raw))
        op = rnd.choice(["flip", "set", "delete", "insert"])
        if op == "flip":
            raw[i] ^= 1 << rnd.randrange(8)
        elif op == "set":
            raw[i] = rnd.randrange(256)
        elif op == "delete" and len(raw) > 1:
            del raw[i]
        else:
            raw.insert(i, rnd.randrange(256))
    return Case(_topic(tenant, b["gateway"]), bytes(raw), "unknown", why="mutated")


KINDS = {"valid": valid_case, "schema": schema_break_case, "encoding": encoding_break_case,
         "topic": topic_break_case, "event": event_case, "status": status_case, "mutated": mutated_case}
WEIGHTS = ["valid"] * 3 + ["schema", "encoding", "topic", "event", "status", "mutated"]


def cases_st(n: int):
    """``n`` interleaved cases for one fresh tenant pair (``fz…`` checked exactly, ``mz…`` mutated)."""
    message = st.tuples(st.sampled_from(WEIGHTS), st.integers(0, 2**64 - 1))

    @st.composite
    def build(draw) -> tuple[str, list[Case]]:
        k = next(_examples)
        tenant = f"fz{k}"
        cases = []
        for kind, seed in draw(st.lists(message, min_size=n, max_size=n)):
            rnd = random.Random(seed)
            cases.append(KINDS[kind](rnd, f"mz{k}" if kind == "mutated" else tenant))
        return tenant, cases
    return build()


# -- what ingest must have done ----------------------------------------------------------------------------
def expected(cases: list[Case]) -> Expected:
    """Outcomes and stored samples by the specification: the first batch of a (gateway, seq) is written, later
    ones are duplicates; within and across batches the last sample at a timestamp wins; a value that is None,
    NaN or infinite is stored as quality only (InfluxDB merges fields, so a value written earlier at that
    timestamp stays)."""
    exp = Expected(cases, counts=dict.fromkeys(("stored", "duplicate", "dead", "event", "status", "unknown"), 0))
    seen: set[tuple[str, int]] = set()
    for c in cases:
        outcome = c.expect
        if c.expect == "stored":
            assert c.batch is not None
            key = (c.batch["gateway"], c.batch["seq"])
            if key in seen:
                outcome = "duplicate"
            else:
                seen.add(key)
                for s in c.batch["series"]:
                    slot = exp.series.setdefault((s["asset"], s["point"]), {})
                    for t, v, q in zip(s["t_ns"], s["values"], s["quality"], strict=True):
                        fv = None if v is None or not math.isfinite(float(v)) else float(v)
                        if fv is None and t in slot:  # fields merge: a sample without a value keeps the one there
                            fv = slot[t][0]
                        slot[t] = (fv, q)
        exp.counts[outcome] += 1
    exp.series = {k: v for k, v in exp.series.items() if v}
    return exp


def stored(influxdb, db: str, tenant: str) -> dict[tuple[str, str], dict[int, tuple[float | None, int]]]:
    """Every sample of ``tenant`` in InfluxDB, read with the raw /query (not through the platform's store)."""
    res = influxdb.query(f"SELECT value, quality FROM telemetry WHERE tenant = '{tenant}' GROUP BY asset, point", db=db)
    out: dict[tuple[str, str], dict[int, tuple[float | None, int]]] = {}
    for s in res["results"][0].get("series", []):
        out[(s["tags"]["asset"], s["tags"]["point"])] = {t: (None if v is None else float(v), q)
                                                         for t, v, q in s["values"]}
    return out


def assert_same_data(got: dict, want: dict) -> None:
    assert got.keys() == want.keys(), (sorted(set(got) ^ set(want)))[:5]
    for k, w in want.items():
        g = got[k]
        assert g.keys() == w.keys(), (k, sorted(set(g) ^ set(w))[:5])
        for t, (v, q) in w.items():
            gv, gq = g[t]
            assert gq == q and (gv == v if v is not None else gv is None), (k, t, g[t], (v, q))


# -- in process: the bulk ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pg_registry(postgres):
    name = f"fuzz_{int(time.time() * 1000)}"
    postgres.create_database(name)
    reg = Registry(postgres.url_for(name))
    reg.create_schema()
    yield reg
    reg.engine.dispose()
    postgres.drop_database(name)


@pytest.fixture(scope="module")
def fuzz_db(influxdb):
    name = f"fuzz_{int(time.time() * 1000)}"
    influxdb.create_database(name)
    yield name
    influxdb.drop_database(name)


@pytest.fixture(scope="module")
def bulk(pg_registry, influxdb, fuzz_db):
    store = InfluxStore(influxdb.url, "", "-", f"{fuzz_db}/autogen", fuzz_db)
    ing = Ingest(CloudSettings(mqtt_url="mqtt://127.0.0.1:1", **LIMITS), store, pg_registry)
    totals = {"messages": 0, "stored": 0, "duplicate": 0, "dead": 0, "event": 0, "status": 0, "unknown": 0,
              "started": time.monotonic()}
    yield ing, totals
    elapsed = time.monotonic() - totals.pop("started")
    print(f"\nfuzz ingest (in process): {totals} in {elapsed:.1f}s; counters {ing.counters}")
    store.close()


def _dead_rows(registry: Registry, after_id: int, mutant_prefix: str) -> tuple[int, int, list[str]]:
    """(dead letters of checked tenants, of mutated ones, reasons) written after ``after_id``."""
    with registry.session() as s:
        rows = s.execute(select(DeadLetter.topic, DeadLetter.reason).where(DeadLetter.id > after_id)).all()
    mutated = sum(t.startswith(mutant_prefix) for t, _ in rows)
    return len(rows) - mutated, mutated, [r for _, r in rows]


def _max_dead_id(registry: Registry) -> int:
    with registry.session() as s:
        return s.scalar(select(func.coalesce(func.max(DeadLetter.id), 0)))


MESSAGES_PER_EXAMPLE = 100
# No shrinking: against real servers it would take minutes; a failure names the cases' kinds instead.
FUZZ = {"deadline": None, "derandomize": True, "database": None, "phases": [Phase.explicit, Phase.generate],
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                  HealthCheck.function_scoped_fixture]}


# 50 examples in the suite (100 took over a minute on a loaded machine); FUZZ_EXAMPLES=1000 for a longer hunt.
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 50)), **FUZZ)
@given(drawn=cases_st(MESSAGES_PER_EXAMPLE))
def test_hostile_messages_are_stored_exactly_or_dead_lettered(bulk, pg_registry, influxdb, fuzz_db, drawn):
    ing, totals = bulk
    tenant, cases = drawn
    exp = expected(cases)
    before = dict(ing.counters)
    first_dead = _max_dead_id(pg_registry)

    ing.process([_Msg(i, 0, c.topic, c.payload) for i, c in enumerate(cases)])

    d = {k: ing.counters[k] - before[k] for k in before}
    checked_dead, mutated_dead, reasons = _dead_rows(pg_registry, first_dead, f"twin/v1/m{tenant[1:]}/")
    assert not [r for r in reasons if "InfluxDB rejected" in r], "ingest let through what the store refuses"
    # Every message has exactly one fate, and the counters say which.
    assert d["messages"] == len(cases)
    assert d["messages"] == d["batches_written"] + d["duplicates"] + d["dead_letters"] + d["events"] + d["statuses"]
    assert d["dead_letters"] == checked_dead + mutated_dead
    why = [c.why for c in cases if c.expect == "dead"]
    assert checked_dead == exp.counts["dead"], (checked_dead, exp.counts["dead"], why, reasons)
    assert (d["events"], d["statuses"]) == (exp.counts["event"], exp.counts["status"])
    assert d["batches_written"] >= exp.counts["stored"] and d["duplicates"] >= exp.counts["duplicate"]
    assert d["batches_written"] + d["duplicates"] + mutated_dead == (
        exp.counts["stored"] + exp.counts["duplicate"] + exp.counts["unknown"])
    assert_same_data(stored(influxdb, fuzz_db, tenant), exp.series)
    with pg_registry.session() as s:
        events = sum(s.scalar(select(func.count()).select_from(t).where(t.tenant == tenant))
                     for t in (AnomalyRecord, AlarmRecord))
    assert events == len({(c.batch["kind"], c.batch["event_id"]) for c in cases if c.expect == "event" and c.batch})
    totals["messages"] += len(cases)
    for k in exp.counts:
        totals[k] += exp.counts[k]


def test_each_limit_is_a_setting_and_its_dead_letter_names_it(pg_registry, influxdb, fuzz_db):
    store = InfluxStore(influxdb.url, "", "-", f"{fuzz_db}/autogen", fuzz_db)
    ing = Ingest(CloudSettings(mqtt_url="mqtt://127.0.0.1:1", ingest_max_payload_bytes=1_000,
                               ingest_max_batch_samples=10, ingest_max_topic_bytes=40), store, pg_registry)
    first_dead = _max_dead_id(pg_registry)
    ok = {"v": "v1", "kind": "telemetry", "tenant": "lim", "gateway": "gw", "seq": 0, "series": [
        {"asset": "a", "point": "p", "t_ns": [T0 + i for i in range(10)], "values": [1.0] * 10, "quality": [0] * 10}]}
    eleven = {**ok, "seq": 1, "series": [{**ok["series"][0], "t_ns": [T0 + i for i in range(11)],
                                          "values": [1.0] * 11, "quality": [0] * 11}]}
    padded = _json(ok)[:-1] + b" " * 1_000 + b"}"
    ing.process([_Msg(1, 0, "twin/v1/lim/gw/telemetry", _json(ok)),
                 _Msg(2, 0, "twin/v1/lim/gw/telemetry", _json(eleven)),
                 _Msg(3, 0, "twin/v1/lim/gw/telemetry", padded),
                 _Msg(4, 0, "twin/v1/lim/gw/telemetry", zlib.compress(padded)),  # small on the wire, not inside
                 _Msg(5, 0, "twin/v1/lim/" + "g" * 30 + "/telemetry", _json(ok))])
    store.close()
    with pg_registry.session() as s:
        reasons = list(s.scalars(select(DeadLetter.reason).where(DeadLetter.id > first_dead).order_by(DeadLetter.id)))
    assert reasons == ["telemetry: 11 samples in one batch, more than TWIN_INGEST_MAX_BATCH_SAMPLES=10",
                       f"telemetry: payload of {len(padded)} bytes is larger than TWIN_INGEST_MAX_PAYLOAD_BYTES=1000",
                       "telemetry: payload larger than 1000 bytes after decompression (TWIN_INGEST_MAX_PAYLOAD_BYTES)",
                       "topic longer than TWIN_INGEST_MAX_TOPIC_BYTES=40 bytes"]
    assert (ing.counters["over_limit"], ing.counters["batches_written"], ing.counters["dead_letters"]) == (4, 1, 4)


def test_what_the_registry_refuses_is_dead_lettered_and_the_rest_of_the_group_written(postgres, influxdb, fuzz_db):
    # A registry behind the wire (here a column narrowed by hand) refuses one event for good: retrying it
    # would hold up every message behind it, so it is dead-lettered and the rest of its group written.
    name = f"narrow_{int(time.time() * 1000)}"
    postgres.create_database(name)
    reg = Registry(postgres.url_for(name))
    try:
        reg.create_schema()
        with reg.engine.begin() as c:
            c.execute(text("ALTER TABLE anomalies ALTER COLUMN asset TYPE varchar(8)"))
        store = InfluxStore(influxdb.url, "", "-", f"{fuzz_db}/autogen", fuzz_db)
        ing = Ingest(CloudSettings(mqtt_url="mqtt://127.0.0.1:1"), store, reg)
        batch = {"v": "v1", "kind": "telemetry", "tenant": "narrow", "gateway": "gw", "seq": 0, "series": [
            {"asset": "t1", "point": "p", "t_ns": [T0], "values": [1.5], "quality": [0]}]}
        ev = {"v": "v1", "kind": "anomaly", "tenant": "narrow", "gateway": "gw", "event_id": "e1", "asset": "t1",
              "point": "p", "start_ns": T0, "peak_score": 5.0, "detectors": ["ewma"]}
        long = {**ev, "event_id": "e2", "asset": "a-longer-asset"}
        ing.process([_Msg(1, 0, "twin/v1/narrow/gw/telemetry", _json(batch)),
                     _Msg(2, 0, "twin/v1/narrow/gw/events", _json(long)),
                     _Msg(3, 0, "twin/v1/narrow/gw/events", _json(ev))])
        store.close()
        with reg.session() as s:
            assert list(s.scalars(select(AnomalyRecord.event_id))) == ["e1"]
            dead = s.scalars(select(DeadLetter)).one()
        assert dead.reason.startswith("registry refused it: value too long") and b'"e2"' in dead.payload
        assert dead.topic == "twin/v1/narrow/gw/events"
        assert (ing.counters["registry_refused"], ing.counters["dead_letters"], ing.counters["batches_written"]) \
            == (1, 1, 1)
        assert stored(influxdb, fuzz_db, "narrow") == {("t1", "p"): {T0: (1.5, 0)}}
    finally:
        reg.engine.dispose()
        postgres.drop_database(name)


# -- through the real broker into a running cloud ----------------------------------------------------------
@pytest.fixture(scope="module")
def cloud(tmp_path_factory, mosquitto, postgres, influxdb, fuzz_db):
    name = f"fuzzp_{int(time.time() * 1000)}"
    postgres.create_database(name)
    env = {f"TWIN_{k.upper()}": str(v) for k, v in LIMITS.items()}
    proc = CloudProcess(tmp_path_factory.mktemp("fuzz-cloud"), mosquitto.url, postgres.url_for(name), influxdb.url,
                        fuzz_db, extra_env={**env, "TWIN_INGEST_CLIENT_ID": f"fuzz-{name}"})
    proc.start()
    try:
        proc.wait_ready()
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fuzz-pub-{name}", protocol=mqtt.MQTTv5)
        pub.max_inflight_messages_set(1000)
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        reg = Registry(postgres.url_for(name))
        yield proc, pub, reg, {"sent": 0, "started": time.monotonic()}
        reg.engine.dispose()
        pub.loop_stop()
        pub.disconnect()
    finally:
        proc.stop()
        postgres.drop_database(name)


def _deliverable(c: Case) -> bool:
    """What the broker hands to ingest: a topic its subscriptions match."""
    parts = c.topic.split("/")
    return len(parts) == 5 and parts[:2] == ["twin", "v1"] and parts[4] in ("telemetry", "events", "status")


@settings(max_examples=5, **FUZZ)
@given(drawn=cases_st(MESSAGES_PER_EXAMPLE))
def test_hostile_messages_through_the_broker_leave_the_cloud_running_and_its_data_exact(cloud, influxdb,
                                                                                       fuzz_db, drawn):
    proc, pub, reg, totals = cloud
    tenant, cases = drawn
    cases = [c for c in cases if _deliverable(c)]
    exp = expected(cases)
    before = proc.metrics()
    first_dead = _max_dead_id(reg)
    infos = [pub.publish(c.topic, c.payload, qos=1) for c in cases]
    for info in infos:
        info.wait_for_publish(30)
    sent = len(cases)

    def delta(m: dict[str, float], k: str) -> int:
        return int(m.get(f"twin_ingest_{k}", 0) - before.get(f"twin_ingest_{k}", 0))

    def settled() -> dict[str, float] | None:
        m = proc.metrics()
        done = sum(delta(m, k) for k in ("batches_written", "duplicates", "dead_letters", "events", "statuses"))
        return m if delta(m, "messages") == sent and done == sent else None

    m = wait_until(settled, timeout=60, what=f"ingest to account for {sent} messages")
    assert proc.alive
    r = httpx.get(f"{proc.url}/health", timeout=5)
    assert r.status_code == 200 and r.json()["ingest"] == "connected"
    assert delta(m, "events") == exp.counts["event"] and delta(m, "statuses") == exp.counts["status"]
    assert delta(m, "batches_written") + delta(m, "duplicates") + delta(m, "dead_letters") == (
        exp.counts["stored"] + exp.counts["duplicate"] + exp.counts["dead"] + exp.counts["unknown"])
    checked_dead, mutated_dead, reasons = _dead_rows(reg, first_dead, f"twin/v1/m{tenant[1:]}/")
    assert checked_dead + mutated_dead == delta(m, "dead_letters")
    assert checked_dead == exp.counts["dead"], (checked_dead, exp.counts["dead"], reasons)
    assert_same_data(stored(influxdb, fuzz_db, tenant), exp.series)
    totals["sent"] += sent
    print(f"\nfuzz ingest (broker): {totals['sent']} messages so far, {time.monotonic() - totals['started']:.1f}s")
