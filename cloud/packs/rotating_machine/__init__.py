"""The rotating-machine pack: predictive maintenance from the vibration the edge computes.

Each cycle, a machine that received data gets its broadband velocity trend re-fitted
(``cloud.rules.maintenance.machine_alert``: ISO 20816-3 zone, trend with a bootstrap interval, predicted zone C
and zone D dates), judged by its own class (``cloud.machines``: group and foundation from its profile in the
registry, group 2 rigid when it has none); a machine heading for zone D has one open alert, refreshed with new
evidence each cycle and escalated as the date nears. The zone trend itself (zone now, the dates of crossing into C
and D with their interval) is kept on the twin's model as ``zone_trend``, for the API and the dashboard. The rule
library stays in ``cloud/rules/maintenance.py``: a vessel's shaft line is judged by the same zones. Its what-if: the
chance of reaching zone D if maintenance is postponed by N days.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud.packs.base import Alarm, Assessment, NotRecomputable, Pack
from cloud.rules import maintenance


class MachineQuestion(BaseModel):
    """If maintenance is postponed by ``postpone_days``, how likely is zone D before then?"""

    model_config = ConfigDict(extra="forbid")
    postpone_days: float = Field(0.0, ge=0, le=3650)


def _merge_model(registry, tenant: str, asset: str, part: dict[str, Any]) -> None:
    """Set keys of the twin's model, keeping what other rules keep there (a remaining-life estimate, ...)."""
    from cloud.registry import Twin

    with registry.session() as s:
        row = s.get(Twin, (tenant, asset))
        if row is None:
            s.add(Twin(tenant=tenant, asset=asset, model=part, updated_ns=time.time_ns()))
        else:
            row.model = {**(row.model or {}), **part}
            row.updated_ns = time.time_ns()


class MachinePack(Pack):
    type_id = "rotating-machine"
    sources = (maintenance.RULE,)
    question = MachineQuestion

    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment:
        """As of the machine's newest reading, not ``now_ns``: a gateway back from a day offline delivers a day of
        history at once, and its trend is judged where its data ends."""
        from cloud import machines

        registry = self.platform.registry
        prof, _ = machines.profile(registry, tenant, asset)
        trend = machines.zone_trend(self.platform.store, registry, tenant, asset)
        if trend is not None:
            _merge_model(registry, tenant, asset, {"zone_trend": trend})
        found = maintenance.machine_alert(self.platform.store, tenant, asset, machines.severity_of(prof))
        if found is None:
            return Assessment()
        return Assessment([Alarm(found["rule"], found["severity"], found["title"], found["evidence"],
                                 found["at_ns"])])

    def explain(self, alert: dict) -> dict | None:
        """The live rule as of the reading it was judged at, with its class, window and bootstrap size; the
        bootstrap's seed is fixed, so the same data gives the same dates and intervals."""
        ev = alert["evidence"]
        try:
            th, pts, fit = ev["thresholds"], ev["points"], ev["fit"]
            severity = maintenance.SeverityClass(th["group"], th["foundation"], th["boundary"])
            as_of, window_days, n_boot = int(ev["now_ns"]), pts["window_days"], int(fit["bootstrap"])
        except (KeyError, TypeError, ValueError) as exc:
            raise NotRecomputable(f"the evidence lacks what the trend rule needs: {exc}") from None
        found = maintenance.machine_alert(self.platform.store, alert["tenant"], alert["asset"], severity,
                                          window_days=window_days, n_boot=n_boot, as_of_ns=as_of)
        return None if found is None else found["evidence"]

    def what_if(self, tenant: str, asset: str, question: BaseModel, now_ns: int) -> dict[str, Any]:
        from cloud.packs.rotating_machine.whatif import simulate_machine

        q = MachineQuestion.model_validate(question)
        return simulate_machine(self.platform, tenant, asset, postpone_days=q.postpone_days, now_ns=now_ns)
