"""Real-server test harness: throwaway Mosquitto, InfluxDB and PostgreSQL instances for tests.

Each server runs from the Debian-installed binary on a free loopback port with a temporary data
directory, so tests never touch (or collide with) services already running on the default ports.
"""

from .influx_front import InfluxV2WriteFront, InfluxV2WriteFrontProcess
from .servers import (
    HarnessError,
    InfluxServer,
    MosquittoServer,
    PostgresServer,
    TlsFiles,
    TlsMosquittoServer,
    free_port,
)

__all__ = [
    "HarnessError",
    "InfluxServer",
    "InfluxV2WriteFront",
    "InfluxV2WriteFrontProcess",
    "MosquittoServer",
    "PostgresServer",
    "TlsFiles",
    "TlsMosquittoServer",
    "free_port",
]
