"""The registry: everything relational about the fleet (tenants, gateways, assets, anomalies, alarms,
dead letters, API keys, ingest de-duplication). SQLAlchemy 2; SQLite by default, PostgreSQL in
production, the same code and tests on both.

It is one module, over 500 lines, on purpose: its tables are one schema, which alembic compares as a whole against
the migrations (``tests/test_migrations.py``), and the session/insert helpers every table uses sit beside them.
Behaviour on those tables lives in the domain modules (shipments, sharing, commands, webhooks), not here.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

ROLES = ("viewer", "operator", "qa", "admin")
"""Ordered: each role can do what the ones before it can. ``qa`` adds releasing quarantined batches."""
MIGRATIONS = Path(__file__).with_name("migrations")


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")


class Site(Base):
    """A place in the hierarchy site → line → asset; a line is a site whose ``parent`` is a site."""

    __tablename__ = "sites"
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(16), default="site")  # site | line
    parent: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Gateway(Base):
    __tablename__ = "gateways"
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    last_seen_ns: Mapped[int] = mapped_column(BigInteger, default=0)
    config_version: Mapped[int] = mapped_column(Integer, default=0)  # what the gateway reports it runs
    counters: Mapped[dict] = mapped_column(JSON, default=dict)
    high_seq: Mapped[int] = mapped_column(BigInteger, default=-1)  # in the current epoch
    missing_seqs: Mapped[int] = mapped_column(BigInteger, default=0)  # over the epochs still kept
    # The outbox epoch the gateway sends from now (a new one: its outbox was wiped or replaced) and since when.
    epoch: Mapped[str] = mapped_column(String(32), default="", server_default="")
    epoch_since_ns: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Its clock against ours: the largest (sent_ns - arrival) in a window starting at clock_checked_ns (delay only
    # lowers it, so the least-delayed batch says most). None until a batch carried sent_ns.
    clock_offset_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    clock_checked_ns: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    future_samples: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # dead-lettered
    site: Mapped[str | None] = mapped_column(String(64), nullable=True)
    desired_config: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    desired_version: Mapped[int] = mapped_column(Integer, default=0)  # bumps on every PUT: the ETag
    config_report: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # last ReportedConfig


class AssetTypeRecord(Base):
    """A tenant's own asset types beside the built-in catalogue (same YAML/JSON shape)."""

    __tablename__ = "asset_types"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[dict] = mapped_column(JSON)


