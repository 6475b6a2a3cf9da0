"""A real NATS JetStream cluster on loopback (Debian's ``nats-server``), for the scale-out test and
``twin bench ingest --workers``: each node with JetStream (RAFT-replicated), its MQTT front (the gateways' side)
and the subject mapping that partitions the gateways' messages (the same lines as ``deploy/nats/nats.conf``,
which a test compares).
"""

from __future__ import annotations

import signal
import time

import httpx

from simulators.rig.servers import HarnessError, _Server, find_binary, free_port, tcp_open

MAPPED_KINDS = ("telemetry", "events", "status")


def mapping(partitions: int) -> str:
    """The server's account mapping: a gateway's telemetry, events and status to one partition's subjects
    (``twin.in.{p}.{tenant}.{gateway}.{kind}``); deterministic on every node (nats-server >= 2.8)."""
    lines = [f'  "twin.v1.*.*.{k}": "twin.in.{{{{partition({partitions},1,2)}}}}.{{{{wildcard(1)}}}}.'
             f'{{{{wildcard(2)}}}}.{k}"' for k in MAPPED_KINDS]
    return "mappings = {\n" + "\n".join(lines) + "\n}\n"


class NatsNode(_Server):
    """One ``nats-server`` of a cluster: client, cluster, MQTT and monitoring ports of its own."""

    name = "nats"

    def __init__(self, index: int, partitions: int) -> None:
        self.binary = find_binary("nats-server", "/usr/sbin", "/usr/bin")
        super().__init__()
        self.index = index
        self.partitions = partitions
        self.cluster_port, self.mqtt_port, self.http_port = free_port(), free_port(), free_port()
        self.routes: list[int] = []
        self.config_path = self.workdir / "nats.conf"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.mqtt_port}"

    def _config(self) -> str:
        routes = ", ".join(f"nats-route://{self.host}:{p}" for p in self.routes)
        return "\n".join([
            f"server_name: n{self.index}",
            f"listen: {self.host}:{self.port}",
            f"http: {self.host}:{self.http_port}",
            f"jetstream {{ store_dir: {self.workdir / 'js'} }}",
            # one node alone is no cluster (JetStream would wait for peers that never come)
            f"cluster {{ name: twin, listen: {self.host}:{self.cluster_port}, routes: [{routes}] }}"
            if len(self.routes) > 1 else "",
            f"mqtt {{ listen: {self.host}:{self.mqtt_port} }}",
            mapping(self.partitions),
        ])

    def _launch(self) -> None:
        self.config_path.write_text(self._config())
        self._popen([self.binary, "-c", str(self.config_path)])

    def _probe(self) -> bool:
        return tcp_open(self.host, self.port) and tcp_open(self.host, self.mqtt_port)

    def kill(self) -> None:
        """SIGKILL, no goodbye to the cluster: a node lost."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)


class NatsCluster:
    """``size`` nodes routed to each other; ready when every node says JetStream is healthy."""

    def __init__(self, size: int = 3, partitions: int = 12) -> None:
        self.nodes = [NatsNode(i + 1, partitions) for i in range(size)]
        for n in self.nodes:
            n.routes = [m.cluster_port for m in self.nodes]
        self.partitions = partitions

    @property
    def url(self) -> str:
        """Every node, comma-separated (``TWIN_NATS_URL``)."""
        return ",".join(n.url for n in self.nodes)

    @property
    def mqtt_urls(self) -> list[str]:
        return [n.mqtt_url for n in self.nodes]

    def start(self, timeout: float = 30) -> None:
        for n in self.nodes:
            n.start()  # ports open; JetStream needs a quorum, awaited below
        deadline = time.monotonic() + timeout
        for n in self.nodes:
            while True:
                try:
                    if httpx.get(f"http://{n.host}:{n.http_port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise HarnessError(f"NATS cluster not healthy after {timeout:.0f} s; n{n.index}: {n.log_tail()}")
                time.sleep(0.1)

    def close(self) -> None:
        for n in self.nodes:
            n.close()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
