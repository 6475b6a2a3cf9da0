"""A PublishResponse's data changes decoded as columns: the OPC-UA source's hot path without an object per value.

Why: asyncua decodes every monitored item of a PublishResponse into a MonitoredItemNotification, a DataValue, a
Variant and two datetimes, and that was ~40 % of the agent's CPU at 1,000 tags x 10 Hz (py-spy), in bursts that
hold the GIL while the tick waits. A PLC's data changes have one layout: each item a client handle, the same
DataValue encoding mask and the same scalar type. Such a DataChangeNotification is read here in one
``numpy.frombuffer`` as ``ScalarChanges`` (client handle, value as float, StatusCode, time in ns); anything else
(other masks in one notification, arrays, Null or non-numeric values, picoseconds, events, status changes) is
decoded by asyncua as before, so what reaches the sink is the same either way (tests/test_opcua_publish.py).

``install(session)`` makes an asyncua session's publish loop use this decoder; asyncua's loop still sends the
PublishRequests, acknowledges and dispatches. A session without the hooks it needs keeps asyncua's own decoder.

    >>> import numpy as np
    >>> body = np.array([(7, 0x05, 11, 4.25, 133_000_000_000_000_000)], _layout(0x05, 11)).tobytes()
    >>> ch = scalar_changes((1).to_bytes(4, "little") + body + (-1).to_bytes(4, "little", signed=True))
    >>> ch.handle.tolist(), ch.x.tolist(), ch.code.tolist(), ch.t_ns.tolist()
    ([7], [4.25], [0], [1655526400000000000])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import Primitives, extensionobject_from_binary, from_binary, struct_from_binary
from asyncua.ua.uaerrors import UaStructParsingError

from edge.sources import Sink
from models.wire import Quality

# Variant type ids of the numeric scalars (OPC 10000-6 §5.1.2) and their little-endian numpy types.
_SCALARS = {1: "u1", 2: "i1", 3: "u1", 4: "<i2", 5: "<u2", 6: "<i4", 7: "<u4", 8: "<i8", 9: "<u8", 10: "<f4",
            11: "<f8"}
_VALUE, _STATUS, _SOURCE_TS, _SERVER_TS = 0x01, 0x02, 0x04, 0x08  # DataValue encoding mask bits
_EPOCH_US = 11_644_473_600_000_000  # 1601-01-01 to 1970-01-01 in µs: OPC-UA's DateTime counts 100 ns from 1601
_TICKS_MAX = (_EPOCH_US + (2**63 - 1) // 1000) * 10  # beyond: no int64 ns (year 2262); asyncua decodes those
_DATA_CHANGE = ua.FourByteNodeId(ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary)


class ScalarChanges:
    """One DataChangeNotification whose items share a layout, as columns (arrival order kept)."""

    __slots__ = ("code", "handle", "t_ns", "x")

    def __init__(self, handle: np.ndarray, x: np.ndarray, code: np.ndarray, t_ns: np.ndarray) -> None:
        self.handle, self.x, self.code, self.t_ns = handle, x, code, t_ns


def _layout(mask: int, variant: int) -> np.dtype:
    fields = [("handle", "<u4"), ("mask", "u1"), ("variant", "u1"), ("value", _SCALARS[variant])]
    fields += [(name, t) for bit, name, t in ((_STATUS, "code", "<u4"), (_SOURCE_TS, "source", "<i8"),
                                             (_SERVER_TS, "server", "<i8")) if mask & bit]
    return np.dtype(fields)  # packed, as on the wire


def _ns(ticks: np.ndarray) -> np.ndarray:
    """As asyncua and ``timestamp_ns`` read a DateTime: whole µs, 0 for none or before 1970."""
    return np.maximum(ticks // 10 - _EPOCH_US, 0) * 1000  # clipped before the * 1000: 1601 would overflow


def scalar_changes(body: bytes | memoryview) -> ScalarChanges | None:
    """A DataChangeNotification's binary body as columns, or None when its items do not share one scalar layout."""
    n = int.from_bytes(body[:4], "little", signed=True)
    if n <= 0 or len(body) < 10:
        return None
    mask, variant = body[8], body[9]
    if not mask & _VALUE or mask & ~(_VALUE | _STATUS | _SOURCE_TS | _SERVER_TS) or variant not in _SCALARS:
        return None
    layout = _layout(mask, variant)
    end = 4 + n * layout.itemsize
    # What follows the items is the DiagnosticInfo array: empty (-1 or 0), so the body ends right after its count.
    if len(body) != end + 4 or int.from_bytes(body[end:end + 4], "little", signed=True) > 0:
        return None
    items = np.frombuffer(body, layout, n, 4)
    if (items["mask"] != mask).any() or (items["variant"] != variant).any():
        return None
    now = time.time_ns()
    t_ns = np.full(n, now, np.int64)
    for name in ("server", "source"):  # the SourceTimestamp, else the ServerTimestamp, else now
        if name in items.dtype.names:
            ticks = items[name]
            if (ticks >= _TICKS_MAX).any():
                return None
            t = _ns(ticks)
            t_ns = np.where(t > 0, t, t_ns)
    code = items["code"] if mask & _STATUS else np.zeros(n, np.uint32)
    return ScalarChanges(items["handle"], items["value"].astype(np.float64), code, t_ns)


