"""The store contract: columnar writes in, ranges / windows / latest values out.

Schema (same in every store): one series per (tenant, asset, point); each sample has a time in ns,
a float ``value`` (absent when the source had none), an integer ``quality`` and, where the source gave one that
is not plain Good, its full ``status`` code (OPC-UA's 32-bit StatusCode: BadSensorFailure...). In InfluxDB that is
measurement ``telemetry``, tags ``tenant``, ``asset``, ``point``, fields ``value``, ``quality``, ``status``:
10,000 assets x 20 points = 200,000 series. Roll-ups keep the worst quality, not the codes.

Text points (an id, a state name) are kept apart from the numbers, one string ``value`` per sample, so a
float field never meets a string one. A personal text point (already a pseudonym when it reaches a store,
see ``cloud/pii.py``) also carries its pseudonym as the ``subject`` tag: a subject's data is then whole
series that the store can find and erase by tag (InfluxDB deletes by tag and time, never by field value).
In InfluxDB that is measurement ``text``, tags ``tenant``, ``asset``, ``point`` and, when personal,
``subject``; field ``value`` (string).

Raw samples are kept for a while, roll-ups longer (``cloud.store.rollup``): ``read`` and ``read_windows`` take
each stretch of a range from the resolution that still holds it, and say which (``Series.spans``);
``query_range`` and ``query_window`` read raw samples only, for rules that need them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from cloud.store.rollup import RAW_FOREVER, Resolution, Span, plan

Agg = Literal["mean", "min", "max", "last", "count"]
_T_MIN = -(2**63) + 2
"""The earliest time a store takes (``models.wire.T_NS_MIN``)."""
AGGS: tuple[str, ...] = ("mean", "min", "max", "last", "count")


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or refused for a transient reason: retry later, do not drop."""


class StoreRejected(ValueError):
    """The store refused some samples for good (type conflict, outside retention)."""


class SeriesRows(NamedTuple):
    """The samples of one series in a write, as parallel arrays (the shape they arrive in)."""

    tenant: str
    asset: str
    point: str
    t_ns: Sequence[int]
    values: Sequence[float | None]
    quality: Sequence[int]
    status: Sequence[int] | None = None
    """Each sample's full status code (0: none beyond its quality); None when all are 0."""


class TextRows(NamedTuple):
    """The string samples of one text point in a write; ``personal``: the values are pseudonyms (subjects)."""

    tenant: str
    asset: str
    point: str
    t_ns: Sequence[int]
    values: Sequence[str]
    personal: bool = False


@dataclass
class Rows:
    """Samples to write, one columnar chunk per series: no Python object per sample on the way to the store."""

    series: list[SeriesRows] = field(default_factory=list)
    n: int = 0
    text: list[TextRows] = field(default_factory=list)

    def __len__(self) -> int:
        return self.n

    def extend_series(self, tenant: str, asset: str, point: str, t_ns: Sequence[int],
                      values: Sequence[float | None], quality: Sequence[int],
                      status: Sequence[int] | None = None) -> None:
        if len(t_ns):
            self.series.append(SeriesRows(tenant, asset, point, t_ns, values, quality, status or None))
            self.n += len(t_ns)

    def extend_text(self, tenant: str, asset: str, point: str, t_ns: Sequence[int], values: Sequence[str],
                    personal: bool = False) -> None:
        """String samples of a text point; personal ones must already be pseudonyms (the store indexes them)."""
        if len(t_ns):
            self.text.append(TextRows(tenant, asset, point, t_ns, values, personal))
            self.n += len(t_ns)

    def samples(self) -> Iterator[tuple[str, str, str, int, float | None, int]]:
        """One (tenant, asset, point, t_ns, value, quality) per sample, for stores that write row by row."""
        for s in self.series:
            for t, v, q in zip(s.t_ns, s.values, s.quality, strict=True):
                yield s.tenant, s.asset, s.point, t, v, q


@dataclass
class TextSeries:
    """A text read result: parallel arrays in time order."""

    t_ns: list[int]
    values: list[str]


@dataclass(frozen=True)
class SubjectHit:
    """Where a subject's pseudonym appears: one asset's point, how many samples, from when to when."""

    asset: str
    point: str
    count: int
    first_ns: int
    last_ns: int


@dataclass
class Series:
    """A read result: parallel arrays in time order; ``spans``: which resolution served which part (``read``,
    ``read_windows``)."""

    t_ns: list[int]
    values: list[float | None]
    quality: list[int] | None = None
    spans: list[Span] = field(default_factory=list)
    status: list[int] | None = None
    """Raw samples' full status codes (0: none beyond the quality); None when all are 0."""


