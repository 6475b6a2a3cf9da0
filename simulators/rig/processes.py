"""The platform's own processes, started the way a user starts them (``twin cloud run``,
``twin edge run``), for end-to-end and failure tests and the benchmarks: real processes, real ports, real logs.
They run the ``twin`` of the Python running this (``python -m twin``), installed or a checkout's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from simulators.rig.procs import stop_process
from simulators.rig.servers import free_port


class TwinProcess:
    """A ``twin …`` subprocess with its log in a file the tests can read."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.argv = [sys.executable, "-m", "twin", *argv]
        self.cwd = cwd
        self.log_path = log_path
        self.env = {**os.environ, "TWIN_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        rc = stop_process(self.proc, timeout, sig)
        self.proc = None
        return rc

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class CloudProcess(TwinProcess):
    """``twin cloud run`` on InfluxDB (through the harness front) and PostgreSQL or SQLite."""

    def __init__(self, workdir: Path, mqtt_url: str, database_url: str, influx_url: str, influx_db: str,
                 api_key: str = "test-admin-key", tenant: str = "acme", workers: int = 1,
                 extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.api_key = api_key
        env = {
            "TWIN_DATABASE_URL": database_url, "TWIN_STORE": "influx", "TWIN_INFLUX_URL": influx_url,
            "TWIN_INFLUX_BUCKET": f"{influx_db}/autogen", "TWIN_INFLUX_DATABASE": influx_db,
            "TWIN_MQTT_URL": mqtt_url, "TWIN_API_PORT": str(self.port), "TWIN_BOOTSTRAP_API_KEY": api_key,
            "TWIN_BOOTSTRAP_TENANT": tenant,
            # the ingest session is persistent: one per database, so a broker shared by several tests does not hand
            # one test's cloud what another's gateways sent while it was away (a restart of this cloud resumes it)
            "TWIN_INGEST_CLIENT_ID": f"ingest-{influx_db}", **(extra_env or {}),
        }
        super().__init__(["cloud", "run", "--workers", str(workers)], workdir / "cloud.log", env)
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key or self.api_key}"},
                            timeout=30)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"cloud exited early:\n{self.log()[-3000:]}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200 and r.json().get("ingest") in ("connected", None):
                    return  # an API with --workers 0 has no ingest of its own
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"cloud not ready in {timeout}s:\n{self.log()[-3000:]}")

    def metrics(self) -> dict[str, float]:
        with self.client() as c:
            return parse_metrics(c.get("/metrics").text)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition → {sample: value}; a counter's ``x_total`` is also under its family name ``x``
    (what the hand-written /metrics called it before prometheus_client). Labelled samples keep their labels."""
    out: dict[str, float] = {}
    for ln in text.splitlines():
        if ln and not ln.startswith("#"):
            name, value = ln.rsplit(" ", 1)
            out[name] = float(value)
            if name.endswith("_total"):
                out.setdefault(name[: -len("_total")], float(value))
    return out


def gateway_config(workdir: Path, uplink_url: str, source_url: str, *, tenant: str = "acme",
                   gateway: str = "gw-e2e", assets: list[str] | None = None, **overrides: Any) -> dict:
    """A gateway.yaml for a fleet of simulated trailers publishing on ``sim/{asset}/{point}``."""
    cfg: dict[str, Any] = {
        "tenant": tenant, "gateway": gateway,
        "uplink": {"url": uplink_url},
        "outbox": {"path": str(workdir / "outbox.sqlite")},
        "state_dir": str(workdir / "state"),
        "tick_ms": 100, "status_interval_s": 0.5,
        "assets": [{"id": a, "type": "refrigerated-trailer"} for a in (assets or ["trailer-001"])],
        "sources": [{"type": "mqtt", "name": "sensors", "link": {"url": source_url},
                     "subscriptions": [{"topic": "sim/+/+", "asset": "{1}", "point": "{2}", "payload": "json"}]}],
    }
    cfg.update(overrides)
    return cfg


class EdgeProcess(TwinProcess):
    """``twin edge run --config gateway.yaml``."""

    def __init__(self, workdir: Path, config: dict, env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "gateway.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        super().__init__(["edge", "run", "--config", str(self.config_path)], workdir / "edge.log", env)

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if not self.alive:
                raise RuntimeError(f"edge exited:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{needle!r} not in edge log after {timeout}s:\n{self.log()[-3000:]}")


def wait_until(predicate, timeout: float = 30, interval: float = 0.2, what: str = "condition"):
    """Poll until ``predicate()`` is truthy; returns its value or raises naming what was awaited."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