def decode_publish_response(data: Buffer) -> ua.PublishResponse:
    """asyncua's PublishResponse, but each DataChangeNotification that ``scalar_changes`` reads is a ScalarChanges."""
    resp = ua.PublishResponse()
    resp.TypeId = from_binary(ua.NodeId, data)
    resp.ResponseHeader = struct_from_binary(ua.ResponseHeader, data)
    result = resp.Parameters
    result.SubscriptionId = Primitives.UInt32.unpack(data)
    result.AvailableSequenceNumbers = from_binary(list[ua.UInt32], data)
    result.MoreNotifications = Primitives.Boolean.unpack(data)
    msg = result.NotificationMessage
    msg.SequenceNumber = Primitives.UInt32.unpack(data)
    msg.PublishTime = Primitives.DateTime.unpack(data)
    notifications: list[Any] = []
    for _ in range(max(0, Primitives.Int32.unpack(data))):
        start = data.cur_pos
        typeid = from_binary(ua.NodeId, data)
        encoding = Primitives.Byte.unpack(data)
        changes = None
        if typeid == _DATA_CHANGE and encoding == 1:
            length = Primitives.Int32.unpack(data)
            changes = scalar_changes(data.read(length)) if length > 0 else None
        if changes is None:
            data.rewind(start)
            changes = extensionobject_from_binary(data)
        notifications.append(changes)
    msg.NotificationData = notifications
    result.Results = from_binary(list[ua.StatusCode], data)
    result.DiagnosticInfos = from_binary(list[ua.DiagnosticInfo], data)
    return resp


def install(session: Any) -> bool:
    """Decode this asyncua session's PublishResponses here; False (asyncua's decoder stays) when it cannot be."""
    send = getattr(session, "_send_request", None)
    if send is None or not callable(getattr(session, "publish", None)):
        return False

    async def publish(acks: list[ua.SubscriptionAcknowledgement]) -> ua.PublishResponse:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks or []
        data = await send(request, timeout=0)  # as asyncua's own publish: no client-side timeout
        whole = data.copy()
        try:
            return decode_publish_response(data)
        except Exception:  # a layout this reader got wrong must not cost a value: asyncua reads it all again
            try:
                return struct_from_binary(ua.PublishResponse, whole)
            except Exception as exc:
                raise UaStructParsingError from exc  # what asyncua's loop expects, and skips

    session.publish = publish
    return True


def hand(changes: ScalarChanges, routes: dict[int, tuple[str, str]], sink: Sink, counts: dict[str, int],
         on_status: Callable[[str, str, int, int], None] | None) -> None:
    """Each value to the sink, as the source's per-item path does: Bad is NaN, any code but Good to ``on_status``."""
    values = bad = 0
    for h, t, x, code in zip(changes.handle.tolist(), changes.t_ns.tolist(), changes.x.tolist(),
                             changes.code.tolist(), strict=True):
        route = routes.get(h)
        if route is None:
            continue
        values += 1
        if not code:
            sink(route[0], route[1], t, x, Quality.GOOD)
            continue
        if on_status is not None:
            on_status(route[0], route[1], t, code)
        if code >> 31:
            bad += 1
            sink(route[0], route[1], t, float("nan"), Quality.BAD)
        else:
            sink(route[0], route[1], t, x, Quality.UNCERTAIN if code >> 30 else Quality.GOOD)
    counts["opcua_values"] += values
    counts["opcua_bad_quality"] += bad
