"""The person pack: a person with type 1 diabetes and their wearables (README.md). No dosing advice, anywhere.

Each cycle, a person who received data has their last ``HISTORY_DAYS`` read (glucose, boluses, carbohydrates,
heart rate), their forecaster refit once a day (``forecast.py``), and the alert rules (``alerts.py``) run on the
recent readings with the forecasts: an episode still open raises or refreshes its alert, one that closed resolves
it. An alert still *open* (nobody acknowledged it) after ``ESCALATE_AFTER_S`` is refreshed one severity up —
``alert.escalated`` to the notifier — and its evidence names who is told: the people's consented carers and
guardians first (``notify``), the clinic added on escalation. Evidence carries the subject id, never who they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import select

from cloud.packs.base import Alarm, Assessment, NotRecomputable, Pack
from cloud.packs.person import alerts as A
from cloud.packs.person import forecast as F

TYPE_ID = "person"
SOURCE = "person-glucose"
HISTORY_DAYS = 3
RECENT_STEPS = 36            # episodes are judged over the last 3 hours
_DAY_NS = 86_400 * 10**9
RULES = {"predicted-low": ("high", "Low glucose predicted within 30 minutes"),
         "urgent-low": ("critical", "Urgent low glucose (below 54 mg/dL)"),
         "prolonged-high": ("medium", "High glucose (above 250 mg/dL) for 2 hours"),
         "signal-loss": ("medium", "No glucose readings for 20 minutes")}
ESCALATE_AFTER_S = {"predicted-low": 600, "urgent-low": 300, "prolonged-high": 1800, "signal-loss": 1800}
_UP = {"low": "medium", "medium": "high", "high": "critical", "critical": "critical"}


class PersonPack(Pack):
    type_id = TYPE_ID
    sources = (SOURCE,)
    not_compared = {"forecast": "the forecaster is refit daily: the same readings give a forecast within its "
                                "interval, not the same number"}

    def __init__(self, platform: Any, rules: Any = None) -> None:
        super().__init__(platform, rules)
        self._models: dict[tuple[str, str], tuple[int, F.Forecaster]] = {}

    def _series(self, tenant: str, asset: str, start: int, end: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for point in ("glucose", "bolus", "carbs", "heart_rate"):
            got = self.platform.store.read(tenant, asset, point, start, end, limit=100_000)
            keep = [i for i, v in enumerate(got.values) if v is not None]
            out[point] = (np.array([got.t_ns[i] for i in keep], np.int64),
                          np.array([got.values[i] for i in keep], float))
        return out

    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment | None:
        latest = self.platform.store.latest(tenant, asset).get("glucose")
        if latest is None:
            return None
        end = min(now_ns, int(latest[0]) + 3600 * 10**9)  # judge loss up to now, but not days of silence
        step = F.STEP_MIN * 60 * 10**9
        end = max(end, int(latest[0]) + step)
        start = (end - HISTORY_DAYS * _DAY_NS) // step * step
        s = self._series(tenant, asset, start, end + 1)
        ps = F.grid(start, end + step, *s["glucose"], *s["bolus"], *s["carbs"], *s["heart_rate"])
        key = (tenant, asset)
        day = end // _DAY_NS
        fitted = self._models.get(key)
        if fitted is None or fitted[0] != day:
            cut = max(0, ps.glucose.size - F.HORIZON_STEPS)
            model = F.Forecaster(level_ref=float(np.nanmean(ps.glucose))).fit(ps.x[:cut], ps.target_delta[:cut])
            self._models[key] = fitted = (day, model)
        f, lo, hi = fitted[1].predict(ps.glucose, ps.x)
        first = max(0, ps.glucose.size - RECENT_STEPS)
        episodes = A.all_episodes(ps.glucose[first:], f[first:])
        open_now = {rule: s0 + first for rule, s0, e in episodes if e is None}
        notify = self._grantees(tenant, asset)
        opened = self._open_alerts(tenant, asset)
        alarms = []
        for rule, j in open_now.items():
            severity, title = RULES[rule]
            at = int(ps.t_ns[j])
            state = opened.get(rule)
            escalated = state is not None and state[0] == "open" and \
                (now_ns - state[1]) / 1e9 >= ESCALATE_AFTER_S[rule]
            if escalated:
                severity = _UP[severity]
            last = int(np.flatnonzero(np.isfinite(ps.glucose))[-1])
            evidence = {"source": SOURCE, "rule": rule, "subject": asset, "now_ns": int(end),
                        "window": {"start_ns": int(ps.t_ns[first]), "end_ns": int(end)},
                        "glucose_mgdl": {"t_ns": int(ps.t_ns[last]), "value": float(ps.glucose[last])},
                        "forecast": None if not np.isfinite(f[last]) else {
                            "t_ns": int(ps.t_ns[last]) + F.HORIZON_STEPS * step, "value": round(float(f[last]), 1),
                            "low": round(float(lo[last]), 1), "high": round(float(hi[last]), 1)},
                        "thresholds": {"low": A.LOW, "urgent_low": A.URGENT_LOW, "high": A.HIGH,
                                       "high_for_min": A.HIGH_FOR_STEPS * F.STEP_MIN,
                                       "loss_min": A.LOSS_STEPS * F.STEP_MIN},
                        "notify": notify + (["clinic"] if escalated else []),
                        "escalated": escalated}
            alarms.append(Alarm(rule, severity, title, evidence, at))
        resolved = [(rule, "the readings no longer show it") for rule in opened if rule not in open_now]
        return Assessment(alarms, resolved)

    def _grantees(self, tenant: str, asset: str) -> list[str]:
        """The carers and guardians a consent names (the clinic is told on escalation)."""
        from cloud.people import CLINIC, Consent

        with self.platform.registry.session() as s:
            return sorted(set(s.scalars(select(Consent.grantee).where(
                Consent.tenant == tenant, Consent.subject == asset, Consent.grantee != CLINIC))))

    def _open_alerts(self, tenant: str, asset: str) -> dict[str, tuple[str, int]]:
        from cloud.registry import Alert

        with self.platform.registry.session() as s:
            rows = s.execute(select(Alert.rule, Alert.state, Alert.opened_ns).where(
                Alert.tenant == tenant, Alert.asset == asset, Alert.state != "resolved")).all()
        return {r: (st, int(t)) for r, st, t in rows if r in RULES}

    def explain(self, alert: dict) -> dict | None:
        ev = alert.get("evidence") or {}
        if "now_ns" not in ev:
            raise NotRecomputable("the evidence does not say when it was judged (now_ns)")
        raise NotRecomputable("person alerts are judged on a forecaster refit daily; the stored evidence is the "
                              "record")

