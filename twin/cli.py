"""``twin``: subcommands for each part of the platform. Heavy imports happen inside the commands, so a
gateway with only the ``[edge]`` extra can run ``twin edge`` without FastAPI or SQLAlchemy."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from models.logs import setup_logging

app = typer.Typer(help="assettwin: IoT edge-to-cloud asset twin platform.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
edge_app = typer.Typer(help="The gateway agent.", no_args_is_help=True)
cloud_app = typer.Typer(help="The cloud twin: API and ingest.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(edge_app, name="edge")
app.add_typer(cloud_app, name="cloud")
cloud_app.add_typer(keys_app, name="keys")


OPTIONAL_GROUPS = (
    ("simulators.cli", "sim", "Simulated sensors: scenarios, replay, fleet load."),
    ("edge.detect.cli", "detect", "Anomaly detectors: offline scoring."),
    ("twin.coldchain_cli", "coldchain", "Cold chain: profiles, MKT, shipment checks."),
    ("twin.pdm_cli", "pdm", "Predictive maintenance: remaining-useful-life models."),
    ("twin.influx_cli", "influx", "InfluxDB: buckets, retention, v1 mapping, tokens."),
    ("twin.bench", "bench", "Benchmarks; figures go to docs/benchmarks.md."),
)


def _mount_optional(argv: list[str]) -> None:
    """Command groups whose modules need optional extras (a gateway has no cloud libraries): mounted when
    their imports are installed — and only the one being run, when a command names one: `twin edge run`
    must not import scikit-learn and FastAPI just to list them (measured: 296 MB vs 183 MB RSS)."""
    names = {name for _, name, _ in OPTIONAL_GROUPS}
    wanted = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
    for module, name, help_ in OPTIONAL_GROUPS:
        if wanted is not None and wanted != name and (wanted in names or wanted in CORE_GROUPS):
            continue
        try:
            group = importlib.import_module(module).app
        except ModuleNotFoundError:
            continue
        app.add_typer(group, name=name, help=help_)


@edge_app.command("run")
def edge_run(config: Path = typer.Option(..., "--config", "-c", help="gateway.yaml")) -> None:
    """Run the edge agent until SIGTERM (then flush the outbox and save detector state)."""
    setup_logging()
    from edge.agent import run_forever
    from edge.config import ConfigError

    try:
        run_forever(config)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None


@edge_app.command("compile")
def edge_compile(
    out: Path | None = typer.Option(None, "--out", help="where the build goes (default: TWIN_KERNEL_DIR, else "
                                    "edge/_aot in the installed package)"),
    if_needed: bool = typer.Option(False, "--if-needed", help="do nothing when a build for these sources is there"),
) -> None:
    """Compile the detector kernels ahead of time: the agent then runs without numba's JIT (no LLVM in memory,
    no compile on the first tick). Needs numba and a C compiler here; run again after an upgrade."""
    import os

    if out is not None:
        os.environ["TWIN_KERNEL_DIR"] = str(out)
    from edge import kernels

    if if_needed:
        why = kernels.load_build()
        if why is None:
            typer.echo(f"kernels: the build in {kernels.kernel_dir()} is current")
            return
        typer.echo(f"kernels: {why}; building")
    from edge.compile import build

    try:
        manifest = build(kernels.kernel_dir(), log=typer.echo)
    except Exception as exc:  # no compiler, no headers, a read-only directory: say so, the agent still runs on the JIT
        typer.echo(f"kernels: build in {kernels.kernel_dir()} failed ({type(exc).__name__}: {exc}); it needs a C "
                   "compiler, Python's headers and a writable directory (--out). The agent runs on numba's JIT "
                   "meanwhile.", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"kernels: built {manifest.parent}")


@edge_app.command("check")
def edge_check(config: Path = typer.Option(..., "--config", "-c")) -> None:
    """Validate a gateway configuration and exit."""
    from edge.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"configuration error:\n{exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"ok: {cfg.tenant}/{cfg.gateway}, {len(cfg.points())} points, {len(cfg.sources)} sources")


def _cloud_settings():
    """Settings from TWIN_* variables; a bad one stops start-up naming it (exit 2), not with a traceback."""
    from pydantic import ValidationError

    from cloud.settings import CloudSettings

    try:
        return CloudSettings()
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(x) for x in err["loc"]).upper()
            typer.echo(f"settings error: {'TWIN_' + where + ': ' if where else ''}{err['msg']}", err=True)
        raise typer.Exit(2) from None


@cloud_app.command("run")
def cloud_run(workers: int = typer.Option(1, "--workers", "-w", help="ingest worker processes"),
              api_workers: int = typer.Option(1, "--api-workers", envvar="TWIN_API_WORKERS",
                                              help="API processes (more than one: the API in processes of its own)"),
              ) -> None:
    """API and ingest (settings from TWIN_* environment variables)."""
    setup_logging()
    from cloud.run import run_cloud

    run_cloud(_cloud_settings(), workers=workers, api_workers=api_workers)


@cloud_app.command("ingest")
def cloud_ingest() -> None:
    """One ingest worker, no API."""
    setup_logging()
    from cloud.run import run_ingest

    run_ingest(_cloud_settings())


@keys_app.command("create")
def keys_create(tenant: str = typer.Option(...), role: str = typer.Option("viewer"),
                name: str = typer.Option(""),
                grantee: str | None = typer.Option(None, help="--role customer: the organisation it speaks for")
                ) -> None:
    """Create an API key; the key is printed once and only its hash is stored."""
    from cloud.registry import Registry
    from cloud.settings import CloudSettings
    from cloud.sharing import CUSTOMER, issue_customer_key

    if (role == CUSTOMER) != (grantee is not None):
        raise typer.BadParameter("give --grantee with --role customer, and only then", param_hint="--grantee")
    reg = Registry(CloudSettings().database_url)
    reg.create_schema()
    if grantee is not None:
        typer.echo(issue_customer_key(reg, tenant, grantee, "cli", name)[1])
        return
    typer.echo(reg.create_api_key(tenant, role, name))


@app.command()
def demo(
    broker: str | None = typer.Option(None, help="mqtt://host:port of a real broker (default: embedded)"),
    influx: str | None = typer.Option(None, help="http://host:port of a real InfluxDB (default: embedded)"),
    port: int = typer.Option(8000, help="API port"),
    data_dir: Path = typer.Option(Path(".demo"), help="where the demo keeps its files"),
    trailers: int = typer.Option(3, help="simulated trailers"),
    duration: float = typer.Option(0.0, help="stop after this many seconds (0: until Ctrl-C)"),
    tour: str = typer.Option("on", help="on: seed a week of history and play the scripted story; off: plain"),
    speed: float = typer.Option(10.0, min=1.0, help="the tour's clock, times the wall clock until it catches up"),
) -> None:
    """The whole chain on one machine: simulated trailers → edge agent → broker → cloud → API."""
    setup_logging("text", "WARNING")
    from twin.demo import run_demo

    if tour not in ("on", "off"):
        raise typer.BadParameter("on or off", param_hint="--tour")
    run_demo(broker=broker, influx=influx, port=port, data_dir=data_dir, trailers=trailers, duration=duration,
             tour=tour == "on", speed=speed)


CORE_GROUPS = {"edge", "cloud", "demo"}
_mount_optional(sys.argv)
