"""A local rig of real servers on free loopback ports — Mosquitto, InfluxDB (with a v2 write front for Debian's
1.6) and PostgreSQL — and the platform's own processes (``twin cloud run``, ``twin edge run``) started against them.

The test suite (``tests/harness`` re-exports it) and ``twin bench`` run on it. It lives in the installed package so
that a benchmark works from an install, not only from a checkout: it needs the server binaries on the machine
(``apt-get install -y mosquitto influxdb postgresql``), nothing from the repository.
"""

from simulators.rig.influx_front import InfluxV2WriteFront, InfluxV2WriteFrontProcess
from simulators.rig.servers import (
    HarnessError,
    InfluxServer,
    MosquittoServer,
    PostgresServer,
    free_port,
)

__all__ = [
    "HarnessError",
    "InfluxServer",
    "InfluxV2WriteFront",
    "InfluxV2WriteFrontProcess",
    "MosquittoServer",
    "PostgresServer",
    "free_port",
]
