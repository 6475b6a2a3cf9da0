"""Live cold-chain rules for a refrigerated trailer: turn its samples into alerts with evidence.

Pure functions over numpy arrays (the store read and the alert write are two thin helpers at the
bottom; what an alarm, its evidence and the samples are is ``cloud.rules.coldchain.live``), so the same
samples always give the same alarms and tests need no servers. What they tell apart, and why it matters to
the people who get the alarm:

* **excursion** — the product temperature broke a profile boundary (the same ``evaluate`` as
  ``twin coldchain evaluate``): quality must decide about the load;
* **defrost** — recognised, *not* an excursion (Carrier 69NT40: return air reads warm while the heaters
  run); its readings are paused in the excursion counters, never averaged away by MKT (Vaisala). A
  defrost longer than ``defrost_max_s`` (Carrier's forced end, AL60) is an alarm of its own;
* **compressor failure** — no compressor current while the control air is well above the setpoint,
  i.e. the thermostat must be calling: a mechanic must come before the load warms;
* **door open too long** — a driver must close it;
* **sensor fault** — a reading outside the point's physical range, or a temperature sensor stuck on one
  value while its neighbour moves: the data, not the load, is suspect;
* **power loss** — the trailer fell silent (no point reported; its gateway usually goes offline with
  it) and came back warmer: the unit had no power, so it is not a compressor failure and nobody needs to
  send a mechanic, but the load warmed while nobody could see it;
* **excursion predicted** — the compressor is not running while the thermostat must be calling, and the
  trailer's calibrated thermal twin says when the product air will reach the profile's limit: the one
  alarm that comes *before* the load is harmed (``cloud.rules.coldchain.predict``, a job of its own: it
  runs a model forward, where this module reads what happened).

A unit that reports its defrost state gives it as point ``defrost`` (1 = defrosting) and that is used
as is; otherwise defrost is recognised from the data: compressor off, air warming, and supply air
*above* return air (the heaters warm the air leaving the evaporator; with the compressor merely off the
two read the same). While the air warms, supply air lags its target, which hides most of the heater's
offset, so the gap is corrected by ``supply_lag_s`` times the supply air's rate of rise (the target of
a first-order lag is ``x + τ·dx/dt``): on the simulator that gives 0.35 to 0.45 K in defrost and 0.0 K for
a failed compressor from 10 to 45 °C ambient. A heuristic, tuned on the simulator's physics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from cloud.rules.coldchain.excursions import Evaluation, evaluate, iso
from cloud.rules.coldchain.live import (
    CLASSIFICATIONS,
    PREDICTED_RULE,
    SOURCE,
    LiveAlarm,
    ProfileSpan,
    ReeferAssessment,
    ReeferEvent,
    ReeferRuleSettings,
    SeriesLike,
    _evidence,
    _runs,
    classify,
    clean,
    held_at,
)
from cloud.rules.coldchain.profiles import Profile
from models.catalogue import get_type

if TYPE_CHECKING:
    from cloud.alerts import AlertService
    from cloud.store import TimeSeriesStore
    from cloud.thermal import ThermalModel

__all__ = ["ASSET_TYPE", "CLASSIFICATIONS", "POINTS", "PREDICTED_RULE", "SOURCE", "LiveAlarm", "ProfileSpan",
           "ReeferAssessment", "ReeferEvent", "ReeferRuleSettings", "SeriesLike", "assess_trailer", "classify", "clean",
           "held_at", "load_samples", "raise_alarms"]
_NS = 1_000_000_000
ASSET_TYPE = "refrigerated-trailer"
TEMPERATURE_PAIRS = {"supply_air": "return_air", "return_air": "supply_air"}
_ALERT_SEVERITY = {"notification": "low"}  # the alert scale has no "notification"


def assess_trailer(samples: Mapping[str, SeriesLike], profile: Profile,
                   settings: ReeferRuleSettings | None = None, now_ns: int | None = None,
                   thermal: ThermalModel | None = None,
                   offline: list[tuple[int, int | None]] | None = None,
                   custody: list[ProfileSpan] | None = None) -> ReeferAssessment:
    """Every cold-chain alarm in one trailer's samples (point -> series), and the defrosts recognised.

    ``now_ns`` (when the data became available) marks alarms that fired more than ``late_after_s``
    earlier as ``detected_late`` — data from an outage is judged too, and an auditor sees it was late.
    With the trailer's calibrated ``thermal`` model a compressor failure's evidence says when the air
    will reach ``forecast_limit_c`` (with its band): how long a mechanic has. ``offline`` lists the
    trailer's gateway's offline intervals (status / last will; end None = still offline), when known:
    a power loss's evidence then says whether the gateway went down with the unit.

    ``custody``: the shipments (and lots with a product profile of their own) in the trailer, each judged by
    its own profile over its own time on board; readings no shipment owned are judged by ``profile`` (the
    deployment's, for an empty or unregistered trailer). None: all of it by ``profile``.
    """
    s = settings or ReeferRuleSettings()
    pts = {name: clean(series) for name, series in samples.items()}
    out = ReeferAssessment()
    out.alarms += _power_loss(pts, s, offline)
    out.alarms += _sensor_range(pts)
    stuck = _sensor_stuck(pts, s)
    out.alarms += stuck
    out.alarms += _door_open_long(pts, s)
    product = pts.get(s.product_point)
    if product is None or product[0].size == 0:
        return _finish(out, s, now_ns)
    grid = product[0]
    defrosts, failures = _compressor_off_episodes(pts, grid, s)
    out.events += defrosts
    out.alarms += failures
    if thermal is not None:
        for a in failures:
            a.evidence["forecast"] = _failure_forecast(samples, thermal, a.fired_at_ns, s.forecast_limit_c)
    paused = np.zeros(grid.size, bool)
    control, setpoint = _control_air(pts, grid)
    max_ns = round(s.defrost_max_s * _NS)
    for d in defrosts:
        if d.end_ns - d.start_ns > max_ns:  # a stuck defrost is paused only as long as a normal one may last
            paused |= (grid >= d.start_ns) & (grid < d.start_ns + max_ns)
        else:
            paused |= (grid >= d.start_ns) & (grid < d.end_ns)
            recovering = (grid >= d.end_ns) & (grid < d.end_ns + round(s.defrost_recovery_s * _NS))
            back = np.flatnonzero(recovering & ~(control > setpoint + s.calling_margin_c))
            until = grid[back[0]] if back.size else d.end_ns + round(s.defrost_recovery_s * _NS)
            paused |= (grid >= d.end_ns) & (grid < until)
        if d.end_ns - d.start_ns > max_ns:
            at = d.start_ns + round(s.defrost_max_s * _NS)
            out.alarms.append(LiveAlarm(
                "coldchain:defrost-stuck", "high", at, f"defrost longer than {s.defrost_max_s / 3600:g} h",
                _evidence("defrost-stuck", d.start_ns, d.end_ns, {"defrost_s": (d.end_ns - d.start_ns) / _NS},
                          {"defrost_max_s": s.defrost_max_s})))
    suspect = [a.rule for a in stuck if a.evidence["values"]["point"] == s.product_point]
    spans = [(ProfileSpan(profile, int(grid[0]), None, ""), None)] if custody is None else \
        [(span, span.mask(grid)) for span in custody]
    if custody is not None:  # what no shipment owned: the deployment's profile
        owned = np.zeros(grid.size, bool)
        for span, m in spans:
            if span.lots is None:
                owned |= m
        if (~owned).any():
            spans.insert(0, (ProfileSpan(profile, int(grid[0]), None, ""), ~owned))
    for span, m in spans:
        if m is not None and not m.any():
            continue
        ev = evaluate(grid, product[1], span.profile, paused=paused) if m is None else \
            evaluate(grid[m], product[1][m], span.profile, paused=paused[m])
        if span.shipment == "" or out.evaluation is None:
            out.evaluation = ev
        out.alarms += _profile_alarms(ev, span, s, suspect)
    return _finish(out, s, now_ns)


def _profile_alarms(ev: Evaluation, span: ProfileSpan, s: ReeferRuleSettings, suspect: list[str]) -> list[LiveAlarm]:
    """The profile's alarms over one span as live alarms; a shipment's name its shipment and lots."""
    profile, out = span.profile, []
    for a in ev.alarms:
        b = next(r.boundary for r in ev.boundaries if r.boundary.name == a.boundary)
        values = {"point": s.product_point, "reading_c": a.value_c, "counter_s": a.counter_s,
                  "out_of_range_s": a.out_of_range_s, "occurrence": a.occurrence, "paused_s": ev.paused_s,
                  "sensor_suspect": suspect}
        if span.shipment:
            values.update(shipment=span.shipment, lots=list(span.lots) if span.lots else None,
                          except_lots=list(span.exclude))
        thresholds = {"profile": profile.name, "boundary": b.name, "condition": b.condition(), "after_s": b.after,
                      "mode": b.mode}
        out.append(LiveAlarm(
            f"coldchain:{profile.name}:{b.name}{span.suffix if span.shipment else ''}",
            _ALERT_SEVERITY.get(b.severity, b.severity), a.fired_at_ns,
            f"{s.product_point} {b.condition()} for {a.counter_s / 3600:g} h ({b.mode})",
            _evidence(f"{profile.name}:{b.name}", a.excursion_start_ns, a.fired_at_ns, values, thresholds)))
    return out


def _finish(out: ReeferAssessment, s: ReeferRuleSettings, now_ns: int | None) -> ReeferAssessment:
    for a in out.alarms:
        a.evidence.setdefault("classification", classify(a.rule))
        a.evidence["detected_late"] = now_ns is not None and now_ns - a.fired_at_ns > s.late_after_s * _NS
    out.alarms.sort(key=lambda a: (a.fired_at_ns, a.rule))
    return out


def _compressor_off_episodes(pts: dict[str, tuple[np.ndarray, np.ndarray]], grid: np.ndarray,
                             s: ReeferRuleSettings) -> tuple[list[ReeferEvent], list[LiveAlarm]]:
    """Runs with the compressor off that get warm: defrost (heater signature or reported) or failure."""
    if "compressor_current" not in pts or "setpoint" not in pts:
        return [], []
    current = held_at(*pts["compressor_current"], grid)
    control, setpoint = _control_air(pts, grid)
    supply, ret = (held_at(*pts[p], grid) if p in pts else np.full(grid.size, np.nan)
                   for p in ("supply_air", "return_air"))
    reported = held_at(*pts["defrost"], grid) >= 0.5 if "defrost" in pts else None
    warm = control > setpoint + s.calling_margin_c
    heater_gap = supply + s.supply_lag_s * _rate_per_s(grid, supply) - ret
    defrosts, alarms = [], []
    for a, b in _runs(current < s.off_current_a):
        end_ns = int(grid[b]) if b < grid.size else int(grid[-1])
        hot = np.flatnonzero(warm[a:b]) + a
        if reported is not None and reported[a:b].any():
            on = np.flatnonzero(reported[a:b]) + a
            defrosts.append(ReeferEvent("defrost", int(grid[on[0]]), int(grid[on[-1] + 1]) if on[-1] + 1 < grid.size
                                        else end_ns))
            continue
        if hot.size == 0:
            continue  # the thermostat is satisfied: a normal off cycle
        gap = float(np.nanmedian(heater_gap[hot])) if np.isfinite(heater_gap[hot]).any() else float("nan")
        if gap > s.defrost_gap_c:
            # At most ``defrost_warmup_s`` before the air turned warm: on a cold night the compressor may
            # have been off for hours before the heaters came on, and those hours are neither defrost (nor
            # a stuck one) nor to be paused.
            start = max(int(grid[a]), int(grid[hot[0]]) - round(s.defrost_warmup_s * _NS))
            defrosts.append(ReeferEvent("defrost", int(grid[np.searchsorted(grid, start)]), end_ns))
            continue
        warm_since = int(grid[hot[0]])
        if end_ns - warm_since < s.compressor_confirm_s * _NS:
            continue
        at = warm_since + round(s.compressor_confirm_s * _NS)
        k = min(int(np.searchsorted(grid, at)), grid.size - 1)
        values = {"off_since": iso(int(grid[a])), "warm_since": iso(warm_since),
                  "control_air_c": float(control[k]), "setpoint_c": float(setpoint[k]),
                  "max_current_a": float(np.nanmax(current[a:b])), "supply_minus_return_c": gap,
                  "ongoing": b >= grid.size}
        alarms.append(LiveAlarm(
            "coldchain:compressor-failure", "critical", at,
            f"compressor not running while the air is {float(control[k]) - float(setpoint[k]):.1f} K above setpoint",
            _evidence("compressor-failure", int(grid[a]), None if b >= grid.size else end_ns, values,
                      {"off_current_a": s.off_current_a, "calling_margin_c": s.calling_margin_c,
                       "compressor_confirm_s": s.compressor_confirm_s, "defrost_gap_c": s.defrost_gap_c,
                       "supply_lag_s": s.supply_lag_s})))
    return defrosts, alarms


def _failure_forecast(samples: Mapping[str, SeriesLike], thermal: ThermalModel, at_ns: int,
                      limit_c: float) -> dict[str, Any]:
    from cloud.thermal import Scenario, ThermalFitError, TrailerHistory  # scipy only when a model is given

    try:
        history = TrailerHistory.from_samples(samples)
    except ThermalFitError as exc:
        return {"error": str(exc)}
    history = history.window(int(history.t_ns[0]), at_ns + 1)
    f = thermal.forecast(history, 12 * 3600, Scenario(compressor_off=True), limit_c=limit_c)

    def when(t: int | None) -> str | None:
        return iso(t) if t is not None else None

    return {"limit_c": limit_c, "excursion_at": when(f.excursion_ns), "earliest": when(f.earliest_ns),
            "latest": when(f.latest_ns), "excursion_ns": f.excursion_ns, "earliest_ns": f.earliest_ns,
            "latest_ns": f.latest_ns, "horizon_s": 12 * 3600.0}


def _control_air(pts: dict[str, tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the air the thermostat controls, the setpoint) on the grid: supply air for perishable setpoints,
    return air for frozen ones (Carrier T-363), whichever exists when only one does; NaN if unknown."""
    nan = np.full(grid.size, np.nan)
    setpoint = held_at(*pts["setpoint"], grid) if "setpoint" in pts else nan
    supply, ret = (held_at(*pts[p], grid) if p in pts else nan for p in ("supply_air", "return_air"))
    control = np.where(setpoint >= -10.0, supply, ret)
    return np.where(np.isnan(control), np.where(np.isnan(ret), supply, ret), control), setpoint


def _rate_per_s(t_ns: np.ndarray, v: np.ndarray, half: int = 2) -> np.ndarray:
    """Slope over ±``half`` samples (smoother than neighbours on 0.1 K-quantised data); NaN at the ends."""
    out = np.full(v.shape, np.nan)
    if v.size > 2 * half:
        dt = (t_ns[2 * half:] - t_ns[:-2 * half]) / _NS
        with np.errstate(divide="ignore", invalid="ignore"):
            out[half:-half] = (v[2 * half:] - v[:-2 * half]) / dt
    return out


def _door_open_long(pts: dict[str, tuple[np.ndarray, np.ndarray]], s: ReeferRuleSettings) -> list[LiveAlarm]:
    if "door" not in pts:
        return []
    t, v = pts["door"]
    alarms = []
    for a, b in _runs(v >= 0.5):
        closed = int(t[b]) if b < t.size else None
        open_until = closed if closed is not None else int(t[-1])
        if open_until - int(t[a]) < s.door_max_s * _NS:
            continue
        at = int(t[a]) + round(s.door_max_s * _NS)
        values = {"opened_at": iso(int(t[a])), "closed_at": iso(closed) if closed else None,
                  "open_s": (open_until - int(t[a])) / _NS, "still_open": closed is None}
        if "supply_air" in pts:
            ts, vs = pts["supply_air"]
            during = (ts >= t[a]) & (ts <= open_until)
            if during.any():
                values["supply_air_max_c"] = float(vs[during].max())
        alarms.append(LiveAlarm("coldchain:door-open-long", "medium", at,
                                f"door open longer than {s.door_max_s / 60:g} min",
                                _evidence("door-open-long", int(t[a]), closed, values, {"door_max_s": s.door_max_s})))
    return alarms


def _sensor_range(pts: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[LiveAlarm]:
    """Readings outside the point's physical range (the asset-type catalogue): the sensor, not the load."""
    alarms = []
    for name, spec in get_type(ASSET_TYPE).points.items():
        if name not in pts or spec.physical_range is None:
            continue
        t, v = pts[name]
        lo, hi = spec.physical_range
        bad = (v < lo) | (v > hi)
        if bad.any():
            first = int(np.argmax(bad))
            alarms.append(LiveAlarm(
                f"coldchain:sensor-range:{name}", "medium", int(t[first]),
                f"{name} reads outside its physical range {lo:g}..{hi:g}",
                _evidence(f"sensor-range:{name}", int(t[first]), int(t[np.flatnonzero(bad)[-1]]),
                          {"point": name, "count": int(bad.sum()), "min": float(v[bad].min()),
                           "max": float(v[bad].max())}, {"physical_range": [lo, hi]})))
    return alarms


def _sensor_stuck(pts: dict[str, tuple[np.ndarray, np.ndarray]], s: ReeferRuleSettings) -> list[LiveAlarm]:
    """A temperature sensor repeating one value for ``stuck_s`` while the other air sensor moves."""
    alarms = []
    for name, neighbour in TEMPERATURE_PAIRS.items():
        if name not in pts or neighbour not in pts:
            continue
        t, v = pts[name]
        tn, vn = pts[neighbour]
        if t.size < 2:
            continue
        # a hole in the data is not a repeated value: a run of repeats breaks at any step over 5 spacings
        step = np.diff(t)
        same = np.concatenate(([False], (v[1:] == v[:-1]) & (step <= 5 * np.median(step))))
        for a, b in _runs(same):
            start, end = int(t[a - 1]), int(t[b - 1])
            if end - start < s.stuck_s * _NS:
                continue
            moving = vn[(tn >= start) & (tn <= end)]
            if moving.size < 2 or float(np.ptp(moving)) < s.stuck_neighbour_range_c:
                continue
            alarms.append(LiveAlarm(
                f"coldchain:sensor-stuck:{name}", "medium", start + round(s.stuck_s * _NS),
                f"{name} stuck at {float(v[a]):g} while {neighbour} moves",
                _evidence(f"sensor-stuck:{name}", start, end, {"point": name, "value": float(v[a]),
                                                               "neighbour": neighbour,
                                                               "neighbour_range_c": float(np.ptp(moving))},
                          {"stuck_s": s.stuck_s, "neighbour_range_c": s.stuck_neighbour_range_c})))
    return alarms


def _power_loss(pts: dict[str, tuple[np.ndarray, np.ndarray]], s: ReeferRuleSettings,
                offline: list[tuple[int, int | None]] | None) -> list[LiveAlarm]:
    """Silences of the whole unit (no point reported for ``power_gap_s``) after which the air is warmer.

    A gateway that only lost its link keeps every sample in its outbox and sends them late, so its data
    has no hole; a hole in every point means the sensors had no power, and a warmer box after it means
    the refrigeration had none either. When the gateway's status is known it must have gone offline too
    (a gateway that stayed up through the hole lost samples, the unit did not lose power). Raised when
    data returns — the first moment anyone can know.
    """
    air = next((p for p in ("return_air", "supply_air") if p in pts and pts[p][0].size >= 2), None)
    if air is None:
        return []
    every = np.unique(np.concatenate([t for t, _ in pts.values()]))
    gaps = np.flatnonzero(np.diff(every) >= round(s.power_gap_s * _NS))
    t_air, v_air = pts[air]
    alarms = []
    for i in gaps.tolist():
        before_ns, after_ns = int(every[i]), int(every[i + 1])
        k = int(np.searchsorted(t_air, before_ns, side="right")) - 1
        j = int(np.searchsorted(t_air, after_ns, side="left"))
        if k < 0 or j >= t_air.size:
            continue
        before_c, after_c = float(v_air[k]), float(v_air[j])
        if after_c - before_c < s.power_rise_c:
            continue  # the unit kept cooling through the hole: a communication gap, not a power loss
        gateway_offline = None if offline is None else any(
            a < after_ns and (b is None or b > before_ns) for a, b in offline)
        if gateway_offline is False:
            continue  # its gateway stayed up and saw nothing: samples lost on the way, not the unit's power
        values = {"point": air, "silent_from": iso(before_ns), "silent_until": iso(after_ns),
                  "silent_s": (after_ns - before_ns) / _NS, "before_c": before_c, "after_c": after_c,
                  "rise_c": round(after_c - before_c, 3), "gateway_offline": gateway_offline}
        if "compressor_current" in pts:
            tc, vc = pts["compressor_current"]
            back = vc[(tc >= after_ns) & (tc < after_ns + round(s.power_gap_s * _NS))]
            values["compressor_running_after"] = bool(back.size and float(back.max()) >= s.off_current_a)
        alarms.append(LiveAlarm(
            "coldchain:power-loss", "high", after_ns,
            f"no power for {(after_ns - before_ns) / 60 / _NS:.0f} min: {air} {after_c - before_c:+.1f} K when "
            "data returned",
            _evidence("power-loss", before_ns, after_ns, values,
                      {"power_gap_s": s.power_gap_s, "power_rise_c": s.power_rise_c})))
    return alarms


# -- I/O at the edges ------------------------------------------------------------------------------


POINTS = ("supply_air", "return_air", "setpoint", "door", "compressor_current", "ambient", "defrost")


def load_samples(store: TimeSeriesStore, tenant: str, asset: str, start_ns: int, end_ns: int,
                 points: tuple[str, ...] = POINTS, limit: int = 200_000) -> dict[str, SeriesLike]:
    """A trailer's raw samples from the store, the points the rules read (absent points are left out)."""
    out: dict[str, SeriesLike] = {}
    for p in points:
        series = store.query_range(tenant, asset, p, start_ns, end_ns, limit=limit)
        if series.t_ns:
            out[p] = series
    return out


def raise_alarms(alerts: AlertService, tenant: str, asset: str, alarms: list[LiveAlarm]) -> list[tuple[int, bool]]:
    """Hand alarms to the alert service (one open alert per rule: repeats refresh it)."""
    return [alerts.raise_alert(tenant, asset, a.rule, a.severity, a.title, a.evidence, at_ns=a.fired_at_ns)
            for a in alarms]
