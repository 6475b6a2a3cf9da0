"""``POST /api/v1/assets/{asset}/simulate``: ask an asset's calibrated model "what if…?". The question and the
model are the asset's pack's (``cloud.packs``): this route only finds the pack and checks the question."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import ConfigDict, Field, ValidationError

from cloud.api.auth import Viewer
from cloud.api.params import AssetId, Body, TimeNs
from cloud.api.problems import Problem
from cloud.packs import SimulationError, pack_for
from cloud.registry import Asset


class SimulateIn(Body):
    """The question, in the fields of the asset's pack (``GET /api/v1/packs`` gives each pack's ``what_if``
    schema): a trailer's compressor_off, door_open_min, ambient_offset_c, setpoint_c over horizon_h against
    limit_c; a machine's postpone_days (probability of reaching zone D before the postponed maintenance)."""

    model_config = ConfigDict(extra="allow")
    at: TimeNs | None = Field(None, description="ask as of this time (ns or ISO 8601; default now): backtest a what-if")


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    @r.post("/assets/{asset}/simulate", tags=["twins"])
    def simulate(asset: AssetId, body: SimulateIn, p: Viewer) -> dict[str, Any]:
        at_ns = time.time_ns() if body.at is None else body.at
        with platform.registry.session() as s:
            a = s.get(Asset, (p.tenant, asset))
        if a is None:
            raise Problem(404, "Not found", f"no asset {asset!r}")
        pack = pack_for(a.type)
        if pack is None or pack.question is None:
            raise Problem(422, "Cannot simulate", f"no what-if model for asset type {a.type!r}")
        try:
            question = pack.question.model_validate(body.model_extra or {})
        except ValidationError as exc:
            errors = [{"where": ".".join(map(str, ("body", *e["loc"]))), "msg": e["msg"]} for e in exc.errors()]
            raise Problem(422, "Invalid request", "; ".join(f"{e['where']}: {e['msg']}" for e in errors),
                          errors=errors) from None
        try:
            return pack(platform).what_if(p.tenant, asset, question, at_ns)
        except SimulationError as exc:
            raise Problem(422, "Cannot simulate", str(exc)) from None

    return r
