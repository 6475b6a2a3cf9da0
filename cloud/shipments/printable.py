"""The shipment report as a printable page: self-contained HTML (no external assets, what EU GMP Annex 11 calls a
clear printed copy) with the temperature chart drawn inline as SVG — one line per custody leg, excursions shaded,
the profile's limits dashed — and the tables of the record (MKT and verdict, custody, excursions, batches, signed
decisions, audit trail)."""

from __future__ import annotations

import html
import string
from typing import TYPE_CHECKING, Any

import numpy as np

from cloud.rules.coldchain import iso, load_profile

if TYPE_CHECKING:
    from cloud.shipments.report import ShipmentReport

CHART_POINTS = 1500
"""Per leg: enough for a printed page; the minimum and maximum of each bucket are kept."""

_PAGE_HTML = string.Template("""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Shipment $title: cold-chain record</title>
<style>
body{font:13px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em;color:#111}
h1{font-size:20px;margin:0 0 .4em}h2{font-size:15px;margin:1.6em 0 .5em;border-bottom:1px solid #888}
table{border-collapse:collapse;width:100%;margin:.3em 0}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}th{background:#eee}
.wrap{word-break:break-all}
.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px;word-break:break-all}
.quarantined,.fail,.bad{color:#b00000;font-weight:600}.released,.pass,.ok{color:#006400;font-weight:600}
.rejected{color:#700;font-weight:700}.muted{color:#666}
svg{width:100%;height:auto;border:1px solid #ccc;background:#fff}
@media print{body{margin:1cm}h2{break-after:avoid}table,svg,tr{break-inside:avoid}}
</style></head><body>
<h1>Shipment $title</h1>
$summary
<h2>Temperature</h2>
$chart
<h2>Mean kinetic temperature and verdict</h2>
$mkt
<h2>Custody</h2>
$legs
<h2>Excursions</h2>
$excursions
<h2>Batches</h2>
$batches
<h2>Quality decisions (signed)</h2>
$decisions
<h2>Audit trail</h2>
$audit
<p class="muted">Generated $generated. Each decision is signed with Ed25519 over the canonical JSON of its record
(signer, time, meaning, reason, the batch's state and excursions, the previous signature), by a person who
re-entered their password; "verified" means the signature verified with the tenant's published public key when this
report was generated (offline: twin coldchain verify).</p>
</body></html>
""")
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def _e(value: Any) -> str:
    return html.escape("—" if value is None else str(value))


def _table(head: list[str], rows: list[list[str]], empty: str) -> str:
    """``rows`` hold HTML already escaped (cells may carry markup)."""
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _t(t_ns: int | None) -> str:
    return _e(None if t_ns is None else iso(t_ns))


def _shown(key: str, value: Any) -> str:
    """An audit value as a reader wants it: times in ISO 8601."""
    return _t(value) if key.endswith("_ns") and isinstance(value, int) else _e(value)


def _c(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} °C"


