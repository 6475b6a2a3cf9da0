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


# Bounds that keep every message storable as it is. Ids become InfluxDB tags and registry keys: a control
# character would split a line-protocol line (one batch could write into another tenant's series) and a
# backslash cannot end an InfluxDB 1.x tag; times and sequence numbers are int64 columns everywhere.
_NAME = r"^[^\x00-\x1f\x7f\\]+$"
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=_NAME)]
"""A tenant or gateway id (also a topic level)."""
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=_NAME)]
"""An asset, point, event or rule id."""
T_NS_MIN, T_NS_MAX = -(2**63) + 2, 2**63 - 2
"""ns since the epoch: what an int64 (and InfluxDB, which keeps the two extremes for itself) can hold."""
TimeNs = Annotated[int, Field(ge=T_NS_MIN, le=T_NS_MAX)]
Seq = Annotated[int, Field(ge=0, lt=2**63)]
Epoch = Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9_-]*$")]
"""A gateway outbox's identity, random when the outbox is created: sequence numbers count within one epoch, so a
wiped or replaced outbox starting again at 0 is a new producer, not a replay. Empty: a gateway from before epochs."""


class Quality(IntEnum):
    """OPC-UA-like quality, reduced to the three classes that change how a value may be used."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class WireError(ValueError):
    """A payload that is not a valid v1 message; the text says what was wrong."""


class PayloadTooLarge(WireError):
    """A payload beyond the size bound, raw or once decompressed; refused before it is parsed."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)
    v: Literal["v1"] = "v1"


class PointSeries(BaseModel):
    """All samples of one (asset, point) in a batch, as parallel arrays."""

    model_config = ConfigDict(extra="forbid")
    asset: Name
    point: Name
    t_ns: list[int]
    values: list[float | None]
    quality: list[int]
    status: list[int] | None = None
    """The source's full status code per sample where it has one (OPC-UA's 32-bit StatusCode: BadSensorFailure,
    UncertainLastUsableValue...; 0 = plain Good), beside the three-class ``quality``; absent when all are 0."""

    @model_validator(mode="after")
    def _consistent(self) -> PointSeries:
        n = len(self.t_ns)
        if len(self.values) != n or len(self.quality) != n:
            raise ValueError(
                f"{self.asset}/{self.point}: t_ns, values and quality must have the same length "
                f"(got {n}, {len(self.values)}, {len(self.quality)})"
            )
        # Bounds checked on the whole array (min/max in C), not per element: per-element constraints would
        # make validating a batch ~50 % slower.
        if n and (min(self.t_ns) < T_NS_MIN or max(self.t_ns) > T_NS_MAX):
            raise ValueError(f"{self.asset}/{self.point}: t_ns must be within [{T_NS_MIN}, {T_NS_MAX}]")
        if n and (min(self.quality) < Quality.GOOD or max(self.quality) > Quality.BAD):
            raise ValueError(f"{self.asset}/{self.point}: quality must be 0 (good), 1 (uncertain) or 2 (bad)")
        if self.status is not None and (len(self.status) != n or (n and (min(self.status) < 0
                                                                          or max(self.status) > 0xFFFFFFFF))):
            raise ValueError(f"{self.asset}/{self.point}: status must be one 32-bit status code per sample")
        return self

    def __len__(self) -> int:
        return len(self.t_ns)


class TextSeries(BaseModel):
    """String samples of one text point (e.g. a driver id, already pseudonymised when personal)."""

    model_config = ConfigDict(extra="forbid")
    asset: Name
    point: Name
    t_ns: list[int]
    values: list[str]

    @model_validator(mode="after")
    def _same_lengths(self) -> TextSeries:
        if len(self.values) != len(self.t_ns):
            raise ValueError(f"{self.asset}/{self.point}: t_ns and values must have the same length")
        if self.t_ns and (min(self.t_ns) < T_NS_MIN or max(self.t_ns) > T_NS_MAX):
            raise ValueError(f"{self.asset}/{self.point}: t_ns must be within [{T_NS_MIN}, {T_NS_MAX}]")
        return self


class TelemetryBatch(_Msg):
    """One tick of a gateway's samples; ``seq`` is per gateway and ``epoch``, gap-free, and never reused."""

    kind: Literal["telemetry"] = "telemetry"
    tenant: Id
    gateway: Id
    epoch: Epoch = ""
    seq: Seq
    sent_ns: TimeNs = 0
    series: list[PointSeries]
    text: list[TextSeries] = Field(default_factory=list)

    @property
    def n_samples(self) -> int:
        return sum(len(s) for s in self.series)


class AnomalyEvent(_Msg):
    """An anomaly found at the edge: when it started and ended, how strong, and which detectors fired."""

    kind: Literal["anomaly"] = "anomaly"
    tenant: Id
    gateway: Id
    event_id: Name
    asset: Name
    point: Name
    start_ns: TimeNs
    end_ns: TimeNs | None = None
    peak_score: float
    peak_value: float | None = None
    detectors: list[str]
    epoch: Epoch = ""
    seq: Seq = 0
    """The outbox's event number in ``epoch``, echoed in ``Committed``; the cloud keys events on ``event_id``."""


