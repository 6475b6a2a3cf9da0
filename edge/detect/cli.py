"""``twin detect``: offline anomaly scoring of CSV files with the gateway's detectors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from edge.detect.offline import score_csv

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.callback()
def detect() -> None:
    """Score recorded data with the same anomaly detectors a gateway runs."""


@app.command()
def run(
    input: Annotated[Path, typer.Option("--input", "-i", exists=True, dir_okay=False, readable=True,
                                        help="CSV with a 'timestamp' column and numeric columns.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the scored CSV.")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", exists=True, dir_okay=False,
        help="detectors.yaml (default: what a new point gets on a gateway).")] = None,
    sep: Annotated[str, typer.Option("--sep", help="Field separator of input and output.")] = ",",
) -> None:
    """Add 'score' (0-1) and 'anomaly' (0/1) columns to every row of INPUT."""
    console = Console(stderr=True, soft_wrap=True)
    try:
        summary = score_csv(input, output, config, sep)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(code=2) from None
    console.print(f"scored {summary['rows']} rows x {summary['points']} columns: "
                  f"{summary['anomalies']} anomalous rows -> {output}")
