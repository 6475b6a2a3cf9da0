"""The rotating-machine pack: predictive maintenance from the vibration the edge computes.

Each cycle, a machine that received data gets its broadband velocity trend re-fitted
(``cloud.rules.maintenance.machine_alert``: ISO 10816-3 zone, trend with a bootstrap interval, predicted zone C
and zone D dates); a machine heading for zone D has one open alert, refreshed with new evidence each cycle and
escalated as the date nears. The rule library stays in ``cloud/rules/maintenance.py``: a vessel's shaft line is
judged by the same zones. Its what-if: the chance of reaching zone D if maintenance is postponed by N days.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud.packs.base import Alarm, Assessment, NotRecomputable, Pack
from cloud.rules import maintenance


class MachineQuestion(BaseModel):
    """If maintenance is postponed by ``postpone_days``, how likely is zone D before then?"""

    model_config = ConfigDict(extra="forbid")
    postpone_days: float = Field(0.0, ge=0, le=3650)


class MachinePack(Pack):
    type_id = "rotating-machine"
    sources = (maintenance.RULE,)
    question = MachineQuestion

    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment:
        """As of the machine's newest reading, not ``now_ns``: a gateway back from a day offline delivers a day of
        history at once, and its trend is judged where its data ends."""
        found = maintenance.machine_alert(self.platform.store, tenant, asset)
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
