"""The vessel pack: a ship's main engine and shaft line, read the way its engineers read them (README.md).

Each cycle, a vessel that received data has its last ``history_days`` read as 10-minute means and cut into
steady hour-long windows (``data.py``); then

- ``engine.cylinder_alarms``: a cylinder's exhaust temperature off the mean of the cylinders at the same load
  (the alarm names the cylinder; the first suspect is its fuel injector);
- ``engine.performance``: exhaust temperature and scavenge air against the engine's shop-test curves, as trends
  with the predicted date of the service limit (turbocharger fouling when both move);
- ``shaft.shaft_alarms``: each intermediate bearing's vibration through the rotating machines' ISO 10816 zones
  and trend, told apart as a wearing bearing by its temperature.

Judged as of the vessel's newest reading (a ship back in coverage delivers days at once). The predicted
maintenance dates are also kept in the twin's model (``maintenance``), where a charterer's view reads them
whether or not an alert is open. Its what-if: the chance that each predicted limit is reached if the next
maintenance is postponed by N days.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud.packs.base import Assessment, NotRecomputable, Pack, SimulationError
from cloud.packs.vessel import engine, shaft
from cloud.packs.vessel.data import VesselConfig, Windows, default_config, read_bins, steady_windows
from cloud.rules.maintenance import SeverityClass, TrendFit
from models.catalogue import get_type

TYPE_ID = "vessel"
REREAD_DAYS = 1
_DAY_NS = 86_400 * 10**9


class VesselQuestion(BaseModel):
    """If the next maintenance is postponed by ``postpone_days``, how likely is each predicted limit reached first?"""

    model_config = ConfigDict(extra="forbid")
    postpone_days: float = Field(0.0, ge=0, le=3650)


def assess_windows(w: Windows, cfg: VesselConfig, asset: str, now_ns: int
                   ) -> tuple[Assessment, dict[str, dict[str, Any]]]:
    """Every vessel rule on the steady windows as of ``now_ns``: the assessment and the maintenance forecast
    (what, predicted date and interval, per item). Pure: the live pack, ``explain`` and the tests all run this."""
    cyl_alarms, resolved = engine.cylinder_alarms(w, cfg, now_ns)
    perf_alarm, perf = engine.performance(w, cfg, now_ns)
    shaft_alarms, forecast = shaft.shaft_alarms(w, cfg, asset, now_ns)
    if perf is not None and perf["due_ns"] is not None and perf["due_days"] is not None \
            and perf["due_days"] <= 365.0:
        first = perf["exhaust"] if perf["due_ns"] == perf["exhaust"]["at_ns"] else perf["scavenge"]
        forecast["turbocharger"] = {"what": "turbocharger cleaning (engine performance at its service limit)",
                                    "at_ns": perf["due_ns"], "at": perf["due"], "interval_ns": first["interval_ns"],
                                    "interval": first["interval"]}
    alarms = [*cyl_alarms, *([perf_alarm] if perf_alarm else []), *shaft_alarms]
    return Assessment(alarms, resolved), forecast


class VesselPack(Pack):
    type_id = TYPE_ID
    sources = (engine.SOURCE, shaft.SOURCE)
    question = VesselQuestion

    def __init__(self, platform: Any, rules: Any = None, config: VesselConfig | None = None) -> None:
        super().__init__(platform, rules)
        self.config = config or default_config()
        self._every = round(self.config.steady.bin_s * 1e9)
        self._windows: dict[tuple[str, str], Windows] = {}  # each vessel's steady history (rule state, per worker)
        self._full: dict[tuple[str, str], int] = {}  # where each vessel's last full read ended
        self._judged: dict[tuple[str, str], int] = {}  # the last 10-minute bin each vessel was judged up to

    # --- reading -------------------------------------------------------------------------------------

    def newest_ns(self, tenant: str, asset: str) -> int | None:
        latest = self.platform.store.latest(tenant, asset)
        times = [int(t) for p, (t, _) in latest.items() if p == "me_shaft_power" or p.startswith("shaft_vib_")]
        return max(times) if times else None

    def windows(self, tenant: str, asset: str, as_of_ns: int, *, cached: bool = False) -> Windows:
        """Steady windows over the longest history any rule reads, up to the 10-minute mean holding ``as_of_ns``.

        ``cached``: read again only the last ``REREAD_DAYS`` (what a worker assessing every few minutes can
        afford: a full read is every point over 21 days) and keep the steady windows found before that, until
        ``REREAD_DAYS`` of data time have passed since the last full read; data arriving later than that for
        older times waits for the next full read."""
        cfg = self.config
        every = self._every
        span = cfg.steady.window_bins * every
        end = (as_of_ns // every + 1) * every
        start = end - round(max(cfg.performance.history_days, cfg.shaft.history_days) * _DAY_NS)
        since = (end - REREAD_DAYS * _DAY_NS) // span * span
        points = list(get_type(TYPE_ID).points)
        key = (tenant, asset)
        old, full = self._windows.get(key), self._full.get(key)
        if cached and old is not None and full is not None and since < full <= end \
                and end - full < REREAD_DAYS * _DAY_NS:
            fresh = steady_windows(read_bins(self.platform.store, tenant, asset, points, since, end, every),
                                   cfg.engine, cfg.steady)
            w = old.ending_in(start, since).then(fresh)
        else:
            w = steady_windows(read_bins(self.platform.store, tenant, asset, points, start, end, every),
                               cfg.engine, cfg.steady)
            if cached:
                self._full[key] = end
        if cached:
            self._windows[key] = w
        return w

    # --- the interface -------------------------------------------------------------------------------

    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment | None:
        """None while no new 10-minute mean has completed since the last assessment (nothing new to judge)."""
        newest = self.newest_ns(tenant, asset)
        if newest is None:
            return None
        as_of = min(newest, now_ns)
        key = (tenant, asset)
        if self._judged.get(key) == as_of // self._every:
            return None
        self._judged[key] = as_of // self._every
        w = self.windows(tenant, asset, as_of, cached=True)
        assessment, forecast = assess_windows(w, self.config, asset, int(w.t_ns[-1]) if len(w) else as_of)
        self._keep_forecast(tenant, asset, forecast)
        return assessment

    def _keep_forecast(self, tenant: str, asset: str, forecast: dict[str, dict[str, Any]]) -> None:
        """The twin's ``model.maintenance``: other keys of the model (a calibration) are left as they are."""
        twins = self.platform.twins
        if twins.model(tenant, asset).get("maintenance") != forecast:
            twins.merge_model(tenant, asset, {"maintenance": forecast})

    def explain(self, alert: dict) -> dict | None:
        """Every vessel rule as of the moment the alert's evidence was judged, through the same functions; the
        alarm of the same rule, or None when it no longer fires. Bootstraps have a fixed seed: same data, same
        dates."""
        ev = alert.get("evidence") or {}
        try:
            as_of = int(ev["now_ns"])
        except (KeyError, TypeError, ValueError) as exc:
            raise NotRecomputable(f"the evidence does not say when it was judged (now_ns): {exc}") from None
        w = self.windows(alert["tenant"], alert["asset"], as_of)
        assessment, _ = assess_windows(w, self.config, alert["asset"], as_of)
        return next((a.evidence for a in assessment.alarms if a.rule == alert["rule"]), None)

    def what_if(self, tenant: str, asset: str, question: BaseModel, now_ns: int) -> dict[str, Any]:
        """For each limit a trend heads for (the engine's service limits, each shaft bearing's zone D): the share of
        the trend's bootstrap replicates that reach it before maintenance postponed by ``postpone_days``."""
        q = VesselQuestion.model_validate(question)
        newest = self.newest_ns(tenant, asset)
        if newest is None:
            raise SimulationError(f"no engine or shaft data for {asset!r}")
        w = self.windows(tenant, asset, min(newest, now_ns))
        if not len(w):
            raise SimulationError(f"{asset!r} has not run steadily above {100 * self.config.steady.min_load:.0f} % "
                                  "load in its history")
        as_of = int(w.t_ns[-1])
        fits: dict[str, tuple[str, TrendFit, float]] = {}
        _, perf = engine.performance(w, self.config, as_of)
        if perf is not None:
            for key, (fit, limit) in perf["fits"].items():
                fits[f"engine_{key}"] = (f"engine {key.replace('_', ' ')} reaches its service limit", fit, limit)
        zone_d = SeverityClass(self.config.shaft.group, self.config.shaft.foundation).limit_of("D")
        for k in shaft.bearings(list(w.values)):
            fit = shaft.zone_d_fit(w, self.config, as_of, k)
            if fit is not None:
                fits[f"shaft_bearing_{k}"] = (f"shaft bearing {k} vibration reaches zone D", fit, zone_d)
        if not fits:
            raise SimulationError(f"{asset!r}: too little steady running in its history for a trend")
        days = (as_of - min(f.t_ref_ns for _, f, _ in fits.values())) / _DAY_NS
        items = {name: {"what": what, "limit": limit,
                        "probability_before": round(fit.probability_by(limit, (as_of - fit.t_ref_ns) / _DAY_NS
                                                                       + q.postpone_days), 3),
                        "trend_per_day": fit.b, "model": fit.model, "bootstrap": len(fit.boot)}
                 for name, (what, fit, limit) in fits.items()}
        return {"asset": asset, "as_of_ns": as_of, "postpone_days": q.postpone_days,
                "until_ns": as_of + round(q.postpone_days * _DAY_NS), "history_days": round(days, 3),
                "limits": items}
