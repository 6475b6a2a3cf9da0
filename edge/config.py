"""Gateway configuration: one YAML file, validated by pydantic before anything starts.

A bad file stops start-up with a message naming the field and why (``ConfigError``), because a
gateway that half-starts in a trailer is worse than one that refuses and says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.catalogue import AssetType, DetectorSpec, LocalRule, get_type

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


class MqttSubscription(_Strict):
    """Maps a topic filter to (asset, point). ``{1}``, ``{2}``… in asset/point name topic levels
    matched by the filter's wildcards, in order, so one line can map a whole fleet."""

    topic: str
    asset: str
    point: str
    payload: Literal["bare", "json"] = "json"
    value_path: str = "v"
    ts_path: str | None = "t"
    ts_unit: Literal["ns", "us", "ms", "s"] = "ns"
    quality_path: str | None = "q"
    qos: Literal[0, 1, 2] = 1


class MqttSource(_Strict):
    type: Literal["mqtt"]
    name: str = "mqtt"
    link: MqttLink = Field(default_factory=MqttLink)
    subscriptions: list[MqttSubscription] = Field(min_length=1)


class OpcUaNode(_Strict):
    node: str
    asset: str
    point: str
    sampling_interval_ms: float = Field(default=100.0, ge=0)
    queue_size: int = Field(default=10, ge=1)
    deadband_abs: float | None = Field(default=None, ge=0)


class OpcUaSource(_Strict):
    type: Literal["opcua"]
    name: str = "opcua"
    endpoint: str
    security: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    cert_file: Path | None = None
    key_file: Path | None = None
    server_cert_file: Path | None = None
    username: str | None = None
    password: str | None = None
    nodes: list[OpcUaNode] = Field(min_length=1)

    @field_validator("endpoint")
    @classmethod
    def _opc_url(cls, v: str) -> str:
        if not v.startswith("opc.tcp://"):
            raise ValueError(f"not an opc.tcp URL: {v!r}")
        return v


Source = Annotated[MqttSource | OpcUaSource, Field(discriminator="type")]


class AssetConfig(_Strict):
    id: Annotated[str, Field(pattern=_ID)]
    type: str
    detectors: dict[str, list[DetectorSpec]] = Field(
        default_factory=dict, description="Per-point overrides of the asset type's detectors."
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        try:
            get_type(v)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        return v

    @property
    def asset_type(self) -> AssetType:
        return get_type(self.type)


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
    compress: bool = True
    max_inflight: int = Field(default=64, ge=1, le=1000)
    assets: list[AssetConfig] = Field(min_length=1)
    sources: list[Source] = Field(min_length=1)
    local_rules: list[LocalRule] = Field(default_factory=list)

    def points(self) -> list[tuple[str, str]]:
        """Every (asset, point) this gateway knows, in a stable order: the detector state layout."""
        return [(a.id, p) for a in self.assets for p in a.asset_type.points]


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"(mqtt|opcua)", str(part)):
            continue  # discriminator tag: not a field the user wrote
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
    return cfg
