"""Cloud settings from the environment (``TWIN_`` prefix), so a container needs no config file."""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class CloudSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWIN_", env_file=None, extra="ignore")

    # Registry (tenants, assets, alerts, keys, dead letters): SQLite by default, PostgreSQL in production.
    database_url: str = "sqlite:///twin.sqlite"

    # Time series: "influx" (InfluxDB: v2 write API, InfluxQL reads over /query) or "embedded" (SQLite).
    store: Literal["influx", "embedded"] = "embedded"
    embedded_path: str = "timeseries.sqlite"
    influx_url: str = "http://127.0.0.1:8086"
    influx_token: str = ""
    influx_org: str = "assettwin"
    influx_bucket: str = "assettwin/autogen"
    influx_database: str = "assettwin"
    # gzip level of write bodies (0: none). Level 1 costs ~0.25 µs a sample and shrinks them ~14x.
    influx_gzip_level: int = 1
    # Each asset's last values are kept in memory (cloud/store/latest.py): this process's writes update them
    # at once; what other processes write is read again once an entry is older than this. 0: no cache.
    latest_cache_s: float = 1.0
    # The embedded store's retention in days (0: forever): raw samples and text, its 1-minute and its 1-hour
    # roll-up (InfluxDB keeps what `twin influx init` set up). Reads take raw data while it is kept, roll-ups beyond.
    embedded_raw_retention_days: float = Field(0.0, ge=0)
    embedded_minute_retention_days: float = Field(400.0, ge=0)
    embedded_hour_retention_days: float = Field(0.0, ge=0)

    # Housekeeping (cloud/housekeeping.py, in the ingest worker of partition 0). Every interval: roll up again what
    # arrived too late for the database's own roll-up, apply the embedded store's retention (0: never). Every
    # retention interval: delete registry rows older than these many days (0: keep them).
    housekeeping_interval_s: float = Field(60.0, ge=0)
    retention_interval_s: float = Field(3600.0, gt=0)
    retention_dead_letters_days: float = Field(30.0, ge=0)
    retention_anomalies_days: float = Field(400.0, ge=0)
    retention_edge_alarms_days: float = Field(400.0, ge=0)
    retention_resolved_alerts_days: float = Field(400.0, ge=0)  # alerts an excursion refers to are kept

    # Broker
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    # mqtts:// (TLS, the server's certificate and host name verified): the CA that signed the broker's
    # certificate (default: the system's), and the cloud's client certificate and key for a broker that
    # requires one (the shipped Mosquitto does: deploy/mosquitto/make-certs.sh client cloud).
    mqtt_ca_file: str | None = None
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    mqtt_version: Literal["5", "3.1.1"] = "5"
    ingest_shared: bool = True
    # How N workers split the load. "partitioned" (default): every worker holds a plain persistent
    # subscription and keeps only the gateways whose hash falls in its partition, so a gateway always lands
    # on the same worker and nothing is lost across a broker restart. "shared": an MQTT 5 shared
    # subscription ($share/ingest/...) — the broker hands each message to one worker; use it only on a
    # broker that keeps shared subscriptions across restarts: Mosquitto 2.0.11 does not (measured: the
    # zero-loss test loses samples in shared mode, none in partitioned mode).
    ingest_mode: Literal["shared", "partitioned"] = "partitioned"
    ingest_partition: int = 0
    ingest_partitions: int = 1
    ingest_client_id: str = "ingest"
    # A group of messages (one store write, one registry transaction) grows while the previous group is
    # being written, up to this many samples; an idle worker writes each message at once.
    ingest_max_batch_points: int = 50_000
    # MQTT 5 receive maximum: messages the broker sends ahead of our acknowledgements (its default is 20).
    # Bounds the worker's memory; the broker queues the rest. For MQTT 3.1.1 the broker's
    # max_inflight_messages decides instead.
    ingest_max_inflight: int = 1000
    # What one device message may be, checked before it is parsed further; beyond a limit the message is
    # dead-lettered with the limit's name. Payload bytes bound both the raw and the decompressed JSON (a
    # zlib bomb stops there); 200,000 samples is ten times the largest batch an edge agent sends.
    ingest_max_payload_bytes: int = 8 * 1024 * 1024
    ingest_max_topic_bytes: int = 256
    ingest_max_batch_samples: int = 200_000
    # Samples stamped further ahead of their arrival than this are dead-lettered (reason, count), not written: a
    # gateway clock a year fast would otherwise pin its assets' latest values and twins.
    ingest_future_tolerance_s: float = 300.0
    # The de-duplication state of a gateway outbox epoch (a wiped outbox starts a new one) is kept this long
    # after the epoch was last heard from: its batches may still be queued in the broker.
    ingest_epoch_retention_s: float = 7 * 24 * 3600.0
    # Where workers get their messages. "mqtt" (default; the demo's embedded broker, Mosquitto): a subscription,
    # ingest_mode above. "nats": a NATS JetStream cluster (cloud/ingest_nats.py, deploy/nats/): gateways publish
    # MQTT to its MQTT front, the engine maps each gateway to one of ingest_nats_partitions partitions (the server
    # config's mapping must name the same count) and each worker consumes only the partitions it leases.
    ingest_engine: Literal["mqtt", "nats"] = "mqtt"
    nats_url: str = "nats://127.0.0.1:4222"  # comma-separated: every node the client may connect to
    ingest_nats_partitions: int = 12
    ingest_nats_replicas: int = 3  # copies of the stream and the lease bucket (1 for a one-node engine)
    # A worker's lease on a partition lapses this long after its last renewal: how soon a dead worker's
    # partitions move to the others. Renewed three times per period.
    ingest_lease_ttl_s: float = 6.0
    # How often a standalone worker logs its counters.
    ingest_counters_interval_s: float = 30.0
    # A standalone ingest worker's (``twin cloud ingest``) health + Prometheus endpoint: GET /health, /metrics.
    # 0 = off; the documented port is 9465 (the API serves its own /metrics on api_port).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535)

    # Personal data: the HMAC key that pseudonymises personal text points arriving in clear (the same key as the
    # gateways' pii_key_file, so a subject has one pseudonym; see cloud/pii.py). Without it such values are
    # dropped and counted, and subject find/erase requests cannot be served.
    pii_key_file: str | None = None

    # Rules (run in each ingest worker on the data it wrote)
    rules_interval_s: float = 60.0
    coldchain_profile: str = "who-30-day-refrigerator"  # for trailers whose shipments name none
    # Tenants' private keys for signing QA decisions (cloud/shipments/signing.py): outside the registry database,
    # a mounted secret in production; empty: ~/.local/state/assettwin/signing-keys
    signing_key_dir: str = ""
    # Packs beyond the shipped ones (cloud/packs/README.md): their folders, separated by "," or the OS path
    # separator, or a JSON list. Each is loaded at start-up; one that cannot be stops it, naming the folder.
    pack_dirs: Annotated[list[str], NoDecode] = []

    # Alert webhooks (cloud/webhooks.py). Loopback, private, link-local, multicast, unspecified, reserved and
    # cloud-metadata addresses are refused (after DNS, at registration and at every delivery) unless listed
    # here: networks ("10.20.0.0/16", "127.0.0.1") or exact host names, comma-separated or a JSON list.
    webhook_allow: Annotated[list[str], NoDecode] = []
    # Consignee notices by e-mail (cloud/shipments/notices.py): the SMTP relay; empty host: no e-mail is sent
    smtp_host: str = ""
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_from: str = "assettwin@localhost"
    webhook_timeout_s: float = Field(5.0, gt=0, le=60)  # connect, send and answer, each
    webhook_max_attempts: int = Field(12, ge=1, le=100)
    webhook_retry_base_s: float = Field(2.0, gt=0)  # doubling after each failed attempt (±20 %), up to max
    webhook_retry_max_s: float = Field(900.0, gt=0)

    # API
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_rate_per_s: float = 200.0  # per API key, token bucket; 429 with Retry-After beyond it
    api_rate_burst: int = 400
    api_max_body_bytes: int = 1024 * 1024  # 413 beyond it
    api_cors_origins: list[str] = []  # closed by default: a browser page from elsewhere may not call the API
    api_key_cache_s: float = 5.0  # how long a looked-up key is trusted; a revocation takes effect within it
    bootstrap_api_key: str | None = None
    bootstrap_tenant: str = "demo"

    @field_validator("pack_dirs", mode="before")
    @classmethod
    def _pack_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else re.split(f"[,{os.pathsep}]", value)
        return [str(v).strip() for v in value if str(v).strip()] if isinstance(value, list) else value

    @field_validator("webhook_allow", mode="before")
    @classmethod
    def _allow_list(cls, value: object) -> object:
        """``a,b`` or ``["a", "b"]``; each entry must be a network or a host name (start-up stops otherwise)."""
        if isinstance(value, str):
            value = json.loads(value) if value.lstrip().startswith("[") else value.split(",")
        if isinstance(value, list):
            from cloud.webhooks import parse_allow

            value = [str(v).strip() for v in value if str(v).strip()]
            parse_allow(value)
        return value

    @model_validator(mode="after")
    def _pii_key_readable(self) -> CloudSettings:
        """A configured key that cannot be used stops start-up here, naming the variable: running on without it
        would drop personal values that the operator meant to keep as pseudonyms."""
        if self.pii_key_file:
            from cloud.pii import PiiKeyError, load_key

            try:
                load_key(self.pii_key_file)
            except PiiKeyError as exc:
                raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _ingest_durations_positive(self) -> CloudSettings:
        for name in ("ingest_future_tolerance_s", "ingest_epoch_retention_s", "ingest_lease_ttl_s",
                     "ingest_counters_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"TWIN_{name.upper()} must be a positive number of seconds")
        return self

    @model_validator(mode="after")
    def _partition_in_range(self) -> CloudSettings:
        if not 0 <= self.ingest_partition < max(1, self.ingest_partitions):
            raise ValueError(f"TWIN_INGEST_PARTITION={self.ingest_partition} must be in [0, "
                             f"TWIN_INGEST_PARTITIONS={self.ingest_partitions}): that partition's gateways "
                             "would be stored by nobody")
        if not 1 <= self.ingest_nats_partitions <= 1024:
            raise ValueError("TWIN_INGEST_NATS_PARTITIONS must be 1 to 1024 (the count in the NATS server's mapping)")
        return self

    @model_validator(mode="after")
    def _client_cert_pair(self) -> CloudSettings:
        if (self.mqtt_cert_file is None) != (self.mqtt_key_file is None):
            raise ValueError("TWIN_MQTT_CERT_FILE and TWIN_MQTT_KEY_FILE go together: give both or neither")
        # Named here: at the TLS handshake paho's FileNotFoundError names no file.
        for name in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"):
            if (file := getattr(self, name)) is not None and not os.path.isfile(file):
                raise ValueError(f"TWIN_{name.upper()}: file not found: {file}")
        return self
