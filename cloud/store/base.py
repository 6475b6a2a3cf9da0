"""The store contract: columnar writes in, ranges / windows / latest values out.

Schema (same in every store): one series per (tenant, asset, point); each sample has a time in ns,
a float ``value`` (absent when the source had none) and an integer ``quality``. In InfluxDB that is
measurement ``telemetry``, tags ``tenant``, ``asset``, ``point``, fields ``value``, ``quality``:
10,000 assets x 20 points = 200,000 series.

Text points (an id, a state name) are kept apart from the numbers, one string ``value`` per sample, so a
float field never meets a string one. A personal text point (already a pseudonym when it reaches a store,
see ``cloud/pii.py``) also carries its pseudonym as the ``subject`` tag: a subject's data is then whole
series that the store can find and erase by tag (InfluxDB deletes by tag and time, never by field value).
In InfluxDB that is measurement ``text``, tags ``tenant``, ``asset``, ``point`` and, when personal,
``subject``; field ``value`` (string).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

Agg = Literal["mean", "min", "max", "last", "count"]
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
                      values: Sequence[float | None], quality: Sequence[int]) -> None:
        if len(t_ns):
            self.series.append(SeriesRows(tenant, asset, point, t_ns, values, quality))
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
    """A read result: parallel arrays in time order."""

    t_ns: list[int]
    values: list[float | None]
    quality: list[int] | None = None


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

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
