"""The test suite's servers: the rig's (``simulators.rig.servers``: Mosquitto, InfluxDB, PostgreSQL on free
loopback ports, which ``twin bench`` runs on too) and, here only, Mosquitto on the repository's shipped
``deploy/mosquitto`` configuration, which an installed package does not carry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from simulators.rig.servers import (
    INSTALL_HINT,
    LOOPBACK,
    PG_BIN_DIRS,
    HarnessError,
    InfluxServer,
    MosquittoServer,
    PostgresServer,
    connack,
    find_binary,
    free_port,
    tcp_open,
)

__all__ = ["INSTALL_HINT", "LOOPBACK", "PG_BIN_DIRS", "HarnessError", "InfluxServer", "MosquittoServer",
           "PostgresServer", "TlsFiles", "TlsMosquittoServer", "find_binary", "free_port"]

SHIPPED_MOSQUITTO = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


class TlsFiles(NamedTuple):
    """What a client needs to connect to the TLS broker: the CA, its certificate and its key (paths)."""

    ca: str
    cert: str
    key: str


class TlsMosquittoServer(MosquittoServer):
    """Mosquitto running the SHIPPED ``deploy/mosquitto/mosquitto.conf`` and ``acl``: TLS only, a client
    certificate per client, its CN as the username, the per-gateway ACL.

    Only the port (on loopback), file paths and extra logging are templated in; listener, TLS, identity, ACL
    and queue settings are the shipped lines, so the tests check what a deployment runs. Certificates come
    from the shipped ``make-certs.sh``: a CA, the broker's (SAN 127.0.0.1 and localhost), ``cloud`` and
    ``health`` clients; ``gateway_files(tenant, gateway)`` issues a gateway's on first use.
    ``broker_hosts``: the names the broker's certificate carries (a test of host name checks gives others).
    """

    name = "mosquitto-tls"

    def __init__(self, broker_hosts: Sequence[str] = ("localhost", LOOPBACK)) -> None:
        super().__init__()
        self.certs = self.workdir / "certs"
        self.make_certs("ca")
        self.make_certs("broker", *broker_hosts)
        for client in ("cloud", "health"):
            self.make_certs("client", client)

    @property
    def url(self) -> str:
        return f"mqtts://{self.host}:{self.port}"

    def make_certs(self, *args: str) -> str:
        """Run the shipped make-certs.sh on this broker's certificate directory; its output."""
        script = SHIPPED_MOSQUITTO / "make-certs.sh"
        done = subprocess.run(["sh", str(script), "-d", str(self.certs), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise HarnessError(f"make-certs.sh {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def client_files(self, name: str) -> TlsFiles:
        """A cloud-side client's files (``cloud``, ``health``)."""
        return TlsFiles(str(self.certs / "ca.pem"), str(self.certs / "clients" / f"{name}.pem"),
                        str(self.certs / "clients" / f"{name}.key"))

    def gateway_files(self, tenant: str, gateway: str) -> TlsFiles:
        """A gateway's files (CN ``tenant/gateway``), issued by the CA on first use."""
        base = self.certs / "gateways" / tenant / gateway
        if not base.with_suffix(".pem").exists():
            self.make_certs("gateway", tenant, gateway)
        return TlsFiles(str(self.certs / "ca.pem"), str(base.with_suffix(".pem")), str(base.with_suffix(".key")))

    def _config(self) -> str:
        text = (SHIPPED_MOSQUITTO / "mosquitto.conf").read_text()
        shutil.copyfile(SHIPPED_MOSQUITTO / "acl", self.workdir / "acl")
        for shipped, here in (
            ("listener 8883\n", f"listener {self.port} {self.host}\n"),
            ("/mosquitto/config/certs/", f"{self.certs}/broker/"),
            ("/mosquitto/config/acl", str(self.workdir / "acl")),
            ("/mosquitto/data/", f"{self.persistence_dir}/"),
            ("log_dest stdout", "log_dest stderr"),  # unbuffered, so a failing test's log tail is complete
        ):
            if shipped not in text:
                raise HarnessError(f"deploy/mosquitto/mosquitto.conf has no {shipped.strip()!r} to template")
            text = text.replace(shipped, here)
        return text + "\nlog_type all\n"

    def _probe(self) -> bool:
        """Ready means a TLS CONNECT with the ``health`` certificate gets a CONNACK."""
        if not tcp_open(self.host, self.port):
            return False
        import ssl

        import paho.mqtt.client as mqtt

        files = self.client_files("health")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"harness-probe-{os.getpid()}")
        client.tls_set(ca_certs=files.ca, certfile=files.cert, keyfile=files.key, cert_reqs=ssl.CERT_REQUIRED)
        client.tls_insecure_set(True)  # the chain is checked, the name not: some tests give the broker other names
        return connack(client, self.host, self.port)
