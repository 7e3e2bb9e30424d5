"""``hal.compress``'s result as a text table and as an HTML page with its accuracy-vs-latency
plot (drawn with the comparison report's SVG helpers)."""

from __future__ import annotations

from html import escape

from hal.comparison import plots

COLUMNS = ("candidate", "accuracy", "drop", "p50 ms", "size KB", "MFLOPs", "params", "")


def _cells(result, c) -> list[str]:
    base = result.baseline.accuracy
    mark = "chosen" if c is result.chosen else ""
    if c.pareto:
        mark = (mark + " pareto").strip()
    if c.accuracy is None or c.p50_ms is None:
        return [c.name, "-", "-", "-", "-", "-", "-", c.note or "not measured"]
    return [c.name, f"{c.accuracy:.2%}", f"{(base - c.accuracy) * 100:+.2f} pt",
            f"{c.p50_ms:.3f}", f"{c.size_bytes / 1024:.1f}",
            f"{c.flops / 1e6:.2f}" if c.flops is not None else "-",
            f"{c.params:,}" if c.params is not None else "-",
            mark + ("" if c.within_bound else " (over the bound)")]


def table(result) -> str:
    rows = [list(COLUMNS)] + [_cells(result, c) for c in result.candidates]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    c = result.chosen
    lines.append("")
    lines.append(f"{result.device}, batch {result.batch}: chosen {c.name!r} "
                 f"({result.objective}; accuracy {c.accuracy:.2%} against {result.baseline.accuracy:.2%} "
                 f"as given, bound {result.max_accuracy_drop * 100:g} pt); compile it with "
                 f"{c.compile_options}")
    return "\n".join(lines)


def html(result) -> str:
    measured = [c for c in result.candidates if c.accuracy is not None and c.p50_ms is not None]
    chart = _scatter(result, measured) if measured else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in _cells(result, c))
                   + "</tr>" for c in result.candidates)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>hal compress</title>"
            f"<style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;text-align:left}}"
            f"</style></head><body><h1>hal compress: {escape(result.device)}, batch "
            f"{result.batch}</h1>{chart}<table><tr>{head}</tr>{body}</table>"
            f"<pre>{escape(table(result).splitlines()[-1])}</pre></body></html>")


def _scatter(result, cs) -> str:
    w, h, ml, mt, mb = 520, 320, 58, 24, 34
    lo_ms, hi_ms = min(c.p50_ms for c in cs), max(c.p50_ms for c in cs)
    lo_acc, hi_acc = min(c.accuracy for c in cs), max(c.accuracy for c in cs)
    x = plots.Log(lo_ms * 0.9, hi_ms * 1.1, ml, w - 12)
    y = plots.Linear(lo_acc - 0.01, min(1.0, hi_acc + 0.01), h - mb, mt)
    out = plots.axes(w, h, x, y, "p50 ms per call", "top-1 accuracy", "candidates", ml, mt, mb)
    bound = result.baseline.accuracy - result.max_accuracy_drop
    out.append(f"<line x1='{ml}' x2='{w - 12}' y1='{y(bound):.1f}' y2='{y(bound):.1f}' "
               f"stroke='#c33' stroke-dasharray='4 3'><title>accuracy bound</title></line>")
    shapes = {"fp32": "circle", "bf16": "diamond", "int8": "square", "int8-dynamic": "triangle",
              "int8-qat": "square"}
    for c in cs:
        color = "#2a7" if c is result.chosen else ("#36c" if c.pareto else "#999")
        out.append(plots.marker(shapes[c.precision], x(c.p50_ms), y(c.accuracy), color,
                                f"{c.name}: {c.accuracy:.2%}, {c.p50_ms:.3f} ms, "
                                f"{c.size_bytes / 1024:.1f} KB"))
    return plots.svg(w, h, out, "accuracy vs latency")
