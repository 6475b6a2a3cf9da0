"""A toy pack loaded from a test folder (``TWIN_PACK_DIRS``): the kettle boils when its water reaches 100 °C.

It exercises the whole seam without touching a core module: its type comes from ``type.yaml``, its rule raises
an alert with evidence that ``explain`` recomputes, its what-if extrapolates the heating rate, its panel is
``panel.js``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cloud.packs.base import Alarm, Assessment, NotRecomputable, Pack, SimulationError

POINT = "water_c"
RULE = "toy-kettle:boiling"
SOURCE = "toy-kettle"
BOIL_C = 100.0
NS = 1_000_000_000


class KettleQuestion(BaseModel):
    """How hot is the water ``minutes`` from now, heating as it does?"""

    model_config = ConfigDict(extra="forbid")
    minutes: float = Field(10.0, gt=0, le=600)


class KettlePack(Pack):
    type_id = "toy-kettle"
    sources = (SOURCE,)
    question = KettleQuestion

    def _last(self, tenant: str, asset: str, as_of_ns: int, window_s: float) -> tuple[list[int], list[float]]:
        ser = self.platform.store.query_range(tenant, asset, POINT, as_of_ns - int(window_s * NS), as_of_ns + 1,
                                              limit=10_000)
        ok = [(t, v) for t, v in zip(ser.t_ns, ser.values, strict=True) if v is not None]
        return [t for t, _ in ok], [v for _, v in ok]

    def _judge(self, tenant: str, asset: str, as_of_ns: int, window_s: float) -> Alarm | None:
        t, v = self._last(tenant, asset, as_of_ns, window_s)
        if not v or v[-1] < BOIL_C:
            return None
        evidence = {"source": SOURCE, "point": POINT, "value": v[-1], "limit": BOIL_C, "at_ns": t[-1],
                    "as_of_ns": as_of_ns, "window_s": window_s, "samples_examined": len(v)}
        return Alarm(RULE, "high", f"boiling: {v[-1]:.1f} °C", evidence, t[-1])

    def assess(self, tenant: str, asset: str, now_ns: int) -> Assessment | None:
        assert self.rules is not None
        alarm = self._judge(tenant, asset, now_ns, self.rules.window_s)
        return Assessment([alarm]) if alarm else Assessment(resolved=[(RULE, "the water is below 100 °C")])

    def explain(self, alert: dict) -> dict | None:
        ev = alert["evidence"]
        if "as_of_ns" not in ev or "window_s" not in ev:
            raise NotRecomputable("the evidence keeps no as_of_ns and window_s")
        found = self._judge(alert["tenant"], alert["asset"], int(ev["as_of_ns"]), float(ev["window_s"]))
        return None if found is None else found.evidence

    def what_if(self, tenant: str, asset: str, question: BaseModel, now_ns: int) -> dict[str, Any]:
        q = KettleQuestion.model_validate(question)
        t, v = self._last(tenant, asset, now_ns, 3600)
        if len(v) < 2 or t[-1] == t[0]:
            raise SimulationError(f"{POINT}: {len(v)} readings in the last hour; a heating rate needs two")
        rate_c_per_s = (v[-1] - v[0]) / ((t[-1] - t[0]) / NS)
        return {"asset": asset, "kind": "toy-kettle", "minutes": q.minutes, "water_c_now": v[-1],
                "water_c_then": v[-1] + rate_c_per_s * q.minutes * 60}
