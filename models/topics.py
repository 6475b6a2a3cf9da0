"""Topic names, in one place: every publisher and subscriber builds them here.

Layout: ``twin/v1/{tenant}/{gateway}/{kind}``. The gateway id sits in the topic so a broker ACL
can pin a gateway to its own subtree, and so per-gateway partitioning needs no payload parsing.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

PREFIX = "twin/v1"
Kind = Literal["telemetry", "events", "status", "config/desired", "config/reported", "commands", "commands/reported",
               "committed", "snapshots"]
KINDS: tuple[str, ...] = ("telemetry", "events", "status", "config/desired", "config/reported", "commands",
                          "commands/reported", "committed", "snapshots")
INGEST_SHARE_GROUP = "ingest"


def topic(tenant: str, gateway: str, kind: Kind) -> str:
    for part, name in ((tenant, "tenant"), (gateway, "gateway")):
        if not part or any(c in part for c in "/+#") or part.startswith("$"):
            raise ValueError(f"{name} {part!r} cannot be used in a topic")
    return f"{PREFIX}/{tenant}/{gateway}/{kind}"


def telemetry(tenant: str, gateway: str) -> str:
    return topic(tenant, gateway, "telemetry")


def events(tenant: str, gateway: str) -> str:
    return topic(tenant, gateway, "events")


def status(tenant: str, gateway: str) -> str:
    return topic(tenant, gateway, "status")


def config_desired(tenant: str, gateway: str) -> str:
    return topic(tenant, gateway, "config/desired")


def config_reported(tenant: str, gateway: str) -> str:
    return topic(tenant, gateway, "config/reported")


def commands(tenant: str, gateway: str) -> str:
    """The gateway's outstanding commands, retained (``models.wire.CommandQueue``): a gateway that was offline
    gets every one still within its TTL from the one message when it connects."""
    return topic(tenant, gateway, "commands")


def commands_reported(tenant: str, gateway: str) -> str:
    """What a gateway did with a command (``models.wire.CommandReport``)."""
    return topic(tenant, gateway, "commands/reported")


def committed(tenant: str, gateway: str) -> str:
    """Where ingest tells a gateway which of its batches are durably written (``models.wire.Committed``)."""
    return topic(tenant, gateway, "committed")


def snapshots(tenant: str, gateway: str) -> str:
    """Raw-waveform snapshots a gateway uploads around an anomaly (``models.waveform.encode_snapshot``)."""
    return topic(tenant, gateway, "snapshots")


def ingest_filter(kind: Kind, shared: bool = True) -> str:
    """Filter for all gateways of all tenants; shared (MQTT 5 ``$share``) so workers split the load."""
    f = f"{PREFIX}/+/+/{kind}"
    return f"$share/{INGEST_SHARE_GROUP}/{f}" if shared else f


class TopicParts(NamedTuple):
    tenant: str
    gateway: str
    kind: str


def parse(name: str) -> TopicParts:
    """Split a platform topic; raises ValueError naming the topic when it is not one of ours."""
    parts = name.split("/", 4)
    if len(parts) != 5 or f"{parts[0]}/{parts[1]}" != PREFIX or parts[4] not in KINDS:
        raise ValueError(f"not a {PREFIX} topic: {name!r}")
    return TopicParts(parts[2], parts[3], parts[4])
