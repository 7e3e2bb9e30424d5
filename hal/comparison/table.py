"""The terminal table: grouped by model, the best device per (model, batch) highlighted."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from hal.comparison.row import precision_label


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:,.0f}"


def _err(v) -> str:
    return "-" if v is None else "0" if v == 0 else f"{v:.1e}"


def _placement(r) -> str:
    if len(r.placement) <= 1:
        return f"{len(r.segments)} seg" if r.segments else "-"
    return " + ".join(f"{d.split('@')[-1]}×{p['segments']}" for d, p in r.placement.items())


def _loss(v) -> str:
    return "-" if v is None else f"{v:.6f}"


def _interrupted(results, title: str) -> Text | str:
    if not results.interrupted:
        return title
    return Text.assemble(title, "\n", (results.interrupted, "bold red"))


def rich_table(results, title: str | None = None) -> Table:
    rows = results.rows
    if rows and all(r.task == "training" for r in rows):
        return training_table(results, title)
    scen = {r.scenario for r in rows} - {None}
    mlperf = scen.pop() if len(scen) == 1 else None
    title = title or ("HAL device comparison" + (f" (MLPerf {mlperf})" if mlperf else "")
                      + ": per-call latency, accuracy vs cpu@reference fp32")
    rounds = max((r.rounds for r in rows), default=1)
    spread = (f"± half the range of the p50s of {rounds} rounds" if rounds > 1
              else "± median absolute deviation of the calls")
    title = _interrupted(results, title)
    t = Table(title=title, caption="★ best device for the model and batch (simulated ones only where "
              "no real device ran); "
              f"(sim) simulated device; {spread}; error column shows why a row failed",
              header_style="bold", expand=False)
    hosts = any(r.host for r in rows)  # hal compare --cluster: which machine measured it
    cols = [("model", "left"), ("batch", "right"), *([("host", "left")] if hosts else []),
            ("device", "left"), ("prec", "left"), ("p50 ms", "right"),
            ("p90 ms", "right"), ("p99 ms", "right"), ("± ms", "right"), ("items/s", "right"),
            ("compile s", "right"), ("mem MB", "right"), ("max err", "right"),
            ("top-1", "right"), ("placement", "left")]
    for name, justify in cols:
        t.add_column(name, justify=justify, no_wrap=name not in ("host", "device", "placement"),
                     overflow="fold", style="bold cyan" if name == "model" else None)
    best = {id(r) for r in results.best().values()}
    model = None
    for r in rows:
        first = r.model != model
        if first and model is not None:
            t.add_section()
        model = r.model
        label = r.model if first else ""
        dev = Text(r.device)
        if r.simulated:
            dev.append(" (sim)", style="yellow")
        host = [r.host] if hosts else []
        if r.error:
            t.add_row(label, str(r.batch), *host, dev, precision_label(r),
                      Text("error", style="red"),
                      *[""] * (len(cols) - 6 - len(host)), Text(r.error[:300], style="red"))
            continue
        star = id(r) in best
        style = "bold green" if star else ""
        p50 = Text(_ms(r.p50_ms) + (" ★" if star else ""), style=style)
        t.add_row(label, str(r.batch), *host, Text.assemble(dev, style=style),
                  precision_label(r), p50,
                  _ms(r.p90_ms), _ms(r.p99_ms),
                  _ms(r.p50_spread_ms if r.p50_spread_ms is not None else r.mad_ms),
                  f"{r.throughput_per_s:,.0f}" if r.throughput_per_s else "-",
                  f"{r.compile_s:.2f}" if r.compile_s is not None else "-",
                  f"{r.peak_mem_mb:.1f}" if r.peak_mem_mb is not None else "-",
                  _err(r.max_abs_err),
                  f"{r.top1_agreement:.0%}" if r.top1_agreement is not None else "-",
                  _placement(r))
    return t


def training_table(results, title: str | None = None) -> Table:
    """``hal compare --train``: one optimizer step per micro-batch, and the losses of the first
    steps from the same initial weights, which devices should share."""
    rows = results.rows
    steps = max((r.train_steps for r in rows), default=0)
    t = Table(title=_interrupted(results, title or "HAL training comparison: one step "
                                 "(forward, backward, AdamW update) on one micro-batch of "
                                 "`batch` samples"),
              caption=f"★ fastest step for the model and batch; ± median absolute deviation of "
              f"the steps; loss@1 is the initial weights' loss on the first batch, loss@{steps} "
              f"the loss after {steps - 1} updates on the same data on every device; mem MB: "
              f"host memory above the pre-compile level while training",
              header_style="bold", expand=False)
    cols = ["model", "batch", "device", "prec", "step p50 ms", "p90 ms", "± ms", "samples/s",
            "first step ms", "compile s", "mem MB", "loss@1", f"loss@{steps}", "data"]
    for name in cols:
        t.add_column(name, justify="left" if name in ("model", "device", "prec", "data")
                     else "right", no_wrap=name not in ("device", "data"), overflow="fold",
                     style="bold cyan" if name == "model" else None)
    best = {id(r) for r in results.best().values()}
    model = None
    for r in rows:
        first = r.model != model
        if first and model is not None:
            t.add_section()
        model = r.model
        label = r.model if first else ""
        dev = Text(r.device + (" (sim)" if r.simulated else ""))
        if r.error:
            t.add_row(label, str(r.batch), dev, precision_label(r), Text("error", style="red"),
                      *[""] * (len(cols) - 6), Text(r.error[:300], style="red"))
            continue
        style = "bold green" if id(r) in best else ""
        t.add_row(label, str(r.batch), Text.assemble(dev, style=style), precision_label(r),
                  Text(_ms(r.p50_ms) + (" ★" if style else ""), style=style), _ms(r.p90_ms),
                  _ms(r.p50_spread_ms if r.p50_spread_ms is not None else r.mad_ms),
                  f"{r.throughput_per_s:,.0f}" if r.throughput_per_s else "-",
                  _ms(r.first_call_ms),
                  f"{r.compile_s:.2f}" if r.compile_s is not None else "-",
                  f"{r.peak_mem_mb:.1f}" if r.peak_mem_mb is not None else "-",
                  _loss(r.loss_first), _loss(r.loss_last), r.train_data)
    return t