class Asset(Base):
    __tablename__ = "assets"
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gateway: Mapped[str | None] = mapped_column(String(64), nullable=True)
    site: Mapped[str | None] = mapped_column(String(64), nullable=True)
    line: Mapped[str | None] = mapped_column(String(64), nullable=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    first_seen_ns: Mapped[int] = mapped_column(BigInteger, default=0)


class Twin(Base):
    """An asset's desired state and its version (optimistic concurrency: ETag / If-Match)."""

    __tablename__ = "twins"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    desired: Mapped[dict] = mapped_column(JSON, default=dict)
    model: Mapped[dict] = mapped_column(JSON, default=dict)  # calibrated parameters (thermal, trend, ...)
    updated_ns: Mapped[int] = mapped_column(BigInteger, default=0)


class MachineProfileRecord(Base):
    """A rotating machine's ISO 20816 class, bearing and speed (``models.machine.MachineProfile`` as JSON): what its
    zone rule and the features of its waveforms need; set by an operator."""

    __tablename__ = "machine_profiles"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset: Mapped[str] = mapped_column(String(128), primary_key=True)
    profile: Mapped[dict] = mapped_column(JSON)
    updated_ns: Mapped[int] = mapped_column(BigInteger)
    updated_by: Mapped[str] = mapped_column(String(200), default="")


class WaveformSnapshot(Base):
    """Raw accelerometer blocks a gateway uploaded around an anomaly (``models.waveform`` snapshot, as received:
    zlib-compressed frames), to be looked at as a spectrum and an envelope spectrum."""

    __tablename__ = "waveform_snapshots"
    __table_args__ = (Index("waveform_snapshots_asset", "tenant", "asset", "t0_ns"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    asset: Mapped[str] = mapped_column(String(128))
    gateway: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(300), default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    t0_ns: Mapped[int] = mapped_column(BigInteger)
    t1_ns: Mapped[int] = mapped_column(BigInteger)
    received_ns: Mapped[int] = mapped_column(BigInteger)
    sample_rate_hz: Mapped[float] = mapped_column(Float)
    channels: Mapped[int] = mapped_column(Integer)
    blocks: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class CommandRecord(Base):
    """A command to a device through its gateway (``cloud/commands.py``): pending → delivered → succeeded | failed
    | expired, who issued it and why; ``evidence`` keeps what the decision rested on (a forecast)."""

    __tablename__ = "commands"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset: Mapped[str] = mapped_column(String(128))
    gateway: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    args: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str] = mapped_column(Text, default="")
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    issued_by: Mapped[str] = mapped_column(String(200))
    why: Mapped[str] = mapped_column(Text, default="")
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)
    issued_ns: Mapped[int] = mapped_column(BigInteger)
    expires_ns: Mapped[int] = mapped_column(BigInteger)
    delivered_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    __table_args__ = (Index("commands_outstanding", "tenant", "gateway", "state"),
                      Index("commands_asset", "tenant", "asset", "issued_ns"))


class Alert(Base):
    """open → acknowledged → resolved; one open alert per (asset, rule): ``dedup_key``."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    asset: Mapped[str] = mapped_column(String(128))
    rule: Mapped[str] = mapped_column(String(128))
    dedup_key: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="open")
    title: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)
    opened_ns: Mapped[int] = mapped_column(BigInteger)
    last_seen_ns: Mapped[int] = mapped_column(BigInteger)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    acked_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    acked_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    resolved_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (
        # At most one unresolved alert per (asset, rule), enforced by the database for concurrent workers.
        Index("alerts_one_open", "tenant", "dedup_key", unique=True,
              postgresql_where=text("state <> 'resolved'"), sqlite_where=text("state <> 'resolved'")),
        Index("alerts_asset", "tenant", "asset"),
    )


class Webhook(Base):
    """An alert webhook (cloud/webhooks.py). ``url`` may carry credentials: shown and logged only redacted."""

    __tablename__ = "webhooks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_ns: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    rotated_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_delivered_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="", server_default="")
    # A notification channel (cloud/webhooks/formats.py): the body's format — json (signed), slack, teams — or
    # email (``url`` is mailto:), and its route: alerts of at least ``min_severity`` on assets of ``asset_group``
    # ("site:<id>", "line:<id>", "type:<id>"; none: every asset).
    kind: Mapped[str] = mapped_column(String(16), default="json", server_default="json")
    min_severity: Mapped[str] = mapped_column(String(16), default="low", server_default="low")
    asset_group: Mapped[str | None] = mapped_column(String(200), nullable=True)
    __table_args__ = (Index("webhooks_tenant", "tenant"),)


class WebhookDelivery(Base):
    """One event still owed to one webhook, or given up (``state`` pending | failed): the retry state that a
    restart resumes. ``next_try_ns`` is also the lease of the process delivering it."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    webhook_id: Mapped[int] = mapped_column(Integer, ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    next_try_ns: Mapped[int] = mapped_column(BigInteger)
    last_error: Mapped[str] = mapped_column(Text, default="")
    __table_args__ = (
        Index("webhook_deliveries_due", "state", "tenant", "next_try_ns"),
        Index("webhook_deliveries_webhook", "webhook_id"),
        # The id is the body's ``delivery``, which receivers remember to drop replays: never reused, also on
        # SQLite, where a plain integer key restarts at 1 once every delivery is done and deleted.
        {"sqlite_autoincrement": True},
    )


class AuditEntry(Base):
    """Append-only: who changed what, when, why, with the state before and after."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    t_ns: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text, default="")
    before: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict | None] = mapped_column(JSON, nullable=True)


class AnomalyRecord(Base):
    __tablename__ = "anomalies"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64))
    asset: Mapped[str] = mapped_column(String(128))
    point: Mapped[str] = mapped_column(String(128))
    start_ns: Mapped[int] = mapped_column(BigInteger)
    end_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    peak_score: Mapped[float] = mapped_column(Float)
    peak_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    detectors: Mapped[list] = mapped_column(JSON)
    __table_args__ = (Index("anomalies_asset_time", "tenant", "asset", "start_ns"),)


class AlarmRecord(Base):
    """Alarms raised by gateways' local rules (kept as the gateway reported them)."""

    __tablename__ = "edge_alarms"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64))
    asset: Mapped[str] = mapped_column(String(128))
    rule: Mapped[str] = mapped_column(String(128))
    severity: Mapped[str] = mapped_column(String(16))
    start_ns: Mapped[int] = mapped_column(BigInteger)
    evidence: Mapped[dict] = mapped_column(JSON)


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_ns: Mapped[int] = mapped_column(BigInteger)
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    topic: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)


