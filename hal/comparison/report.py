"""The HTML report: one self-contained file, plots drawn as inline SVG (no scripts, no network)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape

from hal.comparison.results import placement_text

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f"]
MARKERS = {"fp32": "circle", "fp16": "square", "bf16": "triangle", "int8": "diamond"}
EXACT = 1e-12  # where an error of exactly 0 is drawn on a log axis

CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#222;max-width:1300px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #ddd}
.env{color:#555;font-size:13px}.legend span{display:inline-block;margin:2px 12px 2px 0}
.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
table{border-collapse:collapse;font-size:12.5px;margin-top:6px}
th,td{padding:3px 7px;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f4f4f4;position:sticky;top:0}td.l,th.l{text-align:left}
tr.best td{background:#e8f6e8;font-weight:600}tr.err td{color:#b00}
tr.model td{background:#fafafa;font-weight:700;text-align:left;color:#035}
.charts{display:flex;flex-wrap:wrap;gap:14px}.note{color:#666;font-size:12.5px}
svg text{font:11px system-ui,Helvetica,Arial,sans-serif}pre{font-size:11.5px;background:#f7f7f7;
padding:8px;overflow:auto}
"""


def html_report(results) -> str:
    rows = results.rows
    env = results.environment
    devices = list(dict.fromkeys(r.device for r in rows))
    segment_devs = [d for r in rows for d, _ in r.segments]
    colors = {d: PALETTE[i % len(PALETTE)]
              for i, d in enumerate(dict.fromkeys(devices + segment_devs))}
    simulated = {r.device for r in rows if r.simulated}
    models = list(dict.fromkeys(r.model for r in rows))
    batches = sorted({r.batch for r in rows})
    precisions = list(dict.fromkeys(r.precision for r in rows))
    ok = [r for r in rows if not r.error and r.p50_ms]
    best = {id(r) for r in results.best().values()}

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>HAL device comparison</title><style>{CSS}</style></head><body>",
             "<h1>HAL device comparison</h1>", _env_line(env, rows),
             "<div class='legend'>" + "".join(
                 f"<span><i class='sw' style='background:{colors[d]}'></i>{escape(d)}"
                 f"{' <b>(simulated)</b>' if d in simulated else ''}</span>" for d in devices)
             + "</div>"]

    parts.append("<h2>Latency per device per model</h2><p class='note'>Median time of one call "
                 "(bar) with the 90th percentile (whisker), log scale; shorter is better. "
                 "Hatched bars are simulated devices.</p><div class='charts'>")
    for b in batches:
        groups = []
        for m in models:
            bars = [(r.device + ("" if len(precisions) == 1 else f" {r.precision}"), r.p50_ms,
                     r.p90_ms, colors[r.device], r.simulated, id(r) in best)
                    for r in ok if r.model == m and r.batch == b]
            if bars:
                groups.append((m, bars))
        if groups:
            parts.append(_bars(groups, f"batch {b}: milliseconds per call"))
    parts.append("</div>")

    parts.append("<h2>Throughput vs batch</h2><p class='note'>Items per second (log scale); "
                 "higher is better.</p><div class='charts'>")
    for m in models:
        series = {}
        for r in ok:
            if r.model == m and r.throughput_per_s:
                key = r.device + ("" if len(precisions) == 1 else f" {r.precision}")
                series.setdefault(key, (colors[r.device], []))[1].append(
                    (r.batch, r.throughput_per_s))
        if series:
            parts.append(_lines(m, series, "batch", "items/s"))
    parts.append("</div>")

    parts.append("<h2>Accuracy vs speed across precisions</h2><p class='note'>Max absolute "
                 "error against cpu@reference at fp32 (log; exact results sit on the bottom "
                 "line) against median latency (log). Marker: " + ", ".join(
                     f"{p} {MARKERS[p]}" for p in precisions if p in MARKERS)
                 + ". Lower left is better.</p><div class='charts'>")
    for m in models:
        pts = [(r.p50_ms, r.max_abs_err, colors[r.device], r.precision,
                f"{r.device} {r.precision} batch {r.batch}: {r.p50_ms:.3f} ms, "
                f"max err {r.max_abs_err:.2e}, top-1 {_pct(r.top1_agreement)}")
               for r in ok if r.model == m and r.max_abs_err is not None]
        if pts:
            parts.append(_scatter(m, pts))
    parts.append("</div>")

    parts.append("<h2>Placement</h2><p class='note'>Each model's graph as compiled for each "
                 "device: segments in execution order, width proportional to nodes, colour "
                 "= the device running the segment (fallbacks show as a second colour).</p>")
    parts.append(_placements(models, rows, colors))

    parts.append("<h2>All rows</h2><div style='overflow-x:auto'>" + _table(results, models)
                 + "</div>")
    parts.append("<h2>Environment</h2><pre>" + escape(json.dumps(env, indent=2, default=str))
                 + "</pre></body></html>")
    return "\n".join(parts)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.0%}"


