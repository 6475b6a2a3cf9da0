"""The refrigerated-trailer pack: the cold-chain rules applied to a reefer every cycle, their recomputation for
an auditor, and the thermal twin's what-if.

The rules themselves are ``cloud.rules.coldchain.reefer`` (excursions against a profile, defrost, compressor
failure, door, sensors, power loss, the predicted excursion), shared with shipments and ``twin coldchain
evaluate``; this is how the platform applies them to one trailer's recent history:

- each assessment reads the last ``window_s`` of samples, and further back when late data arrived (an outage
  of days: back to the earliest sample written, minus the window, so its counters start from what came before),
  and records in the evidence what it read and which profiles, custody and settings it applied
  (``assessment``), so ``explain`` can run the same rules on the same data;
- the product is judged by the profile of the shipment in custody at each moment (custody legs in the
  registry; a hand-over mid-route changes the profile there), except a lot whose product names a profile of its
  own, judged by that one over its time on board; readings no shipment owned by the deployment's ``profile``;
- an episode that began at the first sample looked at, when the data reaches back to the window's edge, was
  seen whole by an earlier assessment: cut off there it would be a different, shorter one, so it is left out;
- late or not (``detected_late``) is decided when an episode is first found, not at each re-assessment;
- a trailer whose compressor stopped while it should be cooling gets its calibrated thermal twin run forward:
  "excursion expected in N min" is one open alert, refreshed while the forecast still crosses the profile's
  limit and resolved when it no longer does or the real excursion begins.

Runner options it reads: ``profile`` (a cold-chain profile name or ``Profile``, for readings no shipment owns;
a shipment may name it too) and ``reefer_settings`` (``ReeferRuleSettings``).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select

from cloud.packs.base import Alarm, Assessment, NotRecomputable, Pack, RuleContext, SimulationError
from cloud.registry import Alert, Batch, CustodyLeg, Shipment
from cloud.rules.coldchain import predict, reefer
from cloud.rules.coldchain.profiles import Profile, ProfileError, load_profile, parse_profile

log = logging.getLogger("cloud.packs.refrigerated_trailer")
NS = 1_000_000_000
DEFAULT_PROFILE = "who-30-day-refrigerator"
EDGE_SLACK_S = 1800
"""Data starting this close after the look-back window's start is taken to continue before it."""


class TrailerQuestion(BaseModel):
    """What if the compressor stopped, the door stayed open, the ambient or the setpoint changed: when does the
    supply air pass ``limit_c`` within ``horizon_h``?"""

    model_config = ConfigDict(extra="forbid")
    horizon_h: float = Field(6.0, gt=0, le=72)
    limit_c: float = Field(8.0, ge=-50, le=70)
    compressor_off: bool = False
    door_open_min: float = Field(0.0, ge=0, le=24 * 60)
    ambient_offset_c: float = Field(0.0, ge=-40, le=40)
    setpoint_c: float | None = Field(None, ge=-35, le=30)


