"""A rotating machine's own routes: its profile (ISO 20816 class, bearing, speed; operators set it), its zone trend
with the predicted dates of crossing into C and D, and the raw-waveform snapshots its gateway uploaded, as spectra.
The work is ``cloud.machines``'s; these only translate HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field

from cloud import machines
from cloud.api.auth import Operator, Viewer
from cloud.api.params import AssetId, Body
from cloud.api.problems import Problem
from cloud.commands import NoGateway, RateLimited
from models.machine import MachineProfile


class MachineProfileIn(Body, MachineProfile):
    reason: str = Field("", max_length=2000)


class MachineProfileOut(MachineProfile):
    asset: str
    stored: bool


SnapshotId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a snapshot's id")]


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1", tags=["machines"])
    registry = platform.registry

    def known(tenant: str, asset: str) -> None:
        if not platform.twins.exists(tenant, asset):
            raise Problem(404, "Not found", f"asset {asset!r} not found")

    @r.get("/assets/{asset}/machine", response_model=MachineProfileOut)
    def get_profile(asset: AssetId, p: Viewer) -> MachineProfileOut:
        """The machine's profile; ``stored: false`` is the default it is judged by until one is set."""
        known(p.tenant, asset)
        prof, stored = machines.profile(registry, p.tenant, asset)
        return MachineProfileOut(asset=asset, stored=stored, **prof.model_dump())

    @r.put("/assets/{asset}/machine", response_model=MachineProfileOut)
    def put_profile(asset: AssetId, body: MachineProfileIn, p: Operator) -> MachineProfileOut:
        """Set the machine's ISO 20816 group and foundation, bearing geometry and nominal speed (audited)."""
        known(p.tenant, asset)
        prof = MachineProfile.model_validate(body.model_dump(exclude={"reason"}))
        machines.put_profile(registry, p.tenant, asset, prof, p.actor, body.reason)
        return MachineProfileOut(asset=asset, stored=True, **prof.model_dump())

    @r.get("/assets/{asset}/zone")
    def get_zone(asset: AssetId, p: Viewer) -> dict[str, Any]:
        """Zone now (of the trend, not of one noisy reading) and the predicted dates of crossing into zone C and
        zone D, each with its interval (90 % bootstrap), judged by the machine's class, as of its newest reading."""
        known(p.tenant, asset)
        found = machines.zone_trend(platform.store, registry, p.tenant, asset)
        if found is None:
            raise Problem(404, "Not found", f"asset {asset!r} has no vibration velocity reading yet")
        return found

    @r.get("/assets/{asset}/snapshots")
    def list_snapshots(asset: AssetId, p: Viewer,
                       limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """Raw-waveform snapshots uploaded by the machine's gateway around anomalies, newest first."""
        known(p.tenant, asset)
        return {"items": machines.list_snapshots(registry, p.tenant, asset, limit)}

    @r.post("/assets/{asset}/snapshots", status_code=202)
    def request_snapshot(asset: AssetId, p: Operator) -> dict[str, Any]:
        """Ask the machine's gateway for its recent raw blocks now (a ``snapshot`` command; its state says when the
        gateway did it); the snapshot then appears in the list."""
        known(p.tenant, asset)
        try:
            return platform.commands.issue(p.tenant, asset, "snapshot", {}, ttl_s=600.0, actor=p.actor,
                                           why="waveform snapshot requested")
        except NoGateway as exc:
            raise Problem(409, "No gateway", str(exc)) from None
        except LookupError as exc:
            raise Problem(404, "Not found", str(exc)) from None
        except RateLimited as exc:
            raise Problem(429, "Too many commands", str(exc), retry_after_s=round(exc.retry_after_s, 1)) from None

    @r.get("/assets/{asset}/snapshots/{snapshot}")
    def get_snapshot(asset: AssetId, snapshot: SnapshotId, p: Viewer,
                     block: Annotated[int, Query(ge=-64, le=63)] = -1,
                     channel: Annotated[int, Query(ge=0, le=63)] = 0) -> dict[str, Any]:
        """One block's channel as an amplitude spectrum and an envelope spectrum, with the bearing's defect lines."""
        try:
            found = machines.snapshot_spectra(registry, p.tenant, asset, snapshot, block=block, channel=channel)
        except IndexError as exc:
            raise Problem(422, "Unprocessable", str(exc)) from None
        if found is None:
            raise Problem(404, "Not found", f"snapshot {snapshot} of {asset!r} not found")
        return found

    return r
