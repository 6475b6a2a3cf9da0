"""Zero loss, end to end, through everything that goes wrong in the field at once.

120,000 samples flow sensor → site broker → edge agent → cloud broker → ingest → InfluxDB while
(a) the cloud broker is stopped for 30 s and restarted, (b) the edge agent is killed with SIGKILL at
a random moment and restarted, and (c) the cloud side is away for 60 s. At the end InfluxDB holds every
sample exactly once, checked by count and checksum per series.

Ingest runs in its default ``partitioned`` mode: Mosquitto 2.0.11 restores plain persistent
subscriptions after a restart but forgets shared ones, so in ``shared`` mode this very test loses what
the gateway replays between the broker's restart and the worker's re-subscription (measured).
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest

from simulators.devices import Reading, publish_readings
from tests.harness import MosquittoServer
from tests.harness.processes import CloudProcess, EdgeProcess, gateway_config, wait_until

T0 = 1_767_225_600_000_000_000
ASSETS = [f"trailer-{i:03d}" for i in range(1, 21)]
POINTS = ["supply_air", "return_air", "setpoint", "door", "compressor_current", "ambient"]
PER_SERIES = 1000
N = len(ASSETS) * len(POINTS) * PER_SERIES  # 120,000


def _value(a: int, p: int, i: int) -> float:
    return ((a * 7 + p * 3 + i) % 1000) * 0.25  # exact in binary: sums are exact checksums


def _readings():
    for i in range(PER_SERIES):
        for a, asset in enumerate(ASSETS):
            for p, point in enumerate(POINTS):
                yield Reading(asset, point, T0 + i * 1_000_000_000, _value(a, p, i))


@pytest.fixture
def brokers():
    site, cloud = MosquittoServer(), MosquittoServer()
    site.start()
    cloud.start()
    yield site, cloud
    site.close()
    cloud.close()


def test_no_sample_is_lost_or_duplicated_through_outages_and_a_kill(tmp_path, brokers, influxdb, postgres):
    site, cloud_broker = brokers
    db = f"zl_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    postgres.create_database(db)
    cloud = CloudProcess(tmp_path, cloud_broker.url, postgres.url_for(db), influxdb.url, db)
    cloud.start()
    cloud.wait_ready()
    edge = EdgeProcess(tmp_path / "edge", gateway_config(tmp_path / "edge", cloud_broker.url, site.url, assets=ASSETS))
    edge.start()
    edge.wait_log("source sensors: connected")

    report = {}
    pub = threading.Thread(target=lambda: report.update(r=publish_readings(site.url, _readings(), rate=2000,
                                                                            timeout_s=120)))
    rng = random.Random(20261123)
    kill_at = rng.uniform(40, 55)
    start = time.monotonic()
    pub.start()

    def at(t: float) -> None:
        time.sleep(max(0.0, start + t - time.monotonic()))

    try:
        at(2)
        cloud.stop()                      # (c) the cloud side goes away for 60 s
        at(6)
        cloud_broker.stop()               # (a) the cloud broker is down for 30 s
        at(36)
        cloud_broker.start()
        at(kill_at)
        edge.kill()                       # (b) kill -9 the agent at a random moment, and restart it
        edge.start()
        at(62)
        cloud.start()
        cloud.wait_ready()
        pub.join(180)
        assert report["r"].acked == N

        def stored() -> dict:
            res = influxdb.query("SELECT count(value), sum(value) FROM telemetry WHERE tenant = 'acme' "
                                 "GROUP BY asset, point", db=db)
            return {(s["tags"]["asset"], s["tags"]["point"]): (s["values"][0][1], s["values"][0][2])
                    for s in res["results"][0].get("series", [])}

        expected = {(asset, point): (PER_SERIES, sum(_value(a, p, i) for i in range(PER_SERIES)))
                    for a, asset in enumerate(ASSETS) for p, point in enumerate(POINTS)}
        wait_until(lambda: sum(c for c, _ in stored().values()) >= N, timeout=180, interval=1,
                   what=f"{N} samples in InfluxDB")
        time.sleep(2)  # anything still in flight would now show up as an excess
        assert stored() == expected
        with cloud.client() as api:
            gw = next(g for g in api.get("/api/v1/gateways").json()["items"] if g["id"] == "gw-e2e")
        assert gw["missing_seqs"] == 0
        assert cloud.metrics()["twin_ingest_dead_letters"] == 0
    finally:
        edge.stop()
        cloud.stop()
        influxdb.drop_database(db)
        postgres.drop_database(db)
