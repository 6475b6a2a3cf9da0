"""Time-series stores behind one contract (``TimeSeriesStore``): InfluxDB in production, an embedded
SQLite store for the demo and for gateways-in-a-box. Both pass the same contract tests."""

from cloud.store.base import Rows, Series, StoreUnavailable, SubjectHit, TextRows, TextSeries, TimeSeriesStore


def open_store(settings) -> TimeSeriesStore:
    if settings.store == "influx":
        from cloud.store.influx import InfluxStore

        return InfluxStore(settings.influx_url, settings.influx_token, settings.influx_org,
                           settings.influx_bucket, settings.influx_database,
                           gzip_level=settings.influx_gzip_level)
    from cloud.store.embedded import EmbeddedStore

    return EmbeddedStore(settings.embedded_path)


__all__ = ["Rows", "Series", "StoreUnavailable", "SubjectHit", "TextRows", "TextSeries", "TimeSeriesStore",
           "open_store"]
