"""Remaining useful life (RUL) of run-to-failure fleets, with scikit-learn only; benchmarked on NASA C-MAPSS.

``data`` reads the files and makes the capped target, ``features`` normalises per operating condition and
summarises trailing windows, ``model`` trains gradient boosting with grouped CV and conformal intervals and
scores RMSE / PHM, ``registry`` keeps versions with their metrics and data hash. ``twin pdm`` drives them.
"""

from cloud.pdm.data import DATASETS, RUL_CAP, Trajectories, default_data_dir, load_trajectories, load_true_rul
from cloud.pdm.model import RulModel, RulParams, RulPrediction, evaluate_dataset, grouped_folds, phm_score, rmse
from cloud.pdm.registry import ModelRegistry

__all__ = ["DATASETS", "RUL_CAP", "ModelRegistry", "RulModel", "RulParams", "RulPrediction", "Trajectories",
           "default_data_dir", "evaluate_dataset", "grouped_folds", "load_trajectories", "load_true_rul",
           "phm_score", "rmse"]
