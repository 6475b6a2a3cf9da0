"""An edge alarm becomes an alert with its evidence, and the cloud recomputes it from the stored samples."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.registry import Asset
from cloud.rules.local import alert_from_alarm
from cloud.settings import CloudSettings
from cloud.store import Rows
from edge.buffer import Tick
from edge.rules import LocalRules
from models.catalogue import get_type
from models.wire import AlarmEvent

S = 1_000_000_000
T0 = 1_767_225_600 * S


def test_an_edge_alarm_is_an_alert_whose_evidence_the_cloud_can_recompute(tmp_path, influxdb, influx_db):
    p = Platform.open(CloudSettings(database_url=f"sqlite:///{tmp_path / 'r.sqlite'}", store="influx",
                                    influx_url=influxdb.url, influx_bucket=f"{influx_db}/autogen",
                                    influx_database=influx_db))
    key = p.registry.create_api_key("acme", "viewer")
    with p.registry.session() as s:
        s.add(Asset(tenant="acme", id="trailer-001", type="refrigerated-trailer", gateway="gw1", first_seen_ns=0))
    # 20 min at 4 degC then 30 min at 9 degC, one sample a minute: what the gateway saw and what was stored
    t = [T0 + i * 60 * S for i in range(50)]
    x = [4.0] * 20 + [9.0] * 30
    rows = Rows()
    rows.extend_series("acme", "trailer-001", "supply_air", t, x, [0] * 50)
    p.store.write(rows)
    rule = next(r for r in get_type("refrigerated-trailer").local_rules if r.name == "supply-air-high")
    [f] = LocalRules([("trailer-001", rule, 0)], 1).evaluate(
        Tick(np.zeros(50, np.int64), np.array(t, np.int64), np.array(x), np.zeros(50, np.int8)))
    ev = AlarmEvent(tenant="acme", gateway="gw1", event_id="gw1:trailer-001:supply-air-high:1", asset="trailer-001",
                    rule=rule.name, severity=rule.severity, start_ns=f.start_ns,
                    evidence={"point": "supply_air", "value": f.value, "fired_ns": f.fired_ns, "limit": rule.limit,
                              "for_s": rule.for_s})
    alert_id, new = alert_from_alarm(p.alerts, ev, "refrigerated-trailer")
    assert new
    api = TestClient(create_app(p), headers={"Authorization": f"Bearer {key}"})
    alert = api.get(f"/api/v1/alerts/{alert_id}").json()
    assert alert["title"] == "supply_air above 8.0 for 900.0 s"
    assert (alert["evidence"]["start_ns"], alert["evidence"]["fired_ns"]) == (t[20], t[35])
    out = api.get(f"/api/v1/alerts/{alert_id}/explain").json()
    assert out["recomputable"] and out["matches"]
    assert out["recomputed"] == {"point": "supply_air", "start_ns": t[20], "fired_ns": t[35], "value": 9.0,
                                 "limit": 8.0, "for_s": 900.0, "samples_examined": 36}
    p.close()
