"""Remaining useful life (RUL) of run-to-failure fleets, with scikit-learn only; benchmarked on NASA C-MAPSS.

``data`` reads the files and makes the capped target, ``features`` normalises per operating condition and
summarises trailing windows, ``model`` trains gradient boosting with grouped CV and conformal intervals and
scores RMSE / PHM, ``registry`` keeps versions with their metrics and data hash. ``twin pdm`` drives them.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"DATASETS": "data", "RUL_CAP": "data", "Trajectories": "data", "default_data_dir": "data",
          "load_trajectories": "data", "load_true_rul": "data", "RulModel": "model", "RulParams": "model",
          "RulPrediction": "model", "evaluate_dataset": "model", "grouped_folds": "model", "phm_score": "model",
          "rmse": "model", "ModelRegistry": "registry"}


def __getattr__(name: str) -> Any:
    """Loaded on first use (PEP 562): ``cloud.pdm.baseline`` is imported by every API process, and importing the
    model here pulled scikit-learn and scipy into each (1.3 s of a 3.2 s start)."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"cloud.pdm.{_WHERE[name]}"), name)


__all__ = sorted(_WHERE)
