"""A gateway's desired configuration: the one place that changes it, versions it, audits it and publishes it.

Two callers change it: an operator (``PUT /api/v1/gateways/{id}/config``) and the baseline push
(``POST /api/v1/assets/{id}/baseline``). Each passes how the configuration changes; the rest is the same:
versions only grow and stay above what the gateway already runs (so it never ignores a push), the whole
configuration is published retained (a restarting gateway gets everything from one message), the audit keeps
before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloud.registry import Gateway
from models import topics
from models.wire import DesiredConfig, encode

Config = dict[str, Any]


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
        config = change(before)
        version = max(current, g.config_version or 0) + 1
        g.desired_config, g.desired_version = config, version
        platform.registry.audit(s, tenant, actor, action, f"gateway:{gateway}", reason=reason,
                                before={"version": current, "config": before}, after={"version": version,
                                                                                      "config": config})
    msg = DesiredConfig(version=version, config=config)
    if not platform.link.publish(topics.config_desired(tenant, gateway), encode(msg), retain=True):
        raise BrokerUnavailable("stored, but not yet published: the broker is unreachable")
    return version


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