class IngestEpoch(Base):
    """Which batches of one gateway outbox epoch are written, in bounded space: the highest sequence and a bitmap
    of the window below it (``cloud/ingest.py``, ``SeqWindow``). Redelivered or replayed batches are dropped
    across restarts; a wiped outbox (a new epoch) starts a row of its own. Rows of epochs not heard from for
    ``TWIN_INGEST_EPOCH_RETENTION_S`` are deleted."""

    __tablename__ = "ingest_epochs"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    gateway: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(32), primary_key=True)
    high_seq: Mapped[int] = mapped_column(BigInteger, default=-1)
    window: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    missing: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen_ns: Mapped[int] = mapped_column(BigInteger)
    last_seen_ns: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    grantee: Mapped[str | None] = mapped_column(String(64), nullable=True)  # a customer key's organisation (sharing)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_ns: Mapped[int] = mapped_column(BigInteger, default=0)


class Shipment(Base):
    """A consignment judged against one product profile, from an origin site (the distribution centre)
    to a destination site (the store); where it was, when, is its custody legs."""

    __tablename__ = "shipments"
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    profile: Mapped[str] = mapped_column(String(64))
    origin_site: Mapped[str] = mapped_column(String(64))
    destination_site: Mapped[str] = mapped_column(String(64))
    reference: Mapped[str] = mapped_column(String(200), default="")
    created_ns: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(200))
    # the receiving customer, told before arrival (cloud/shipments/notices.py); the secret signs its webhook bodies
    consignee: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    consignee_grantee: Mapped[str | None] = mapped_column(String(64), nullable=True)  # its customer keys see it
    __table_args__ = (Index("shipments_consignee", "tenant", "consignee_grantee"),)


class CustodyLeg(Base):
    """A shipment inside one container over [from_ns, to_ns); ``to_ns`` is None while it is the current leg."""

    __tablename__ = "custody_legs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    shipment: Mapped[str] = mapped_column(String(64))
    asset: Mapped[str] = mapped_column(String(128))
    point: Mapped[str] = mapped_column(String(128))  # the product temperature in that container
    from_ns: Mapped[int] = mapped_column(BigInteger)
    to_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    __table_args__ = (
        ForeignKeyConstraint(["tenant", "shipment"], ["shipments.tenant", "shipments.id"]),
        Index("custody_legs_asset_time", "tenant", "asset", "from_ns"),
        Index("custody_legs_shipment", "tenant", "shipment"),
    )