class ReeferPack(Pack):
    type_id = reefer.ASSET_TYPE
    sources = (reefer.SOURCE,)
    not_compared = {
        "detected_late": "when the data arrived, not what it says: fixed when the episode was first found, which a "
                         "later look at the same data cannot know",
    }
    question = TrailerQuestion
    counter_names = ("rules_forecasts", "rules_forecast_failures")

    def __init__(self, platform: Any, rules: RuleContext | None = None) -> None:
        super().__init__(platform, rules)
        options = rules.options if rules is not None else {}
        profile = options.get("profile") or DEFAULT_PROFILE
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile)
        self.settings: reefer.ReeferRuleSettings = options.get("reefer_settings") or reefer.ReeferRuleSettings()
        self.limit_c = predict.profile_limit_c(self.profile, self.settings.forecast_limit_c)
        self._late: dict[tuple[str, str, str, int], bool] = {}
        self._predicted: set[tuple[str, str]] | None = None  # open predictive alerts (loaded once)
        self._profiles: dict[str, Profile] = {self.profile.name: self.profile}

    # -- assess -----------------------------------------------------------------------------------
    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment | None:
        assert self.rules is not None, "assess runs in a rule runner"
        window_ns = int(self.rules.window_s * NS)
        since = now_ns - window_ns
        written = getattr(self.rules, "written_from", lambda *_: None)(tenant, asset)
        if written is not None and written - window_ns < since:
            since = written - window_ns  # late data older than the window: judged now, with what preceded it
        samples = reefer.load_samples(self.platform.store, tenant, asset, since, now_ns + 1)
        if "supply_air" not in samples:
            return None
        offline = self.rules.asset_offline(tenant, asset)
        # what an auditor's recomputation needs (explain): the data read, and the rules applied
        custody = self._custody(tenant, asset, since, now_ns)
        assessed = {"as_of_ns": now_ns, "from_ns": since, "offline": offline,
                    "profile": self.profile.model_dump(mode="json"), "settings": self.settings.model_dump(),
                    "custody": [_span_json(x) for x in custody]}
        out = reefer.assess_trailer(samples, self.profile, self.settings, now_ns=now_ns, offline=offline,
                                    custody=custody)
        first = min(int(series.t_ns[0]) for series in samples.values())
        cut = first if first - since < EDGE_SLACK_S * NS else None
        alarms = [a for a in out.alarms if cut is None or a.evidence["window"]["start_ns"] > cut]
        now_span = next((x for x in reversed(custody) if x.lots is None and x.from_ns <= now_ns
                         and (x.to_ns is None or x.to_ns > now_ns)), None)
        limit_c = self.limit_c if now_span is None else \
            predict.profile_limit_c(now_span.profile, self.settings.forecast_limit_c)  # the load on board now
        predicted, resolved = self._predict(tenant, asset, samples, now_ns, limit_c)
        if predicted is not None:
            alarms = [*alarms, predicted]
        for a in alarms:
            key = (tenant, asset, a.rule, a.evidence["window"]["start_ns"])
            a.evidence["detected_late"] = self._late.setdefault(key, a.evidence["detected_late"])
            a.evidence.update(source=reefer.SOURCE, assessment=assessed)
        forget = since - window_ns
        self._late = {k: v for k, v in self._late.items() if k[3] >= forget}
        return Assessment([Alarm(a.rule, a.severity, a.title, a.evidence, a.fired_at_ns) for a in alarms], resolved)

    def _custody(self, tenant: str, asset: str, since: int, until: int) -> list[reefer.ProfileSpan]:
        """The shipments in ``asset`` over [since, until], each with its profile over its leg, and the lots
        whose product names another profile, over their time on board within the leg."""
        with self.platform.registry.session() as s:
            rows = s.execute(select(CustodyLeg, Shipment).join(Shipment, (Shipment.tenant == CustodyLeg.tenant) & (
                Shipment.id == CustodyLeg.shipment)).where(
                CustodyLeg.tenant == tenant, CustodyLeg.asset == asset, CustodyLeg.from_ns <= until,
                or_(CustodyLeg.to_ns.is_(None), CustodyLeg.to_ns > since)).order_by(CustodyLeg.from_ns)).all()
            lots = {sh.id: list(s.scalars(select(Batch).where(Batch.tenant == tenant, Batch.shipment == sh.id,
                                                              Batch.profile.is_not(None))))
                    for _, sh in rows}
        spans = []
        for leg, sh in rows:
            own = [b for b in lots[sh.id] if b.profile != sh.profile]  # judged by their product's profile instead
            spans.append(reefer.ProfileSpan(self._profile(sh.profile), leg.from_ns, leg.to_ns, sh.id,
                                            exclude=tuple(b.lot for b in own)))
            for b in own:
                start = max(leg.from_ns, b.loaded_ns if b.loaded_ns is not None else leg.from_ns)
                ends = [x for x in (leg.to_ns, b.unloaded_ns) if x is not None]
                end = min(ends) if ends else None
                if end is None or start < end:
                    spans.append(reefer.ProfileSpan(self._profile(b.profile), start, end, sh.id, (b.lot,)))
        return spans

    def _profile(self, name: str) -> Profile:
        """A shipment's or product's profile by name: the deployment's own, or a shipped one."""
        if name not in self._profiles:
            try:
                self._profiles[name] = load_profile(name)
            except ProfileError as exc:  # a shipment names what this deployment cannot read: judged by default
                log.warning("rules: profile %r: %s; judging by %s", name, exc, self.profile.name)
                self._profiles[name] = self.profile
        return self._profiles[name]

    def _predict(self, tenant: str, asset: str, samples: dict, now_ns: int,
                 limit_c: float) -> tuple[reefer.LiveAlarm | None, list[tuple[str, str]]]:
        """The predictive alert for a trailer whose cooling stopped, or None — and resolving an open one then;
        ``limit_c``: the warm limit of the profile of the load on board now."""
        assert self.rules is not None
        stop = predict.cooling_stopped(samples, limit_c, self.settings, now_ns=now_ns)
        alarm = None
        if stop is not None:
            from cloud.packs.refrigerated_trailer.whatif import thermal_model  # scipy only for trailers needing it

            self.rules.counters["rules_forecasts"] += 1
            try:
                model, _ = thermal_model(self.platform, tenant, asset, stop.last_ns)
            except SimulationError as exc:
                self.rules.counters["rules_forecast_failures"] += 1
                log.warning("rules: no forecast for %s/%s: %s", tenant, asset, exc)
            else:
                alarm = predict.predict_excursion(samples, model, stop, limit_c, self.settings)
        if self._predicted is None:  # one query per worker, not one per trailer and assessment
            with self.platform.registry.session() as s:
                self._predicted = {(t, a) for t, a in s.execute(select(Alert.tenant, Alert.asset).where(
                    Alert.rule == reefer.PREDICTED_RULE, Alert.state != "resolved"))}
        if alarm is not None:
            self._predicted.add((tenant, asset))
            return alarm, []
        if (tenant, asset) in self._predicted:
            self._predicted.discard((tenant, asset))
            why = "the real excursion began" if self._product_at_limit(samples, limit_c) else \
                "the forecast no longer reaches the limit"
            return None, [(reefer.PREDICTED_RULE, why)]
        return None, []

    def _product_at_limit(self, samples: dict, limit_c: float) -> bool:
        series = samples.get(self.settings.product_point)
        return bool(series is not None and len(series.values) and series.values[-1] is not None
                    and series.values[-1] >= limit_c)

    # -- explain ----------------------------------------------------------------------------------
    def explain(self, alert: dict) -> dict | None:
        """The trailer's samples over the window the runner read, judged by the profile and settings it applied
        (recorded in ``assessment``); the last alarm of the same rule and episode start, else that rule's last."""
        ev = alert["evidence"]
        asm = ev.get("assessment")
        if not isinstance(asm, dict):
            raise NotRecomputable("the evidence records no assessment (window, profile, settings): raised before "
                                  "cold-chain alerts recorded what recomputing them needs")
        try:
            profile = parse_profile(asm["profile"], "evidence.assessment.profile")
            settings = reefer.ReeferRuleSettings(**asm["settings"])
            as_of, since = int(asm["as_of_ns"]), int(asm["from_ns"])
        except (KeyError, TypeError, ValueError, ProfileError) as exc:
            raise NotRecomputable(f"evidence.assessment is incomplete or invalid: {exc}") from None
        samples = reefer.load_samples(self.platform.store, alert["tenant"], alert["asset"], since, as_of + 1)
        if alert["rule"] == reefer.PREDICTED_RULE:
            found = _predicted_again(samples, ev, profile, settings, as_of)
        else:
            try:
                custody = [_span_from_json(x) for x in asm.get("custody") or []] if "custody" in asm else None
            except (KeyError, TypeError, ValueError, ProfileError) as exc:
                raise NotRecomputable(f"evidence.assessment.custody is invalid: {exc}") from None
            out = reefer.assess_trailer(samples, profile, settings, now_ns=as_of, offline=asm.get("offline"),
                                        custody=custody)
            same_rule = [a for a in out.alarms if a.rule == alert["rule"]]
            start = (ev.get("window") or {}).get("start_ns")
            # the runner hands an assessment's alarms over in time order: the last of the rule is what it stored
            found = next((a for a in reversed(same_rule) if a.evidence["window"]["start_ns"] == start),
                         same_rule[-1] if same_rule else None)
        if found is None:
            return None
        return {k: v for k, v in found.evidence.items() if k not in self.not_compared}

    # -- what-if ----------------------------------------------------------------------------------
    def what_if(self, tenant: str, asset: str, question: BaseModel, now_ns: int) -> dict[str, Any]:
        from cloud.packs.refrigerated_trailer.whatif import simulate_trailer  # scipy only when asked

        q = TrailerQuestion.model_validate(question)  # the route validated it with ``question``: as is
        return simulate_trailer(self.platform, tenant, asset, horizon_s=q.horizon_h * 3600, limit_c=q.limit_c,
                                compressor_off=q.compressor_off, door_open_s=q.door_open_min * 60,
                                ambient_offset_c=q.ambient_offset_c, setpoint_c=q.setpoint_c, now_ns=now_ns)


