"""The shipment report as PDF (reportlab): the same record as the HTML page — the temperature chart with the alarm
boundaries and excursions, MKT and verdicts, custody, batches, excursions, signed decisions with their signatures,
and the audit trail — as a document a QA person files or a consignee receives, which prints the same everywhere.

Drawn with reportlab's own graphics (no browser, no system library), A4 landscape so the tables keep their columns.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np
from reportlab.graphics.shapes import Drawing, Line, PolyLine, Rect, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from cloud.rules.coldchain import iso
from cloud.shipments.printable import CHART_POINTS, _decimate

if TYPE_CHECKING:
    from cloud.shipments.report import ShipmentReport

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
_STYLES = getSampleStyleSheet()
_CELL = _STYLES["BodyText"].clone("cell", fontSize=7.5, leading=9)
_MONO = _STYLES["Code"].clone("mono", fontSize=6, leading=7.5, wordWrap="CJK")


def _t(t_ns: int | None) -> str:
    return "—" if t_ns is None else iso(t_ns)


def _c(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} °C"


def _p(text: Any, style=_CELL) -> Paragraph:
    s = "—" if text is None else str(text)
    return Paragraph(s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br/>"), style)


def _table(head: list[str], rows: list[list[Any]], widths: list[float] | None = None) -> Table | Paragraph:
    if not rows:
        return _p("none")
    data = [[_p(h) for h in head]] + [[c if isinstance(c, Paragraph) else _p(c) for c in r] for r in rows]
    t = Table(data, colWidths=widths, repeatRows=1)
    t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                           ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                           ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return t


def chart(readings: list[tuple[str, np.ndarray, np.ndarray]], t0: int, t1: int, excursions: list[dict[str, Any]],
          limits: list[tuple[str, float]], width: float = 260 * mm, height: float = 80 * mm) -> Drawing:
    """One line per custody leg, excursions shaded red, each alarm boundary a dashed red line with its name."""
    d = Drawing(width, height)
    values = [v for _, _, v in readings if v.size]
    if not values or t1 <= t0:
        d.add(String(10, height / 2, "No readings stored for this shipment's custody legs.", fontSize=9))
        return d
    left, right, top, bottom = 40, 90, 8, 30
    lo = min(min(float(v.min()) for v in values), *(c for _, c in limits)) if limits else \
        min(float(v.min()) for v in values)
    hi = max(max(float(v.max()) for v in values), *(c for _, c in limits)) if limits else \
        max(float(v.max()) for v in values)
    pad = max(0.5, (hi - lo) * 0.06)
    lo, hi = lo - pad, hi + pad
    pw, ph = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * pw

    def y(c: float) -> float:
        return bottom + (c - lo) / (hi - lo) * ph

    for e in excursions:
        a, b = max(e["start_ns"], t0), min(max(e["end_ns"], e["start_ns"] + 1), t1)
        if a < b:
            d.add(Rect(x(a), bottom, max(x(b) - x(a), 1.5), ph, fillColor=colors.Color(0.84, 0.15, 0.16, 0.18),
                       strokeColor=None))
    for i in range(6):
        c = lo + (hi - lo) * i / 5
        d.add(Line(left, y(c), left + pw, y(c), strokeColor=colors.HexColor("#e5e5e5"), strokeWidth=0.4))
        d.add(String(left - 3, y(c) - 3, f"{c:.1f}", fontSize=7, textAnchor="end"))
    for name, c in limits:
        d.add(Line(left, y(c), left + pw, y(c), strokeColor=colors.HexColor("#d62728"), strokeWidth=0.8,
                   strokeDashArray=[4, 3]))
        d.add(String(left + pw + 3, y(c) - 3, f"{name} {c:g} °C", fontSize=6.5, fillColor=colors.HexColor("#d62728")))
    for i, (name, t, v) in enumerate(readings):
        if not t.size:
            continue
        td, vd = _decimate(t, v, CHART_POINTS)
        colour = colors.HexColor(_COLOURS[i % len(_COLOURS)])
        pts = [p for a, b in zip(td.tolist(), vd.tolist(), strict=True) for p in (x(a), y(b))]
        d.add(PolyLine(pts, strokeColor=colour, strokeWidth=0.8))
        d.add(String(left + 4 + 170 * (i % 4), 4, f"■ {name}", fontSize=7, fillColor=colour))
    d.add(Rect(left, bottom, pw, ph, fillColor=None, strokeColor=colors.grey, strokeWidth=0.6))
    d.add(String(left, bottom - 10, iso(t0), fontSize=7))
    d.add(String(left + pw, bottom - 10, iso(t1), fontSize=7, textAnchor="end"))
    d.add(String(4, bottom + ph / 2, "°C", fontSize=8))
    return d


def render_pdf(rep: ShipmentReport) -> bytes:
    d = rep.data
    sh, prof, legs = d["shipment"], d["profile"], d["legs"]
    limits = [(str(n), float(c)) for n, c in prof.get("limits", [])]
    t0 = min((leg["from_ns"] for leg in legs), default=0)
    t1 = max((leg["to_ns"] if leg["to_ns"] is not None else int(t[-1]) if t.size else leg["from_ns"]
              for leg, (_, t, _) in zip(legs, rep.readings, strict=True)), default=0)
    h1, h2 = _STYLES["Heading1"], _STYLES["Heading2"]
    story: list[Any] = [
        Paragraph(f"Shipment {sh['id']}: cold-chain record", h1),
        _table(["shipment", "reference", "profile", "origin (DC)", "destination (store)", "created"],
               [[sh["id"], sh["reference"] or None, f"{prof['name']}\n{prof['description']}", sh["origin_site"],
                 sh["destination_site"], f"{_t(sh['created_ns'])} by {sh['created_by']}"]]),
        Paragraph("Temperature", h2), chart(rep.readings, t0, t1, d["excursions"], limits),
        Paragraph("Mean kinetic temperature and verdict", h2),
    ]

    def judged(label: str, j: dict[str, Any]) -> list[Any]:
        ev = j["evaluation"]
        if ev is None:
            return [label, 0, "—", "—", "—", "no readings"]
        v = ev["verdict"]
        return [label, j["readings"], _c(j["mean_c"]), _c(j["mkt_c"]), _c(ev["mkt"].get("window_mkt_c")),
                "\n".join([v["result"], *v["reasons"]])]

    story += [
        _table(["record", "readings", "mean", "MKT", "worst window MKT", "verdict"],
               [judged(f"shipment {sh['id']}", d["temperature"])]
               + [judged(f"batch {b['lot']}", b["temperature"]) for b in d["batches"]]),
        Paragraph("Custody", h2),
        _table(["leg", "container", "point", "from", "to", "readings", "min", "max", "MKT"],
               [[x["id"], x["asset"], x["point"], _t(x["from_ns"]),
                 _t(x["to_ns"]) if x["to_ns"] is not None else f"open (read to {_t(x['until_ns'])})",
                 x["readings"], _c(x["min_c"]), _c(x["max_c"]), _c(x["mkt_c"])] for x in legs]),
        Paragraph("Excursions", h2),
        _table(["id", "container", "start", "end", "reason", "alert", "recorded"],
               [[e["id"], e["asset"], _t(e["start_ns"]), _t(e["end_ns"]), e["reason"], e["alert_id"],
                 f"{_t(e['recorded_ns'])} by {e['recorded_by']}"] for e in d["excursions"]]),
        Paragraph("Batches", h2),
        _table(["lot", "product", "quantity", "on board", "state", "excursions"],
               [[b["lot"], b["product"], f"{b['quantity']:g} {b['unit']}",
                 "whole shipment" if b["loaded_ns"] is None and b["unloaded_ns"] is None else
                 f"{_t(b['loaded_ns'])} to {_t(b['unloaded_ns'])}", b["state"],
                 ", ".join(map(str, b["excursion_ids"])) or None] for b in d["batches"]]),
        Paragraph("Quality decisions (electronically signed)", h2),
        _table(["lot", "meaning", "signed by", "signed at", "reason", "signature", "verified"],
               [[x["lot"], (x.get("record") or {}).get("statement", x["meaning"]), x["signer"], x["signed_at"],
                 x["reason"], _p(f"Ed25519 {x['signature']}\nSHA-256 {x['digest']}\nkey {x['key_id']}", _MONO),
                 "yes" if x["verified"] else "NO"] for x in d["decisions"]],
               widths=[22 * mm, 30 * mm, 35 * mm, 32 * mm, 45 * mm, 95 * mm, 15 * mm]),
        Paragraph("Audit trail", h2),
        _table(["time", "who", "action", "target", "reason"],
               [[_t(a["t_ns"]), a["actor"], a["action"], a["target"], a["reason"] or None] for a in d["audit"]]),
        Spacer(1, 4 * mm),
        _p(f"Generated {d['generated_at']}. Each decision is signed with Ed25519 over the canonical JSON of its record "
           "(signer, time, meaning, reason, the batch's state and excursions, the previous signature) by a person who "
           "re-entered their password; 'verified' means it verified with the tenant's published public key when this "
           "report was generated (offline: twin coldchain verify)."),
    ]
    buf = io.BytesIO()
    SimpleDocTemplate(buf, pagesize=landscape(A4), leftMargin=12 * mm, rightMargin=12 * mm, topMargin=12 * mm,
                      bottomMargin=12 * mm, title=f"Shipment {sh['id']}: cold-chain record",
                      author="assettwin").build(story)
    return buf.getvalue()
