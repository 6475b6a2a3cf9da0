"""Batch-shaped anomaly detectors: a numba kernel per file with a thin river-like class beside it.

Every detector works on one tick at a time: parallel arrays ``idx`` (point index, int64), ``t_ns``
(int64), ``x`` (float64) and ``ok`` (bool, False for bad quality), plus its own state arrays with one
row per point. Timestamps, not sample counts, drive decay, so irregular sampling and gaps are handled.

Per point: ``ewma_z``, ``robust_z``, ``cusum``, ``page_hinkley``, ``spike``, ``stuck``, ``limits``
(``registry.build_detectors`` turns the catalogue's specs into an ``Ensemble``); per asset: ``Mspc``
(T²/SPE on a baseline from ``multivariate.fit``). ``EventTracker`` turns flags into events;
``offline.score_csv`` and ``cli.app`` score CSV files.
"""

from edge.detect.base import Detector
from edge.detect.cusum import Cusum
from edge.detect.ensemble import Ensemble
from edge.detect.events import AnomalyEvent, EventTracker
from edge.detect.ewma import EwmaZ
from edge.detect.limits import Limits
from edge.detect.multivariate import Mspc, MspcBaseline, RowBuilder, fit
from edge.detect.page_hinkley import PageHinkley
from edge.detect.registry import DEFAULT_DETECTORS, KINDS, build_detectors
from edge.detect.robust import RobustZ
from edge.detect.spike import Spike
from edge.detect.stuck import Stuck

__all__ = [
    "DEFAULT_DETECTORS",
    "KINDS",
    "AnomalyEvent",
    "Cusum",
    "Detector",
    "Ensemble",
    "EventTracker",
    "EwmaZ",
    "Limits",
    "Mspc",
    "MspcBaseline",
    "PageHinkley",
    "RobustZ",
    "RowBuilder",
    "Spike",
    "Stuck",
    "build_detectors",
    "fit",
]