def _span_json(span: reefer.ProfileSpan) -> dict[str, Any]:
    return {"profile": span.profile.model_dump(mode="json"), "from_ns": span.from_ns, "to_ns": span.to_ns,
            "shipment": span.shipment, "lots": list(span.lots) if span.lots else None, "exclude": list(span.exclude)}


def _span_from_json(d: dict[str, Any]) -> reefer.ProfileSpan:
    return reefer.ProfileSpan(parse_profile(d["profile"], "evidence.assessment.custody.profile"), int(d["from_ns"]),
                              None if d["to_ns"] is None else int(d["to_ns"]), str(d["shipment"]),
                              tuple(d["lots"]) if d.get("lots") else None, tuple(d.get("exclude") or ()))


def _predicted_again(samples: dict, ev: dict, profile: Profile, settings: reefer.ReeferRuleSettings,
                     as_of: int) -> reefer.LiveAlarm | None:
    """The forecast again, with the thermal model that made it (the twin's is refitted as data comes in)."""
    from cloud.thermal import ThermalModel  # scipy only for predictive alerts

    if "thermal_model" not in ev:
        raise NotRecomputable("the evidence keeps no thermal model: raised before predictive alerts recorded it")
    limit_c = float(ev.get("limit_c", predict.profile_limit_c(profile, settings.forecast_limit_c)))
    stop = predict.cooling_stopped(samples, limit_c, settings, now_ns=as_of)
    if stop is None:
        return None
    return predict.predict_excursion(samples, ThermalModel.from_dict(ev["thermal_model"]), stop, limit_c, settings)