class AlarmEvent(_Msg):
    """A local rule fired on the gateway (e.g. supply air too warm for 15 min), valid while offline."""

    kind: Literal["alarm"] = "alarm"
    tenant: Id
    gateway: Id
    event_id: str = Field(min_length=1, max_length=200, pattern=_NAME)
    asset: Name
    rule: Name
    severity: Literal["low", "medium", "high", "critical"] = "high"
    start_ns: TimeNs
    end_ns: TimeNs | None = None
    evidence: dict[str, float | str | int] = Field(default_factory=dict)
    epoch: Epoch = ""
    seq: Seq = 0


class GatewayStatus(_Msg):
    """Birth and last-will message; counters let the cloud see a gateway's health without a visit."""

    kind: Literal["status"] = "status"
    tenant: Id
    gateway: Id
    state: Literal["online", "offline"]
    t_ns: TimeNs = 0
    config_version: int = Field(default=0, ge=0, lt=2**31)
    counters: dict[str, Annotated[int, Field(ge=-(2**63), lt=2**63)]] = Field(default_factory=dict)
    assets: dict[Name, Id] = Field(
        default_factory=dict, description="asset id -> asset type, as configured")


class Committed(_Msg):
    """The cloud to one gateway: these telemetry batches and events of its outbox ``epoch`` are durably written
    (or durably dead-lettered), so the gateway may delete them. A broker's PUBACK is not enough: a broker that
    crashes before it saved loses what it acknowledged."""

    kind: Literal["committed"] = "committed"
    epoch: Epoch
    telemetry: list[Seq] = Field(default_factory=list)
    events: list[Seq] = Field(default_factory=list)


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


CommandState = Literal["pending", "delivered", "succeeded", "failed", "expired"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "expired"})


class Command(_Msg):
    """One thing the cloud asks of a device through its gateway: ``set`` a writable property (``args``:
    ``property``, ``value``), a command the asset type declares (``args.name``), ``rebirth`` (the gateway
    announces itself again), ``snapshot`` (the gateway uploads the asset's recent raw waveform blocks), or
    ``acknowledge`` a device's own alarm (``args``: ``condition``, ``comment``; OPC-UA: the condition's Acknowledge).
    ``id`` makes a redelivery harmless; past ``expires_ns`` it is not run."""

    kind: Literal["command"] = "command"
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    asset: Name
    action: Literal["set", "command", "rebirth", "snapshot", "acknowledge"]
    args: dict[str, float | int | bool | str] = Field(default_factory=dict)
    issued_ns: TimeNs
    expires_ns: TimeNs


class CommandQueue(_Msg):
    """Every command still outstanding for one gateway, retained on its ``commands`` topic."""

    kind: Literal["commands"] = "commands"
    commands: list[Command] = Field(default_factory=list, max_length=1000)


class CommandReport(_Msg):
    """A gateway on one command: delivered (it has it), then succeeded, failed or expired with the reason;
    ``value``: what the device reported back (OPC-UA: read after the write; MQTT: the device's report)."""

    kind: Literal["command_report"] = "command_report"
    gateway: Id
    id: str = Field(min_length=1, max_length=64)
    asset: Name
    state: Literal["delivered", "succeeded", "failed", "expired"]
    reason: str = Field(default="", max_length=2000)
    value: float | str | None = None
    t_ns: TimeNs = 0


M = TypeVar("M", bound=_Msg)


def encode(msg: BaseModel, *, compress: bool = False) -> bytes:
    """Serialise a message; compression pays off above a few hundred bytes (telemetry batches)."""
    raw = msg.model_dump_json(exclude_none=False).encode()
    return zlib.compress(raw, 1) if compress else raw


def inflate(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The JSON bytes of a payload (decompressed if zlib), bounded in size; WireError otherwise.

    A zlib stream must be complete: its checksum is what tells a corrupted payload from a valid one, and
    a truncated stream would otherwise inflate to whatever prefix survived."""
    if not payload:
        raise WireError("empty payload")
    first = payload[0]
    if first == 0x78:
        try:
            d = zlib.decompressobj()
            raw = d.decompress(payload, max_bytes + 1)
        except zlib.error as exc:
            raise WireError(f"corrupt zlib payload: {exc}") from None
        if len(raw) > max_bytes or d.unconsumed_tail:
            raise PayloadTooLarge(f"payload larger than {max_bytes} bytes after decompression")
        if not d.eof:
            raise WireError("truncated zlib payload (the stream or its checksum is missing)")
        if d.unused_data:
            raise WireError(f"{len(d.unused_data)} unexpected byte(s) after the zlib stream")
        return raw
    if first in b"{[":
        if len(payload) > max_bytes:
            raise PayloadTooLarge(f"payload larger than {max_bytes} bytes")
        return payload
    raise WireError(f"payload is neither JSON nor zlib (first byte 0x{first:02x})")


EdgeEvent = Annotated[AnomalyEvent | AlarmEvent, Field(discriminator="kind")]
_EVENT = TypeAdapter(EdgeEvent)


def decode_event(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> AnomalyEvent | AlarmEvent:
    """Events share a topic; ``kind`` says which one this is."""
    return decode(payload, _EVENT, max_bytes)  # type: ignore[arg-type]


def decode(payload: bytes, model: type[M], max_bytes: int = MAX_PAYLOAD_BYTES) -> M:
    """Parse and validate one message, raising WireError with a readable reason."""
    raw = inflate(payload, max_bytes)
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
