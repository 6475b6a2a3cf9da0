"""``twin coldchain``: judge a logger file against an alarm profile, list the shipped profiles, verify signed QA
decisions offline with the published public key. Thin:
parsing and printing only; the judging is ``cloud.rules.coldchain.evaluate``, the same code the live
rules run. Exit codes: 0 pass, 1 fail, 2 bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from cloud.rules.coldchain import (
    Evaluation,
    ProfileError,
    ReadingsError,
    evaluate,
    format_duration,
    iso,
    load_profile,
    read_readings_csv,
    shipped_profiles,
)

app = typer.Typer(help="Cold chain: alarm profiles, MKT, shipment checks.", no_args_is_help=True)
EXIT_PASS, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


@app.command("evaluate")
def evaluate_cmd(
    profile: Annotated[str, typer.Option("--profile", "-p", help="profile YAML, or a shipped name (who-type-1)")],
    input_: Annotated[Path, typer.Option("--input", "-i", help="CSV with timestamp and temperature columns")],
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Judge a temperature record: MKT, min/max, time out of range, alarms and a pass/fail verdict."""
    try:
        prof = load_profile(profile)
        t_ns, temps = read_readings_csv(input_)
    except (ProfileError, ReadingsError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    ev = evaluate(t_ns, temps, prof)
    if as_json:
        typer.echo(json.dumps(ev.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print(ev)
    raise typer.Exit(EXIT_PASS if ev.passed else EXIT_FAIL)


@app.command("profiles")
def profiles_cmd() -> None:
    """List the shipped alarm profiles and their boundaries."""
    table = Table(Column("profile", no_wrap=True), "boundary", "condition", "after", "mode", "severity", "MKT")
    for name in shipped_profiles():
        p = load_profile(name)
        mkt = ""
        if p.mkt is not None and p.mkt.limit is not None:
            mkt = f"≤ {p.mkt.limit:.1f} °C over {format_duration(p.mkt.window or 0)}"
        for i, b in enumerate(p.boundaries):
            table.add_row(name if i == 0 else "", b.name, b.condition(), format_duration(b.after), b.mode,
                          b.severity, mkt if i == 0 else "")
    Console().print(table)


@app.command("verify")
def verify_cmd(
    decisions: Annotated[Path, typer.Argument(help="JSON: a decision, a list of them, a batch or a report (as the "
                                                   "API answers)")],
    key: Annotated[Path, typer.Option("--key", "-k", help="the tenant's published public key (PEM), or the JSON "
                                                         "of GET /api/v1/signing-keys")],
) -> None:
    """Verify signed QA decisions offline with the published public key: exit 0 when every one verifies, 1 when
    any does not (an edited record, another key), 2 on unreadable input."""
    from cloud.shipments.signing import verified  # the cloud's check, on nothing but the file and the key

    try:
        found = _decisions(json.loads(decisions.read_text()))
        text = key.read_text()
        keys = {k["id"]: k["public_key"] for k in json.loads(text)["items"]} if text.lstrip().startswith("{") \
            else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    if not found:
        typer.echo(f"error: {decisions}: no signed decision in it", err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    bad = 0
    for d in found:
        pem = text if keys is None else keys.get(str(d.get("key_id")))
        ok = verified(d, pem)
        bad += not ok
        typer.echo(f"{'verified' if ok else 'NOT VERIFIED'}  lot {d.get('lot')}  {d.get('meaning')}  by "
                   f"{d.get('signer')}  at {d.get('signed_at')}  key {d.get('key_id')}")
    raise typer.Exit(EXIT_FAIL if bad else EXIT_PASS)


def _decisions(doc: object) -> list[dict]:
    """The signed decisions in an API answer: one, a list, a batch's, a report's, a release's."""
    if isinstance(doc, list):
        return [d for d in doc if isinstance(d, dict) and "signature" in d]
    if not isinstance(doc, dict):
        return []
    if "signature" in doc and "record" in doc:
        return [doc]
    if isinstance(doc.get("decision"), dict):
        return [doc["decision"]]
    if isinstance(doc.get("decisions"), list):
        return _decisions(doc["decisions"])
    return []


def _print(ev: Evaluation) -> None:
    d = ev.to_dict()
    console = Console()
    summary = Table(title=f"{ev.profile.name}: {d['readings']} readings, {d['start']} → {d['end']}",
                    show_header=False)
    summary.add_row("min / mean / max", f"{d['min_c']:.2f} / {d['mean_c']:.2f} / {d['max_c']:.2f} °C")
    summary.add_row(f"MKT (ΔH {ev.profile.delta_h_kj_mol:g} kJ/mol)", f"{d['mkt']['mkt_c']:.2f} °C")
    if ev.window is not None:
        span = "" if ev.window.complete else " (record shorter than the window)"
        summary.add_row(f"max MKT over {format_duration(d['mkt']['window_s'])}",
                        f"{d['mkt']['window_mkt_c']:.2f} °C, {iso(ev.window.start_ns)} → "
                        f"{iso(ev.window.end_ns)}{span}")
    console.print(summary)
    bounds = Table("boundary", "condition", "after", "mode", "severity", "out of range", "alarms",
                   title="boundaries")
    for b in d["boundaries"]:
        bounds.add_row(b["name"], b["condition"], format_duration(b["after_s"]), b["mode"], b["severity"],
                       format_duration(b["out_of_range_s"]), str(b["alarms"]))
    console.print(bounds)
    if ev.alarms:
        alarms = Table("boundary", "#", "fired at", "elapsed", "counter", "reading", title="alarms")
        for a in d["alarms"]:
            alarms.add_row(a["boundary"], str(a["occurrence"]), a["fired_at"], format_duration(a["elapsed_s"]),
                           format_duration(a["counter_s"]), f"{a['value_c']:.2f} °C")
        console.print(alarms)
    v = d["verdict"]
    colour = "green" if v["result"] == "pass" else "red"
    disposition = f" — {v['disposition']}" if v["disposition"] else ""
    console.print(f"[bold {colour}]{v['result'].upper()}[/]{disposition}")
    for reason in v["reasons"]:
        console.print(f"  • {reason}", markup=False, highlight=False)
