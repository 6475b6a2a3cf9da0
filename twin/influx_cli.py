"""``twin influx``: set InfluxDB up for the platform (``init``) and rebuild the roll-up for a period (``backfill``).

Defaults come from the same ``TWIN_INFLUX_*`` environment as the cloud, so the deployment's one-shot job
runs ``twin influx init`` with no options. Importing ``cloud.influx_admin`` pulls in influxdb-client: on a
gateway without the ``[cloud]`` extra this group is simply not mounted.
"""

from __future__ import annotations

import typer

from cloud.influx_admin import (
    InfluxAdminError,
    InitSpec,
    backfill_statements,
    init,
    major_version,
    parse_duration,
    server_version,
)
from cloud.settings import CloudSettings

app = typer.Typer(help="InfluxDB: buckets, retention, v1 mapping, roll-ups, tokens.", no_args_is_help=True)


def _spec(org: str | None, bucket: str | None, database: str | None, retention: str, rollup_retention: str,
          rollup_every: str, settings: CloudSettings, coarse_retention: str = "1825d",
          coarse_every: str = "1h") -> InitSpec:
    try:
        return InitSpec(org=org or settings.influx_org, bucket=bucket or settings.influx_bucket,
                        database=database or settings.influx_database, retention_s=parse_duration(retention),
                        rollup_retention_s=parse_duration(rollup_retention),
                        rollup_every_s=parse_duration(rollup_every),
                        coarse_retention_s=parse_duration(coarse_retention),
                        coarse_every_s=0 if coarse_every.strip().lower() in ("0", "none", "off")
                        else parse_duration(coarse_every))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command("init")
def init_cmd(
    url: str | None = typer.Option(None, help="InfluxDB URL (default: TWIN_INFLUX_URL)"),
    token: str | None = typer.Option(None, help="2.x: an operator/all-access token; 1.x: user:password if auth "
                                     "is on (default: TWIN_INFLUX_TOKEN)"),
    org: str | None = typer.Option(None, help="2.x organization (default: TWIN_INFLUX_ORG)"),
    bucket: str | None = typer.Option(None, help="raw bucket 'database/policy' (default: TWIN_INFLUX_BUCKET)"),
    database: str | None = typer.Option(None, help="InfluxQL database (default: TWIN_INFLUX_DATABASE)"),
    retention: str = typer.Option("30d", help="how long raw samples are kept (0 or inf: forever)"),
    downsample_retention: str = typer.Option("400d", help="how long the 1-minute roll-up is kept"),
    downsample_every: str = typer.Option("1m", help="roll-up window"),
    coarse_retention: str = typer.Option("1825d", help="how long the coarse (1-hour) roll-up is kept (0 or inf: "
                                         "forever)"),
    coarse_every: str = typer.Option("1h", help="coarse roll-up window, made from the roll-up's (none: no coarse "
                                     "roll-up)"),
    tokens: bool = typer.Option(True, "--tokens/--no-tokens", help="2.x: create the ingest and read-only tokens"),
) -> None:
    """Create the buckets/retention policies, the v1 mapping, the roll-ups and the tokens; safe to re-run."""
    settings = CloudSettings()
    spec = _spec(org, bucket, database, retention, downsample_retention, downsample_every, settings,
                 coarse_retention, coarse_every)
    url = url or settings.influx_url
    try:
        report = init(url, settings.influx_token if token is None else token, spec, tokens=tokens)
    except InfluxAdminError as exc:
        typer.echo(f"twin influx init: {exc}", err=True)
        raise typer.Exit(1) from None
    how = ("the management API (influxdb-client)" if report.path == "2.x"
           else "InfluxQL (no management API on 1.x): database, retention policies, continuous query")
    typer.echo(f"{report.server} at {url}: {report.path} path, through {how}")
    for outcome, what in report.steps:
        typer.echo(f"  {outcome:<9} {what}")
    for description, value in report.tokens.items():
        typer.echo(f"  token     {description}: {value}")
    if report.tokens:
        typer.echo("Tokens are shown once: ingest workers take the first as TWIN_INFLUX_TOKEN, the API and "
                   "Grafana the read-only one.")
    typer.echo("nothing to do: everything was already in place" if report.no_op
               else f"done: {len(report.of('created'))} created, {len(report.of('changed'))} changed")


@app.command("backfill")
def backfill_cmd(
    start: str = typer.Option(..., help="RFC 3339, e.g. 2026-11-20T00:00:00Z"),
    end: str = typer.Option(..., help="RFC 3339, exclusive"),
    url: str | None = typer.Option(None, help="InfluxDB URL (default: TWIN_INFLUX_URL)"),
    token: str | None = typer.Option(None, help="1.x: user:password if auth is on (default: TWIN_INFLUX_TOKEN)"),
    bucket: str | None = typer.Option(None, help="raw bucket 'database/policy' (default: TWIN_INFLUX_BUCKET)"),
    database: str | None = typer.Option(None, help="InfluxQL database (default: TWIN_INFLUX_DATABASE)"),
    downsample_every: str = typer.Option("1m", help="roll-up window"),
    coarse_every: str = typer.Option("1h", help="coarse roll-up window (none: no coarse roll-up)"),
) -> None:
    """Recompute the roll-ups for a period (1.x), e.g. after restoring raw data. Late data that ingest writes is
    rolled up by the platform's housekeeping without this."""
    import httpx

    settings = CloudSettings()
    spec = _spec(None, bucket, database, "30d", "400d", downsample_every, settings, "1825d", coarse_every)
    url = (url or settings.influx_url).rstrip("/")
    try:
        version = server_version(url)
        if major_version(version) != 1:
            raise InfluxAdminError(f"InfluxDB {version}: backfill the roll-up with the task's Flux over the period "
                                   "(see deploy/README.md); this command runs InfluxQL SELECT … INTO on 1.x")
    except InfluxAdminError as exc:
        typer.echo(f"twin influx backfill: {exc}", err=True)
        raise typer.Exit(1) from None
    token = settings.influx_token if token is None else token
    user, sep, password = token.partition(":")
    for q, into in zip(backfill_statements(spec, start, end), (spec.rollup_bucket, spec.coarse_bucket), strict=False):
        r = httpx.post(f"{url}/query", params={"q": q, "db": spec.database}, auth=(user, password) if sep else None,
                       timeout=600)
        body = r.json() if r.content else {}
        err = body.get("error") or (body.get("results") or [{}])[0].get("error")
        if r.status_code >= 400 or err:
            typer.echo(f"twin influx backfill: InfluxDB refused it: HTTP {r.status_code} {err or r.text}", err=True)
            raise typer.Exit(1)
        rows = (body.get("results") or [{}])[0].get("series") or [{"values": [[0, 0]]}]
        typer.echo(f"rolled up {rows[0]['values'][0][1]} points into {into} ({start} .. {end})")