def _env_line(env: dict, rows) -> str:
    cpu = env.get("cpu", {})
    run = env.get("run", {})
    fw = ", ".join(f"{k} {v['version']}" for k, v in env.get("frameworks", {}).items()
                   if v.get("loaded"))
    gpus = "; ".join(g.get("name", "") for g in env.get("gpus", []))
    bits = [f"HAL {env.get('hal', '?')}", f"Python {env.get('python', '?')}",
            f"{cpu.get('model', '?')} ({cpu.get('usable_cores', cpu.get('logical_cores'))} cores"
            + (f", load {cpu['loadavg'][0]}" if cpu.get("loadavg") else "") + ")"]
    if gpus:
        bits.append(f"GPU {gpus}")
    if fw:
        bits.append(f"loaded: {fw}")
    if run:
        bits.append(f"{run.get('started', '')}, {run.get('wall_s', '?')} s wall, budget "
                    f"{run.get('budget_s')} s/row"
                    + (f" × {run['rounds']} rounds" if run.get("rounds", 1) > 1 else "")
                    + (", isolated" if run.get("isolate") else "")
                    + (f", MLPerf {run['scenario']}" if run.get("scenario") else ""))
    bad = sum(1 for r in rows if r.error)
    bits.append(f"{len(rows)} rows, {bad} failed")
    return "<p class='env'>" + escape(" · ".join(bits)) + "</p>"


# -- scales ---------------------------------------------------------------------------------
class _Log:
    def __init__(self, lo: float, hi: float, a: float, b: float):
        lo, hi = max(lo, 1e-300), max(hi, 1e-300)
        self.lo = math.floor(math.log10(lo))
        self.hi = math.ceil(math.log10(hi))
        if self.hi <= self.lo:
            self.hi = self.lo + 1
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        t = (math.log10(max(v, 1e-300)) - self.lo) / (self.hi - self.lo)
        return self.a + t * (self.b - self.a)

    def ticks(self) -> list[float]:
        step = max(1, (self.hi - self.lo) // 8)
        return [10.0 ** e for e in range(self.lo, self.hi + 1, step)]


def _fmt(v: float) -> str:
    if v >= 1e4 or v < 1e-2:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:g}"


def _svg(w: int, h: int, body: list[str], title: str) -> str:
    return (f"<svg width='{w}' height='{h}' "
            f"viewBox='0 0 {w} {h}' role='img'><title>{escape(title)}</title>"
            "<defs><pattern id='hatch' width='6' height='6' patternUnits='userSpaceOnUse' "
            "patternTransform='rotate(45)'><rect width='3' height='6' fill='white' "
            "fill-opacity='0.55'/></pattern></defs>"
            f"<rect width='{w}' height='{h}' fill='white'/>" + "".join(body) + "</svg>")


def _bars(groups: list, title: str) -> str:
    label_w, w, bar_h, gap = 250, 640, 13, 10
    vals = [v for _, bars in groups for _, p50, p90, *_ in bars for v in (p50, p90 or p50)]
    x = _Log(min(vals), max(vals), label_w, w - 20)
    h = 40 + sum(len(b) * bar_h + gap for _, b in groups) + 30
    out = [f"<text x='{w / 2}' y='16' text-anchor='middle' font-weight='600'>"
           f"{escape(title)}</text>"]
    for t in x.ticks():
        xx = x(t)
        out.append(f"<line x1='{xx:.1f}' x2='{xx:.1f}' y1='26' y2='{h - 28}' stroke='#ddd'/>"
                   f"<text x='{xx:.1f}' y='{h - 14}' text-anchor='middle'>{_fmt(t)}</text>")
    y = 30
    for model, bars in groups:
        out.append(f"<text x='4' y='{y + 10}' font-weight='700'>{escape(model)}</text>")
        for label, p50, p90, color, sim, best in bars:
            x0, x1 = x(10.0 ** x.lo), x(p50)
            tip = f"{model} {label}: p50 {p50:.3f} ms, p90 {(p90 or p50):.3f} ms"
            out.append(f"<g><title>{escape(tip)}</title>"
                       f"<text x='{label_w - 6}' y='{y + bar_h - 3}' text-anchor='end'>"
                       f"{escape(label)}{' (sim)' if sim else ''}</text>"
                       f"<rect x='{x0:.1f}' y='{y}' width='{max(1, x1 - x0):.1f}' "
                       f"height='{bar_h - 2}' fill='{color}'/>")
            if sim:
                out.append(f"<rect x='{x0:.1f}' y='{y}' width='{max(1, x1 - x0):.1f}' "
                           f"height='{bar_h - 2}' fill='url(#hatch)'/>")
            if p90 and p90 > p50:
                out.append(f"<line x1='{x1:.1f}' x2='{x(p90):.1f}' y1='{y + bar_h / 2 - 1}' "
                           f"y2='{y + bar_h / 2 - 1}' stroke='#333'/>")
            mark = " ★" if best else ""
            out.append(f"<text x='{x(p90 or p50) + 4:.1f}' y='{y + bar_h - 3}' "
                       f"fill='#333'>{p50:.3g}{mark}</text></g>")
            y += bar_h
        y += gap
    return _svg(w, h, out, title)


