"""The store contract: columnar writes in, ranges / windows / latest values out.

Schema (same in every store): one series per (tenant, asset, point); each sample has a time in ns,
a float ``value`` (absent when the source had none) and an integer ``quality``. In InfluxDB that is
measurement ``telemetry``, tags ``tenant``, ``asset``, ``point``, fields ``value``, ``quality``:
10,000 assets x 20 points = 200,000 series.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

Agg = Literal["mean", "min", "max", "last", "count"]
AGGS: tuple[str, ...] = ("mean", "min", "max", "last", "count")


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or refused for a transient reason: retry later, do not drop."""


class StoreRejected(ValueError):
    """The store refused some samples for good (type conflict, outside retention)."""


@dataclass
class Rows:
    """Samples to write, columnar; one entry per sample."""

    tenant: list[str] = field(default_factory=list)
    asset: list[str] = field(default_factory=list)
    point: list[str] = field(default_factory=list)
    t_ns: list[int] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.t_ns)

    def extend_series(self, tenant: str, asset: str, point: str, t_ns: list[int],
                      values: list[float | None], quality: list[int]) -> None:
        n = len(t_ns)
        self.tenant.extend([tenant] * n)
        self.asset.extend([asset] * n)
        self.point.extend([point] * n)
        self.t_ns.extend(t_ns)
        self.value.extend(values)
        self.quality.extend(quality)


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
