"""Plots of the HTML report as inline SVG strings: log scales, bars, lines and scatter."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

MARKERS = {"fp32": "circle", "fp16": "square", "bf16": "triangle", "int8": "diamond"}
EXACT = 1e-12  # where an error of exactly 0 is drawn on a log axis


# -- scales ---------------------------------------------------------------------------------
class Log:
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


class Linear:
    """A linear axis from ``lo`` to ``hi`` drawn between pixels ``a`` and ``b``."""

    def __init__(self, lo: float, hi: float, a: float, b: float):
        span = (hi - lo) or abs(lo) or 1.0
        self.lo, self.hi = lo - 0.05 * span, hi + 0.05 * span
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        return self.a + (v - self.lo) / (self.hi - self.lo) * (self.b - self.a)

    def ticks(self) -> list[float]:
        step = 10.0 ** math.floor(math.log10((self.hi - self.lo) / 2))
        for mult in (1, 2, 5, 10):
            if (self.hi - self.lo) / (step * mult) <= 6:
                step *= mult
                break
        first = math.ceil(self.lo / step)
        return [round(k * step, 12) for k in range(first, math.floor(self.hi / step) + 1)]


def fmt(v: float) -> str:
    if v >= 1e4 or v < 1e-2:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:g}"


def svg(w: int, h: int, body: list[str], title: str) -> str:
    return (f"<svg width='{w}' height='{h}' "
            f"viewBox='0 0 {w} {h}' role='img'><title>{escape(title)}</title>"
            "<defs><pattern id='hatch' width='6' height='6' patternUnits='userSpaceOnUse' "
            "patternTransform='rotate(45)'><rect width='3' height='6' fill='white' "
            "fill-opacity='0.55'/></pattern></defs>"
            f"<rect width='{w}' height='{h}' fill='white'/>" + "".join(body) + "</svg>")


def bar_chart(groups: list, title: str) -> str:
    label_w, w, bar_h, gap = 250, 640, 13, 10
    vals = [v for _, bars in groups for _, p50, p90, *_ in bars for v in (p50, p90 or p50)]
    x = Log(min(vals), max(vals), label_w, w - 20)
    h = 40 + sum(len(b) * bar_h + gap for _, b in groups) + 30
    out = [f"<text x='{w / 2}' y='16' text-anchor='middle' font-weight='600'>"
           f"{escape(title)}</text>"]
    for t in x.ticks():
        xx = x(t)
        out.append(f"<line x1='{xx:.1f}' x2='{xx:.1f}' y1='26' y2='{h - 28}' stroke='#ddd'/>"
                   f"<text x='{xx:.1f}' y='{h - 14}' text-anchor='middle'>{fmt(t)}</text>")
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
    return svg(w, h, out, title)


def axes(w, h, x, y, xlabel, ylabel, title, ml, mt, mb) -> list[str]:
    out = [f"<text x='{w / 2}' y='14' text-anchor='middle' font-weight='600'>"
           f"{escape(title)}</text>"]
    for t in x.ticks():
        out.append(f"<line x1='{x(t):.1f}' x2='{x(t):.1f}' y1='{mt}' y2='{h - mb}' "
                   f"stroke='#e5e5e5'/><text x='{x(t):.1f}' y='{h - mb + 14}' "
                   f"text-anchor='middle'>{fmt(t)}</text>")
    for t in y.ticks():
        out.append(f"<line x1='{ml}' x2='{w - 10}' y1='{y(t):.1f}' y2='{y(t):.1f}' "
                   f"stroke='#e5e5e5'/><text x='{ml - 4}' y='{y(t) + 4:.1f}' "
                   f"text-anchor='end'>{fmt(t)}</text>")
    out.append(f"<text x='{(ml + w) / 2}' y='{h - 4}' text-anchor='middle'>{escape(xlabel)}"
               f"</text><text x='12' y='{(mt + h - mb) / 2}' text-anchor='middle' "
               f"transform='rotate(-90 12 {(mt + h - mb) / 2})'>{escape(ylabel)}</text>")
    return out


def line_chart(title: str, series: dict, xlabel: str, ylabel: str, log: bool = True,
               tip: str = "{label} batch {x}: {y:,.0f} items/s") -> str:
    """One line per series (label -> (colour, [(x, y), ...])); log-log unless ``log`` is
    False; ``tip`` formats each point's tooltip."""
    w, h, ml, mt, mb = 400, 270, 58, 24, 34
    xs = [p[0] for _, pts in series.values() for p in pts]
    ys = [p[1] for _, pts in series.values() for p in pts]
    if log:
        x = Log(min(xs), max(xs) if max(xs) > min(xs) else min(xs) * 10, ml, w - 110)
        y = Log(min(ys), max(ys), h - mb, mt)
    else:
        x, y = Linear(min(xs), max(xs), ml, w - 110), Linear(min(ys), max(ys), h - mb, mt)
    out = axes(w, h, x, y, xlabel, ylabel, title, ml, mt, mb)
    for i, (label, (color, pts)) in enumerate(series.items()):
        pts = sorted(pts)
        coords = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in pts)
        out.append(f"<polyline points='{coords}' fill='none' stroke='{color}' "
                   f"stroke-width='2'/>")
        for a, b in pts:
            out.append(f"<circle cx='{x(a):.1f}' cy='{y(b):.1f}' r='3.5' fill='{color}'>"
                       f"<title>{escape(tip.format(label=label, x=a, y=b))}</title>"
                       "</circle>")
        out.append(f"<text x='{w - 104}' y='{mt + 12 + 13 * i}' fill='{color}'>"
                   f"{escape(short(label))}</text>")
    return svg(w, h, out, f"{title}: {ylabel} vs {xlabel}")


def marker(shape: str, cx: float, cy: float, color: str, tip: str) -> str:
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


def scatter_chart(title: str, pts: Sequence) -> str:
    w, h, ml, mt, mb = 400, 270, 58, 24, 34
    errs = [max(e, EXACT) for _, e, *_ in pts if not math.isnan(e)]
    x = Log(min(p[0] for p in pts), max(p[0] for p in pts), ml, w - 12)
    y = Log(EXACT if not errs else min(errs), max(errs or [1e-6]), h - mb, mt)
    out = axes(w, h, x, y, "median ms per call", "max abs error", title, ml, mt, mb)
    for ms, err, color, prec, tip in pts:
        if math.isnan(err):  # drawn at the top; its tooltip says nan
            err = 10.0 ** y.hi
        out.append(marker(MARKERS.get(prec, "circle"), x(ms), y(max(err, EXACT)), color, tip))
    return svg(w, h, out, f"{title}: accuracy vs speed")


def short(s: str, n: int = 17) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"
