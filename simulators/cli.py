"""``twin sim``: run a scenario or replay a CSV against a broker. Thin: parsing and progress only."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from simulators.devices import DEFAULT_TOPIC_TEMPLATE, PublishReport
from simulators.replay import replay_csv
from simulators.scenario import load_scenario, run_scenario

app = typer.Typer(help="Simulated sensors: trailer scenarios with faults and ground truth, and CSV replay, "
                       "published over MQTT like field devices.", no_args_is_help=True)
console = Console(stderr=True)

Broker = Annotated[str | None, typer.Option(help="MQTT broker, mqtt://host:port (overrides the scenario's)")]


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console)


def _summary(report: PublishReport | None) -> None:
    if report is not None:
        console.print(f"published {report.sent:,} samples, {report.acked:,} acknowledged, "
                      f"in {report.seconds:.1f} s ({report.per_second:,.0f}/s)")


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML", exists=True, dir_okay=False)],
    broker: Broker = None,
    out: Annotated[Path | None, typer.Option(help="where ground_truth.json goes "
                                                  "(default artifacts/sim/NAME)")] = None,
    publish: Annotated[bool, typer.Option(help="send the samples; --no-publish only writes files")] = True,
) -> None:
    """Simulate a scenario, write its ground truth, and publish its samples."""
    try:
        sc = load_scenario(scenario)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SCENARIO") from None
    out_dir = out or Path("artifacts") / "sim" / sc.name
    with _progress() as bar:
        task = bar.add_task(f"{sc.name} ({sc.mode})", total=None)
        result = run_scenario(sc, out_dir, broker_url=broker, publish=publish,
                              on_progress=lambda sent, total: bar.update(task, completed=sent, total=total))
    n_faults = len(result.ground_truth["faults"])
    console.print(f"{len(result.runs)} trailers, {result.n_readings:,} samples, {n_faults} faults; "
                  f"ground truth in {out_dir / 'ground_truth.json'}")
    if result.report is None:
        console.print("nothing published (no broker given, or --no-publish)")
    _summary(result.report)


@app.command()
def replay(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="CSV with a time column", exists=True,
                                             dir_okay=False)],
    asset: Annotated[str, typer.Option(help="asset id the columns become points of")],
    broker: Annotated[str, typer.Option(help="MQTT broker, mqtt://host:port")] = "mqtt://127.0.0.1:1883",
    speed: Annotated[float, typer.Option(
        min=0, help="1 = real time, 10 = ten times faster, 0 = as fast as possible with original timestamps",
    )] = 1.0,
    style: Annotated[str, typer.Option(help="payload: json or bare")] = "json",
    topic_template: Annotated[str, typer.Option(help="topic per point")] = DEFAULT_TOPIC_TEMPLATE,
    time_column: Annotated[str, typer.Option(help="name of the time column")] = "timestamp",
) -> None:
    """Replay a CSV as a live device: one point per numeric column."""
    if style not in ("json", "bare"):
        raise typer.BadParameter("use json or bare", param_hint="--style")
    with _progress() as bar:
        task = bar.add_task(f"replay {csv_path.name}", total=None)
        try:
            report = replay_csv(csv_path, asset, broker, speed=speed, style=style,  # type: ignore[arg-type]
                                topic_template=topic_template, time_column=time_column,
                                on_progress=lambda sent, total: bar.update(task, completed=sent, total=total))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="CSV") from None
    _summary(report)
