"""Registry tables that grow with traffic keep only their retention (cloud/housekeeping.py), on SQLite and on the
real PostgreSQL: dead letters, anomaly events, edge alarms and resolved alerts; what an excursion cites, what is
still open and the audit log stay."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from cloud.housekeeping import Housekeeping, prune_registry, registry_retention
from cloud.registry import AlarmRecord, Alert, AnomalyRecord, AuditEntry, DeadLetter, Excursion
from cloud.settings import CloudSettings
from cloud.store.embedded import EmbeddedStore

DAY = 86_400 * 1_000_000_000
NOW = time.time_ns()
KEEP = {"dead_letters": 30, "anomalies": 400, "edge_alarms": 400, "resolved_alerts": 400}


def _fill(reg) -> None:
    """Of each table: rows past the retention that go, and rows that stay for a reason."""
    with reg.session() as s:
        s.add_all(DeadLetter(received_ns=NOW - d * DAY, tenant="acme", topic="t", reason="bad json", payload=b"{")
                  for d in (40, 35, 31, 29, 1))
        s.add_all([
            AnomalyRecord(tenant="acme", event_id="closed-long-ago", gateway="gw", asset="a", point="p",
                          start_ns=NOW - 500 * DAY, end_ns=NOW - 499 * DAY, peak_score=5.0, peak_value=1.0,
                          detectors=[]),
            AnomalyRecord(tenant="acme", event_id="never-closed", gateway="gw", asset="a", point="p",
                          start_ns=NOW - 450 * DAY, end_ns=None, peak_score=5.0, peak_value=1.0, detectors=[]),
            AnomalyRecord(tenant="acme", event_id="ended-lately", gateway="gw", asset="a", point="p",
                          start_ns=NOW - 450 * DAY, end_ns=NOW - 10 * DAY, peak_score=5.0, peak_value=1.0,
                          detectors=[]),
            AnomalyRecord(tenant="acme", event_id="recent", gateway="gw", asset="a", point="p",
                          start_ns=NOW - DAY, end_ns=None, peak_score=5.0, peak_value=1.0, detectors=[])])
        s.add_all(AlarmRecord(tenant="acme", event_id=f"alarm-{d}", gateway="gw", asset="a", rule="too_warm",
                              severity="high", start_ns=NOW - d * DAY, evidence={}) for d in (900, 401, 399))

        def alert(rule: str, state: str, days: int) -> Alert:
            return Alert(tenant="acme", asset="a", rule=rule, dedup_key=f"a:{rule}", severity="high", state=state,
                         opened_ns=NOW - days * DAY, last_seen_ns=NOW - days * DAY,
                         resolved_ns=NOW - days * DAY if state == "resolved" else None)

        cited = alert("cited", "resolved", 500)
        s.add_all([alert("old", "resolved", 500), cited, alert("open", "open", 500), alert("lately", "resolved", 5)])
        s.flush()
        s.add(Excursion(tenant="acme", asset="a", start_ns=NOW - 501 * DAY, end_ns=NOW - 500 * DAY, alert_id=cited.id,
                        recorded_ns=NOW - 500 * DAY, recorded_by="rules"))
        s.add(AuditEntry(tenant="acme", t_ns=NOW - 3000 * DAY, actor="alice", action="key.revoke", target="key:1"))


def _left(reg) -> dict[str, object]:
    with reg.session() as s:
        return {
            "dead_letters": sorted((NOW - t) // DAY for t in s.scalars(select(DeadLetter.received_ns))),
            "anomalies": sorted(s.scalars(select(AnomalyRecord.event_id))),
            "edge_alarms": sorted(s.scalars(select(AlarmRecord.event_id))),
            "alerts": sorted(s.scalars(select(Alert.rule))),
            "audit": s.scalar(select(func.count()).select_from(AuditEntry)),
        }


def test_rows_older_than_their_retention_are_deleted_and_what_must_stay_stays(registry):
    _fill(registry)

    pruned = prune_registry(registry, KEEP, NOW)

    assert pruned == {"dead_letters": 3, "anomalies": 2, "edge_alarms": 2, "resolved_alerts": 1}
    assert _left(registry) == {
        "dead_letters": [1, 29],
        "anomalies": ["ended-lately", "recent"],  # an event counts from when it ended
        "edge_alarms": ["alarm-399"],
        "alerts": ["cited", "lately", "open"],  # an excursion's alert is shipment evidence; open ones are live
        "audit": 1,  # the record of who did what is never pruned here
    }
    assert prune_registry(registry, KEEP, NOW) == dict.fromkeys(KEEP, 0)


def test_a_retention_of_zero_keeps_a_table_whole(registry):
    _fill(registry)

    pruned = prune_registry(registry, {**KEEP, "dead_letters": 0, "edge_alarms": 0}, NOW)

    assert (pruned["dead_letters"], pruned["edge_alarms"], pruned["anomalies"]) == (0, 0, 2)
    assert len(_left(registry)["dead_letters"]) == 5


def test_a_backlog_goes_in_batches_until_none_is_left(registry):
    _fill(registry)
    with registry.session() as s:
        s.add_all(DeadLetter(received_ns=NOW - (60 + i) * DAY, tenant=None, topic="t", reason="r", payload=b"")
                  for i in range(11))

    assert prune_registry(registry, {"dead_letters": 30}, NOW, batch=4) == {"dead_letters": 14}
    assert _left(registry)["dead_letters"] == [1, 29]


def test_housekeeping_counts_what_it_pruned(registry, tmp_path):
    _fill(registry)
    settings = CloudSettings(retention_dead_letters_days=30, retention_anomalies_days=0)
    store = EmbeddedStore(tmp_path / "ts.sqlite")
    hk = Housekeeping(store, registry, settings)

    hk.run_registry(NOW)
    hk.run_registry(NOW)

    assert {k: v for k, v in hk.counters.items() if k.startswith("pruned_")} == {
        "pruned_dead_letters": 3, "pruned_anomalies": 0, "pruned_edge_alarms": 2, "pruned_resolved_alerts": 1}
    store.close()


def test_retention_settings_come_from_the_environment_and_refuse_negatives(monkeypatch):
    monkeypatch.setenv("TWIN_RETENTION_DEAD_LETTERS_DAYS", "7")
    monkeypatch.setenv("TWIN_RETENTION_RESOLVED_ALERTS_DAYS", "0")
    assert registry_retention(CloudSettings()) == {"dead_letters": 7.0, "anomalies": 400.0, "edge_alarms": 400.0,
                                                   "resolved_alerts": 0.0}
    monkeypatch.setenv("TWIN_RETENTION_EDGE_ALARMS_DAYS", "-1")
    with pytest.raises(ValidationError, match="retention_edge_alarms_days"):
        CloudSettings()
