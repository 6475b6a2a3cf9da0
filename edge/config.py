"""Gateway configuration: one YAML file, validated by pydantic before anything starts.

A bad file stops start-up with a message naming the field and why (``ConfigError``), because a
gateway that half-starts in a trailer is worse than one that refuses and says so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal
from urllib.parse import urlparse

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.config_modbus import ModbusSource
from models.catalogue import AssetType, DetectorSpec, LocalRule, builtin_types, get_type
from models.machine import MachineProfile

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_mqtt_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
        raise ValueError(f"not an mqtt:// or mqtts:// URL: {url!r}")
    return url


class MqttLink(_Strict):
    """A connection to a broker (uplink or source); mqtts:// turns TLS on."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_id: str | None = None
    mqtt_version: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(default=30, ge=5, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_mqtt_url(v)

    @model_validator(mode="after")
    def _client_cert_pair(self) -> MqttLink:
        # A broker that identifies gateways by certificate (deploy/mosquitto) needs both halves.
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file (the client certificate and its key), or neither")
        return self


class MqttSubscription(_Strict):
    """Maps a topic filter to (asset, point). ``{1}``, ``{2}``… in asset/point name topic levels
    matched by the filter's wildcards, in order, so one line can map a whole fleet.

    ``payload: json_map``: one message carries many points of one asset (``{"t": …, "v": {"supply_air":
    4.1, "door": 0}}``), the way controllers report a whole read cycle; ``point`` must then be ``*``.
    ``payload: waveform``: a binary accelerometer block (``models.waveform``), turned into the asset's vib_* feature
    points by the agent's block stage (``edge/blocks.py``); ``point`` names it in logs only."""

    topic: str
    asset: str
    point: str
    payload: Literal["bare", "json", "json_map", "waveform"] = "json"
    value_path: str = "v"
    ts_path: str | None = "t"
    ts_unit: Literal["ns", "us", "ms", "s", "auto"] = "ns"
    """The unit of a numeric timestamp; ``auto``: by its magnitude (``models.timestamps``). Text is ISO 8601."""
    quality_path: str | None = "q"
    qos: Literal[0, 1, 2] = 1

    @model_validator(mode="after")
    def _map_means_star(self) -> MqttSubscription:
        if (self.payload == "json_map") != (self.point == "*"):
            raise ValueError("point must be '*' exactly when payload is json_map")
        return self


class SensorLink(MqttLink):
    """The link to a sensor broker. MQTT 3.1.1 by default: sensors rarely speak 5, and paho decodes a
    5 PUBLISH's properties in Python (~16 µs a message, measured) for nothing the source uses."""

    mqtt_version: Literal["5", "3.1.1"] = "3.1.1"


class MqttSource(_Strict):
    type: Literal["mqtt"]
    name: str = "mqtt"
    link: SensorLink = Field(default_factory=SensorLink)
    subscriptions: list[MqttSubscription] = Field(min_length=1)


_NODE_ID = re.compile(r"^(ns=\d+;|nsu=[^;]+;)?[isgb]=.+$")
_BROWSE_SEGMENT = re.compile(r"^(\d+:)?[^/]+$")


class WaveformNode(_Strict):
    """An array variable holding one accelerometer block: ``channels`` x N Float/Double values, channel-major, its
    SourceTimestamp the block's first sample. The agent turns it into features as it does a waveform frame."""

    sample_rate_hz: float = Field(gt=0, le=10e6)
    channels: int = Field(1, ge=1, le=64)


class OpcUaNode(_Strict):
    """One OPC-UA variable mapped to (asset, point), watched by a monitored item; with ``waveform``, an array
    variable whose every update is a block of raw samples (``WaveformNode``).

    ``node`` is either a NodeId string (``ns=2;s=trailer-001.supply_air``, ``ns=2;i=1042``,
    ``nsu=urn:x;s=a``) or a browse path from the Root folder: ``/Objects/2:trailer-001/2:supply_air``,
    each segment a BrowseName as ``<namespace index>:<name>`` (no index = namespace 0). A browse path
    survives a server that renumbers its NodeIds; it is resolved again on every (re)connect.
    """

    node: str
    asset: str
    point: str
    sampling_interval_ms: float = Field(default=100.0, ge=0)
    queue_size: int = Field(default=100, ge=1, description="Values the server keeps per node between two "
                            "publish responses: 10 s at 10 Hz, so a gateway starved of CPU for a few seconds loses "
                            "nothing (at 10, 1,750 of 136,000 values were lost in one run on a loaded machine).")
    deadband_abs: float | None = Field(default=None, ge=0)
    waveform: WaveformNode | None = None

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        if v.startswith("/"):
            segments = v[1:].split("/")
            if not all(_BROWSE_SEGMENT.match(s) for s in segments):
                raise ValueError(f"not a browse path like /Objects/2:asset/2:point: {v!r}")
        elif not _NODE_ID.match(v):
            raise ValueError(f"not a NodeId (ns=2;s=name, ns=2;i=42) or a browse path (/Objects/2:name): {v!r}")
        return v

    @property
    def is_browse_path(self) -> bool:
        return self.node.startswith("/")


class OpcUaAlarms(_Strict):
    """Alarms & Conditions: the events ``notifier`` (default the Server object) reports enter the gateway's alarm
    path, one alarm per (asset, condition) from activation to clearing, and can be acknowledged back. An event's
    asset is its SourceName when that is a configured asset, else ``asset``; events of neither are counted
    (``opcua_alarms_unmapped``) and dropped, as are those below ``min_severity`` (OPC-UA's 1..1000)."""

    notifier: str = "i=2253"
    asset: str | None = None
    min_severity: int = Field(default=1, ge=1, le=1000)

    @field_validator("notifier")
    @classmethod
    def _notifier_id(cls, v: str) -> str:
        if not _NODE_ID.match(v):
            raise ValueError(f"not a NodeId (i=2253, ns=2;s=name): {v!r}")
        return v


class OpcUaSource(_Strict):
    """An OPC-UA server read through subscriptions (the server pushes changes; nothing is polled).

    Security ``Sign``/``SignAndEncrypt`` uses ``security_policy`` (Basic256Sha256, Aes128_Sha256_RsaOaep or
    Aes256_Sha256_RsaPss, the policies OPC 10000-7 keeps current) with the client's certificate and key
    (PEM or DER); the server's certificate is taken from ``server_cert_file`` when given, else from the
    server's endpoint list. Encryption to a server nobody vouched for stops no impostor, so a secured source
    must say how the server is authenticated: pinned (``server_cert_file``), or checked against the trust list
    ``trust_dir`` (the server's own certificate, or a CA that issued it, as DER or PEM files). With
    ``trust_on_first_use`` an empty ``trust_dir`` takes the first certificate a server proves it holds the key
    of, and from then on that pin is the trust list (one ``trust_dir`` per server for this).
    ``application_uri`` defaults to the URI in the client certificate, which servers check against the
    session's. Reconnects wait ``reconnect_min_s`` doubling up to
    ``reconnect_max_s``, each wait spread by ±``reconnect_jitter`` so a fleet does not reconnect in step.
    """

    type: Literal["opcua"]
    name: str = "opcua"
    endpoint: str
    security: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    security_policy: Literal["Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] = "Basic256Sha256"
    cert_file: Path | None = None
    key_file: Path | None = None
    server_cert_file: Path | None = None
    trust_dir: Path | None = None
    trust_on_first_use: bool = False
    application_uri: str | None = None
    username: str | None = None
    password: str | None = None
    publishing_interval_ms: float = Field(default=100.0, gt=0)
    request_timeout_s: float = Field(default=5.0, gt=0)
    keepalive_s: float = Field(default=5.0, gt=0, description="How often an idle connection is probed, and how long "
                               "an answer may take: a network that went silent is noticed within twice this.")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    reconnect_jitter: float = Field(default=0.2, ge=0, le=1)
    unknown_node_retry_s: float = Field(default=10.0, gt=0)
    nodes: list[OpcUaNode] = Field(min_length=1)
    alarms: OpcUaAlarms | None = None

    @field_validator("endpoint")
    @classmethod
    def _opc_url(cls, v: str) -> str:
        if not v.startswith("opc.tcp://"):
            raise ValueError(f"not an opc.tcp URL: {v!r}")
        return v

    @model_validator(mode="after")
    def _security_needs_keys(self) -> OpcUaSource:
        if self.security != "None" and (self.cert_file is None or self.key_file is None):
            raise ValueError(f"security {self.security} needs cert_file and key_file (the client's certificate)")
        if self.security != "None" and self.trust_dir is None and self.server_cert_file is None:
            raise ValueError(f"security {self.security} needs the server's certificate pinned (server_cert_file) or a "
                             "trust list (trust_dir; trust_on_first_use: true pins the first one seen)")
        if self.security == "None" and (self.trust_dir is not None or self.trust_on_first_use):
            raise ValueError("trust_dir and trust_on_first_use need security Sign or SignAndEncrypt: "
                             "without it the server shows no certificate")
        if self.trust_on_first_use and self.trust_dir is None:
            raise ValueError("trust_on_first_use needs trust_dir: where the first certificate seen is pinned")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        return self


_SPB_ID = r"^[^/+#]{1,64}$"
"""A Sparkplug group, edge node, device or host id: no topic separator or wildcard (specification 4.1.1)."""


class SparkplugRule(_Strict):
    """Maps Sparkplug metrics to (asset, point). ``edge_node``, ``device`` and ``metric`` are shell-style patterns
    (``*``, ``?``, ``[..]``); ``device: ""`` matches node-level metrics only. ``asset`` and ``point`` may use
    ``{group}``, ``{edge_node}``, ``{device}`` (the edge node for its own metrics) and ``{metric}`` (``/`` in a
    metric name becomes ``.``). The first
    rule that matches wins; a metric no rule matches is counted as unmapped."""

    group: str = "*"
    edge_node: str = "*"
    device: str = "*"
    metric: str = "*"
    asset: str = "{device}"
    point: str = "{metric}"


class SparkplugSource(_Strict):
    """A Sparkplug B 3.0 host application: subscribes ``spBv1.0/{group}/+/{edge_node}/#`` (``+`` for any),
    keeps every edge node's birth certificates, and asks for a rebirth (NCMD ``Node Control/Rebirth``) on a
    ``seq`` gap or data before a birth, at most once per ``rebirth_interval_s`` per node. Its STATE
    (``spBv1.0/STATE/{host_id}``, retained) is online while it runs, offline by its MQTT will."""

    type: Literal["sparkplug"]
    name: str = "sparkplug"
    link: SensorLink = Field(default_factory=SensorLink)
    host_id: Annotated[str, Field(pattern=_SPB_ID)]
    group: Annotated[str, Field(pattern=r"^(\+|[^/+#]{1,64})$")] = "+"
    edge_node: Annotated[str, Field(pattern=r"^(\+|[^/+#]{1,64})$")] = "+"
    rebirth_interval_s: float = Field(default=2.0, ge=0)
    rules: list[SparkplugRule] = Field(default_factory=lambda: [SparkplugRule()], min_length=1)


class SparkplugEdgeNode(_Strict):
    """The gateway as a Sparkplug B 3.0 edge node: NBIRTH/NDATA/NDEATH as ``edge_node`` (default: the gateway
    id) in ``group``, each asset a device (DBIRTH/DDATA, its points by alias), ``bdSeq`` in the will, a rebirth
    on NCMD ``Node Control/Rebirth``. Point names are metric names."""

    link: MqttLink = Field(default_factory=MqttLink)
    group: Annotated[str, Field(pattern=_SPB_ID)]
    edge_node: Annotated[str, Field(pattern=_SPB_ID)] | None = None


Source = Annotated[MqttSource | OpcUaSource | SparkplugSource | ModbusSource, Field(discriminator="type")]


_CONFIG_TYPES: ContextVar[Mapping[str, AssetType]] = ContextVar("config_asset_types", default=MappingProxyType({}))
"""The ``asset_types`` of the configuration whose assets are being validated."""


class AssetConfig(_Strict):
    """An asset of a built-in type, or of one the configuration defines (``asset_types``)."""

    id: Annotated[str, Field(pattern=_ID)]
    type: str
    detectors: dict[str, list[DetectorSpec]] = Field(
        default_factory=dict, description="Per-point overrides of the asset type's detectors."
    )
    machine: MachineProfile | None = Field(None, description="A rotating machine's bearing and speed, for the "
                                           "features of its waveform blocks (default: models.machine's)")
    _definition: AssetType | None = PrivateAttr(None)

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        if v in _CONFIG_TYPES.get():
            return v
        try:
            get_type(v)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return v

    @model_validator(mode="after")
    def _resolve_type(self) -> AssetConfig:
        self._definition = _CONFIG_TYPES.get().get(self.type)
        return self

    @property
    def asset_type(self) -> AssetType:
        return self._definition or get_type(self.type)


class MspcBaselineConfig(_Strict):
    """An asset's multivariate normal baseline, fitted by the cloud on its healthy history and pushed as desired
    configuration (``POST /api/v1/assets/{id}/baseline``): the arrays of ``edge.detect.multivariate.MspcBaseline``
    over ``points`` (in column order). Rows are built by last-value hold; a value older than ``max_age_s`` is stale."""

    id: str = Field(min_length=1, max_length=128, description="which fit this is, as the cloud names it")
    points: list[str] = Field(min_length=2)
    mean: list[float]
    scale: list[float]
    loadings: list[list[float]]
    eigvals: list[float] = Field(min_length=1)
    t2_limit: float = Field(gt=0)
    spe_limit: float = Field(ge=0)
    smooth_tau_s: float = Field(default=0.0, ge=0)
    max_age_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _shapes(self) -> MspcBaselineConfig:
        d, k = len(self.points), len(self.eigvals)
        if len(set(self.points)) != d:
            raise ValueError("points repeat")
        if len(self.mean) != d or len(self.scale) != d:
            raise ValueError(f"mean and scale need one value per point ({d})")
        if len(self.loadings) != d or any(len(row) != k for row in self.loadings):
            raise ValueError(f"loadings must be {d} rows (points) of {k} values (one per eigenvalue)")
        if k > d or any(not v > 0 for v in self.eigvals) or any(not v > 0 for v in self.scale):
            raise ValueError("eigvals and scale must be > 0, at most one eigenvalue per point")
        return self


class OutboxConfig(_Strict):
    path: Path = Path("outbox.sqlite")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024)


class GatewayConfig(_Strict):
    """The whole gateway: who it is, where it sends, what it reads, how it watches."""

    tenant: Annotated[str, Field(pattern=_ID)]
    gateway: Annotated[str, Field(pattern=_ID)]
    version: int = 0
    uplink: MqttLink = Field(default_factory=MqttLink)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    state_dir: Path = Path("state")
    tick_ms: int = Field(default=100, ge=5, le=60_000)
    status_interval_s: float = Field(default=10.0, gt=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="GET /health and /metrics on this "
                                     "port (edge/health.py; 9464 is the documented one); unset: no endpoint")
    metrics_host: str = "127.0.0.1"
    compress: bool = True
    max_inflight: int = Field(default=64, ge=1, le=1000)
    asset_types: dict[str, AssetType] = Field(
        default_factory=dict, description="Types beyond the built-in catalogue, by id, that assets may name: defined "
        "in the cloud (a tenant's own, or a pack's the gateway does not ship) and sent in the desired configuration.")
    assets: list[AssetConfig] = Field(min_length=1)
    sources: list[Source] = Field(min_length=1)
    local_rules: list[LocalRule] = Field(default_factory=list)
    pii_key_file: Path | None = Field(
        default=None, description="HMAC key for personal points; without it their values are dropped, never sent")
    baselines: dict[str, MspcBaselineConfig] = Field(
        default_factory=dict, description="Per asset id, a multivariate baseline the cloud fitted (the mspc detector).")
    sparkplug: SparkplugEdgeNode | None = Field(
        default=None, description="Publish this gateway's points as a Sparkplug B edge node (SCADA, historians).")

    @field_validator("asset_types")
    @classmethod
    def _types_keyed_by_id(cls, types: dict[str, AssetType]) -> dict[str, AssetType]:
        for key, t in types.items():
            if t.id != key:
                raise ValueError(f"{key}: its id is {t.id!r}; a type is listed under its own id")
            if key in builtin_types():
                raise ValueError(f"{key}: a built-in type; this gateway runs its own definition of it")
        return types

    @field_validator("assets", mode="wrap")
    @classmethod
    def _assets_see_the_types(cls, value: object, handler, info: ValidationInfo) -> list[AssetConfig]:
        """Assets are validated knowing this configuration's ``asset_types`` (validated before them)."""
        token = _CONFIG_TYPES.set(info.data.get("asset_types", {}))
        try:
            return handler(value)
        finally:
            _CONFIG_TYPES.reset(token)

    @model_validator(mode="after")
    def _baselines_name_known_points(self) -> GatewayConfig:
        types = {a.id: a.asset_type for a in self.assets}
        for asset, base in self.baselines.items():
            if asset not in types:
                raise ValueError(f"baselines.{asset}: not an asset of this gateway")
            numeric = {p for p, spec in types[asset].points.items() if spec.kind == "number"}
            unknown = [p for p in base.points if p not in numeric]
            if unknown:
                raise ValueError(f"baselines.{asset}.points: {', '.join(unknown)} not numeric points of "
                                 f"{types[asset].id}")
        return self

    def points(self) -> list[tuple[str, str]]:
        """Every numeric (asset, point) this gateway knows, in a stable order: the detector state layout."""
        return [(a.id, p) for a in self.assets for p, spec in a.asset_type.points.items() if spec.kind == "number"]

    def text_points(self) -> dict[tuple[str, str], bool]:
        """Text points: (asset, point) -> personal."""
        return {(a.id, p): spec.personal for a in self.assets for p, spec in a.asset_type.points.items()
                if spec.kind == "text"}


def _where(loc: tuple) -> str:
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i and isinstance(loc[i - 1], int) and re.fullmatch(r"(mqtt|opcua|sparkplug|modbus)", str(part)):
            continue  # discriminator tag after a list index: not a field the user wrote
        else:
            out += f".{part}" if out else str(part)
    return out or "config"


def parse_config(data: object, source: str = "config") -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_config(path: Path | str) -> GatewayConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    cfg = parse_config(data, str(path))
    base = path.parent
    # Relative paths in a config file are relative to the file, not to wherever the daemon started.
    if not cfg.outbox.path.is_absolute():
        cfg.outbox.path = base / cfg.outbox.path
    if not cfg.state_dir.is_absolute():
        cfg.state_dir = base / cfg.state_dir
    _relative_to(cfg, "pii_key_file", base)
    links = [("uplink", cfg.uplink),
             *((f"sources[{i}].link", s.link) for i, s in enumerate(cfg.sources)
               if isinstance(s, MqttSource | SparkplugSource)),
             *((("sparkplug.link", cfg.sparkplug.link),) if cfg.sparkplug else ())]
    for where, link in links:
        for name in ("ca_file", "cert_file", "key_file"):
            _relative_to(link, name, base)
            # Checked here, not at the first TLS handshake, where paho's error names no file.
            if (file := getattr(link, name)) is not None and not file.is_file():
                raise ConfigError(f"{path}: {where}.{name}: file not found: {file}")
    for src in cfg.sources:
        if isinstance(src, OpcUaSource):
            for name in ("cert_file", "key_file", "server_cert_file", "trust_dir"):
                _relative_to(src, name, base)
    return cfg


def _relative_to(obj: BaseModel, name: str, base: Path) -> None:
    value = getattr(obj, name)
    if value is not None and not value.is_absolute():
        setattr(obj, name, base / value)
