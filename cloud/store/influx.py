"""InfluxDB store: writes through ``influxdb-client`` (the v2 write API of InfluxDB 1.8+, 2.x, 3.x and
Cloud), reads with InfluxQL over ``/query`` (served by all of them; 2.x needs the v1 database
mapping that ``twin influx init`` creates).

Writes are synchronous on purpose: ingest acknowledges an MQTT message only after its samples are
durably in InfluxDB, so the write must have returned.
"""

from __future__ import annotations

import math

import httpx
from influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from cloud.store.base import Agg, Rows, Series, StoreRejected, StoreUnavailable, TimeSeriesStore

MEASUREMENT = "telemetry"
_TAG_ESCAPE = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\=", "\\": "\\\\"})


def _tag(v: str) -> str:
    return v.translate(_TAG_ESCAPE)


def _ql_str(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


def line_protocol(rows: Rows) -> list[str]:
    """One line per sample; a missing or non-finite value is written as quality only."""
    keys: dict[tuple[str, str, str], str] = {}
    out = []
    for tenant, asset, point, t, v, q in zip(rows.tenant, rows.asset, rows.point, rows.t_ns, rows.value,
                                             rows.quality, strict=True):
        k = (tenant, asset, point)
        key = keys.get(k)
        if key is None:
            key = keys[k] = f"{MEASUREMENT},asset={_tag(asset)},point={_tag(point)},tenant={_tag(tenant)}"
        if v is None or not math.isfinite(v):
            out.append(f"{key} quality={q}i {t}")
        else:
            out.append(f"{key} value={v!r},quality={q}i {t}")
    return out


class InfluxStore(TimeSeriesStore):
    def __init__(self, url: str, token: str, org: str, bucket: str, database: str,
                 timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.bucket = bucket
        self.org = org
        self.database = database
        self._client = InfluxDBClient(url=self.url, token=token or "unused", org=org,
                                      timeout=int(timeout_s * 1000), enable_gzip=True)
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        headers = {"Authorization": f"Token {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            self._write.write(bucket=self.bucket, org=self.org, record="\n".join(lines), write_precision="ns")
        except ApiException as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 404, 429):
                raise StoreRejected(f"InfluxDB rejected the write ({exc.status}): {exc.body or exc.reason}") \
                    from None
            raise StoreUnavailable(f"InfluxDB write failed ({exc.status}): {exc.reason}") from None
        except (Urllib3Error, OSError) as exc:
            raise StoreUnavailable(f"InfluxDB unreachable at {self.url}: {exc}") from None

    def write(self, rows: Rows) -> None:
        self.write_lines(line_protocol(rows))

    # -- reads --------------------------------------------------------------------------------
    def _query(self, q: str) -> list[dict]:
        try:
            r = self._http.get("/query", params={"db": self.database, "q": q, "epoch": "ns"})
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"InfluxDB unreachable at {self.url}: {exc}") from None
        if r.status_code >= 500:
            raise StoreUnavailable(f"InfluxDB query failed ({r.status_code})")
        body = r.json()
        results = body.get("results", [{}])
        err = body.get("error") or results[0].get("error")
        if err:
            raise ValueError(f"InfluxQL error: {err}")
        return results[0].get("series", [])

    def _where(self, tenant: str, asset: str, point: str | None, start_ns: int, end_ns: int) -> str:
        w = f"tenant = {_ql_str(tenant)} AND asset = {_ql_str(asset)}"
        if point is not None:
            w += f" AND point = {_ql_str(point)}"
        return f"{w} AND time >= {int(start_ns)} AND time < {int(end_ns)}"

    def query_range(self, tenant, asset, point, start_ns, end_ns, limit=10_000) -> Series:
        q = (f"SELECT value, quality FROM {MEASUREMENT} WHERE {self._where(tenant, asset, point, start_ns, end_ns)}"
             f" ORDER BY time ASC LIMIT {int(limit)}")
        series = self._query(q)
        if not series:
            return Series([], [], [])
        vals = series[0]["values"]
        return Series([r[0] for r in vals], [r[1] for r in vals],
                      [int(r[2]) if r[2] is not None else 0 for r in vals])

    def query_window(self, tenant, asset, point, start_ns, end_ns, every_ns, agg: Agg) -> Series:
        every_us = max(1, int(every_ns) // 1000)
        q = (f"SELECT {agg}(value) FROM {MEASUREMENT} WHERE {self._where(tenant, asset, point, start_ns, end_ns)}"
             f" GROUP BY time({every_us}u) fill(none)")
        series = self._query(q)
        if not series:
            return Series([], [])
        vals = series[0]["values"]
        return Series([r[0] for r in vals], [r[1] for r in vals])

    def latest(self, tenant, asset) -> dict[str, tuple[int, float | None]]:
        q = (f"SELECT last(value) FROM {MEASUREMENT} WHERE tenant = {_ql_str(tenant)} AND "
             f"asset = {_ql_str(asset)} GROUP BY point")
        return {s["tags"]["point"]: (s["values"][0][0], s["values"][0][1]) for s in self._query(q)}

    def close(self) -> None:
        self._write.close()
        self._client.close()
        self._http.close()
