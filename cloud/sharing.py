"""Sharing scopes: an outside organisation — a charterer, a customer; here a *grantee* — sees the assets a tenant
shared with it, and nothing else.

A grantee reaches the platform with keys of the ``customer`` role, issued by the tenant's admins and naming the
grantee; the role stands outside the staff roles' ladder (viewer < operator < qa < admin), so it inherits none of
their rights. What a customer key may read is ``cloud.api.sharing``'s few routes, over the assets of
``shared_assets``; every other route answers it 404, as an asset of another tenant is answered. Shares, unshares
and keys issued are in the audit trail.
"""

from __future__ import annotations

import secrets
import time

from sqlalchemy import BigInteger, String, select
from sqlalchemy.orm import Mapped, mapped_column

from cloud.registry import ApiKey, Asset, Base, Registry, hash_key

CUSTOMER = "customer"
"""The role of a grantee's keys (not in ``cloud.registry.ROLES``: it is no staff role)."""


class Share(Base):
    """``asset`` of ``tenant`` shared with ``grantee`` (an outside organisation's id, chosen by the tenant)."""

    __tablename__ = "shares"
    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    grantee: Mapped[str] = mapped_column(String(64), primary_key=True)
    asset: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_ns: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(200))


def share_dict(s: Share) -> dict:
    return {"grantee": s.grantee, "asset": s.asset, "created_ns": s.created_ns, "created_by": s.created_by}


def issue_customer_key(registry: Registry, tenant: str, grantee: str, actor: str, name: str = "") -> tuple[str, str]:
    """(key id, clear key) of a new ``customer`` key for ``grantee``; the clear key is never stored."""
    key = f"twk_{secrets.token_urlsafe(24)}"
    key_id = secrets.token_hex(8)
    registry.ensure_tenant(tenant)
    with registry.session() as s:
        s.add(ApiKey(id=key_id, hash=hash_key(key), tenant=tenant, role=CUSTOMER, grantee=grantee, name=name,
                     revoked=False, created_ns=time.time_ns()))
        registry.audit(s, tenant, actor, "key.create", f"key:{key_id}",
                       after={"role": CUSTOMER, "grantee": grantee, "name": name})
    return key_id, key


def share(registry: Registry, tenant: str, grantee: str, asset: str, actor: str) -> tuple[dict, bool]:
    """Share ``asset`` with ``grantee``: (the share, newly made). LookupError if the tenant has no such asset."""
    with registry.session() as s:
        if s.get(Asset, (tenant, asset)) is None:
            raise LookupError(f"no asset {asset!r}")
        found = s.get(Share, (tenant, grantee, asset))
        if found is not None:
            return share_dict(found), False
        row = Share(tenant=tenant, grantee=grantee, asset=asset, created_ns=time.time_ns(), created_by=actor)
        s.add(row)
        registry.audit(s, tenant, actor, "share.create", f"asset:{asset}", after={"grantee": grantee})
        return share_dict(row), True


def unshare(registry: Registry, tenant: str, grantee: str, asset: str, actor: str) -> bool:
    """Stop sharing; False if it was not shared."""
    with registry.session() as s:
        found = s.get(Share, (tenant, grantee, asset))
        if found is None:
            return False
        s.delete(found)
        registry.audit(s, tenant, actor, "share.delete", f"asset:{asset}", before={"grantee": grantee})
        return True


def shares(registry: Registry, tenant: str, grantee: str | None = None, after: tuple[str, str] | None = None,
           limit: int = 100) -> list[dict]:
    """The tenant's shares by (grantee, asset), optionally one grantee's, after a (grantee, asset) cursor."""
    q = select(Share).where(Share.tenant == tenant)
    if grantee:
        q = q.where(Share.grantee == grantee)
    if after is not None:
        q = q.where((Share.grantee > after[0]) | ((Share.grantee == after[0]) & (Share.asset > after[1])))
    with registry.session() as s:
        return [share_dict(r) for r in s.scalars(q.order_by(Share.grantee, Share.asset).limit(limit))]


def shared_assets(registry: Registry, tenant: str, grantee: str, after: str | None = None,
                  limit: int = 100) -> list[Asset]:
    """The assets shared with ``grantee``, by id, after ``after``."""
    q = (select(Asset).join(Share, (Share.tenant == Asset.tenant) & (Share.asset == Asset.id))
         .where(Share.tenant == tenant, Share.grantee == grantee))
    if after is not None:
        q = q.where(Asset.id > after)
    with registry.session() as s:
        return list(s.scalars(q.order_by(Asset.id).limit(limit)))


def shared_asset(registry: Registry, tenant: str, grantee: str, asset: str) -> Asset | None:
    """The asset if it is shared with ``grantee``, else None (whether or not it exists)."""
    with registry.session() as s:
        return s.scalar(select(Asset).join(Share, (Share.tenant == Asset.tenant) & (Share.asset == Asset.id))
                        .where(Share.tenant == tenant, Share.grantee == grantee, Asset.id == asset))