def _axes(w, h, x, y, xlabel, ylabel, title, ml, mt, mb) -> list[str]:
    out = [f"<text x='{w / 2}' y='14' text-anchor='middle' font-weight='600'>"
           f"{escape(title)}</text>"]
    for t in x.ticks():
        out.append(f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{mt}' y2='{h - mb}' "
                   f"stroke='#e5e5e5'/><text x='{x(t):.1f}' y='{h - mb + 14}' "
                   f"text-anchor='middle'>{_fmt(t)}</text>")
    for t in y.ticks():
        out.append(f"<line x1='{ml}' x2='{w - 10}' y1='{y(t):.1f}' y2='{y(t):.1f}' "
                   f"stroke='#e5e5e5'/><text x='{ml - 4}' y='{y(t) + 4:.1f}' "
                   f"text-anchor='end'>{_fmt(t)}</text>")
    out.append(f"<text x='{(ml + w) / 2}' y='{h - 4}' text-anchor='middle'>{escape(xlabel)}"
               f"</text><text x='12' y='{(mt + h - mb) / 2}' text-anchor='middle' "
               f"transform='rotate(-90 12 {(mt + h - mb) / 2})'>{escape(ylabel)}</text>")
    return out


def _lines(title: str, series: dict, xlabel: str, ylabel: str) -> str:
    w, h, ml, mt, mb = 400, 270, 58, 24, 34
    xs = [p[0] for _, pts in series.values() for p in pts]
    ys = [p[1] for _, pts in series.values() for p in pts]
    x = _Log(min(xs), max(xs) if max(xs) > min(xs) else min(xs) * 10, ml, w - 110)
    y = _Log(min(ys), max(ys), h - mb, mt)
    out = _axes(w, h, x, y, xlabel, ylabel, title, ml, mt, mb)
    for i, (label, (color, pts)) in enumerate(series.items()):
        pts = sorted(pts)
        coords = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts)
        out.append(f"<polyline points='{coords}' fill='none' stroke='{color}' "
                   f"stroke-width='2'/>")
        for a, b in pts:
            out.append(f"<circle cx='{x(a):.1f}' cy='{y(b):.1f}' r='3.5' fill='{color}'>"
                       f"<title>{escape(f'{label} batch {a}: {b:,.0f} items/s')}</title>"
                       "</circle>")
        out.append(f"<text x='{w - 104}' y='{mt + 12 + 13 * i}' fill='{color}'>"
                   f"{escape(_short(label))}</text>")
    return _svg(w, h, out, f"{title}: {ylabel} vs {xlabel}")


def _marker(shape: str, cx: float, cy: float, color: str, tip: str) -> str:
    t = f"<title>{escape(tip)}</title>"
    if shape == "square":
        return (f"<rect x='{cx - 4:.1f}' y='{cy - 4:.1f}' width='8' height='8' "
                f"fill='{color}'>{t}</rect>")
    if shape in ("triangle", "diamond"):
        pts = ([(cx, cy - 5), (cx + 5, cy + 4), (cx - 5, cy + 4)] if shape == "triangle"
               else [(cx, cy - 5), (cx + 5, cy), (cx, cy + 5), (cx - 5, cy)])
        return (f"<polygon points='{' '.join(f'{a:.1f},{b:.1f}' for a, b in pts)}' "
                f"fill='{color}'>{t}</polygon>")
    return (f"<circle cx='{cx:.1f}' cy='{cy:.1f}' r='4.5' fill='{color}' "
            f"fill-opacity='0.85'>{t}</circle>")


