"""Sparkplug B 3.0 on the wire: topics, the protobuf payload (``sparkplug_b.proto``, the specification's schema,
EPL-2.0), metric values, and the host's STATE message. Shared by the gateway's host source and its edge node, and
by anything that simulates either; it knows nothing of assets or points.

>>> p = new_payload(seq=1, t_ms=1000); m = add_metric(p, 21.5, alias=3); decode(p.SerializeToString()).seq
1
>>> metric_value(decode(p.SerializeToString()).metrics[0])
21.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson
from google.protobuf.message import DecodeError

from models.sparkplug.sparkplug_b_pb2 import DataType, Payload

NAMESPACE = "spBv1.0"
REBIRTH = "Node Control/Rebirth"
BDSEQ = "bdSeq"

NODE_TYPES = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})

_INT32 = {DataType.Int8, DataType.Int16, DataType.Int32}
_UINT32 = {DataType.UInt8, DataType.UInt16, DataType.UInt32}
_INT64 = {DataType.Int64}
_UINT64 = {DataType.UInt64, DataType.DateTime}
_TEXT = {DataType.String, DataType.Text, DataType.UUID}
_FLOAT = {DataType.Float, DataType.Double}

__all__ = ["BDSEQ", "NAMESPACE", "REBIRTH", "DataType", "Payload", "SparkplugError", "Topic", "add_metric", "decode",
           "metric_value", "new_payload", "parse_topic", "state_payload", "topic"]


class SparkplugError(ValueError):
    """A topic or payload that is not Sparkplug B; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Topic:
    group: str
    message_type: str
    edge_node: str
    device: str | None = None


def parse_topic(text: str) -> Topic:
    """``spBv1.0/{group}/{type}/{edge node}[/{device}]`` (specification 4.1.1)."""
    parts = text.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or not all(parts):
        raise SparkplugError(f"not a Sparkplug B topic: {text!r:.120}")
    kind = parts[2]
    if (kind in NODE_TYPES) != (len(parts) == 4) or kind not in NODE_TYPES | DEVICE_TYPES:
        raise SparkplugError(f"message type {kind!r:.20} does not fit the topic {text!r:.120}")
    return Topic(parts[1], kind, parts[3], parts[4] if len(parts) == 5 else None)


def topic(group: str, message_type: str, edge_node: str, device: str | None = None) -> str:
    return "/".join((NAMESPACE, group, message_type, edge_node, *((device,) if device else ())))


def state_topic(host_id: str) -> str:
    """Sparkplug 3.0: the host's STATE topic, ``spBv1.0/STATE/{host_id}`` (not the 2.2 ``STATE/{id}``)."""
    return f"{NAMESPACE}/STATE/{host_id}"


def state_payload(online: bool, t_ms: int) -> bytes:
    """[tck-id-host-topic-phid-birth-payload] JSON ``{"online": bool, "timestamp": ms}``, UTF-8."""
    return orjson.dumps({"online": online, "timestamp": t_ms})


def decode(raw: bytes) -> Payload:
    try:
        return Payload.FromString(raw)
    except (DecodeError, RuntimeWarning) as exc:  # upb raises DecodeError; a truncated varint too
        raise SparkplugError(f"not a Sparkplug B payload ({len(raw)} bytes): {exc}") from None


def new_payload(seq: int | None, t_ms: int) -> Payload:
    p = Payload(timestamp=t_ms)
    if seq is not None:
        p.seq = seq
    return p


def add_metric(p: Payload, value: float | str | bool | None, *, name: str | None = None, alias: int | None = None,
               t_ms: int | None = None, datatype: int | None = None, historical: bool = False, typed: bool = True):
    """Append a metric: a float is a Double, a bool a Boolean, a str a String, an int an Int64 (unless ``datatype``
    says otherwise); ``None`` or NaN is a null value of that type. ``typed=False`` leaves the datatype out, as
    data messages should (the birth certificate has it)."""
    m = p.metrics.add()
    if name is not None:
        m.name = name
    if alias is not None:
        m.alias = alias
    if t_ms is not None:
        m.timestamp = t_ms
    if historical:
        m.is_historical = True
    if datatype is None:
        datatype = (DataType.Boolean if isinstance(value, bool) else DataType.Int64 if isinstance(value, int)
                    else DataType.String if isinstance(value, str) else DataType.Double)
    if typed:
        m.datatype = datatype
    if value is None or (isinstance(value, float) and math.isnan(value)):
        m.is_null = True
    elif datatype in _FLOAT:
        setattr(m, "double_value" if datatype == DataType.Double else "float_value", float(value))
    elif datatype == DataType.Boolean:
        m.boolean_value = bool(value)
    elif datatype in _TEXT:
        m.string_value = str(value)
    elif datatype in _INT32 or datatype in _UINT32:
        m.int_value = int(value) & 0xFFFFFFFF  # signed types in two's complement (specification 6.4.16)
    elif datatype in _INT64 or datatype in _UINT64:
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    else:
        raise SparkplugError(f"metric datatype {datatype} is not written here")
    return m


def metric_value(m, datatype: int | None = None) -> float | str | None:
    """A scalar metric's value as the agent takes it (a float, or a str for text); None for a null value or a type
    with no scalar reading (DataSet, Template, Bytes, arrays). ``datatype``: the birth certificate's, for a data
    message whose metric omits it (allowed by [tck-id-payloads-metric-datatype-not-req])."""
    dt = m.datatype or datatype or 0
    if m.is_null:
        return None
    if dt in _FLOAT:
        return float(m.double_value if dt == DataType.Double else m.float_value)
    if dt == DataType.Boolean:
        return 1.0 if m.boolean_value else 0.0
    if dt in _INT32:
        v = m.int_value
        return float(v - (1 << 32) if v & 0x80000000 else v)
    if dt in _UINT32:
        return float(m.int_value)
    if dt in _INT64:
        v = m.long_value
        return float(v - (1 << 64) if v & (1 << 63) else v)
    if dt in _UINT64:
        return float(m.long_value)
    if dt in _TEXT:
        return m.string_value
    return None