class TimeSeriesStore(ABC):
    @abstractmethod
    def write(self, rows: Rows) -> None:
        """Durably write all rows, or raise StoreUnavailable (nothing to assume written)."""

    def prepare(self, rows: Rows) -> Any:
        """The CPU half of a write (encoding), so a caller can do it while an earlier write is on the wire;
        hand the result to ``write_prepared``. Stores with nothing to encode return the rows."""
        return rows

    def write_prepared(self, prepared: Any) -> None:
        """The I/O half of a write: same contract as ``write``."""
        self.write(prepared)

    @abstractmethod
    def query_range(self, tenant: str, asset: str, point: str, start_ns: int, end_ns: int,
                    limit: int = 10_000) -> Series:
        """Raw samples with start <= t < end, oldest first, at most ``limit``."""

    @abstractmethod
    def query_window(self, tenant: str, asset: str, point: str, start_ns: int, end_ns: int,
                     every_ns: int, agg: Agg) -> Series:
        """One value per ``every_ns`` window (aligned to epoch) that has data."""

    # -- reads over any range: raw where it is kept, roll-ups beyond ----------------------------------
    def resolutions(self) -> tuple[Resolution, ...]:
        """Raw first, then the roll-ups this store keeps, with their retention (``cloud.store.rollup``)."""
        return (RAW_FOREVER,)

    def query_rollup_range(self, resolution: Resolution, tenant: str, asset: str, point: str, start_ns: int,
                           end_ns: int, limit: int = 10_000) -> Series:
        """A roll-up's windows with start <= window start < end as samples: the window's mean, its worst quality."""
        raise NotImplementedError(f"{type(self).__name__} keeps no roll-up {resolution.name}")

    def query_rollup_window(self, resolution: Resolution, tenant: str, asset: str, point: str, start_ns: int,
                            end_ns: int, every_ns: int, agg: Agg) -> Series:
        """``query_window`` answered from a roll-up: exact when ``every_ns`` is a multiple of its window."""
        raise NotImplementedError(f"{type(self).__name__} keeps no roll-up {resolution.name}")

    def read(self, tenant: str, asset: str, point: str, start_ns: int, end_ns: int, limit: int = 10_000,
             now_ns: int | None = None) -> Series:
        """Samples from start to end, oldest first, at most ``limit``: raw where raw is still kept, the finest
        roll-up's windows (mean, worst quality) beyond; ``spans`` says which came from where."""
        spans = plan(self.resolutions(), start_ns, end_ns, time.time_ns() if now_ns is None else now_ns)
        out = Series([], [], [], spans)
        for sp in spans:
            left = limit - len(out.t_ns)
            if left <= 0:
                break
            if sp.resolution.raw:
                part = self.query_range(tenant, asset, point, sp.start_ns, sp.end_ns, left)
            else:
                part = self.query_rollup_range(sp.resolution, tenant, asset, point, sp.start_ns, sp.end_ns, left)
            out.t_ns += part.t_ns
            out.values += part.values
            out.quality += part.quality if part.quality is not None else [0] * len(part.t_ns)
            if part.status is not None:
                out.status = (out.status or [0] * (len(out.t_ns) - len(part.t_ns))) + part.status
            elif out.status is not None:
                out.status += [0] * len(part.t_ns)
        return out

    def read_windows(self, tenant: str, asset: str, point: str, start_ns: int, end_ns: int, every_ns: int,
                     agg: Agg, now_ns: int | None = None) -> Series:
        """One value per window of ``every_ns`` that has data, each from the coarsest resolution that answers it
        exactly (a roll-up whose window divides ``every_ns``), else the finest one kept; ``spans`` says which. A
        ``start`` inside a roll-up window counts that whole roll-up window (raw data counts from ``start``)."""
        spans = plan(self.resolutions(), start_ns, end_ns, time.time_ns() if now_ns is None else now_ns, every_ns)
        out = Series([], [], None, spans)
        for sp in spans:
            if sp.resolution.raw:
                part = self.query_window(tenant, asset, point, sp.start_ns, sp.end_ns, sp.every_ns, agg)
            else:  # from the roll-up window holding the start: the first window keeps what precedes it there
                first = max(sp.start_ns // sp.resolution.every_ns * sp.resolution.every_ns, _T_MIN)
                part = self.query_rollup_window(sp.resolution, tenant, asset, point, first, sp.end_ns,
                                                sp.every_ns, agg)
            out.t_ns += part.t_ns
            out.values += part.values
        return out

    def maintain(self, now_ns: int | None = None) -> dict[str, int]:
        """Scheduled upkeep (``cloud/housekeeping.py``): roll up what arrived too late for the database's own
        roll-up, expire what the database does not expire itself. Counts of what was done, by name."""
        return {}

    @abstractmethod
    def latest(self, tenant: str, asset: str) -> dict[str, tuple[int, float | None]]:
        """Each point's last sample: point -> (t_ns, value)."""

    def latest_many(self, tenant: str, assets: Sequence[str]) -> dict[str, dict[str, tuple[int, float | None]]]:
        """``latest`` of many assets at once: asset -> point -> (t_ns, value); assets with no data are left
        out. Stores that can answer in one query override this (a fleet of thousands in one round trip)."""
        out = {}
        for a in dict.fromkeys(assets):
            if pts := self.latest(tenant, a):
                out[a] = pts
        return out

    @abstractmethod
    def query_text(self, tenant: str, asset: str, point: str, start_ns: int, end_ns: int,
                   limit: int = 10_000) -> TextSeries:
        """A text point's samples with start <= t < end, oldest first, at most ``limit``."""

    @abstractmethod
    def latest_text(self, tenant: str, asset: str) -> dict[str, tuple[int, str]]:
        """Each text point's last sample: point -> (t_ns, value)."""

    @abstractmethod
    def find_subject(self, tenant: str, subject: str) -> list[SubjectHit]:
        """Where a pseudonym appears among the tenant's personal text points, by (asset, point)."""

    @abstractmethod
    def erase_subject(self, tenant: str, subject: str) -> int:
        """Delete every sample of a pseudonym in the tenant; the number of samples deleted."""

    def erase_asset(self, tenant: str, asset: str) -> int:
        """Delete every sample of the asset (raw, text, roll-ups: a person's erasure); the raw samples deleted."""
        raise NotImplementedError(f"{type(self).__name__} cannot erase an asset")

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