def _decimate(t: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~``n`` points keeping each bucket's minimum and maximum, so a short spike stays visible."""
    if t.size <= n:
        return t, v
    keep: list[int] = []
    for idx in np.array_split(np.arange(t.size), n // 2):
        lo, hi = idx[np.argmin(v[idx])], idx[np.argmax(v[idx])]
        keep += sorted({int(lo), int(hi)})
    k = np.asarray(keep)
    return t[k], v[k]


def chart_svg(readings: list[tuple[str, np.ndarray, np.ndarray]], t0: int, t1: int,
              excursions: list[dict[str, Any]], limits: list[tuple[str, float]]) -> str:
    """An inline SVG line chart: one polyline per custody leg, excursions shaded, profile limits dashed (the
    scale reaches every limit, so an auditor sees how far the readings were from each)."""
    values = [v for _, _, v in readings if v.size]
    if not values or t1 <= t0:
        return '<p class="muted">No readings stored for this shipment\'s custody legs.</p>'
    w, h, left, right, top, bottom = 900, 320, 56, 12, 12, 44
    lo, hi = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    lo, hi = min([lo, *(c for _, c in limits)]), max([hi, *(c for _, c in limits)])  # every boundary shown
    pad = max(0.5, (hi - lo) * 0.08)
    lo, hi = lo - pad, hi + pad
    sx, sy = (w - left - right) / (t1 - t0), (h - top - bottom) / (hi - lo)

    def x(t: float) -> float:
        return left + (t - t0) * sx

    def y(c: float) -> float:
        return top + (hi - c) * sy

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="temperature over the shipment" font-size="11" font-family="sans-serif">']
    for e in excursions:
        a, b = max(e["start_ns"], t0), min(max(e["end_ns"], e["start_ns"] + 1), t1)
        if a < b:
            out.append(f'<rect x="{x(a):.1f}" y="{top}" width="{max(x(b) - x(a), 1.5):.1f}" height="{h - top - bottom}"'
                       f' fill="#d62728" fill-opacity="0.15"><title>excursion {e["id"]} in {_e(e["asset"])}'
                       f'</title></rect>')
    for i in range(6):
        c = lo + (hi - lo) * i / 5
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(c):.1f}" y2="{y(c):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 4}" y="{y(c) + 4:.1f}" text-anchor="end">{c:.1f}</text>')
    for name, c in limits:
        if lo <= c <= hi:
            out.append(f'<line x1="{left}" x2="{w - right}" y1="{y(c):.1f}" y2="{y(c):.1f}" stroke="#d62728" '
                       f'stroke-dasharray="5 4"><title>{_e(name)} {c:g} °C</title></line>')
    for i, (name, t, v) in enumerate(readings):
        if not t.size:
            continue
        td, vd = _decimate(t, v, CHART_POINTS)
        pts = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(td.tolist(), vd.tolist(), strict=True))
        colour = _COLOURS[i % len(_COLOURS)]
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{pts}">'
                   f'<title>{_e(name)}</title></polyline>')
        out.append(f'<text x="{left + 8 + 190 * (i % 4)}" y="{h - 8}" fill="{colour}">■ {_e(name)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{w - left - right}" height="{h - top - bottom}" fill="none" '
               f'stroke="#999"/><text x="{left}" y="{h - bottom + 14}">{_e(iso(t0))}</text>'
               f'<text x="{w - right}" y="{h - bottom + 14}" text-anchor="end">{_e(iso(t1))}</text>'
               f'<text x="14" y="{top + (h - top - bottom) / 2:.0f}" transform="rotate(-90 14 '
               f'{top + (h - top - bottom) / 2:.0f})" text-anchor="middle">°C</text></svg>')
    return "".join(out)


def profile_limits(ref: Any) -> list[tuple[str, float]]:
    """The alarm boundaries a chart draws: each boundary's limits, and the MKT limit."""
    profile = ref if not isinstance(ref, str) else load_profile(ref)
    limits = [(b.name, v) for b in profile.boundaries for v in (b.above, b.below) if v is not None]
    if profile.mkt is not None and profile.mkt.limit is not None:
        limits.append(("MKT limit", profile.mkt.limit))
    return limits