class Batch(Base):
    """A lot riding in a shipment, on board over [loaded_ns, unloaded_ns) (None: the whole shipment).
    available → quarantined → released | rejected; a released lot can be quarantined again."""

    __tablename__ = "batches"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    lot: Mapped[str] = mapped_column(String(128), primary_key=True)
    shipment: Mapped[str] = mapped_column(String(64))
    product: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(32), default="")
    loaded_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    unloaded_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    profile: Mapped[str | None] = mapped_column(String(64), nullable=True)  # its product's, if not the shipment's
    state: Mapped[str] = mapped_column(String(16), default="available")
    version: Mapped[int] = mapped_column(Integer, default=0)  # bumps on every state change; signatures bind it
    updated_ns: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        ForeignKeyConstraint(["tenant", "shipment"], ["shipments.tenant", "shipments.id"]),
        Index("batches_shipment", "tenant", "shipment"),
    )


class Excursion(Base):
    """A container out of its product's range over [start_ns, end_ns]; one per alert (``alert_id``)."""

    __tablename__ = "excursions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    asset: Mapped[str] = mapped_column(String(128))
    start_ns: Mapped[int] = mapped_column(BigInteger)
    end_ns: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    alert_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recorded_ns: Mapped[int] = mapped_column(BigInteger)
    recorded_by: Mapped[str] = mapped_column(String(200))
    __table_args__ = (
        Index("excursions_alert", "tenant", "alert_id", unique=True),  # NULLs are distinct on both engines
        Index("excursions_asset_time", "tenant", "asset", "start_ns"),
    )


class BatchExcursion(Base):
    """Which excursions a batch went through (what quality must weigh before releasing it)."""

    __tablename__ = "batch_excursions"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    lot: Mapped[str] = mapped_column(String(128), primary_key=True)
    excursion_id: Mapped[int] = mapped_column(Integer, ForeignKey("excursions.id"), primary_key=True)
    __table_args__ = (ForeignKeyConstraint(["tenant", "lot"], ["batches.tenant", "batches.lot"]),)


class BatchDecision(Base):
    """A quality decision on a quarantined batch, signed in the 21 CFR 11.50 sense: ``record`` is exactly
    what was signed (signer, time, meaning, reason, the batch's state); ``digest`` is its SHA-256 and
    ``signature`` its Ed25519 signature under the tenant's key ``key_id``, whose private half is held outside
    this database (``SigningPublicKey`` publishes the public half). Never updated."""

    __tablename__ = "batch_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64))
    lot: Mapped[str] = mapped_column(String(128))
    meaning: Mapped[str] = mapped_column(String(16))  # released | rejected
    reason: Mapped[str] = mapped_column(Text)
    signer: Mapped[str] = mapped_column(String(200))
    signed_ns: Mapped[int] = mapped_column(BigInteger)
    record: Mapped[dict] = mapped_column(JSON)
    digest: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(256))
    key_id: Mapped[str] = mapped_column(String(32))
    __table_args__ = (
        ForeignKeyConstraint(["tenant", "lot"], ["batches.tenant", "batches.lot"]),
        Index("batch_decisions_lot", "tenant", "lot"),
    )


class SigningPublicKey(Base):
    """The public half of a tenant's decision-signing key (PEM), published so a signature verifies offline.
    The private half lives in the key directory, never here; a rotated key is retired, not deleted: the
    decisions it signed still verify."""

    __tablename__ = "signing_public_keys"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(Text)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    retired_ns: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class User(Base):
    """A person who signs (21 CFR 11.100: a signature is unique to one individual): a login name unique in the
    tenant, a full name printed with the signature, a role as the API keys have, and a password hashed with a
    memory-hard KDF (scrypt), entered again at every signing."""

    __tablename__ = "users"
    tenant: Mapped[str] = mapped_column(String(64), ForeignKey("tenants.id"), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(300))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_ns: Mapped[int] = mapped_column(BigInteger)

