"""``twin pdm``: train, predict and evaluate remaining-useful-life models (C-MAPSS layout), with a registry.

Mounted by ``twin.cli`` when scikit-learn is installed (the ``cloud`` extra); a gateway has no use for it.
"""

from __future__ import annotations

import csv
import json
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from cloud.pdm.data import DATASETS, RUL_CAP, dataset_files, default_data_dir, file_sha256, load_trajectories
from cloud.pdm.model import RulModel, RulParams, evaluate_dataset, tune
from cloud.pdm.registry import ModelRegistry, load_model_dir, resolve

app = typer.Typer(help="Predictive maintenance: remaining-useful-life models.", no_args_is_help=True)

PUBLISHED_SHORT = {"Li 2018 DCNN": "DCNN", "trees, per-regime z (self-reported)": "trees", "STAR 2024": "STAR",
                   "TSMixer": "TSMixer", "FC-STGNN": "FC-STGNN"}
"""Published figures shown beside ours (``cloud.pdm.model.TARGET_RMSE``), by their column heading."""

ExtendOpt = typer.Option(0.0, help="estimate beyond the cap for engines that show no wear, faded in over this many "
                         "cycles below it (0: off; see cloud.pdm.model)")
DataOpt = typer.Option(default_data_dir(), "--data", help="directory with train_/test_/RUL_FD00x.txt")


def _check_dataset(dataset: str) -> str:
    d = dataset.upper()
    if d not in DATASETS:
        raise typer.BadParameter(f"{dataset!r}: expected one of {', '.join(DATASETS)}")
    return d


def _params(max_iter: int | None, folds: int, cap: float, extend_ramp: float = 0.0) -> RulParams:
    p = RulParams(n_folds=folds, cap=cap, extend_ramp=extend_ramp)
    return p if max_iter is None else replace(p, max_iter=max_iter)


def _train(data: Path, dataset: str, params: RulParams, units: int | None, jobs: int) -> tuple[RulModel, dict]:
    files = dataset_files(data, dataset)
    traj = load_trajectories(files["train"])
    if units is not None:
        traj = traj.subset(traj.units[:units])
    t0 = time.perf_counter()
    observed = load_trajectories(files["test"]) if files["test"].is_file() else None  # its ages: the RUL prior
    model = RulModel(params).fit(traj, jobs=jobs, observed=observed)
    metrics: dict[str, Any] = {"train_seconds": time.perf_counter() - t0, "cv": model.cv}
    if files["test"].is_file() and files["rul"].is_file():
        test = evaluate_dataset(data, dataset, model=model)
        metrics["test"] = {k: test[k] for k in ("engines", "rmse", "score", "rmse_capped_truth", "score_capped_truth",
                                                "coverage")}
    return model, metrics


@app.command()
def train(
    data: Path = DataOpt,
    dataset: str = typer.Option("FD001", "--dataset", help="FD001 .. FD004"),
    out: Path = typer.Option(..., "--out", help="registry directory (created if missing)"),
    name: str | None = typer.Option(None, help="model name in the registry (default: the dataset)"),
    units: int | None = typer.Option(None, help="train on the first N engines only (quick runs, tests)"),
    max_iter: int | None = typer.Option(None, help="boosting iterations (default: the tuned value)"),
    folds: int = typer.Option(5, help="grouped CV folds (for the interval and the CV figures)"),
    cap: float = typer.Option(RUL_CAP, help="piecewise-linear target cap, cycles (125 or 130 in the literature)"),
    extend_ramp: float = ExtendOpt,
    jobs: int = typer.Option(2, help="processes for the CV folds and the final fit"),
    activate: bool = typer.Option(True, help="make the new version the active one"),
    as_json: bool = typer.Option(False, "--json", help="print the registered metadata as JSON"),
) -> None:
    """Train on train_FD00x.txt and register a new version (scored on the test set when it is there)."""
    dataset = _check_dataset(dataset)
    model, metrics = _train(data, dataset, _params(max_iter, folds, cap, extend_ramp), units, jobs)
    train_file = dataset_files(data, dataset)["train"]
    reg = ModelRegistry(out)
    version = reg.register(name or dataset, model, metrics=metrics, data_sha256=file_sha256(train_file),
                           data_file=train_file.name, activate=activate)
    meta = reg.meta(name or dataset, version)
    if as_json:
        typer.echo(json.dumps(meta, indent=1))
        return
    test = metrics.get("test", {})
    typer.echo(f"{name or dataset} {version}{' (active)' if activate else ''}: trained in "
               f"{metrics['train_seconds']:.1f} s, CV RMSE {model.cv['rmse_capped']:.2f}"
               + (f", test RMSE {test['rmse_capped_truth']:.2f} against the truth clipped at the cap "
                  f"({test['rmse']:.2f} against the RUL file), PHM score {test['score_capped_truth']:.0f}"
                  if test else ""))


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="registry, model or version directory"),
    input: Path = typer.Option(..., "--input", help="trajectories in the C-MAPSS layout (e.g. test_FD001.txt)"),
    output: Path = typer.Option(..., "--output", help="CSV: unit,rul,lower,upper (one row per engine)"),
) -> None:
    """RUL of each engine at its last cycle, with the model's prediction interval."""
    hint = re.search(r"FD00\d", input.name.upper())
    try:
        vdir = resolve(model, hint.group(0) if hint else None)
    except LookupError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    pred = load_model_dir(vdir).predict(load_trajectories(input))
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unit", "rul", "lower", "upper"])
        for row in zip(pred.unit.tolist(), pred.rul, pred.lower, pred.upper, strict=True):
            w.writerow([row[0], *(f"{v:.3f}" for v in row[1:])])
    typer.echo(f"{len(pred.unit)} engines -> {output} (model {vdir})")