def _scatter(title: str, pts: Sequence) -> str:
    w, h, ml, mt, mb = 400, 270, 58, 24, 34
    errs = [max(e, EXACT) for _, e, *_ in pts if not math.isnan(e)]
    x = _Log(min(p[0] for p in pts), max(p[0] for p in pts), ml, w - 12)
    y = _Log(EXACT if not errs else min(errs), max(errs or [1e-6]), h - mb, mt)
    out = _axes(w, h, x, y, "median ms per call", "max abs error", title, ml, mt, mb)
    for ms, err, color, prec, tip in pts:
        if math.isnan(err):  # drawn at the top; its tooltip says nan
            err = 10.0 ** y.hi
        out.append(_marker(MARKERS.get(prec, "circle"), x(ms), y(max(err, EXACT)), color, tip))
    return _svg(w, h, out, f"{title}: accuracy vs speed")


def _short(s: str, n: int = 17) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def _placements(models, rows, colors) -> str:
    w, label_w, bar_w = 900, 260, 600
    out, y = [], 8
    seen = set()
    for m in models:
        items = []
        for r in rows:
            key = (r.model, r.device, r.precision)
            if r.model == m and r.segments and key not in seen:
                seen.add(key)
                items.append(r)
        if not items:
            continue
        out.append(f"<text x='4' y='{y + 12}' font-weight='700'>{escape(m)}</text>")
        y += 18
        for r in items:
            total = sum(n for _, n in r.segments) or 1
            x = label_w
            label = r.device + (f" {r.precision}" if r.precision != "fp32" else "")
            out.append(f"<text x='{label_w - 6}' y='{y + 11}' text-anchor='end'>"
                       f"{escape(label)}</text>")
            for i, (dev, n) in enumerate(r.segments):
                sw = bar_w * n / total
                out.append(f"<rect x='{x:.1f}' y='{y}' width='{max(sw - 1, 1):.1f}' height='14' "
                           f"fill='{colors.get(dev, '#999')}'><title>"
                           f"{escape(f'segment {i}: {n} nodes on {dev}')}</title></rect>")
                if sw > 40:
                    out.append(f"<text x='{x + 3:.1f}' y='{y + 11}' fill='white'>{n}</text>")
                x += sw
            out.append(f"<text x='{label_w + bar_w + 6}' y='{y + 11}' fill='#555'>"
                       f"{escape(placement_text(r.placement))}</text>")
            y += 18
        y += 6
    if not out:
        return "<p class='note'>No model compiled.</p>"
    return _svg(w + 300, y + 4, out, "placement of each model")


def _table(results, models) -> str:
    best = {id(r) for r in results.best().values()}
    head = ["batch", "device", "precision", "p50 ms", "± p50 ms", "p90 ms", "p99 ms", "MAD ms",
            "runs",
            "items/s", "first ms", "compile s", "mem MB", "max err", "top-1", "placement",
            "transfers/call", "error"]
    out = ["<table><thead><tr>" + "".join(
        f"<th class='{'l' if h in ('device', 'placement', 'error', 'precision') else ''}'>"
        f"{h}</th>" for h in head) + "</tr></thead><tbody>"]

    def num(v, f="{:.3f}"):
        return "-" if v is None else f.format(v)

    for m in models:
        out.append(f"<tr class='model'><td colspan='{len(head)}' class='l'>{escape(m)}</td></tr>")
        for r in (r for r in results.rows if r.model == m):
            cls = "best" if id(r) in best else "err" if r.error else ""
            t = r.transfers or {}
            cells = [str(r.batch), escape(r.device) + (" <b>(simulated)</b>" if r.simulated
                                                      else ""), r.precision,
                     num(r.p50_ms) + (" ★" if cls == "best" else ""), num(r.p50_spread_ms),
                     num(r.p90_ms),
                     num(r.p99_ms), num(r.mad_ms), str(r.runs),
                     num(r.throughput_per_s, "{:,.0f}"), num(r.first_call_ms),
                     num(r.compile_s, "{:.2f}"), num(r.peak_mem_mb, "{:.1f}"),
                     num(r.max_abs_err, "{:.1e}"), _pct(r.top1_agreement),
                     escape(placement_text(r.placement)),
                     f"{t['count']} / {t['bytes']:,} B" if t else "-", escape(r.error or "")]
            out.append(f"<tr class='{cls}'>" + "".join(
                f"<td class='{'l' if i in (1, 2, 15, 17) else ''}'>{c}</td>"
                for i, c in enumerate(cells)) + "</tr>")
    return "".join(out) + "</tbody></table>"