def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Registry:
    def __init__(self, url: str) -> None:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.dialect = self.engine.dialect.name

    def create_schema(self) -> None:
        """Bring the schema to the newest migration (Alembic); a new database starts from nothing."""
        from alembic import command
        from alembic.config import Config

        cfg = Config(str(MIGRATIONS / "alembic.ini"))
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Several processes (API, ingest workers, replicas) start at once: one migrates, the others
                # wait for it here, then find nothing left to do.
                conn.execute(text("SELECT pg_advisory_xact_lock(7386201)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.Session.begin() as s:
            yield s

    def insert_ignore(self, s: Session, model: type[Base], rows: list[dict]) -> None:
        """Insert rows, skipping those that would break a primary key or unique constraint (same SQL intent on
        both engines: ON CONFLICT DO NOTHING with no target)."""
        if not rows:
            return
        ins = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(model)
        s.execute(ins.on_conflict_do_nothing(), rows)

    def upsert(self, s: Session, model: type[Base], rows: list[dict], keys: Iterable[str]) -> None:
        if not rows:
            return
        ins = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(model)
        keys = list(keys)
        update = {c: ins.excluded[c] for c in rows[0] if c not in keys}
        s.execute(ins.on_conflict_do_update(index_elements=keys, set_=update), rows)

    # -- tenants and keys ------------------------------------------------------------------------
    def ensure_tenant(self, tenant: str, name: str = "") -> None:
        with self.session() as s:
            self.insert_ignore(s, Tenant, [{"id": tenant, "name": name or tenant}])

    def create_api_key(self, tenant: str, role: str, name: str = "", key: str | None = None) -> str:
        """Returns the clear key once; only its hash is stored."""
        return self.issue_api_key(tenant, role, name, key)[1]

    def issue_api_key(self, tenant: str, role: str, name: str = "", key: str | None = None) -> tuple[str, str]:
        """(key id, clear key); the clear key is never stored. A given ``key`` that exists already is that key's
        id: every process of ``twin cloud run --workers N`` creates the bootstrap key at start-up, at the same
        moment, so the insert skips an existing hash in the database (a select-then-insert lost that race with
        a unique violation and the worker exited) and the id is read back after it."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        self.ensure_tenant(tenant)
        key = key or f"twk_{secrets.token_urlsafe(24)}"
        digest = hash_key(key)
        with self.session() as s:
            self.insert_ignore(s, ApiKey, [{"id": secrets.token_hex(8), "hash": digest, "tenant": tenant, "role": role,
                                            "name": name, "revoked": False, "created_ns": time.time_ns()}])
            key_id = s.scalar(select(ApiKey.id).where(ApiKey.hash == digest))
        return key_id, key

    def audit(self, s: Session, tenant: str, actor: str, action: str, target: str, *, reason: str = "",
              before: dict | None = None, after: dict | None = None) -> None:
        s.add(AuditEntry(tenant=tenant, t_ns=time.time_ns(), actor=actor, action=action, target=target,
                         reason=reason, before=before, after=after))

    def revoke_key(self, tenant: str, key_id: str, actor: str, reason: str = "") -> bool:
        with self.session() as s:
            k = s.scalar(select(ApiKey).where(ApiKey.tenant == tenant, ApiKey.id == key_id))
            if k is None:
                return False
            if not k.revoked:
                k.revoked = True
                self.audit(s, tenant, actor, "key.revoke", f"key:{key_id}", reason=reason,
                           before={"revoked": False}, after={"revoked": True})
            return True

    def lookup_key(self, key: str) -> ApiKey | None:
        with self.session() as s:
            k = s.scalar(select(ApiKey).where(ApiKey.hash == hash_key(key)))
            return None if k is None or k.revoked else k


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL, not NORMAL: with WAL, NORMAL syncs only at checkpoints, so a commit the API or ingest has already
    # acknowledged (a key, an alert, a dedup mark) can roll back on power loss. FULL fsyncs the WAL on every
    # commit; the registry's writes are small and few, so the cost is one fsync per transaction.
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


from cloud import people as _people  # noqa: E402,F401  (the identity vault and consents, likewise)
from cloud import sharing as _sharing  # noqa: E402,F401  (its table, kept beside its queries, is part of the schema)
