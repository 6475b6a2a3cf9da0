"""API keys: created by admins (shown once, stored hashed), listed without secrets, revoked."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloud.api.auth import Admin, Viewer
from cloud.api.deps import Page
from cloud.api.params import Body, KeyId
from cloud.api.problems import Problem
from cloud.registry import ROLES, ApiKey


class KeyIn(Body):
    role: str = Field(description=f"one of {', '.join(ROLES)}")
    name: str = Field("", max_length=200)


class KeyOut(BaseModel):
    id: str
    role: str
    name: str
    revoked: bool
    created_ns: int
    grantee: str | None = None  # a customer key's organisation (cloud.api.sharing)


class RevokeIn(Body):
    reason: str = Field("", max_length=2000)


def get_router(platform) -> APIRouter:
    r = APIRouter(prefix="/api/v1")
    reg = platform.registry

    @r.get("/me", tags=["keys"])
    def me(p: Viewer) -> dict[str, str]:
        return {"tenant": p.tenant, "role": p.role, "key_id": p.key_id, "name": p.name}

    @r.post("/keys", status_code=201, tags=["keys"])
    def create_key(body: KeyIn, p: Admin) -> dict[str, str]:
        """The key is in this response only; the platform keeps its hash."""
        if body.role not in ROLES:
            raise Problem(422, "Invalid request", f"role: must be one of {', '.join(ROLES)}")
        key_id, key = reg.issue_api_key(p.tenant, body.role, body.name)
        with reg.session() as s:
            reg.audit(s, p.tenant, p.actor, "key.create", f"key:{key_id}", after={"role": body.role, "name": body.name})
        return {"id": key_id, "key": key, "role": body.role, "name": body.name}

    @r.get("/keys", response_model=Page[KeyOut], tags=["keys"])
    def list_keys(p: Admin) -> Page[KeyOut]:
        with reg.session() as s:
            rows = s.scalars(select(ApiKey).where(ApiKey.tenant == p.tenant).order_by(ApiKey.created_ns))
            return Page(items=[KeyOut(id=k.id, role=k.role, name=k.name, revoked=k.revoked,
                                      created_ns=k.created_ns, grantee=k.grantee) for k in rows])

    @r.post("/keys/{key_id}/revoke", tags=["keys"])
    def revoke_key(key_id: KeyId, p: Admin, request: Request, body: RevokeIn | None = None) -> dict[str, str]:
        """The key stops working at once in this process (its live sockets close), in the others within
        ``api_key_cache_s``."""
        if not reg.revoke_key(p.tenant, key_id, p.actor, body.reason if body else ""):
            raise Problem(404, "Not found", f"no key {key_id!r}")
        request.app.state.key_cache.forget(key_id)
        request.app.state.revocations.revoked(key_id)
        return {"id": key_id, "state": "revoked"}

    return r
