"""A gateway's desired configuration: the one place that changes it, versions it, audits it and publishes it.

Two callers change it: an operator (``PUT /api/v1/gateways/{id}/config``) and the baseline push
(``POST /api/v1/assets/{id}/baseline``). Each passes how the configuration changes; the rest is the same:
versions only grow and stay above what the gateway already runs (so it never ignores a push), the whole
configuration is published retained (a restarting gateway gets everything from one message), the audit keeps
before and after.

Asset types travel with it: every type its assets name that gateways do not ship (a tenant's own, defined
through ``POST /api/v1/asset-types``, or a pack's installed beside the cloud) is put in ``asset_types`` with its
definition as it is at the push, so the gateway validates and runs it like a shipped one. A type nobody knows is
left for the gateway to refuse: its report names it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from cloud.registry import AssetTypeRecord, Gateway
from models import topics
from models.catalogue import builtin_types, shipped_types
from models.wire import DesiredConfig, encode

Config = dict[str, Any]
log = logging.getLogger("cloud.gateway_config")


class ConfigVersionConflict(RuntimeError):
    def __init__(self, current: int, expected: int) -> None:
        super().__init__(f"the gateway's configuration is at version {current}; you sent If-Match {expected}")
        self.current = current


class BrokerUnavailable(RuntimeError):
    """Nothing, or nothing yet, reached the gateway: the message says which."""


def push_desired_config(platform, tenant: str, gateway: str, change: Callable[[Config], Config], *, actor: str,
                        action: str, reason: str = "", if_version: int | None = None) -> int:
    """Store ``change(current)`` as the gateway's desired configuration and publish it retained; the new version.

    ``if_version``: the version the caller read (``If-Match``); another one raises ``ConfigVersionConflict``.
    LookupError for an unknown gateway; ``BrokerUnavailable`` when it could not be published."""
    if platform.link is None:
        raise BrokerUnavailable("this API process has no broker connection")
    with platform.registry.session() as s:
        g = s.get(Gateway, (tenant, gateway))
        if g is None:
            raise LookupError(f"no gateway {gateway!r}")
        current = g.desired_version or 0
        if if_version is not None and current != if_version:
            raise ConfigVersionConflict(current, if_version)
        before = dict(g.desired_config or {})
        config = with_asset_types(s, tenant, change(before))
        version = max(current, g.config_version or 0) + 1
        g.desired_config, g.desired_version = config, version
        platform.registry.audit(s, tenant, actor, action, f"gateway:{gateway}", reason=reason,
                                before={"version": current, "config": before}, after={"version": version,
                                                                                      "config": config})
    msg = DesiredConfig(version=version, config=config)
    if not platform.link.publish(topics.config_desired(tenant, gateway), encode(msg), retain=True):
        raise BrokerUnavailable("stored, but not yet published: the broker is unreachable")
    return version


def with_asset_types(session, tenant: str, config: Config) -> Config:
    """``config`` with ``asset_types``: the definitions of the types its assets name that gateways do not ship
    (none: no ``asset_types``). A configuration that names no assets keeps what it had."""
    assets = config.get("assets")
    if not isinstance(assets, list):
        return config
    named = {a.get("type") for a in assets if isinstance(a, dict) and isinstance(a.get("type"), str)}
    wanted = sorted(named - set(shipped_types()))
    known = {t: builtin_types()[t].model_dump(mode="json") for t in wanted if t in builtin_types()}
    own = [t for t in wanted if t not in known]
    if own:
        rows = session.scalars(select(AssetTypeRecord).where(AssetTypeRecord.tenant == tenant,
                                                             AssetTypeRecord.id.in_(own)))
        known.update({r.id: r.definition for r in rows})
    out = {k: v for k, v in config.items() if k != "asset_types"}
    return {**out, "asset_types": known} if known else out


def push_type_change(platform, tenant: str, type_id: str, *, actor: str) -> list[str]:
    """After a tenant's type was defined again: push the desired configuration again, with the new definition, to
    each gateway whose assets name it; the gateways pushed to. One the broker cannot reach now gets it with its
    next push (logged)."""
    with platform.registry.session() as s:
        gateways = [g.id for g in s.scalars(select(Gateway).where(Gateway.tenant == tenant))
                    if any(isinstance(a, dict) and a.get("type") == type_id
                           for a in (g.desired_config or {}).get("assets") or [])]
    pushed = []
    for gateway in gateways:
        try:
            push_desired_config(platform, tenant, gateway, lambda current: current, actor=actor,
                                action="gateway.config.asset_type", reason=f"asset type {type_id} defined again")
        except (BrokerUnavailable, LookupError) as exc:
            log.warning("asset type %s not pushed to gateway %s/%s: %s", type_id, tenant, gateway, exc)
        else:
            pushed.append(gateway)
    return pushed


def replaced_keeping_baselines(new: Config) -> Callable[[Config], Config]:
    """An operator's configuration replaces the desired one, except the baselines the cloud fitted and pushed:
    an edit of other fields must not silently drop them from what a restarting gateway gets. Naming
    ``baselines`` (even ``{}``) replaces them too."""

    def change(current: Config) -> Config:
        config = dict(new)
        if "baselines" not in config and current.get("baselines"):
            config["baselines"] = current["baselines"]
        return config

    return change


def with_baseline(asset: str, baseline: Config) -> Callable[[Config], Config]:
    """The desired configuration with ``baseline`` as the asset's, everything else as it was."""
    return lambda current: {**current, "baselines": {**current.get("baselines", {}), asset: baseline}}
