"""OPC-UA test harness: the node-opcua server and client (a second implementation to check interoperability
against), a recording sink, and certificates.

node-opcua lives in ``tests/harness/node_opcua``; its ``node_modules`` is installed by the first test that
needs it (``npm install``, ~20 s, once) and kept there. Missing ``node``/``npm`` FAILS the tests that need
them with the command to run, never skips: a skipped interoperability test reports green for nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .procs import stop_process
from .servers import LOOPBACK, HarnessError, free_port

NODE_DIR = Path(__file__).with_name("node_opcua")
NODE_HINT = "install Node.js >= 18 with npm (e.g. apt-get install -y nodejs npm)"
NPM_INSTALL = ("npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--no-package-lock")

Sample = tuple[str, str, int, float, int]


class Recorder:
    """A sink that keeps every (asset, point, t_ns, value, quality) and lets a test wait for what it expects."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self._cond = threading.Condition()

    def __call__(self, asset: str, point: str, t_ns: int, value: float, quality: int) -> None:
        with self._cond:
            self.samples.append((asset, point, t_ns, value, int(quality)))
            self._cond.notify_all()

    def of(self, asset: str, point: str) -> list[Sample]:
        with self._cond:
            return [s for s in self.samples if s[0] == asset and s[1] == point]

    def wait_for(self, predicate: Callable[[list[Sample]], bool], timeout: float, what: str = "samples") -> None:
        """Block until ``predicate(samples)`` holds; fail with what arrived otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.samples):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; got {self.samples[-20:]}")
                self._cond.wait(left)

    def wait_value(self, asset: str, point: str, value: float, timeout: float = 10) -> Sample:
        """The first sample of (asset, point) with exactly ``value`` (NaN matches NaN)."""

        def match(s: Sample) -> bool:
            return s[0] == asset and s[1] == point and (s[3] == value or (s[3] != s[3] and value != value))

        self.wait_for(lambda ss: any(match(s) for s in ss), timeout, f"{asset}/{point} = {value}")
        return next(s for s in self.of(asset, point) if match(s))


def client_certificate(directory: Path, application_uri: str = "urn:assettwin:edge:test") -> tuple[Path, Path]:
    """A client application certificate (DER) and key (PEM) for the edge source."""
    from simulators.opcua_server import generate_certificate

    cert, key = directory / "client_cert.der", directory / "client_key.pem"
    generate_certificate(cert, key, application_uri, server=False, hostnames=("localhost", LOOPBACK))
    return cert, key


class FlakyLink:
    """A TCP relay that can silently drop everything, like a dead cellular link: no FIN, no RST, just silence.

    A server restart closes sockets, which a client notices at once; a lost network does not, and only the
    client's own keep-alive can find out. ``drop()`` starts discarding bytes both ways (new connections
    included), ``restore()`` forwards again.
    """

    def __init__(self, upstream_port: int, host: str = LOOPBACK) -> None:
        self.host, self.upstream = host, (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._dropping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{self.host}:{self.port}"

    def drop(self) -> None:
        self._dropping.set()

    def restore(self) -> None:
        self._dropping.clear()

    def close(self) -> None:
        self._closed = True
        for sock in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                down, _ = self._listener.accept()
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                continue
            up.settimeout(None)
            self._sockets += [down, up]
            for src, dst in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self._dropping.is_set():
                    dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.close()


# -- node-opcua -------------------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise HarnessError(f"{name} not found on PATH: the node-opcua interoperability tests need it; {NODE_HINT}")
    return path


def ensure_node_opcua() -> str:
    """The ``node`` binary, with node-opcua installed in ``tests/harness/node_opcua/node_modules`` (once)."""
    node = _tool("node")
    if (NODE_DIR / "node_modules" / "node-opcua" / "package.json").exists():
        return node
    npm = _tool("npm")
    # A lock: parallel test processes must not run two installs into the same directory.
    with open(Path(tempfile.gettempdir()) / "assettwin-node-opcua-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (NODE_DIR / "node_modules" / "node-opcua" / "package.json").exists():
            return node
        try:
            result = subprocess.run([npm, *NPM_INSTALL[1:]], cwd=NODE_DIR, capture_output=True, text=True,
                                    timeout=600, check=False)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"npm install in {NODE_DIR} did not finish in 600 s") from None
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise HarnessError(f"npm install in {NODE_DIR} failed (exit {result.returncode}); run it by hand "
                               f"({' '.join(NPM_INSTALL)}):\n{tail}")
    return node


class JsonLinesProcess:
    """A node script printing one JSON object per line on stdout; other lines (warnings) go to the log only."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(self.argv, cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        _LIVE.add(self)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with open(self.log_path, "a") as log:
            for line in self._proc.stdout:
                log.write(line)
                log.flush()
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError), self._cond:
                        self.events.append(json.loads(line))
                        self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def of(self, event: str, **match: Any) -> list[dict[str, Any]]:
        with self._cond:
            return [e for e in self.events
                    if e.get("event") == event and all(e.get(k) == v for k, v in match.items())]

    def wait_event(self, event: str, timeout: float, **match: Any) -> dict[str, Any]:
        """The first ``event`` line matching ``match``; HarnessError (with the log) if the process dies first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = self.of(event, **match)
                if found:
                    return found[0]
                errors = [e for e in self.events if e.get("event") in ("error", "timeout")]
                if errors or not self.running or time.monotonic() > deadline:
                    why = errors[0] if errors else ("exited" if not self.running else f"no {event!r} in {timeout:g} s")
                    raise HarnessError(f"{Path(self.argv[1]).name}: {why}; {self.log_path} ends with:\n"
                                       f"{self.log_tail()}")
                self._cond.wait(min(0.2, max(0.0, deadline - time.monotonic())))

    def wait_exit(self, timeout: float) -> int:
        assert self._proc is not None
        rc = self._proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return rc

    def stop(self) -> None:
        proc = self._proc
        if proc is not None:
            stop_process(proc)  # the Popen stays: its returncode is read after
        _LIVE.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


_LIVE: set[JsonLinesProcess] = set()
_CLIENT_RUNS = itertools.count(1)


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop()


class NodeOpcUaServer:
    """``server.js`` on a free loopback port, its PKI (and automatically trusted client certs) in a temp dir."""

    def __init__(self, modes: Sequence[str] = ("None",), period_ms: int = 100) -> None:
        self.node = ensure_node_opcua()
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="assettwin-node-opcua-"))
        self.modes = list(modes)
        self.process = JsonLinesProcess(
            [self.node, "server.js", str(self.port), "--pki", str(self.workdir / "pki"), "--modes", ",".join(modes),
             "--period-ms", str(period_ms)], self.workdir / "server.log")
        self.namespace = 1
        self.certificate_file: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://{LOOPBACK}:{self.port}"

    def node_id(self, name: str) -> str:
        return f"ns={self.namespace};s=pump-01.{name}"

    def start(self, timeout: float = 60) -> None:
        self.process.start()
        ready = self.process.wait_event("ready", timeout)
        self.namespace = int(ready["namespace"])
        self.certificate_file = Path(ready["certificateFile"]) if ready.get("certificateFile") else None

    def sent(self, name: str) -> dict[tuple[int, float], str]:
        """Every (source time in ns, value) the server set on a variable, with its status name."""
        return {(e["source_ts_ms"] * 1_000_000, float(e["value"])): e["status"]
                for e in self.process.of("value", node=self.node_id(name))}

    def close(self) -> None:
        self.process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def run_node_client(endpoint: str, node_id: str, workdir: Path, *, samples: int = 3,
                    timeout_ms: int = 20_000) -> JsonLinesProcess:
    """Start ``client.js`` (it reads, then subscribes); the caller waits for its events and its exit."""
    node = ensure_node_opcua()
    proc = JsonLinesProcess([node, "client.js", endpoint, node_id, "--samples", str(samples),
                             "--timeout-ms", str(timeout_ms), "--pki", str(workdir / "pki")],
                            workdir / f"node-client-{next(_CLIENT_RUNS)}.log")
    proc.start()
    return proc
