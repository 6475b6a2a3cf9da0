"""Time-series stores behind one contract (``TimeSeriesStore``): InfluxDB in production, an embedded
SQLite store for the demo and for gateways-in-a-box. Both pass the same contract tests, and both keep raw data
for a while and roll-ups beyond (``cloud.store.rollup``)."""

from cloud.store.base import Rows, Series, StoreUnavailable, SubjectHit, TextRows, TextSeries, TimeSeriesStore
from cloud.store.rollup import DAY_NS, HOUR_NS, MINUTE_NS, Resolution, Span


def open_store(settings) -> TimeSeriesStore:
    """The configured store, behind the latest-values cache unless ``latest_cache_s`` is 0."""
    store: TimeSeriesStore
    if settings.store == "influx":
        from cloud.store.influx import InfluxStore

        store = InfluxStore(settings.influx_url, settings.influx_token, settings.influx_org,
                            settings.influx_bucket, settings.influx_database,
                            gzip_level=settings.influx_gzip_level)
    else:
        from cloud.store.embedded import EmbeddedStore

        def days(d: float) -> int:
            return int(d * DAY_NS)

        store = EmbeddedStore(settings.embedded_path, raw_keep_ns=days(settings.embedded_raw_retention_days),
                              rollups=(Resolution("1m", MINUTE_NS, days(settings.embedded_minute_retention_days)),
                                       Resolution("1h", HOUR_NS, days(settings.embedded_hour_retention_days))))
    if settings.latest_cache_s > 0:
        from cloud.store.latest import LatestCache

        store = LatestCache(store, settings.latest_cache_s, future_tolerance_s=settings.ingest_future_tolerance_s)
    return store


__all__ = ["Resolution", "Rows", "Series", "Span", "StoreUnavailable", "SubjectHit", "TextRows", "TextSeries",
           "TimeSeriesStore", "open_store"]
