"""Throwaway real servers (Mosquitto, InfluxDB, PostgreSQL) for the test suite and the benchmarks.

Why real servers: the platform's failure modes (broker queues, write errors, outages, SQL dialect) are
the servers' behaviour, which fakes do not reproduce. Each instance runs the installed binary on a
free loopback port with its own temporary data directory, never the default port: the machine may
already run the system services (1883, 8086, 5432), and sessions may run several suites in parallel.

Every server has ``start()``, ``stop()``, ``restart()`` (same port, same data: an outage, not a new
server), ``wait_ready(timeout)``, ``close()`` (stop and delete the temp dir), ``url``, ``host`` and
``port``, and logs to ``log_path`` inside its temp dir; a failed start raises ``HarnessError`` with
the tail of that log.

It is part of the installed package (not of ``tests/``) because ``twin bench`` runs on it from an install; the
TLS broker on the repository's shipped ``deploy/mosquitto`` configuration stays in ``tests/harness``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx

from simulators.rig.influx_front import InfluxV2WriteFrontProcess
from simulators.rig.procs import stop_process

LOOPBACK = "127.0.0.1"
INSTALL_HINT = "apt-get install -y mosquitto influxdb postgresql"
PG_BIN_DIRS = tuple(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))  # newest first


class HarnessError(RuntimeError):
    """A test server is missing, failed to start, or did not become ready."""


def free_port(host: str = LOOPBACK) -> int:
    """A port that is free right now (the OS picks it); for servers that cannot bind port 0 themselves."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_binary(name: str, *known_dirs: Path | str) -> str:
    """Locate a server binary on PATH or in Debian's sbin/lib dirs, which root's PATH may lack."""
    for candidate in (shutil.which(name), *(Path(d) / name for d in known_dirs)):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    searched = [str(d) for d in known_dirs]
    raise HarnessError(f"{name} not found on PATH or in {searched}; install it: {INSTALL_HINT}")


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def chown_tree(path: Path, user: str) -> None:
    """Hand a temp dir to the account a server runs as (only possible, and only needed, as root)."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in (root, *(os.path.join(root, n) for n in (*dirs, *files))):
            os.chown(name, entry.pw_uid, entry.pw_gid)


_LIVE: set[_Server] = set()


@atexit.register
def _close_leftovers() -> None:
    """Safety net for aborted sessions: never leave a server running after the interpreter exits."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()


class _Server:
    """Process lifecycle shared by the servers; subclasses say how to launch, probe and initialise."""

    name: ClassVar[str]
    startup_timeout: ClassVar[float] = 30.0

    def __init__(self) -> None:
        self.host = LOOPBACK
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix=f"assettwin-{self.name}-"))
        self.log_path = self.workdir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Launch the server, wait until it serves requests, then run one-off setup (idempotent)."""
        if self.running:
            return
        _LIVE.add(self)
        try:
            self._launch()
            self.wait_ready(self.startup_timeout)
            self._after_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s); the port and data dir are kept."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)

    def restart(self) -> None:
        """Simulate an outage: stop, then start again on the same port with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and delete the temp dir; the object is unusable afterwards."""
        self.stop()
        _LIVE.discard(self)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def wait_ready(self, timeout: float) -> None:
        """Poll until the server really serves clients; raise HarnessError (with its log) otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise self._error(f"exited with status {self._proc.returncode} during startup")
            if self._probe():
                return
            if time.monotonic() > deadline:
                raise self._error(f"not ready after {timeout:.0f} s")
            time.sleep(0.05)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url if self.running else 'stopped'} workdir={self.workdir}>"

    # Subclass hooks.
    def _launch(self) -> None:
        raise NotImplementedError

    def _probe(self) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """One-off setup once the server is ready (create the default database...)."""

    def _popen(self, argv: Sequence[str]) -> None:
        """Run argv in its own session (pytest's Ctrl-C must not hit it before teardown), logging to file."""
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"\n--- {time.strftime('%H:%M:%S')} $ {shlex.join(argv)}\n".encode())
            log_file.flush()
            self._proc = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.workdir,
            )

    def _error(self, what: str) -> HarnessError:
        return HarnessError(
            f"{self.name} on {self.host}:{self.port} {what}; {self.log_path} ends with:\n{self.log_tail()}"
        )


