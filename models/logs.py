"""Structured logs: one JSON object per line (``TWIN_LOG_FORMAT=json``, the default for daemons) or
plain text for a person at a terminal (``TWIN_LOG_FORMAT=text``).

The line's fields (ts, level, logger, msg, pid, exc) are what log shippers and the tests read from every daemon,
edge and cloud alike, so the format lives in the one package both may import (it was in ``twin``, which made
``cloud.run`` import the command-line package)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(fmt: str | None = None, level: str | None = None) -> None:
    fmt = fmt or os.environ.get("TWIN_LOG_FORMAT", "json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("TWIN_LOG_LEVEL", "INFO")).upper())
    for noisy in ("transitions", "asyncua", "uvicorn.access", "httpx", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("amqtt").setLevel(logging.ERROR)  # the demo broker warns about options it does not need
