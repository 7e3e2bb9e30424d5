"""The HTML report: one self-contained file, plots drawn as inline SVG (no scripts, no network)."""

from __future__ import annotations

import json
from html import escape

from hal.comparison import plots
from hal.comparison.plots import MARKERS
from hal.comparison.results import placement_text

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f"]

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
.warn{background:#fff4e0;border-left:4px solid #e69500;padding:6px 10px;font-weight:600}
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
    training = bool(rows) and all(r.task == "training" for r in rows)
    title, call = (("HAL training comparison", "training step") if training
                   else ("HAL device comparison", "call"))
    items = "samples" if training else "items"

    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{title}</title><style>{CSS}</style></head><body>",
             f"<h1>{title}</h1>", _env_line(env, rows),
             *([f"<p class='warn'>{escape(results.interrupted)}</p>"]
               if results.interrupted else []),
             "<div class='legend'>" + "".join(
                 f"<span><i class='sw' style='background:{colors[d]}'></i>{escape(d)}"
                 f"{' <b>(simulated)</b>' if d in simulated else ''}</span>" for d in devices)
             + "</div>"]

    parts.append(f"<h2>Latency per device per model</h2><p class='note'>Median time of one {call} "
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
            parts.append(plots.bar_chart(groups, f"batch {b}: milliseconds per {call}"))
    parts.append("</div>")

    parts.append(f"<h2>Throughput vs batch</h2><p class='note'>{items.capitalize()} per second "
                 "(log scale); higher is better.</p><div class='charts'>")
    for m in models:
        series = {}
        for r in ok:
            if r.model == m and r.throughput_per_s:
                key = r.device + ("" if len(precisions) == 1 else f" {r.precision}")
                series.setdefault(key, (colors[r.device], []))[1].append(
                    (r.batch, r.throughput_per_s))
        if series:
            parts.append(plots.line_chart(m, series, "batch", f"{items}/s",
                                          tip=f"{{label}} batch {{x}}: {{y:,.0f}} {items}/s"))
    parts.append("</div>")
    if training:
        parts.append(_loss_curves(models, batches, ok, colors))
        return _end(parts, results, models, env)

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
            parts.append(plots.scatter_chart(m, pts))
    parts.append("</div>")

    parts.append("<h2>Placement</h2><p class='note'>Each model's graph as compiled for each "
                 "device: segments in execution order, width proportional to nodes, colour "
                 "= the device running the segment (fallbacks show as a second colour).</p>")
    parts.append(_placements(models, rows, colors))
    return _end(parts, results, models, env)


def _end(parts: list[str], results, models, env) -> str:
    parts.append("<h2>All rows</h2><div style='overflow-x:auto'>" + _table(results, models)
                 + "</div>")
    parts.append("<h2>Environment</h2><pre>" + escape(json.dumps(env, indent=2, default=str))
                 + "</pre></body></html>")
    return "\n".join(parts)


def _loss_curves(models, batches, ok, colors) -> str:
    """Training rows: each device's loss step by step from the same initial weights."""
    out = ["<h2>Loss from the same initial weights</h2><p class='note'>The loss of each of the "
           "first steps on the same data, one line per device: the first point is the initial "
           "weights' loss, which every device should share; the lines part only as far as the "
           "devices' arithmetic does.</p><div class='charts'>"]
    for m in models:
        for b in batches:
            series = {f"{r.device} {r.precision}": (colors[r.device],
                                                    list(enumerate(r.losses, 1)))
                      for r in ok if r.model == m and r.batch == b and r.losses}
            if series:
                out.append(plots.line_chart(f"{m}, batch {b}", series, "step", "loss",
                                            log=False, tip="{label} step {x}: loss {y:.6f}"))
    return "".join(out) + "</div>"


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
    return plots.svg(w + 300, y + 4, out, "placement of each model")


def _table(results, models) -> str:
    best = {id(r) for r in results.best().values()}
    training = any(r.task == "training" for r in results.rows)
    steps = max((r.train_steps for r in results.rows), default=0)
    head = ["batch", "device", "precision", "p50 ms", "± p50 ms", "p90 ms", "p99 ms", "MAD ms",
            "runs", "items/s", "first ms", "compile s", "mem MB", "max err", "top-1",
            "placement", "transfers/call", "error"]
    if training:
        head[9:16] = ["samples/s", "first step ms", "compile s", "mem MB", "loss@1",
                      f"loss@{steps}", "data"]
    out = ["<table><thead><tr>" + "".join(
        f"<th class='{'l' if h in ('device', 'placement', 'error', 'precision', 'data') else ''}'>"
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
                     *((num(r.loss_first, "{:.6f}"), num(r.loss_last, "{:.6f}"),
                        escape(r.train_data)) if r.task == "training" else
                       (num(r.max_abs_err, "{:.1e}"), _pct(r.top1_agreement),
                        escape(placement_text(r.placement)))),
                     f"{t['count']} / {t['bytes']:,} B" if t else "-", escape(r.error or "")]
            out.append(f"<tr class='{cls}'>" + "".join(
                f"<td class='{'l' if i in (1, 2, 15, 17) else ''}'>{c}</td>"
                for i, c in enumerate(cells)) + "</tr>")
    return "".join(out) + "</tbody></table>"
