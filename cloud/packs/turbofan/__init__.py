"""The turbofan pack: a C-MAPSS engine's remaining useful life, live, with an alert at its maintenance horizon.

Each cycle, an engine that received data gets the ``twin pdm`` model's estimate with its 90 % interval at every
new complete cycle (``rul.py``: the offline model on the cycles so far), written as its RUL history and onto its
twin; when the interval's lower bound falls to the engine's maintenance horizon (``PATCH /twins/{asset}/rul``, or
the pack's default) one alert opens, and a new one only after the bound has come back above it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from cloud.packs.base import Alarm, Assessment, NotRecomputable, Pack
from cloud.packs.turbofan import rul
from cloud.registry import Alert

log = logging.getLogger("cloud.packs.turbofan")


@dataclass
class _Engine:
    """What this worker has estimated for one engine: cycles done (and the time of the last), crossed or not."""

    done: int = 0
    last_t_ns: int = 0
    crossed: bool = False


class TurbofanPack(Pack):
    type_id = "turbofan"
    sources = (rul.SOURCE,)
    counter_names = ("rul_estimates",)

    def __init__(self, platform: Any, rules: Any = None) -> None:
        super().__init__(platform, rules)
        self.models = rul.ModelSource()
        self._engines: dict[tuple[str, str], _Engine] = {}

    def _open_alert(self, tenant: str, asset: str) -> bool:
        with self.platform.registry.session() as s:
            return s.scalar(select(Alert.id).where(Alert.tenant == tenant, Alert.dedup_key == f"{asset}:{rul.RULE}",
                                                   Alert.state != "resolved")) is not None

    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment | None:
        """Estimates for the cycles not yet estimated; an alarm at a crossing, a resolution at a re-arm."""
        found = self.models.for_asset(asset)
        if found is None:
            return None
        model, about = found
        t_ns, x = rul.read_cycles(self.platform.store, tenant, asset)
        if not len(t_ns):
            return None
        key = (tenant, asset)
        eng = self._engines.get(key)
        if eng is None:  # first look in this process: recompute all (idempotent), crossed if its alert is open
            eng = self._engines[key] = _Engine(crossed=self._open_alert(tenant, asset))
        if eng.done > len(t_ns) or (eng.done and int(t_ns[eng.done - 1]) != eng.last_t_ns):
            eng.done = 0  # an earlier cycle arrived late: the numbering moved, estimate again from the start
        if eng.done == len(t_ns):
            return Assessment()
        t0 = time.perf_counter()
        est = rul.estimate(model, t_ns, x, eng.done)
        self.platform.store.write(rul.to_rows(tenant, asset, est))
        doc = self.platform.twins.model(tenant, asset)
        horizon, horizon_from = rul.horizon_of(doc)
        events, eng.crossed = rul.crossings(est.lower, horizon, eng.crossed)
        eng.done, eng.last_t_ns = len(t_ns), int(t_ns[-1])
        i = len(est.cycle) - 1
        latest = {"cycle": int(est.cycle[i]), "t_ns": int(est.t_ns[i]), "estimate": float(est.rul[i]),
                  "lower": float(est.lower[i]), "upper": float(est.upper[i]), "coverage": about["coverage"],
                  "horizon_cycles": horizon, "horizon_from": horizon_from, "below_horizon": eng.crossed,
                  "model": {"name": about["name"], "version": about["version"]}, "updated_ns": time.time_ns()}
        self.platform.twins.merge_model(tenant, asset, {"rul": latest})
        if self.rules is not None:
            self.rules.counters["rul_estimates"] = self.rules.counters.get("rul_estimates", 0) + len(est.cycle)
        log.info("rul: %s cycles %d..%d estimated in %.3f s: %.1f [%.1f, %.1f] at cycle %d", asset,
                 int(est.cycle[0]), int(est.cycle[-1]), time.perf_counter() - t0, latest["estimate"],
                 latest["lower"], latest["upper"], latest["cycle"])
        out = Assessment()
        rearms = [k for k, kind in events if kind == "rearm"]
        if rearms:  # resolved before any new alarm (the runner resolves first): a re-crossing opens a new alert
            out.resolved.append((rul.RULE, f"the interval's lower bound is back above {horizon:g} + "
                                           f"{rul.REARM_CYCLES:g} cycles at cycle {int(est.cycle[rearms[-1]])}"))
        if events and events[-1][1] == "cross":
            ev = rul.evidence(asset, est, events[-1][0], horizon, horizon_from, about)
            out.alarms.append(Alarm(rul.RULE, "high", f"{asset}: remaining life may reach its maintenance horizon "
                                    f"({ev['lower']:.0f} ≤ {horizon:g} cycles) at cycle {ev['cycle']}", ev,
                                    ev["t_ns"]))
        return out

    def explain(self, alert: dict) -> dict | None:
        """The estimate at the alert's cycle, recomputed from the stored cycles up to it with the model in service
        (the same if it is the version the evidence names)."""
        ev = alert["evidence"]
        try:
            at_ns, horizon, horizon_from = int(ev["t_ns"]), float(ev["horizon_cycles"]), str(ev["horizon_from"])
        except (KeyError, TypeError, ValueError) as exc:
            raise NotRecomputable(f"the evidence lacks what the RUL rule needs: {exc}") from None
        found = self.models.for_asset(alert["asset"])
        if found is None:
            raise NotRecomputable(f"no RUL model is configured for {alert['asset']} (set {rul.MODEL_ENV})")
        model, about = found
        t_ns, x = rul.read_cycles(self.platform.store, alert["tenant"], alert["asset"], at_ns)
        if not len(t_ns):
            return None
        est = rul.estimate(model, t_ns, x, len(t_ns) - 1)
        if float(est.lower[0]) > horizon:
            return None
        return rul.evidence(alert["asset"], est, 0, horizon, horizon_from, about)
