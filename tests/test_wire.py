"""The v1 contract: round trips, compression, and errors that say what was wrong."""

from __future__ import annotations

import zlib

import pytest

from models import topics
from models.catalogue import builtin_types
from models.wire import (
    MAX_PAYLOAD_BYTES,
    AlarmEvent,
    AnomalyEvent,
    PointSeries,
    TelemetryBatch,
    WireError,
    decode,
    decode_event,
    encode,
)


def _batch() -> TelemetryBatch:
    return TelemetryBatch(tenant="acme", gateway="gw1", seq=7, series=[
        PointSeries(asset="a", point="p", t_ns=[1, 2, 2], values=[1.5, None, 3.0], quality=[0, 2, 0])])


@pytest.mark.parametrize("compress", [False, True])
def test_batch_round_trips(compress):
    b = _batch()
    assert decode(encode(b, compress=compress), TelemetryBatch) == b
    assert b.n_samples == 3


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "empty payload"),
    (b"\x00abc", "neither JSON nor zlib"),
    (b"{oops", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'{"v": "v2"}', "unsupported schema version 'v2'"),
    (b'{"v": "v1", "kind": "telemetry", "tenant": "t", "gateway": "g", "seq": -1, "series": []}', "seq"),
    (zlib.compress(b"{" + b" " * (MAX_PAYLOAD_BYTES + 10) + b"}"), "larger than"),
    (b"x\x9c garbage", "corrupt zlib"),
])
def test_bad_payloads_are_refused_with_the_reason(payload, reason):
    with pytest.raises(WireError, match=reason):
        decode(payload, TelemetryBatch)


def test_events_are_told_apart_by_kind():
    an = AnomalyEvent(tenant="t", gateway="g", event_id="e1", asset="a", point="p", start_ns=1, peak_score=9.0,
                      detectors=["ewma_z"])
    al = AlarmEvent(tenant="t", gateway="g", event_id="e2", asset="a", rule="r", start_ns=1)
    assert decode_event(encode(an)) == an
    assert decode_event(encode(al)) == al


def test_topics_round_trip_and_refuse_wildcards():
    name = topics.telemetry("acme", "gw-1")
    assert name == "twin/v1/acme/gw-1/telemetry"
    assert topics.parse(name) == ("acme", "gw-1", "telemetry")
    assert topics.parse(topics.config_desired("acme", "gw-1")).kind == "config/desired"
    assert topics.ingest_filter("telemetry") == "$share/ingest/twin/v1/+/+/telemetry"
    with pytest.raises(ValueError, match="cannot be used in a topic"):
        topics.telemetry("acme", "gw/+")
    with pytest.raises(ValueError, match="not a twin/v1 topic"):
        topics.parse("twin/v1/acme/telemetry")


def test_the_refrigerated_trailer_type_is_in_the_catalogue():
    t = builtin_types()["refrigerated-trailer"]
    assert set(t.points) == {"supply_air", "return_air", "setpoint", "door", "compressor_current", "ambient",
                             "mode", "driver_id"}
    assert (t.points["driver_id"].kind, t.points["driver_id"].personal) == ("text", True)
    assert t.points["supply_air"].unit == "degC"
    assert t.points["supply_air"].detectors[0].kind == "novelty"
    assert {r.name for r in t.local_rules} >= {"supply-air-high", "door-open-long"}
