"""A PublishResponse read as columns (``edge/sources/opcua_publish.py``) hands the sink exactly what asyncua's own
decoder does: the same bytes, encoded by asyncua, decoded both ways and fed to the same source; what does not
share one scalar layout is left to asyncua. Live, a session's publish loop uses it."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary, struct_to_binary

from edge.config import OpcUaSource
from edge.sources import opcua_publish
from edge.sources.opcua import OpcUaSourceRunner
from edge.sources.opcua_publish import ScalarChanges, decode_publish_response
from simulators.opcua_server import SimOpcUaServer
from tests.harness import free_port
from tests.harness.processes import wait_until

T = datetime(2026, 12, 5, 6, 0, 0, 123_456, tzinfo=UTC)
FAST, SLOW = "ScalarChanges", "DataChangeNotification"


def item(handle: int, value: object, vtype: ua.VariantType | None = None, *, status: int | None = 0,
         source: datetime | None = T, server: datetime | None = T, pico: int | None = None
         ) -> ua.MonitoredItemNotification:
    dv = ua.DataValue(ua.Variant(value, vtype) if vtype is not None else ua.Variant(value),
                      StatusCode=None if status is None else ua.StatusCode(status), SourceTimestamp=source,
                      ServerTimestamp=server, SourcePicoseconds=pico)
    return ua.MonitoredItemNotification(ClientHandle=handle, Value=dv)


def changes(*items: ua.MonitoredItemNotification) -> ua.DataChangeNotification:
    return ua.DataChangeNotification(MonitoredItems=list(items))


def doubles(n: int, **kw: object) -> ua.DataChangeNotification:
    """Each its own SourceTimestamp, µs apart, unless ``source`` says otherwise."""
    return changes(*[item(h, 4.0 + h / 8, ua.VariantType.Double,
                          **{"source": T + timedelta(microseconds=h), **kw}) for h in range(1, n + 1)])


UNCERTAIN, BAD, GOOD_LIMIT = ua.StatusCodes.UncertainLastUsableValue, ua.StatusCodes.BadSensorFailure, 0x00000100
CASES: dict[str, tuple[list, list[str]]] = {
    "doubles with source and server time": ([doubles(6)], [FAST]),
    "doubles without a StatusCode": ([doubles(3, status=None)], [FAST]),
    "uncertain, bad and good-with-limit codes on numbers": ([changes(
        item(1, 1.5, ua.VariantType.Double, status=UNCERTAIN), item(2, 99.0, ua.VariantType.Double, status=BAD),
        item(3, 2.5, ua.VariantType.Double, status=GOOD_LIMIT), item(4, 3.5, ua.VariantType.Double))], [FAST]),
    "only the server's time": ([doubles(2, source=None)], [FAST]),
    "a source time before 1970 gives way to the server's": ([changes(
        item(1, 1.0, ua.VariantType.Double, source=datetime(1601, 1, 1, tzinfo=UTC)),
        item(2, 2.0, ua.VariantType.Double, source=datetime(1969, 12, 31, tzinfo=UTC)))], [FAST]),
    "floats": ([changes(*[item(h, h / 3, ua.VariantType.Float) for h in (1, 2)])], [FAST]),
    "int32, uint64, sbyte, booleans": ([changes(item(1, -7, ua.VariantType.Int32),
                                                item(2, 40_000, ua.VariantType.Int32)),
                                        changes(item(3, 2**63 + 5, ua.VariantType.UInt64)),
                                        changes(item(4, -3, ua.VariantType.SByte)),
                                        changes(item(5, True, ua.VariantType.Boolean),
                                                item(6, False, ua.VariantType.Boolean))], [FAST] * 4),
    "a handle this source does not know is skipped": ([changes(item(1, 1.0, ua.VariantType.Double),
                                                               item(99, 2.0, ua.VariantType.Double))], [FAST]),
    "types mixed in one notification": ([changes(item(1, 1.0, ua.VariantType.Double),
                                                 item(2, 2, ua.VariantType.Int32))], [SLOW]),
    "a Bad value as servers send it (Null) among numbers": ([changes(
        item(1, 1.0, ua.VariantType.Double), item(2, None, status=BAD))], [SLOW]),
    "masks mixed in one notification": ([changes(item(1, 1.0, ua.VariantType.Double),
                                                 item(2, 2.0, ua.VariantType.Double, server=None))], [SLOW]),
    "picoseconds": ([changes(item(1, 1.0, ua.VariantType.Double, pico=5))], [SLOW]),
    "an array and text": ([changes(item(1, [1.0, 2.0], ua.VariantType.Double)),
                           changes(item(2, "text", ua.VariantType.String))], [SLOW, SLOW]),
    "events, a status change and data changes in one response": (
        [ua.EventNotificationList(Events=[ua.EventFieldList(ClientHandle=500, EventFields=[ua.Variant(1)])]),
         doubles(2), ua.StatusChangeNotification(Status=ua.StatusCode(0)), doubles(1)],
        ["EventNotificationList", FAST, "StatusChangeNotification", FAST]),
}


def response_bytes(notifications: list) -> bytes:
    resp = ua.PublishResponse()
    resp.ResponseHeader.RequestHandle = 42
    resp.ResponseHeader.Timestamp = T
    p = resp.Parameters
    p.SubscriptionId, p.AvailableSequenceNumbers, p.MoreNotifications = 7, [3, 4], False
    p.NotificationMessage = ua.NotificationMessage(SequenceNumber=4, PublishTime=T, NotificationData=notifications)
    p.Results = [ua.StatusCode(0)]
    return struct_to_binary(resp)


def handed(result: ua.PublishResult) -> tuple[list, list, dict]:
    runner = OpcUaSourceRunner(OpcUaSource.model_validate({
        "type": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840",
        "nodes": [{"node": f"ns=2;i={h}", "asset": "a", "point": f"p{h}"} for h in range(1, 7)]}))
    samples: list = []
    statuses: list = []
    runner._sink = lambda *s: samples.append(tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in s))
    runner.on_status = lambda *s: statuses.append(s)
    runner._on_publish(result)
    return samples, statuses, runner.counters()


@pytest.mark.parametrize("case", list(CASES))
def test_columns_hand_the_sink_what_asyncuas_decoder_does(case: str) -> None:
    notifications, kinds = CASES[case]
    raw = response_bytes(notifications)
    fast = decode_publish_response(Buffer(raw))
    slow = struct_from_binary(ua.PublishResponse, Buffer(raw))
    assert [type(n).__name__ for n in fast.Parameters.NotificationMessage.NotificationData] == kinds
    samples, statuses, counts = handed(fast.Parameters)
    assert (samples, statuses, counts) == handed(slow.Parameters)
    assert samples or counts["opcua_errors"], "each case hands the sink something, or refuses it"
    fast.Parameters.NotificationMessage.NotificationData = slow.Parameters.NotificationMessage.NotificationData = []
    assert fast == slow, "everything around the data changes is asyncua's"


def test_values_without_a_time_are_stamped_on_arrival() -> None:
    before = time.time_ns()
    fast = decode_publish_response(Buffer(response_bytes([doubles(2, source=None, server=None)])))
    [ch] = fast.Parameters.NotificationMessage.NotificationData
    assert isinstance(ch, ScalarChanges) and ch.x.tolist() == [4.125, 4.25]
    assert all(before <= t <= time.time_ns() for t in ch.t_ns.tolist())


def test_a_live_session_decodes_its_data_changes_as_columns() -> None:
    asset = "trailer-041"
    with SimOpcUaServer(free_port(), [(asset, "refrigerated-trailer")]) as sim:
        t0 = 1_764_900_000_000_000_000
        sim.set_value(asset, "supply_air", 3.5, source_ts_ns=t0)
        runner = OpcUaSourceRunner(OpcUaSource.model_validate({
            "type": "opcua", "endpoint": sim.endpoint, "publishing_interval_ms": 20,
            "nodes": [{"node": sim.node_id(asset, "supply_air"), "asset": asset, "point": "supply_air"}]}))
        samples: list = []
        runner.start(lambda *s: samples.append(s))
        try:
            wait_until(lambda: len(samples) >= 1, 15, what="the initial value")
            sim.set_value(asset, "supply_air", 4.25, source_ts_ns=t0 + 1_000)
            wait_until(lambda: len(samples) >= 2, 10, what="the next value")
            assert runner._client is not None
            assert runner._client.uaclient.session.publish.__module__ == opcua_publish.__name__
        finally:
            runner.stop()
    assert samples == [(asset, "supply_air", t0, 3.5, 0), (asset, "supply_air", t0 + 1_000, 4.25, 0)]
