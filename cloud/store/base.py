"""The store contract: columnar writes in, ranges / windows / latest values out.

Schema (same in every store): one series per (tenant, asset, point); each sample has a time in ns,
a float ``value`` (absent when the source had none) and an integer ``quality``. In InfluxDB that is
measurement ``telemetry``, tags ``tenant``, ``asset``, ``point``, fields ``value``, ``quality``:
10,000 assets x 20 points = 200,000 series.
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


@dataclass
class Rows:
    """Samples to write, one columnar chunk per series: no Python object per sample on the way to the store."""

    series: list[SeriesRows] = field(default_factory=list)
    n: int = 0

    def __len__(self) -> int:
        return self.n

    def extend_series(self, tenant: str, asset: str, point: str, t_ns: Sequence[int],
                      values: Sequence[float | None], quality: Sequence[int]) -> None:
        if len(t_ns):
            self.series.append(SeriesRows(tenant, asset, point, t_ns, values, quality))
            self.n += len(t_ns)

    def samples(self) -> Iterator[tuple[str, str, str, int, float | None, int]]:
        """One (tenant, asset, point, t_ns, value, quality) per sample, for stores that write row by row."""
        for s in self.series:
            for t, v, q in zip(s.t_ns, s.values, s.quality, strict=True):
                yield s.tenant, s.asset, s.point, t, v, q


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

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
