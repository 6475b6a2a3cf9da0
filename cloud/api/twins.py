"""Twins (reported, desired, delta; ``ETag``/``If-Match`` → 412 on conflict) and gateway configuration
(desired config published retained to the gateway; its report closes the loop)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Header, Response
from pydantic import BaseModel, Field

from cloud.api import rul as rul_api
from cloud.api.auth import Operator, Principal, Viewer
from cloud.api.commands import Evidence
from cloud.api.params import AssetId, Body, GatewayId, invalid
from cloud.api.problems import Problem
from cloud.commands import InvalidCommand, NoGateway, RateLimited, check_set
from cloud.gateway_config import (
    BrokerUnavailable,
    ConfigVersionConflict,
    push_desired_config,
    replaced_keeping_baselines,
)
from cloud.people import PERSON_TYPE
from cloud.pii import mask_deep
from cloud.twin import NotFound, VersionConflict


class TwinOut(BaseModel):
    asset: str
    type: str | None
    gateway: str | None
    version: int
    status: str
    health: float
    reported: dict[str, Any]
    desired: dict[str, Any]
    delta: dict[str, Any]
    model: dict[str, Any]


class DesiredIn(Body):
    desired: dict[str, Any]
    reason: str = Field("", max_length=2000)
    confirm: bool = Field(False, description="apply a value outside the profile of the load in custody")
    evidence: Evidence = None


class DesiredOut(TwinOut):
    commands: list[dict[str, Any]] = Field(default_factory=list, description="the set commands this change sent to "
                                           "the device (their lifecycle: GET /assets/{asset}/commands/{id})")


class GatewayConfigIn(Body):
    config: dict[str, Any] = Field(description="gateway.yaml fields to change (validated by the gateway). Without a "
                                   "`baselines` key the baselines the cloud fitted and pushed are kept.")
    reason: str = Field("", max_length=2000)


def _if_match(value: str | None) -> int:
    if value is None:
        raise Problem(428, "Precondition required", "send If-Match with the ETag of the state you changed")
    v = value.strip().removeprefix("W/").strip('"')
    if not v.isdigit():
        raise Problem(412, "Precondition failed", f"If-Match {value!r} is not an ETag this API issued")
    return int(v)


def _twin_out(st, p: Principal) -> TwinOut:
    """Reported text points may be personal: masked for keys without ``pii:read``."""
    out = TwinOut(**st.__dict__)
    if st.type == PERSON_TYPE:  # a person's values are read through consent (/api/v1/people/{id}/report)
        points = out.reported.get("points") or {}
        out.reported = {**out.reported, "points": {k: {**v, "value": None} if isinstance(v, dict) else None
                                                   for k, v in points.items()}}
        out.delta = {}
    if not p.pii_read:
        out.reported, out.delta = mask_deep(out.reported), mask_deep(out.delta)
    return out


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    twins = platform.twins

    @r.get("/twins/{asset}", response_model=TwinOut, tags=["twins"])
    def get_twin(asset: AssetId, p: Viewer) -> Response:
        try:
            st = twins.state(p.tenant, asset)
        except NotFound as exc:
            raise Problem(404, "Not found", str(exc)) from None
        # The model is built and validated once and written as it is: the most frequent read skips FastAPI's
        # second validation of what the route returns.
        return Response(_twin_out(st, p).model_dump_json(), media_type="application/json",
                        headers={"ETag": f'"{st.version}"'})

    @r.put("/twins/{asset}/desired", response_model=DesiredOut, tags=["twins"])
    def put_desired(asset: AssetId, body: DesiredIn, p: Operator, response: Response,
                    if_match: str | None = Header(default=None)) -> DesiredOut:
        expected = _if_match(if_match)
        commands = platform.commands
        try:
            atype, _ = commands.asset_type(p.tenant, asset)
        except LookupError:
            atype = None  # an asset of a type nobody knows: its desired state stays in the cloud
        for prop, value in body.desired.items():  # a writable property: what its device can take, or nothing
            if atype is not None and prop in atype.writable:
                try:
                    value = check_set(atype, prop, value, field=prop)
                except InvalidCommand as exc:
                    invalid(f"desired.{prop}", str(exc), "body")
                if atype.writable[prop].guard == "load_profile" and not body.confirm and (
                        outside := commands.outside_load_profile(p.tenant, asset, value)):
                    invalid("confirm", f"desired.{prop}: {outside}: send confirm: true to apply it anyway", "body")
        try:
            twins.put_desired(p.tenant, asset, body.desired, expected, p.actor, body.reason, body.evidence)
        except NotFound as exc:
            raise Problem(404, "Not found", str(exc)) from None
        except VersionConflict as exc:
            raise Problem(412, "Precondition failed", f"{exc}; you sent If-Match {expected}: read it again",
                          current_version=exc.current) from None
        st = twins.state(p.tenant, asset)
        sent: list[dict[str, Any]] = []
        if atype is not None and atype.writable:
            try:  # desired values the device does not report yet go to it, as set commands
                sent = commands.sets_for_delta(p.tenant, asset, st.delta, actor=p.actor, why=body.reason,
                                               confirmed=body.confirm, evidence=body.evidence)
            except (NoGateway, RateLimited) as exc:
                response.headers["Warning"] = f'199 - "desired state stored, not sent: {exc}"'
        response.headers["ETag"] = f'"{st.version}"'
        return DesiredOut(**_twin_out(st, p).model_dump(), commands=sent)

    @r.put("/gateways/{gateway}/config", tags=["fleet"])
    def put_gateway_config(gateway: GatewayId, body: GatewayConfigIn, p: Operator, response: Response,
                           if_match: str | None = Header(default=None)) -> dict[str, Any]:
        """Publish a desired configuration to the gateway (retained, so it gets it on reconnect). The gateway
        validates and reports applied or rejected; see ``config_report`` on the gateway."""
        try:
            version = push_desired_config(platform, p.tenant, gateway, replaced_keeping_baselines(body.config),
                                          actor=p.actor, action="gateway.config.put", reason=body.reason,
                                          if_version=_if_match(if_match))
        except LookupError as exc:
            raise Problem(404, "Not found", str(exc)) from None
        except ConfigVersionConflict as exc:
            raise Problem(412, "Precondition failed", str(exc), current_version=exc.current) from None
        except BrokerUnavailable as exc:
            raise Problem(503, "Broker unavailable", str(exc)) from None
        response.headers["ETag"] = f'"{version}"'
        return {"gateway": gateway, "version": version, "published_ns": time.time_ns()}

    r.include_router(rul_api.get_router(platform))  # /twins/{asset}/rul: remaining-useful-life history, settings
    return r
