"""``POST /api/v1/assets/{asset}/baseline``: fit the asset's normal baseline on a healthy window of its history
and push it to its gateway as desired configuration (operator and above). The gateway's report of the applied
version shows on ``GET /api/v1/gateways/{gateway}`` (``config_version``, ``config_report``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from cloud.api.auth import Operator
from cloud.api.params import AssetId, Body, TimeNs
from cloud.api.problems import Problem
from cloud.gateway_config import BrokerUnavailable
from cloud.pdm.baseline import BaselineError, fit_and_push
from models.wire import Name


class BaselineIn(Body):
    start: TimeNs | None = Field(None, description="healthy window start (ns or ISO 8601); default end - 24 h")
    end: TimeNs | None = Field(None, description="healthy window end, exclusive (ns or ISO 8601); default now")
    points: list[Name] | None = Field(None, description="default: the type's numeric points with data in the window")
    alpha: float = Field(0.001, gt=0, lt=1, description="false-alarm rate per row of the T² limit")
    limit_scale: float = Field(1.0, ge=1, le=100, description="widens the limit beyond what the window showed")
    max_age_s: float = Field(60.0, gt=0, le=86_400, description="a held value older than this makes a row stale")
    smooth_tau_s: float = Field(0.0, ge=0, le=86_400, description="> 0: score time-decayed means of the rows "
                                "(small persistent shifts stand out, detected about tau later)")
    reason: str = Field("", max_length=2000)


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    @r.post("/assets/{asset}/baseline", tags=["twins"])
    def push_baseline(asset: AssetId, body: BaselineIn, p: Operator) -> dict[str, Any]:
        try:
            return fit_and_push(platform, p.tenant, asset, body.start, body.end, p.actor,
                                points=body.points, alpha=body.alpha, limit_scale=body.limit_scale,
                                max_age_s=body.max_age_s, smooth_tau_s=body.smooth_tau_s,
                                reason=body.reason)
        except LookupError as exc:
            raise Problem(404, "Not found", str(exc)) from None
        except BaselineError as exc:
            raise Problem(422, "Cannot fit the baseline", str(exc)) from None
        except BrokerUnavailable as exc:
            raise Problem(503, "Broker unavailable", str(exc)) from None

    return r
