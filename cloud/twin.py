"""Twin state: what an asset reports, what an operator wants of it, and the difference.

Reported state is composed at read time from the stores (each point's last value and time from the
time-series store; open anomalies, the gateway's applied configuration version from the registry),
so ingest never pays a registry write per sample. Desired state lives in the registry with a version
number: a change must name the version it was based on (HTTP ``If-Match``), so of two concurrent
writers exactly one wins and the other learns it was too late.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update

from cloud.registry import Alert, AnomalyRecord, Asset, Gateway, Registry, Twin
from cloud.store import TimeSeriesStore
from models.catalogue import get_type

STALE_AFTER_NS = 5 * 60 * 1_000_000_000
OFFLINE_AFTER_NS = 60 * 60 * 1_000_000_000
_SEVERITY_PENALTY = {"low": 0.1, "medium": 0.25, "high": 0.5, "critical": 0.8}
_KNOWN_MAX = 100_000


class NotFound(LookupError):
    pass


class VersionConflict(RuntimeError):
    def __init__(self, current: int) -> None:
        super().__init__(f"the twin is at version {current}")
        self.current = current


@dataclass
class TwinState:
    asset: str
    type: str | None
    gateway: str | None
    version: int
    status: str
    health: float
    reported: dict[str, Any]
    desired: dict[str, Any]
    delta: dict[str, Any]
    model: dict[str, Any]


def status_of(last_ns: int | None, gateway_state: str | None, now_ns: int) -> str:
    """online: data within 5 min; stale: within an hour; offline: older, none, or the gateway said so."""
    if last_ns is None or gateway_state == "offline":
        return "offline"
    age = now_ns - last_ns
    if age <= STALE_AFTER_NS:
        return "online"
    return "stale" if age <= OFFLINE_AFTER_NS else "offline"


def health_of(open_alert_severities: list[str], open_anomalies: int, status: str) -> float:
    """1.0 is healthy. Each open alert costs by severity, open anomalies 0.1 each (at most 0.3), being
    stale 0.2; the worst case floors at 0. Simple on purpose: an operator can say why a number is what it is."""
    h = 1.0 - sum(_SEVERITY_PENALTY.get(s, 0.25) for s in open_alert_severities)
    h -= min(0.3, 0.1 * open_anomalies)
    h -= 0.2 if status == "stale" else 0.0
    return round(max(0.0, min(1.0, h)), 3)


def delta_of(desired: dict[str, Any], reported_points: dict[str, dict],
             confirmed_by: dict[str, tuple[str, float]] | None = None) -> dict[str, Any]:
    """Desired keys that differ from their last reported value (or are not reported). A writable property is
    reported by the point its type names, within its tolerance (``confirmed_by``: property -> (point, tolerance);
    a drive's speed reference is met when the shaft runs within its slip of it)."""
    out = {}
    for key, want in desired.items():
        point, tolerance = (confirmed_by or {}).get(key, (key, 1e-9))
        have = reported_points.get(point, {}).get("value")
        numeric = isinstance(want, int | float) and isinstance(have, int | float)  # a text point reports a string
        if have is None or (numeric and abs(float(want) - float(have)) > tolerance) or (not numeric and want != have):
            out[key] = {"desired": want, "reported": have}
    return out


def _confirmed_by(type_id: str | None) -> dict[str, tuple[str, float]]:
    """For each writable property of the type: the point that reports it and how close counts as applied."""
    try:
        writable = get_type(type_id or "").writable
    except KeyError:
        return {}
    return {name: (w.point or name, max(w.tolerance, 1e-9)) for name, w in writable.items()}


def _registry_query():
    """Everything the registry holds of one twin in one statement: the asset, its twin row and gateway, its
    open alerts' severities (aggregated) and one row per open anomaly (none: one row of NULLs). Built once;
    ``tenant`` and ``asset`` are bound per call."""
    tenant, asset = bindparam("tenant"), bindparam("asset")
    severities = (select(func.aggregate_strings(Alert.severity, ","))
                  .where(Alert.tenant == tenant, Alert.asset == asset, Alert.state != "resolved").scalar_subquery())
    return (select(Asset.type, Asset.gateway, Twin.version, Twin.desired, Twin.model, Gateway.state,
                   Gateway.config_version, severities.label("severities"), AnomalyRecord.event_id,
                   AnomalyRecord.point, AnomalyRecord.start_ns, AnomalyRecord.peak_score)
            .select_from(Asset)
            .outerjoin(Twin, and_(Twin.tenant == Asset.tenant, Twin.asset == Asset.id))
            .outerjoin(Gateway, and_(Gateway.tenant == Asset.tenant, Gateway.id == Asset.gateway))
            .outerjoin(AnomalyRecord, and_(AnomalyRecord.tenant == Asset.tenant, AnomalyRecord.asset == Asset.id,
                                           AnomalyRecord.end_ns.is_(None)))
            .where(Asset.tenant == tenant, Asset.id == asset)
            .order_by(AnomalyRecord.start_ns, AnomalyRecord.event_id))


_TWIN_QUERY = _registry_query()
_EXISTS_QUERY = select(Asset.id).where(Asset.tenant == bindparam("tenant"), Asset.id == bindparam("asset"))


class TwinService:
    def __init__(self, registry: Registry, store: TimeSeriesStore) -> None:
        self.registry = registry
        self.store = store
        self._known: set[tuple[str, str]] = set()
        self._model_lock = threading.Lock()

    def exists(self, tenant: str, asset: str) -> bool:
        """Whether the tenant has this asset. Assets are never deleted, so a yes is remembered (no registry
        round trip on every telemetry read); a no is asked again, so a new asset is found at once."""
        if (tenant, asset) in self._known:
            return True
        with self.registry.engine.connect() as c:
            found = c.execute(_EXISTS_QUERY, {"tenant": tenant, "asset": asset}).first() is not None
        if found:
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()
            self._known.add((tenant, asset))
        return found

    def state(self, tenant: str, asset: str) -> TwinState:
        now = time.time_ns()
        with self.registry.engine.connect() as c:
            rows = c.execute(_TWIN_QUERY, {"tenant": tenant, "asset": asset}).all()
        if not rows:
            raise NotFound(f"no asset {asset!r}")
        a = rows[0]
        severities = a.severities.split(",") if a.severities else []
        anomalies = [r for r in rows if r.event_id is not None]
        latest: dict[str, tuple[int, float | str | None]] = {**self.store.latest(tenant, asset),
                                                              **self.store.latest_text(tenant, asset)}
        points = {p: {"value": v, "t_ns": t} for p, (t, v) in sorted(latest.items())}
        last = max((t for t, _ in latest.values()), default=None)
        status = status_of(last, a.state, now)
        reported = {
            "points": points,
            "last_seen_ns": last,
            "active_anomalies": [{"event_id": x.event_id, "point": x.point, "start_ns": x.start_ns,
                                  "peak_score": x.peak_score} for x in anomalies],
            "config_version": a.config_version,
        }
        desired = dict(a.desired or {})
        return TwinState(asset=asset, type=a.type, gateway=a.gateway, version=a.version or 0,
                         status=status, health=health_of(severities, len(anomalies), status), reported=reported,
                         desired=desired, delta=delta_of(desired, points, _confirmed_by(a.type)),
                         model=dict(a.model or {}))

    def put_desired(self, tenant: str, asset: str, desired: dict[str, Any], if_match: int, actor: str,
                    reason: str = "", evidence: dict[str, Any] | None = None) -> int:
        """Replace the desired state if the twin is still at ``if_match``; returns the new version. ``evidence``
        (what the change rests on, e.g. a what-if's forecast) is kept with it in the audit trail."""
        with self.registry.session() as s:
            if s.get(Asset, (tenant, asset)) is None:
                raise NotFound(f"no asset {asset!r}")
            self.registry.insert_ignore(s, Twin, [{"tenant": tenant, "asset": asset, "version": 0, "desired": {},
                                                   "model": {}, "updated_ns": 0}])
        with self.registry.session() as s:
            before = s.get(Twin, (tenant, asset))
            old = dict(before.desired) if before else {}
            # Compare-and-set in one statement: the database decides who was first.
            res = s.execute(update(Twin).where(Twin.tenant == tenant, Twin.asset == asset, Twin.version == if_match)
                            .values(desired=desired, version=Twin.version + 1, updated_ns=time.time_ns()))
            if res.rowcount != 1:
                current = s.scalar(select(Twin.version).where(Twin.tenant == tenant, Twin.asset == asset))
                raise VersionConflict(int(current or 0))
            self.registry.audit(s, tenant, actor, "twin.desired.put", f"asset:{asset}", reason=reason,
                                before={"version": if_match, "desired": old},
                                after={"version": if_match + 1, "desired": desired,
                                       **({"evidence": evidence} if evidence else {})})
        return if_match + 1

    def model(self, tenant: str, asset: str) -> dict[str, Any]:
        """The twin's model document alone ({} before anything wrote one): what a rule reads its settings from,
        without ``state``'s reads of the latest values from the store."""
        with self.registry.session() as s:
            row = s.get(Twin, (tenant, asset))
            return dict(row.model or {}) if row is not None else {}

    def merge_model(self, tenant: str, asset: str, part: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Set these top-level keys of the twin's model document (a rule's estimate, an operator's settings),
        keeping the others; ``part`` may be a function of the current document. Returns (before, after).

        One read-modify-write under the row's lock (PostgreSQL) and this process's: a RUL estimate and a PATCH of
        the horizon landing together both survive, where two read-then-put writers lost one (an engine's estimate
        at its last cycle, once, on a loaded machine)."""
        mine = select(Twin).where(Twin.tenant == tenant, Twin.asset == asset).with_for_update()
        with self._model_lock, self.registry.session() as s:
            row = s.scalar(mine)
            if row is None:  # the twin's first write: its row, then the lock on it
                self.registry.insert_ignore(s, Twin, [{"tenant": tenant, "asset": asset, "version": 0,
                                                       "desired": {}, "model": {}, "updated_ns": 0}])
                row = s.scalar(mine)
            before = dict(row.model or {})
            after = {**before, **(part(before) if callable(part) else part)}
            row.model, row.updated_ns = after, time.time_ns()
        return before, after