@app.command()
def evaluate(
    data: Path = DataOpt,
    datasets: str = typer.Option(",".join(DATASETS), help="comma-separated, e.g. FD001,FD003"),
    registry: Path | None = typer.Option(None, help="score the active models here instead of training"),
    out: Path | None = typer.Option(None, help="register the models trained here"),
    jobs: int = typer.Option(2, help="processes for each training"),
    extend_ramp: float = ExtendOpt,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Test RMSE and PHM score on each test set (each engine at its last cycle, against RUL_FD00x.txt)."""
    names = [_check_dataset(d.strip()) for d in datasets.split(",") if d.strip()]
    results = []
    t0 = time.perf_counter()
    for d in names:
        if registry is not None:
            reg = ModelRegistry(registry)
            r = evaluate_dataset(data, d, model=reg.load(d))
            r["train_seconds"] = reg.meta(d)["metrics"].get("train_seconds", 0.0)
        else:
            model, metrics = _train(data, d, RulParams(extend_ramp=extend_ramp), None, jobs)
            r = evaluate_dataset(data, d, model=model)
            r["train_seconds"] = metrics["train_seconds"]
            if out is not None:
                train_file = dataset_files(data, d)["train"]
                r["registered"] = ModelRegistry(out).register(d, model, metrics=metrics, data_file=train_file.name,
                                                              data_sha256=file_sha256(train_file))
        results.append(r)
    total = time.perf_counter() - t0
    report = {"results": results, "train_seconds_total": sum(r["train_seconds"] for r in results),
              "wall_seconds": total, "jobs": jobs, "trained": registry is None}
    if as_json:
        typer.echo(json.dumps(report, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="C-MAPSS test sets, each engine at its last cycle (published: truth clipped at the cap)")
    for col in ("set", "RMSE, truth ≤ cap", "PHM, truth ≤ cap", "target / goal", *PUBLISHED_SHORT.values(),
                "RMSE vs RUL file", "PHM vs RUL file", "90% PI coverage", "train s"):
        table.add_column(col, justify="right")
    for r in results:
        pub = r["published_rmse"]
        table.add_row(r["dataset"], f"{r['rmse_capped_truth']:.2f}", f"{r['score_capped_truth']:.0f}",
                      f"{r['target_rmse']:.1f} / {r['goal_rmse']:.1f}", *(f"{pub[k]:.1f}" for k in PUBLISHED_SHORT),
                      f"{r['rmse']:.2f}", f"{r['score']:.0f}", f"{r['coverage']:.2f}", f"{r['train_seconds']:.1f}")
    Console().print(table)
    typer.echo(f"total training {report['train_seconds_total']:.1f} s, wall {total:.1f} s, {jobs} processes")


@app.command("tune")
def tune_cmd(
    data: Path = DataOpt,
    dataset: str = typer.Option("FD001", "--dataset"),
    jobs: int = typer.Option(2),
) -> None:
    """Grouped-CV RMSE (capped target, all rows) of a small grid around the defaults, best first."""
    traj = load_trajectories(dataset_files(data, _check_dataset(dataset))["train"])
    grid: list[dict[str, Any]] = [{}, {"learning_rate": 0.1, "max_iter": 200},
                                  {"max_leaf_nodes": 15, "min_samples_leaf": 100}, {"min_samples_leaf": 300},
                                  {"max_leaf_nodes": 7, "max_iter": 800}]
    for score, cand in tune(traj, grid, jobs=jobs):
        typer.echo(f"{score:8.3f}  {cand or 'defaults'}")
