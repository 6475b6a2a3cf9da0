"""Batch-shaped anomaly detectors: a numba kernel per file with a thin river-like class beside it.

Every detector works on one tick at a time: parallel arrays ``idx`` (point index, int64), ``t_ns``
(int64), ``x`` (float64) and ``ok`` (bool, False for bad quality), plus its own state arrays with one
row per point. Timestamps, not sample counts, drive decay, so irregular sampling and gaps are handled.
"""

from edge.detect.base import Detector
from edge.detect.ewma import EwmaZ

__all__ = ["Detector", "EwmaZ"]