class MosquittoServer(_Server):
    """A Mosquitto broker, anonymous, on one loopback listener, with persistence in its temp dir."""

    name = "mosquitto"

    def __init__(self, extra_config: Iterable[str] = ()) -> None:
        """``extra_config``: mosquitto.conf(5) lines appended to the generated config (TLS, ACLs...)."""
        self.binary = find_binary("mosquitto", "/usr/sbin")
        super().__init__()
        self.extra_config = list(extra_config)
        self.config_path = self.workdir / "mosquitto.conf"
        self.persistence_dir = self.workdir / "persistence"
        self.persistence_dir.mkdir()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _config(self) -> str:
        return "\n".join(
            [
                f"listener {self.port} {self.host}",
                "allow_anonymous true",
                "persistence true",
                f"persistence_location {self.persistence_dir}/",
                # Queues, per client, for QoS 1/2 beyond those in flight. The broker default (1000 messages,
                # the same on Debian) SILENTLY DROPS the rest: a test whose subscriber lags a burst, or is
                # offline during an outage, would lose messages for reasons unrelated to the code under test.
                # 0 = unlimited. In-flight is left at the broker default (20): it only paces delivery.
                "max_queued_messages 0",
                "max_queued_bytes 0",
                # QoS 0 is never queued for offline clients (the default, stated to make it deliberate).
                "queue_qos0_messages false",
                # Nagle would add up to 40 ms per small publish on loopback; tests measure latencies.
                "set_tcp_nodelay true",
                "log_dest stderr",
                "log_type all",
                *self.extra_config,
                "",
            ]
        )

    def _launch(self) -> None:
        self.config_path.write_text(self._config())
        # As root, mosquitto drops to the `mosquitto` user, which must be able to write its persistence.
        with contextlib.suppress(KeyError):
            chown_tree(self.workdir, "mosquitto")
        self._popen([self.binary, "-c", str(self.config_path)])

    def _probe(self) -> bool:
        """Ready means a real MQTT CONNECT gets a CONNACK, not merely that the port is open."""
        if not tcp_open(self.host, self.port):
            return False
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"harness-probe-{os.getpid()}")
        return connack(client, self.host, self.port)


def connack(client, host: str, port: int) -> bool:
    """True when a CONNECT from ``client`` gets a successful CONNACK within 2 s."""
    connected: list[bool] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: connected.append(not reason.is_failure)
    try:
        client.connect(host, port, keepalive=10)
        deadline = time.monotonic() + 2
        while not connected and time.monotonic() < deadline:
            client.loop(timeout=0.05)
        client.disconnect()
    except OSError:  # ssl.SSLError is an OSError
        return False
    return connected == [True]


class InfluxServer(_Server):
    """A real InfluxDB 1.x (influxd), reached by clients through the TEST-ONLY v2 write front.

    ``raw_url`` is influxd itself (1.x API); ``url`` is the front, which adds ``/api/v2/write`` for
    influxdb-client and proxies the rest, and which keeps serving across ``restart()`` (503 while down).
    """

    name = "influxdb"

    def __init__(self, database: str = "assettwin", extra_config: str = "") -> None:
        """``extra_config``: TOML appended to the generated influxdb.conf (TOML forbids repeating a
        table, so only sections not generated here, e.g. ``[coordinator]``, ``[[udp]]``)."""
        self.binary = find_binary("influxd", "/usr/bin")
        super().__init__()
        self.database = database
        self.extra_config = extra_config
        self.rpc_port = free_port()  # backup/restore RPC; its default 8088 would collide across instances
        self.config_path = self.workdir / "influxdb.conf"
        self.front = InfluxV2WriteFrontProcess(self.host, self.port)

    @property
    def raw_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        if not self.front.running:
            raise HarnessError("InfluxServer.url is the v2 front's, which exists once start() was called")
        return self.front.url

    def start(self) -> None:
        self.front.start()
        super().start()

    def close(self) -> None:
        super().close()
        self.front.stop()

    def query(self, q: str, *, db: str | None = None, epoch: str | None = "ns", method: str = "GET") -> dict[str, Any]:
        """Run InfluxQL on influxd directly; raise HarnessError on an HTTP or statement error."""
        params = {"q": q, **({"db": db} if db else {}), **({"epoch": epoch} if epoch else {})}
        resp = httpx.request(method, f"{self.raw_url}/query", params=params, timeout=10)
        body = resp.json() if resp.content else {}
        errors = [body.get("error")] + [r.get("error") for r in body.get("results", [])]
        if resp.status_code != 200 or any(errors):
            raise HarnessError(f"InfluxQL {q!r} failed: HTTP {resp.status_code} {resp.text}")
        return body

    def create_database(self, name: str) -> None:
        self.query(f'CREATE DATABASE "{name}"', method="POST")  # idempotent in 1.x

    def drop_database(self, name: str) -> None:
        self.query(f'DROP DATABASE "{name}"', method="POST")

    def _config(self) -> str:
        d = self.workdir
        return f"""\
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{d}/meta"

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false

[monitor]
  # No _internal database: it would appear in SHOW DATABASES and write every 10 s.
  store-enabled = false

[http]
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  log-enabled = false
  unix-socket-enabled = false

[ifql]
  # Off (as by default); its listener (:8082) would otherwise collide across instances.
  enabled = false

[logging]
  level = "info"

{self.extra_config}
"""

    def _launch(self) -> None:
        self.config_path.write_text(self._config())
        self._popen([self.binary, "run", "-config", str(self.config_path)])

    def _probe(self) -> bool:
        try:
            return httpx.get(f"{self.raw_url}/ping", timeout=1).status_code == 204
        except httpx.HTTPError:
            return False

    def _after_ready(self) -> None:
        self.create_database(self.database)


