"""Commands to an asset's device: issue one (operator or above), read where it is in its lifecycle.

``POST /api/v1/assets/{asset}/commands`` answers 202 with the command as stored (``pending``); its state moves as
the gateway reports (``GET …/commands/{id}``, and ``{"type": "command"}`` messages on the WebSocket). A value
of the wrong type, out of range, a property or command the asset's type does not declare: a 422 naming the field,
and nothing is sent.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import AfterValidator, Field, StrictBool, StrictFloat, StrictInt

from cloud.api.auth import Operator, Viewer
from cloud.api.params import NAME, AssetId, Body, invalid
from cloud.api.problems import Problem
from cloud.commands import InvalidCommand, NoGateway, RateLimited


def _storable(v: dict[str, Any] | None) -> dict[str, Any] | None:
    """Kept in the audit trail as JSON: no NaN or infinity (PostgreSQL refuses them), at most 64 KiB."""
    if v is not None:
        try:
            size = len(json.dumps(v, allow_nan=False))
        except ValueError:
            raise ValueError("NaN or infinity cannot be stored; send null or leave it out") from None
        if size > 65536:
            raise ValueError(f"{size} bytes as JSON; at most 65536")
    return v


Evidence = Annotated[dict[str, Any] | None, AfterValidator(_storable),
                     Field(description="what the decision rests on (a forecast), kept in the audit trail")]
"""A command's or a desired change's evidence, as the audit trail keeps it."""

CommandId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="a command's id")]


class CommandIn(Body):
    """``set``: ``property`` and ``value``; ``command``: ``name`` (one the asset's type declares); ``rebirth``: the
    gateway announces itself again; ``snapshot``: the gateway uploads the asset's recent raw waveform blocks
    (``GET /api/v1/assets/{asset}/snapshots``). ``confirm``: the operator confirms a change outside the load's
    profile."""

    action: Literal["set", "command", "rebirth", "snapshot"]
    property: str | None = Field(default=None, min_length=1, max_length=128, pattern=NAME)
    value: StrictBool | StrictInt | StrictFloat | None = None
    name: str | None = Field(default=None, min_length=1, max_length=128, pattern=NAME)
    ttl_s: float = Field(default=3600.0, ge=1, le=7 * 86400, description="how long it may wait for its gateway")
    reason: str = Field(default="", max_length=2000)
    confirm: bool = False
    evidence: Evidence = None


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["commands"])

    @r.post("/assets/{asset}/commands", status_code=202)
    def issue(asset: AssetId, body: CommandIn, p: Operator) -> dict[str, Any]:
        svc = platform.commands
        if body.action == "set" and body.property is None:
            invalid("property", "a set names the property", "body")
        if body.action == "set" and body.value is None:
            invalid("value", "a set gives the value", "body")
        if body.action == "command" and body.name is None:
            invalid("name", "a command names which one", "body")
        args = {"property": body.property, "value": body.value, "name": body.name}
        try:
            return svc.issue(p.tenant, asset, body.action, args, ttl_s=body.ttl_s, actor=p.actor, why=body.reason,
                             confirmed=body.confirm, evidence=body.evidence)
        except InvalidCommand as exc:
            invalid(exc.field, str(exc), "body")
        except NoGateway as exc:
            raise Problem(409, "No gateway", str(exc)) from None
        except LookupError as exc:
            raise Problem(404, "Not found", str(exc)) from None
        except RateLimited as exc:
            raise Problem(429, "Too many commands", str(exc), retry_after_s=round(exc.retry_after_s, 1)) from None

    @r.get("/assets/{asset}/commands/{command_id}")
    def get_command(asset: AssetId, command_id: CommandId, p: Viewer) -> dict[str, Any]:
        found = platform.commands.get(p.tenant, asset, command_id)
        if found is None:
            raise Problem(404, "Not found", f"no command {command_id!r} on asset {asset!r}")
        return found

    return r
