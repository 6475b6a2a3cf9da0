"""What routes share: the platform, opaque cursors, and list envelopes."""

from __future__ import annotations

import base64
import json
from typing import Any, Generic, TypeVar

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import Select, select

from cloud.api import params
from cloud.platform import Platform
from cloud.registry import Asset

T = TypeVar("T")


def platform(request: Request) -> Platform:
    return request.app.state.platform


class Page(BaseModel, Generic[T]):
    """A page of a list; pass ``next_cursor`` back as ``cursor`` for the next one (null: the end)."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    """A cursor of any shape this API issues (a row id, a name, or a time and a name), else a 422 naming it;
    a route that knows which shape it issued declares a typed ``cursor`` from ``cloud.api.params`` instead."""
    return params.decode_cursor(cursor, params.ISSUED)


def assets_query(tenant: str, site: str | None, type_: str | None, gateway: str | None, after: Any) -> Select:
    """A tenant's assets, filtered the way every list of assets filters them, ordered by id for cursors."""
    q = select(Asset).where(Asset.tenant == tenant)
    if site:
        q = q.where((Asset.site == site) | (Asset.line == site))
    if type_:
        q = q.where(Asset.type == type_)
    if gateway:
        q = q.where(Asset.gateway == gateway)
    if after is not None:
        q = q.where(Asset.id > str(after))
    return q.order_by(Asset.id)