class PostgresServer(_Server):
    """A PostgreSQL cluster (initdb'd in the temp dir on first start), trust auth, database ``assettwin``.

    PostgreSQL refuses to run as root, so as root its commands run as the ``postgres`` OS user.
    Durability is switched off (fsync, synchronous_commit, full_page_writes): tests don't survive
    power cuts, and a clean ``stop()``/``restart()`` still keeps every committed row.
    """

    name = "postgres"
    os_user = "postgres"

    def __init__(self, database: str = "assettwin") -> None:
        bin_dirs = (*PG_BIN_DIRS, "/usr/lib/postgresql/15/bin")
        self.initdb, self.pg_ctl = find_binary("initdb", *bin_dirs), find_binary("pg_ctl", *bin_dirs)
        super().__init__()
        self.database = database
        self.user = "postgres"
        self.data_dir = self.workdir / "data"
        self.socket_dir = self.workdir / "socket"
        self._started = False

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) of one database on this server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def conninfo(self, database: str | None = None) -> str:
        """libpq conninfo for psycopg.connect()."""
        return f"host={self.host} port={self.port} user={self.user} dbname={database or self.database}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    @property
    def running(self) -> bool:
        return self._started and (self.data_dir / "postmaster.pid").exists()

    def create_database(self, name: str) -> None:
        self._admin(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # FORCE: pooled connections linger

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (ends sessions, checkpoints); SIGKILL the postmaster if that fails."""
        was_running, self._started = self.running, False
        if not was_running:
            return
        result = self._run([self.pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "20", "stop"], check=False)
        if result.returncode != 0:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)

    def _launch(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self.socket_dir.mkdir(exist_ok=True)
            self.log_path.touch()
            chown_tree(self.workdir, self.os_user)
            self._run([self.initdb, "-D", str(self.data_dir), "-U", self.user, "-A", "trust",
                       "--encoding", "UTF8", "--locale", "C", "--no-sync", "--no-instructions"])  # fmt: skip
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        # pg_ctl -w returns once the postmaster accepts connections; wait_ready then checks with psycopg.
        self._started = True
        timeout = str(int(self.startup_timeout))
        self._run([self.pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", timeout,
                   "-o", options, "start"])  # fmt: skip

    def _probe(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.conninfo("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _after_ready(self) -> None:
        import psycopg

        with psycopg.connect(self.conninfo("postgres")) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone():
                return
        self.create_database(self.database)

    def _admin(self, sql: str) -> None:
        import psycopg

        # CREATE/DROP DATABASE cannot run inside a transaction.
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # names come from the test suite, not users

    def _run(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        """Run a PostgreSQL tool (as the postgres user when we are root), its output into the log."""
        if os.geteuid() == 0:
            argv = [find_binary("runuser", "/usr/sbin", "/sbin"), "-u", self.os_user, "--", *argv]
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"\n--- {time.strftime('%H:%M:%S')} $ {shlex.join(argv)}\n".encode())
            log_file.flush()
            result = subprocess.run(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
                check=False,
            )
        if check and result.returncode != 0:
            raise self._error(f"command failed (exit {result.returncode}): {shlex.join(argv)}")
        return result
