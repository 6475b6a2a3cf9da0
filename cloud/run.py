"""Process entry points: ``twin cloud run`` (API + ingest workers) and ``twin cloud ingest``."""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing as mp
import signal
import threading

import uvicorn

from cloud.api.app import create_app
from cloud.platform import Platform
from cloud.settings import CloudSettings

log = logging.getLogger("cloud.run")


def run_ingest(settings: CloudSettings) -> None:
    """One ingest worker until SIGTERM/SIGINT."""
    platform = Platform.open(settings, with_ingest=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    platform.start()
    if settings.metrics_port:
        from cloud.metrics import platform_registry, serve

        ingest = platform.ingest
        serve(settings.metrics_host, settings.metrics_port, platform_registry(platform.counters),
              lambda: {"status": "ok" if ingest.connected.is_set() else "connecting", "role": "ingest",
                       "worker": settings.ingest_client_id, "store": settings.store})
    if settings.ingest_engine == "nats":
        log.info("ingest worker %s running (engine nats: partitions leased from %s → %s)", settings.ingest_client_id,
                 settings.nats_url, settings.store)
    else:
        log.info("ingest worker %s running (partition %d of %d, %s → %s)", settings.ingest_client_id,
                 settings.ingest_partition, settings.ingest_partitions, settings.mqtt_url, settings.store)
    while not stop.wait(settings.ingest_counters_interval_s):
        log.info("ingest counters %s", json.dumps(platform.counters(), sort_keys=True))
    log.info("ingest counters %s", json.dumps(platform.counters(), sort_keys=True))
    platform.close()
    log.info("ingest worker %s stopped", settings.ingest_client_id)


def _worker(settings_json: str) -> None:
    from models.logs import setup_logging

    setup_logging()
    run_ingest(CloudSettings.model_validate_json(settings_json))


def api_app():
    """The app of one of ``twin cloud run --api-workers N`` processes: the API and its broker link (live
    updates, configuration pushes), no ingest; settings from the environment like the parent's."""
    from models.logs import setup_logging

    setup_logging()
    platform = Platform.open(CloudSettings(), with_link=True)
    platform.start()
    atexit.register(platform.close)
    return create_app(platform)


def run_cloud(settings: CloudSettings, workers: int = 1, api_workers: int = 1) -> None:
    """The API in this process with one in-process ingest worker, plus ``workers - 1`` more processes.
    ``api_workers`` > 1: the API is served by that many processes of its own (one process answers with one
    core at a time: the interpreter lock); this one keeps its ingest worker and supervises them."""
    if settings.ingest_mode == "partitioned":
        settings = settings.model_copy(update={"ingest_partitions": max(1, workers), "ingest_partition": 0})
    # Migrations and the bootstrap key happen here, once, before any API worker starts.
    platform = Platform.open(settings, with_ingest=workers > 0, with_link=api_workers <= 1)
    procs = []
    for i in range(max(0, workers - 1)):
        s = settings.model_copy(update={"ingest_client_id": f"{settings.ingest_client_id}-{i + 1}",
                                        "ingest_partition": i + 1})
        pr = mp.get_context("spawn").Process(target=_worker, args=(s.model_dump_json(),), daemon=True)
        pr.start()
        procs.append(pr)
    platform.start()
    try:
        if api_workers > 1:
            uvicorn.run("cloud.run:api_app", factory=True, workers=api_workers, host=settings.api_host,
                        port=settings.api_port, log_level="warning", access_log=False)
        else:
            uvicorn.Server(uvicorn.Config(create_app(platform), host=settings.api_host, port=settings.api_port,
                                          log_level="warning", access_log=False)).run()
    finally:
        platform.close()
        for pr in procs:
            pr.terminate()
            pr.join(5)
