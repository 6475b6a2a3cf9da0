"""An asset's remaining-useful-life history and its maintenance settings (``cloud/packs/turbofan/rul.py``).

``GET /twins/{asset}/rul``: the estimate and its interval at each cycle, with the actual remaining life where the
failure cycle is known (an operator records it after a teardown; a replay knows it), never used by the model.
``PATCH /twins/{asset}/rul``: the asset's maintenance horizon (cycles; null: the pack's default) and its
known failure cycle, audited. Both live on the twin's model (``model.rul_settings``); the latest estimate is
``model.rul`` on ``GET /twins/{asset}``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from cloud.api.auth import Operator, Viewer
from cloud.api.params import AssetId, Body, End, Start, TimeCursor, invalid
from cloud.api.problems import Problem
from cloud.packs.turbofan.rul import DEFAULT_HORIZON_CYCLES, OUT_POINTS, horizon_of
from models.wire import T_NS_MIN

MAX_LIMIT = 100_000


class RulSettingsIn(Body):
    model_config = ConfigDict(extra="forbid")
    horizon_cycles: float | None = Field(None, ge=0, le=100_000, allow_inf_nan=False,
                                         description="alert when the interval's lower bound reaches this; null: "
                                                     f"the pack's default ({DEFAULT_HORIZON_CYCLES:g})")
    failure_cycle: int | None = Field(None, ge=1, le=1_000_000,
                                      description="the cycle the asset failed or was removed at, when known "
                                                  "(ground truth for the dashboard; never a model input)")
    reason: str = Field("", max_length=2000)


class RulPoint(BaseModel):
    t_ns: int
    cycle: int | None
    rul: float | None
    lower: float | None
    upper: float | None
    actual: float | None = Field(description="failure_cycle - cycle, when the failure cycle is known")


class RulHistoryOut(BaseModel):
    asset: str
    start_ns: int
    end_ns: int
    horizon_cycles: float
    horizon_from: str
    failure_cycle: int | None
    latest: dict[str, Any] | None
    items: list[RulPoint]
    next_cursor: str | None = None


def get_router(platform) -> APIRouter:
    r = APIRouter()
    twins, store = platform.twins, platform.store

    def model_doc(tenant: str, asset: str) -> dict[str, Any]:
        if not twins.exists(tenant, asset):
            raise Problem(404, "Not found", f"no asset {asset!r}")
        return twins.model(tenant, asset)

    @r.get("/twins/{asset}/rul", response_model=RulHistoryOut, tags=["twins"])
    def rul_history(asset: AssetId, p: Viewer, start: Start = None, end: End = None,
                    limit: int = Query(10_000, ge=1, le=MAX_LIMIT), cursor: TimeCursor = None) -> RulHistoryOut:
        """The estimate per cycle from ``start`` (default: the beginning) to ``end`` (default: now), oldest first,
        at most ``limit`` (``next_cursor`` continues)."""
        doc = model_doc(p.tenant, asset)
        end_ns = time.time_ns() if end is None else end
        start_ns = T_NS_MIN if start is None else start
        if end_ns <= start_ns:
            invalid("end", f"must be after start ({start_ns} ns)")
        if cursor is not None:
            start_ns = min(max(start_ns, cursor), end_ns)
        cols = {}
        for point in OUT_POINTS:
            ser = store.read(p.tenant, asset, point, start_ns, end_ns, limit)
            cols[point] = dict(zip(ser.t_ns, ser.values, strict=True))
        t_all = sorted(cols["rul"])[:limit]
        failure = (doc.get("rul_settings") or {}).get("failure_cycle")
        items = []
        for t in t_all:
            c = cols["rul_cycle"].get(t)
            cycle = None if c is None else round(c)
            items.append(RulPoint(t_ns=t, cycle=cycle, rul=cols["rul"].get(t), lower=cols["rul_lower"].get(t),
                                  upper=cols["rul_upper"].get(t),
                                  actual=None if failure is None or cycle is None else float(failure - cycle)))
        horizon, horizon_from = horizon_of(doc)
        return RulHistoryOut(asset=asset, start_ns=start_ns, end_ns=end_ns, horizon_cycles=horizon,
                             horizon_from=horizon_from, failure_cycle=failure, latest=doc.get("rul"), items=items,
                             next_cursor=str(t_all[-1] + 1) if len(t_all) == limit else None)

    @r.patch("/twins/{asset}/rul", tags=["twins"])
    def rul_settings(asset: AssetId, body: RulSettingsIn, p: Operator) -> dict[str, Any]:
        """Set (or, with null, clear) the maintenance horizon and the known failure cycle; fields not sent keep
        their value. The next assessment judges the next cycles against the new horizon."""
        given = body.model_fields_set - {"reason"}
        if not given:
            invalid("horizon_cycles", "send horizon_cycles and/or failure_cycle", "body")
        model_doc(p.tenant, asset)  # 404 for an asset the tenant lacks

        def change(doc: dict[str, Any]) -> dict[str, Any]:
            settings = dict(doc.get("rul_settings") or {})
            for name in given:
                value = getattr(body, name)
                if value is None:
                    settings.pop(name, None)
                else:
                    settings[name] = value
            return {"rul_settings": settings}

        old, new = twins.merge_model(p.tenant, asset, change)  # atomic: the rules' estimate written meanwhile stays
        before, after = old.get("rul_settings") or {}, new["rul_settings"]
        with platform.registry.session() as s:
            platform.registry.audit(s, p.tenant, p.actor, "twin.rul_settings.put", f"asset:{asset}",
                                    reason=body.reason, before=before, after=after)
        horizon, horizon_from = horizon_of({"rul_settings": after})
        return {"asset": asset, **after, "horizon_cycles": horizon, "horizon_from": horizon_from}

    return r
