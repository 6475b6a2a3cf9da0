"""``POST /api/v1/assets/{asset}/simulate``: ask an asset's calibrated model "what if…?"."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import Field

from cloud.api.auth import Viewer
from cloud.api.params import AssetId, Body, TimeNs
from cloud.api.problems import Problem
from cloud.simulate import SimulationError, asset_kind, simulate_trailer


class SimulateIn(Body):
    """Trailers: compressor_off, door_open_min, ambient_offset_c, setpoint_c over horizon_h against limit_c.
    Machines: postpone_days (probability of reaching zone D before the postponed maintenance)."""

    horizon_h: float = Field(6.0, gt=0, le=72)
    limit_c: float = 8.0
    compressor_off: bool = False
    door_open_min: float = Field(0.0, ge=0, le=24 * 60)
    ambient_offset_c: float = Field(0.0, ge=-40, le=40)
    setpoint_c: float | None = Field(None, ge=-35, le=30)
    postpone_days: float | None = Field(None, ge=0, le=3650)
    at: TimeNs | None = Field(None, description="ask as of this time (ns or ISO 8601; default now): backtest a what-if")


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    @r.post("/assets/{asset}/simulate", tags=["twins"])
    def simulate(asset: AssetId, body: SimulateIn, p: Viewer) -> dict[str, Any]:
        at_ns = time.time_ns() if body.at is None else body.at
        try:
            kind = asset_kind(platform, p.tenant, asset)
        except LookupError as exc:
            raise Problem(404, "Not found", str(exc)) from None
        try:
            if kind == "refrigerated-trailer":
                return simulate_trailer(platform, p.tenant, asset, horizon_s=body.horizon_h * 3600,
                                        limit_c=body.limit_c, compressor_off=body.compressor_off,
                                        door_open_s=body.door_open_min * 60, ambient_offset_c=body.ambient_offset_c,
                                        setpoint_c=body.setpoint_c, now_ns=at_ns)
            if kind == "rotating-machine":
                from cloud.simulate_machine import simulate_machine

                return simulate_machine(platform, p.tenant, asset, postpone_days=body.postpone_days or 0.0,
                                        now_ns=at_ns)
        except SimulationError as exc:
            raise Problem(422, "Cannot simulate", str(exc)) from None
        raise Problem(422, "Cannot simulate", f"no what-if model for asset type {kind!r}")

    return r
