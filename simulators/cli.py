"""``twin sim``: scenarios, CSV and C-MAPSS replay, fleet load and scoring. Thin: parsing and progress only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from simulators.devices import DEFAULT_TOPIC_TEMPLATE, PublishReport
from simulators.replay import replay_csv
from simulators.scenario import _seconds, load_scenario, run_scenario
from simulators.turbofan import DEFAULT_DATA

app = typer.Typer(help="Simulated sensors: trailer scenarios with faults and ground truth, CSV and C-MAPSS "
                       "replay, fleet load, and scoring detections, published over MQTT like field devices.",
                  no_args_is_help=True)
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
    _simulate(load_scenario, run_scenario, scenario, broker, out, publish,
              lambda result: f"{len(result.runs)} trailers")


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


@app.command()
def machines(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML with a machines: list (fleet: trailers optional)",
                                             exists=True, dir_okay=False)],
    broker: Broker = None,
    out: Annotated[Path | None, typer.Option(help="where ground_truth.json goes "
                                                  "(default artifacts/sim/NAME)")] = None,
    publish: Annotated[bool, typer.Option(help="send the samples; --no-publish only writes files")] = True,
) -> None:
    """Simulate a scenario with rotating machines (slow points; the waveform stays local) and trailers."""
    from simulators.machine import load_machine_scenario, run_machine_scenario

    _simulate(load_machine_scenario, run_machine_scenario, scenario, broker, out, publish,
              lambda result: f"{len(result.ground_truth['assets'])} assets")


@app.command()
def vessels(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML with a vessels: list and their faults",
                                             exists=True, dir_okay=False)],
    broker: Broker = None,
    out: Annotated[Path | None, typer.Option(help="where ground_truth.json goes "
                                                  "(default artifacts/sim/NAME)")] = None,
    publish: Annotated[bool, typer.Option(help="send the samples; --no-publish only writes files")] = True,
) -> None:
    """Simulate ships over voyages (main engine and shaft line) with injected faults."""
    from simulators.vessel import load_vessel_scenario, run_vessel_scenario

    _simulate(load_vessel_scenario, run_vessel_scenario, scenario, broker, out, publish,
              lambda result: f"{len(result.runs)} vessels")


def _simulate(load, run, scenario: Path, broker: str | None, out: Path | None, publish: bool, what) -> None:
    """Load a scenario file (a clear error naming it), run it with a progress bar, say what it made."""
    try:
        sc = load(scenario)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SCENARIO") from None
    out_dir = out or Path("artifacts") / "sim" / sc.name
    with _progress() as bar:
        task = bar.add_task(f"{sc.name} ({sc.mode})", total=None)
        result = run(sc, out_dir, broker_url=broker, publish=publish,
                     on_progress=lambda sent, total: bar.update(task, completed=sent, total=total))
    console.print(f"{what(result)}, {result.n_readings:,} samples, {len(result.ground_truth['faults'])} faults; "
                  f"ground truth in {out_dir / 'ground_truth.json'}")
    if result.report is None:
        console.print("nothing published (no broker given, or --no-publish)")
    _summary(result.report)


@app.command()
def waveforms(
    asset: Annotated[str, typer.Option(help="the machine's asset id")] = "pump-001",
    life: Annotated[str, typer.Option(help="machine life sent, ending now (e.g. 36d)")] = "36d",
    every: Annotated[str, typer.Option(help="one block per this much life (e.g. 8h)")] = "8h",
    onset: Annotated[str, typer.Option(help="outer-race defect appears this far into the life")] = "10d",
    failure: Annotated[str, typer.Option(help="the bearing fails this far into the life")] = "40d",
    channels: Annotated[int, typer.Option(min=1, max=4, help="accelerometer channels")] = 4,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    broker: Annotated[str, typer.Option(help="the DAQ's MQTT broker")] = "mqtt://127.0.0.1:1883",
    topic: Annotated[str, typer.Option(help="topic template")] = "sim/{asset}/waveform",
) -> None:
    """Publish a machine's 25.6 kHz accelerometer blocks (binary waveform frames, models/waveform.py) over its
    life as history, a bearing wearing out from the onset: the edge's block stage turns them into features."""
    import time

    from simulators.machine import Machine, MachineParams
    from simulators.waveforms import machine_frame, publish_frames

    life_s, every_s = _duration(life, "--life"), _duration(every, "--every")
    try:
        params = MachineParams(onset_s=_duration(onset, "--onset"), failure_s=_duration(failure, "--failure"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    machine = Machine(asset, params, seed)
    t0_ns = time.time_ns() - int(life_s * 1e9)
    times = [k * every_s for k in range(int(life_s // every_s))]
    n = publish_frames(broker, (machine_frame(machine, t0_ns, t, channels) for t in times), topic_template=topic)
    console.print(f"{n} blocks of {channels} channels from {asset} published on {topic.format(asset=asset)}")


def _duration(value: str, hint: str) -> float:
    try:
        seconds = float(_seconds(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=hint) from None
    if seconds <= 0:
        raise typer.BadParameter("must be positive", param_hint=hint)
    return seconds


@app.command()
def people(
    count: Annotated[int, typer.Option(min=1, max=1000, help="how many people")] = 10,
    days: Annotated[int, typer.Option(min=1, max=366, help="days simulated")] = 14,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    broker: Annotated[str, typer.Option(help="the home hubs' MQTT broker")] = "mqtt://127.0.0.1:1883",
    out: Annotated[Path | None, typer.Option(help="where ground_truth.json goes")] = None,
    publish: Annotated[bool, typer.Option(help="send the readings; --no-publish only writes files")] = True,
) -> None:
    """Simulate people with type 1 diabetes (the Hovorka model) and publish their CGM, pump and watch readings
    as their home hubs would (hub/<subject>/<point>)."""
    from simulators.person import publish as publish_people
    from simulators.person import simulate_people

    step = 300 * 10**9  # the readings end now (a live cloud refuses samples from the future)
    run_ = simulate_people(count, days, seed, start_ns=(time.time_ns() - days * 86_400 * 10**9) // step * step)
    out_dir = out or Path("artifacts") / "sim" / "people"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ground_truth.json").write_text(json.dumps(run_.ground_truth()))
    console.print(f"{count} people, {days} days; ground truth in {out_dir / 'ground_truth.json'}")
    if publish:
        _summary(publish_people(run_, broker))


@app.command()
def turbofan(
    data: Annotated[Path, typer.Option(help="folder with the C-MAPSS text files", exists=True, file_okay=False)]
    = DEFAULT_DATA,
    dataset: Annotated[str, typer.Option(help="FD001, FD002, FD003 or FD004")] = "FD001",
    split: Annotated[str, typer.Option(help="train (run to failure) or test (stops early)")] = "train",
    units: Annotated[int | None, typer.Option(min=1, help="first N engines (default all)")] = None,
    cycle_period: Annotated[str, typer.Option(help="time per flight cycle: seconds, or 1s, 2m, 1h")] = "1s",
    broker: Broker = None,
    realtime: Annotated[bool, typer.Option(help="live: each cycle at its wall-clock time; --no-realtime "
                                                "back-fills from 2025-06-02 as fast as acknowledged")] = True,
    qos: Annotated[int, typer.Option(min=0, max=1)] = 1,
    style: Annotated[str, typer.Option(help="payload: json or bare")] = "json",
    topic_template: Annotated[str, typer.Option(help="topic per point")] = DEFAULT_TOPIC_TEMPLATE,
    out: Annotated[Path | None, typer.Option(help="where ground_truth.json goes "
                                                  "(default artifacts/sim/cmapss-DATASET-SPLIT)")] = None,
) -> None:
    """Replay NASA C-MAPSS engines as live devices (engine-FD001-001 ...), one sample per cycle."""
    from simulators.turbofan import run_turbofan

    if style not in ("json", "bare"):
        raise typer.BadParameter("use json or bare", param_hint="--style")
    period = _duration(cycle_period, "--cycle-period")
    out_dir = out or Path("artifacts") / "sim" / f"cmapss-{dataset}-{split}"
    with _progress() as bar:
        task = bar.add_task(f"C-MAPSS {dataset} {split}", total=None)
        try:
            result = run_turbofan(data, dataset, split=split, units=units,  # type: ignore[arg-type]
                                  cycle_period_s=period, broker_url=broker, realtime=realtime, qos=qos,
                                  style=style, topic_template=topic_template,  # type: ignore[arg-type]
                                  out_dir=out_dir,
                                  on_progress=lambda sent, total: bar.update(task, completed=sent, total=total))
        except (ValueError, FileNotFoundError) as exc:
            raise typer.BadParameter(str(exc), param_hint="--data/--dataset") from None
    cycles = sum(len(e.cycles) for e in result.engines)
    console.print(f"{len(result.engines)} engines, {cycles:,} cycles, {result.n_readings:,} samples; "
                  f"ground truth in {out_dir / 'ground_truth.json'}")
    if result.report is None:
        console.print("nothing published (no --broker given)")
    _summary(result.report)


@app.command()
def fleet(
    devices: Annotated[int, typer.Option(min=1, help="simulated devices (one topic each)")] = 10_000,
    rate: Annotated[float, typer.Option(min=0.0001, help="messages per second per device")] = 1.0,
    duration: Annotated[str, typer.Option(help="how long to publish: seconds or 30s, 5m, 1h")] = "30s",
    broker: Annotated[str, typer.Option(help="MQTT broker, mqtt://host:port")] = "mqtt://127.0.0.1:1883",
    qos: Annotated[int, typer.Option(min=0, max=1)] = 0,
    connections: Annotated[int, typer.Option(min=1, help="MQTT connections the devices share "
                                                         "(= --devices for one per device)")] = 8,
    json_share: Annotated[float, typer.Option(min=0, max=1, help="share of devices sending JSON; "
                                                                 "the rest send bare numbers")] = 0.5,
    topic_template: Annotated[str, typer.Option(help="topic per device")] = DEFAULT_TOPIC_TEMPLATE,
    prefix: Annotated[str, typer.Option(help="device ids are PREFIX-00000 ...")] = "fleet",
    window: Annotated[int, typer.Option(min=1, max=65_000, help="QoS 1: unacknowledged per connection")] = 10_000,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here as JSON")] = None,
) -> None:
    """Many devices from one process at a fixed rate; reports the achieved rate, lag and losses.

    Exits with 1 when a scheduled message was dropped or left unacknowledged, so a CI job can gate on it.
    """
    from simulators.fleet import FleetConfig, run_fleet

    try:
        cfg = FleetConfig(devices=devices, rate=rate, duration_s=_duration(duration, "--duration"),
                          qos=qos, connections=min(connections, devices),  # type: ignore[arg-type]
                          json_share=json_share, topic_template=topic_template, prefix=prefix, window=window)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"{cfg.devices:,} devices x {cfg.rate:g} msg/s over {cfg.connections:,} connections, "
                  f"QoS {cfg.qos}, {cfg.duration_s:g} s ...")
    try:
        r = run_fleet(broker, cfg)
    except (ConnectionError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(f"sent {r.sent:,} of {r.expected:,} scheduled"
                  + (f", {r.acked:,} acknowledged, {r.unacked:,} unacknowledged" if r.qos else "")
                  + f", {r.dropped:,} dropped; {r.per_second:,.0f} msg/s (slowest second {r.per_second_min:,.0f})")
    console.print(f"lag behind schedule p50 {r.lag_ms_p50:.0f} ms, p99 {r.lag_ms_p99:.0f} ms, max {r.lag_ms_max:.0f} ms"
                  + (f"; PUBACK p50 {r.ack_ms_p50:.1f} ms, p99 {r.ack_ms_p99:.1f} ms" if r.qos else "")
                  + f"; connect {r.connect_s:.2f} s; generator CPU {r.cpu_percent:.0f} % of a core, "
                    f"longest pause between ticks {r.tick_gap_ms_max:.0f} ms")
    if json_out is not None:
        json_out.write_text(json.dumps(r.to_dict(), indent=1) + "\n")
    if r.dropped or r.unacked or r.sent < r.expected:
        raise typer.Exit(1)


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


@app.command()
def evaluate(
    truth: Annotated[Path, typer.Option(help="ground_truth.json of the run", exists=True, dir_okay=False)],
    detections: Annotated[Path, typer.Option(help="detections: JSON (list, or anomalies/alerts lists) or CSV",
                                             exists=True, dir_okay=False)],
    tolerance: Annotated[str, typer.Option(help="a detection may start this long before a fault")] = "60s",
    grace: Annotated[str, typer.Option(help="... or this long after it ended (and after an event)")] = "30m",
    as_json: Annotated[bool, typer.Option("--json", help="print the full result as JSON")] = False,
) -> None:
    """Score detections against a run's ground truth: recall, false alarms per asset-day, delay, lead time."""
    from simulators.evaluate import evaluate as score
    from simulators.evaluate import load_detections, load_truth

    try:
        result = score(load_truth(truth), load_detections(detections),
                       tolerance_s=float(_seconds(tolerance)), grace_s=float(_seconds(grace)))
    except (ValueError, KeyError) as exc:
        raise typer.BadParameter(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=1))
        return
    table = Table(title=f"{truth}: {result.detections:,} detections, {result.assets} assets, "
                        f"{result.asset_days:.1f} asset-days")
    for col in ("fault kind", "faults", "caught", "recall", "median delay s", "median lead s"):
        table.add_column(col, justify="left" if col == "fault kind" else "right")
    rows = [*result.per_kind.items(), ("overall", result.overall)]
    for kind, k in rows:
        table.add_row(kind, str(k.faults), str(k.caught), _fmt(None if k.recall is None else 100 * k.recall, 1) + "%",
                      _fmt(k.median_delay_s), _fmt(k.median_lead_s))
    Console().print(table)
    in_events = ", ".join(f"{n} in {kind}" for kind, n in sorted(result.false_alarms_in_events.items()))
    Console().print(f"false alarms: {result.false_alarms} ({_fmt(result.false_alarms_per_asset_day, 3)} per "
                    f"asset-day{'; ' + in_events if in_events else ''}); matched {result.matched}, "
                    f"explained by classified events {result.explained}, ignored {result.ignored}")


try:
    from simulators.opcua_server import opcua_server_command as _cmd

    app.command("opcua-server", help="An OPC-UA server whose address space mirrors the asset types.")(_cmd)
except ModuleNotFoundError:  # asyncua not installed: the command is simply not offered
    pass
