"""API keys: ``Authorization: Bearer <key>`` or ``X-API-Key``; every key has a role and a tenant. Staff routes
depend on ``principal`` (``Viewer``, ``Operator``, ``Admin``), which answers a customer key 404; the grantee's view
(``cloud.api.sharing``) depends on ``customer``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from cloud.api.problems import Problem
from cloud.api.security import LOOKED_UP, MISS, presented_key
from cloud.pii import may_read
from cloud.registry import ROLES
from cloud.sharing import CUSTOMER


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant: str
    role: str
    name: str = ""
    grantee: str | None = None  # a customer key's organisation

    @property
    def actor(self) -> str:
        """Who did it, as the audit trail records it."""
        return f"key:{self.key_id}" + (f" ({self.name})" if self.name else "")

    def can(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def pii_read(self) -> bool:
        """The ``pii:read`` permission: personal values unmasked (as pseudonyms; see ``cloud/pii.py``)."""
        return may_read(self.role)


async def authenticated(request: Request, authorization: str | None = Header(default=None),
                        x_api_key: str | None = Header(default=None)) -> Principal:
    """The key the rate limiter charged (``cloud.api.security``), looked up there; async, so a cached key costs no
    trip through the thread pool. Any role: routes depend on ``principal`` (staff) or ``customer``."""
    key = presented_key(authorization, x_api_key)
    if authorization and key is None:
        raise Problem(401, "Unauthorized", "Authorization header must be 'Bearer <api key>'")
    if not key:
        raise Problem(401, "Unauthorized", "an API key is required (Authorization: Bearer <key> or X-API-Key)")
    state = request.app.state
    looked_up = request.scope.get("state", {}).get(LOOKED_UP)
    found = looked_up[1] if looked_up is not None and looked_up[0] == key else state.key_cache.cached(key)
    if found is MISS:
        found = await run_in_threadpool(state.key_cache.get, key, state.platform.registry.lookup_key)
    if found is None:
        raise Problem(401, "Unauthorized", "unknown or revoked API key")
    return Principal(found.id, found.tenant, found.role, found.name, found.grantee)


NOT_FOUND = "no such resource"


async def principal(p: Principal = Depends(authenticated)) -> Principal:
    """A staff key (viewer and up). A customer key is answered 404, as an asset of another tenant is: to it, the
    rest of the API does not exist (``cloud.sharing``)."""
    if p.role == CUSTOMER:
        raise Problem(404, "Not found", NOT_FOUND)
    return p


async def customer(p: Principal = Depends(authenticated)) -> Principal:
    """A customer key (a grantee's); any other key is answered 404: these routes are a grantee's view."""
    if p.role != CUSTOMER or not p.grantee:
        raise Problem(404, "Not found", NOT_FOUND)
    return p


def require(role: str):
    async def dep(p: Principal = Depends(principal)) -> Principal:
        if not p.can(role):
            raise Problem(403, "Forbidden", f"this needs the {role} role; the key has {p.role}")
        return p

    return dep


Viewer = Annotated[Principal, Depends(principal)]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Customer = Annotated[Principal, Depends(customer)]
