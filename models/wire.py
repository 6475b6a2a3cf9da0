"""Wire messages of schema v1: what gateways and the cloud say to each other over MQTT.

Every message carries ``v`` so a reader can refuse what it does not understand. Telemetry is
columnar per point (timestamps, values, quality as parallel arrays) because the edge produces it
from numpy buffers and the cloud writes it in bulk; a row-per-sample shape would cost a Python
object per sample on both ends.

Payloads are JSON, optionally zlib-compressed. The first byte tells which: ``{`` is plain JSON,
``0x78`` is a zlib stream. This keeps the format self-describing on MQTT 3.1.1 brokers too, where
there is no content-type property.
"""

from __future__ import annotations

import json
import zlib
from enum import IntEnum
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

SCHEMA_VERSION = "v1"
MAX_PAYLOAD_BYTES = 8 * 1024 * 1024
"""Largest payload accepted after decompression; a bigger one is rejected, not parsed."""


class Quality(IntEnum):
    """OPC-UA-like quality, reduced to the three classes that change how a value may be used."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class WireError(ValueError):
    """A payload that is not a valid v1 message; the text says what was wrong."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)
    v: Literal["v1"] = "v1"


class PointSeries(BaseModel):
    """All samples of one (asset, point) in a batch, as parallel arrays."""

    model_config = ConfigDict(extra="forbid")
    asset: str = Field(min_length=1, max_length=128)
    point: str = Field(min_length=1, max_length=128)
    t_ns: list[int]
    values: list[float | None]
    quality: list[int]

    @model_validator(mode="after")
    def _same_lengths(self) -> PointSeries:
        n = len(self.t_ns)
        if len(self.values) != n or len(self.quality) != n:
            raise ValueError(
                f"{self.asset}/{self.point}: t_ns, values and quality must have the same length "
                f"(got {n}, {len(self.values)}, {len(self.quality)})"
            )
        return self

    def __len__(self) -> int:
        return len(self.t_ns)


class TextSeries(BaseModel):
    """String samples of one text point (e.g. a driver id, already pseudonymised when personal)."""

    model_config = ConfigDict(extra="forbid")
    asset: str = Field(min_length=1, max_length=128)
    point: str = Field(min_length=1, max_length=128)
    t_ns: list[int]
    values: list[str]

    @model_validator(mode="after")
    def _same_lengths(self) -> TextSeries:
        if len(self.values) != len(self.t_ns):
            raise ValueError(f"{self.asset}/{self.point}: t_ns and values must have the same length")
        return self


class TelemetryBatch(_Msg):
    """One tick of a gateway's samples; ``seq`` is per gateway, gap-free, and never reused."""

    kind: Literal["telemetry"] = "telemetry"
    tenant: str = Field(min_length=1, max_length=64)
    gateway: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=0)
    sent_ns: int = 0
    series: list[PointSeries]
    text: list[TextSeries] = Field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return sum(len(s) for s in self.series)


class AnomalyEvent(_Msg):
    """An anomaly found at the edge: when it started and ended, how strong, and which detectors fired."""

    kind: Literal["anomaly"] = "anomaly"
    tenant: str
    gateway: str
    event_id: str = Field(min_length=1, max_length=128)
    asset: str
    point: str
    start_ns: int
    end_ns: int | None = None
    peak_score: float
    peak_value: float | None = None
    detectors: list[str]
    seq: int = Field(default=0, ge=0)


class AlarmEvent(_Msg):
    """A local rule fired on the gateway (e.g. supply air too warm for 15 min), valid while offline."""

    kind: Literal["alarm"] = "alarm"
    tenant: str
    gateway: str
    event_id: str
    asset: str
    rule: str
    severity: Literal["low", "medium", "high", "critical"] = "high"
    start_ns: int
    end_ns: int | None = None
    evidence: dict[str, float | str | int] = Field(default_factory=dict)
    seq: int = Field(default=0, ge=0)


class GatewayStatus(_Msg):
    """Birth and last-will message; counters let the cloud see a gateway's health without a visit."""

    kind: Literal["status"] = "status"
    tenant: str
    gateway: str
    state: Literal["online", "offline"]
    t_ns: int = 0
    config_version: int = 0
    counters: dict[str, int] = Field(default_factory=dict)
    assets: dict[str, str] = Field(default_factory=dict, description="asset id -> asset type, as configured")


class DesiredConfig(_Msg):
    """Configuration the cloud wants a gateway to run; retained on the gateway's config topic."""

    kind: Literal["desired"] = "desired"
    version: int = Field(ge=0)
    config: dict


class ReportedConfig(_Msg):
    """What a gateway did with a desired configuration: applied, or rejected with the reason."""

    kind: Literal["reported"] = "reported"
    gateway: str
    version: int
    applied: bool
    reason: str = ""


M = TypeVar("M", bound=_Msg)


def encode(msg: BaseModel, *, compress: bool = False) -> bytes:
    """Serialise a message; compression pays off above a few hundred bytes (telemetry batches)."""
    raw = msg.model_dump_json(exclude_none=False).encode()
    return zlib.compress(raw, 1) if compress else raw


def inflate(payload: bytes) -> bytes:
    """The JSON bytes of a payload (decompressed if zlib), bounded in size; WireError otherwise."""
    if not payload:
        raise WireError("empty payload")
    first = payload[0]
    if first == 0x78:
        try:
            d = zlib.decompressobj()
            raw = d.decompress(payload, MAX_PAYLOAD_BYTES + 1)
        except zlib.error as exc:
            raise WireError(f"corrupt zlib payload: {exc}") from None
        if len(raw) > MAX_PAYLOAD_BYTES or d.unconsumed_tail:
            raise WireError(f"payload larger than {MAX_PAYLOAD_BYTES} bytes after decompression")
        return raw
    if first in b"{[":
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise WireError(f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
        return payload
    raise WireError(f"payload is neither JSON nor zlib (first byte 0x{first:02x})")


EdgeEvent = Annotated[AnomalyEvent | AlarmEvent, Field(discriminator="kind")]
_EVENT = TypeAdapter(EdgeEvent)


def decode_event(payload: bytes) -> AnomalyEvent | AlarmEvent:
    """Events share a topic; ``kind`` says which one this is."""
    return decode(payload, _EVENT)  # type: ignore[arg-type]


def decode(payload: bytes, model: type[M]) -> M:
    """Parse and validate one message, raising WireError with a readable reason."""
    raw = inflate(payload)
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError(f"expected a JSON object, got {type(obj).__name__}")
    if obj.get("v") != SCHEMA_VERSION:
        raise WireError(f"unsupported schema version {obj.get('v')!r} (expected {SCHEMA_VERSION!r})")
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(obj)
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise WireError(f"{exc.title}: {where}: {first['msg']}") from None
