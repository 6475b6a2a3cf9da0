"""TEST- AND BENCH-ONLY HTTP front that gives a real InfluxDB 1.6 the v2 write endpoint the platform uses.

Why this exists: the platform writes with ``influxdb-client`` (the v2 write API, ``POST /api/v2/write``).
InfluxDB only serves that endpoint from 1.8 on, but the InfluxDB packaged by Debian (and installed on
our test machines) is 1.6.7, which has just the 1.x ``POST /write``. This front translates

    POST /api/v2/write?org=O&bucket=DB[/RP]&precision=ns|us|ms|s
 -> POST /write?db=DB[&rp=RP]&precision=n|u|ms|s

passing the line-protocol body through byte for byte (``Content-Encoding: gzip`` included) and relaying
influxd's status and body back (204 on success, influxd's own 4xx/5xx on errors). Every other request
(``/query``, ``/ping``, ``/health``, ...) is proxied to influxd unchanged.

What it is NOT: a storage layer, a mock or a fake. Parsing, validation and storage of every point are
done by the real ``influxd`` process behind it; the front only rewrites one URL. It is never used
outside the test suite and ``twin bench``. When influxd is down the front answers 503, so a client sees a real outage.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from simulators.rig.procs import stop_process

log = logging.getLogger(__name__)

V2_WRITE_PATH = "/api/v2/write"
# v2 precision names -> 1.x precision names.
PRECISIONS = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}
# Per-connection headers (RFC 9110 section 7.6.1) that a proxy must not forward; lengths are recomputed.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_NO_BODY_STATUSES = frozenset({204, 304})


class BackendUnavailable(Exception):
    """influxd could not be reached (down, restarting, or refusing connections)."""


class _BackendPool:
    """Keep-alive connections to influxd, shared by the front's handler threads."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()

    def request(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send one request; a pooled connection that influxd closed (e.g. a restart) is retried fresh."""
        conn, reused = self._acquire()
        while True:
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except TimeoutError as exc:  # influxd is hung: do not resend (a write could apply twice).
                conn.close()
                raise BackendUnavailable(f"timed out: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused:  # A stale keep-alive connection; the others in the pool are likely stale too.
                    self.clear()
                    conn, reused = self._new(), False
                    continue
                raise BackendUnavailable(str(exc) or type(exc).__name__) from exc
            if resp.will_close:
                conn.close()
            else:
                self._idle.put(conn)
            return resp.status, resp.getheaders(), data

    def clear(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return

    def _acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        try:
            return self._idle.get_nowait(), True
        except queue.Empty:
            return self._new(), False

    def _new(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # Tests fire bursts of concurrent writes; don't refuse them at accept().
    pool: _BackendPool


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Keep-alive, as influxdb-client (urllib3) expects.
    timeout = 60  # Idle keep-alive connections end instead of pinning a thread forever.
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's delayed ACK of
    # the headers: ~40 ms added to every read answered through the front.
    disable_nagle_algorithm = True
    server: _FrontServer

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_GET

    def log_message(self, format: str, *args: object) -> None:
        log.debug("influx front: " + format, *args)

    def _proxy(self) -> None:
        body = self._read_body()
        target = self.path
        if self.command == "POST" and urlsplit(self.path).path == V2_WRITE_PATH:
            target_or_error = _v1_write_target(self.path)
            if isinstance(target_or_error, tuple):
                self._send_json(*target_or_error)
                return
            target = target_or_error
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            status, resp_headers, data = self.server.pool.request(self.command, target, body, headers)
        except BackendUnavailable as exc:
            self._send_json(503, "unavailable", f"influxd behind the test front is unreachable: {exc}")
            return
        self.send_response(status)
        for name, value in resp_headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() not in ("date", "server"):
                self.send_header(name, value)
        if status not in _NO_BODY_STATUSES:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and status not in _NO_BODY_STATUSES:
            self.wfile.write(data)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            while self.rfile.readline().strip():  # trailers, up to the blank line
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _send_json(self, status: int, code: str, message: str) -> None:
        """An error in the v2 shape ({"code", "message"}), which influxdb-client puts in its exception."""
        data = json.dumps({"code": code, "message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _v1_write_target(path: str) -> str | tuple[int, str, str]:
    """Map a v2 write URL to the 1.x one, or return (status, code, message) for a bad request."""
    params = parse_qs(urlsplit(path).query)
    bucket = params.get("bucket", [""])[0]
    precision = params.get("precision", ["ns"])[0]
    if not bucket:
        return 400, "invalid", "bucket is required"
    if precision not in PRECISIONS:
        return 400, "invalid", f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}"
    db, _, rp = bucket.partition("/")
    query = {"db": db, **({"rp": rp} if rp else {}), "precision": PRECISIONS[precision]}
    return "/write?" + urlencode(query)


class InfluxV2WriteFront:
    """TEST-ONLY: serves ``/api/v2/write`` for a real influxd 1.x and proxies everything else to it.

    It lives independently of influxd (start it once, restart influxd behind it at will): while influxd
    is down every request gets a 503, as a client would see from a real outage.
    """

    def __init__(
        self, backend_host: str, backend_port: int, *, host: str = "127.0.0.1", backend_timeout: float = 30.0
    ) -> None:
        self.host = host
        self.backend_host, self.backend_port = backend_host, backend_port
        self._backend_timeout = backend_timeout
        self._server: _FrontServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the influx front is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Bind a free loopback port (port 0: no race with other instances) and serve in a daemon thread."""
        if self._server is not None:
            return
        server = _FrontServer((self.host, 0), _Handler)
        server.pool = _BackendPool(self.backend_host, self.backend_port, self._backend_timeout)
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="influx-v2-front", daemon=True
        )
        self._server = server
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server.pool.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None


class InfluxV2WriteFrontProcess:
    """The same front in a process of its own, as influxd is: in the test process its proxying (a 400 KB
    query answer is read and re-sent in Python) took the GIL from the API server under test (measured: a
    cold 1,000-asset fleet read 331-846 ms in process, with the JSON decode of the answer waiting on it).

    The child serves until its stdin closes, so it also ends when the test process dies."""

    def __init__(self, backend_host: str, backend_port: int, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.backend_host, self.backend_port = backend_host, backend_port
        self._proc: subprocess.Popen | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the influx front is not started")
        return f"http://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("the influx front is not started")
        return self._proc.pid

    def start(self) -> None:
        if self._proc is not None:
            return
        main = f"import sys; from {__name__} import main; main(sys.argv[1:])"  # not -m: imported once
        proc = subprocess.Popen([sys.executable, "-c", main, self.backend_host, str(self.backend_port), self.host],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.strip().isdigit():
            proc.kill()
            proc.wait(5)
            raise RuntimeError(f"the influx front process did not start (it printed {line!r})")
        self._proc, self._port = proc, int(line)

    def stop(self) -> None:
        proc, self._proc, self._port = self._proc, None, None
        if proc is None:
            return
        if proc.stdin:
            proc.stdin.close()
        stop_process(proc)


def main(argv: list[str]) -> None:
    """Arguments ``BACKEND_HOST BACKEND_PORT [HOST]``: print the port, serve until stdin closes."""
    front = InfluxV2WriteFront(argv[0], int(argv[1]), host=argv[2] if len(argv) > 2 else "127.0.0.1")
    front.start()
    print(front.port, flush=True)
    sys.stdin.read()
    front.stop()