def render_html(rep: ShipmentReport) -> str:
    """A printable, self-contained page (no external assets): what Annex 11 calls a clear printed copy."""
    d = rep.data
    sh, prof = d["shipment"], d["profile"]
    limits = profile_limits(prof["name"]) if "limits" not in prof else [tuple(x) for x in prof["limits"]]
    legs = d["legs"]
    t0 = min((leg["from_ns"] for leg in legs), default=0)
    # An open leg's chart ends at its last reading, not at "now": the page shows data, not empty time.
    t1 = max((leg["to_ns"] if leg["to_ns"] is not None else int(t[-1]) if t.size else leg["from_ns"]
              for leg, (_, t, _) in zip(legs, rep.readings, strict=True)), default=0)
    summary = _table(["shipment", "reference", "profile", "origin (DC)", "destination (store)", "created"],
                     [[_e(sh["id"]), _e(sh["reference"] or None), f"{_e(prof['name'])}<br>"
                       f"<span class=muted>{_e(prof['description'])}</span>", _e(sh["origin_site"]),
                       _e(sh["destination_site"]), f"{_t(sh['created_ns'])} by {_e(sh['created_by'])}"]], "")

    def judged_row(label: str, j: dict[str, Any]) -> list[str]:
        ev = j["evaluation"]
        if ev is None:
            return [label, "0", "—", "—", "—", '<span class="muted">no readings</span>']
        verdict = ev["verdict"]
        window = ev["mkt"].get("window_mkt_c")
        reasons = "".join(f"<br><span class=muted>{_e(r)}</span>" for r in verdict["reasons"])
        return [label, str(j["readings"]), _c(j["mean_c"]), _c(j["mkt_c"]), _c(window),
                f'<span class="{_e(verdict["result"])}">{_e(verdict["result"])}</span>{reasons}']

    mkt = _table(["record", "readings", "mean", "MKT", "worst window MKT", "verdict"],
                 [judged_row(f"shipment {_e(sh['id'])}", d["temperature"])]
                 + [judged_row(f"batch {_e(b['lot'])}", b["temperature"]) for b in d["batches"]], "")
    leg_table = _table(["leg", "container", "point", "from", "to", "readings", "min", "max", "MKT"],
                       [[str(x["id"]), _e(x["asset"]), _e(x["point"]), _t(x["from_ns"]),
                         _t(x["to_ns"]) if x["to_ns"] is not None else f"open (read to {_t(x['until_ns'])})",
                         str(x["readings"]), _c(x["min_c"]), _c(x["max_c"]), _c(x["mkt_c"])] for x in legs],
                       "No custody legs recorded.")
    excursions = _table(["id", "container", "start", "end", "reason", "alert", "recorded"],
                        [[str(e["id"]), _e(e["asset"]), _t(e["start_ns"]), _t(e["end_ns"]), _e(e["reason"]),
                          _e(e["alert_id"]), f"{_t(e['recorded_ns'])} by {_e(e['recorded_by'])}"]
                         for e in d["excursions"]], "No excursions.")
    batches = _table(["lot", "product", "quantity", "on board", "state", "excursions"],
                     [[_e(b["lot"]), _e(b["product"]), f"{b['quantity']:g} {_e(b['unit'])}",
                       "whole shipment" if b["loaded_ns"] is None and b["unloaded_ns"] is None else
                       f"{_t(b['loaded_ns'])} to {_t(b['unloaded_ns'])}",
                       f'<span class="{_e(b["state"])}">{_e(b["state"])}</span>',
                       _e(", ".join(map(str, b["excursion_ids"])) or None)] for b in d["batches"]],
                     "No batches.")
    decisions = _table(["lot", "meaning", "signed by", "signed at", "reason", "signature", "verified"],
                       [[_e(x["lot"]), f'<span class="{_e(x["meaning"])}">{_e(x["meaning"])}</span>', _e(x["signer"]),
                         _e(x["signed_at"]), _e(x["reason"]),
                         f'<span class="mono">Ed25519 {_e(x["signature"])}<br>SHA-256 {_e(x["digest"])}<br>'
                         f'key {_e(x["key_id"])}</span>',
                         '<span class="ok">yes</span>' if x["verified"] else '<span class="bad">NO</span>']
                        for x in d["decisions"]], "No decisions.")

    def change(a: dict[str, Any]) -> str:
        b, f = a["before"] or {}, a["after"] or {}
        keys = [k for k in f if b.get(k) != f.get(k)] if b else []
        if not b:
            return '<span class="muted">created</span>' if f else ""
        return '<div class="wrap">' + "<br>".join(f"{_e(k)}: {_shown(k, b.get(k))} → {_shown(k, f.get(k))}"
                                                  for k in keys) + "</div>"

    audit = _table(["time", "who", "action", "target", "reason", "change"],
                   [[_t(a["t_ns"]), _e(a["actor"]), _e(a["action"]), _e(a["target"]), _e(a["reason"] or None),
                     change(a)] for a in d["audit"]], "No audit entries.")
    return _PAGE_HTML.substitute(
        title=_e(sh["id"]), summary=summary, chart=chart_svg(rep.readings, t0, t1, d["excursions"], limits), mkt=mkt,
        legs=leg_table, excursions=excursions, batches=batches, decisions=decisions, audit=audit,
        generated=_e(d["generated_at"]))

