"""``hal compare``: a thin layer over ``hal.compare()``: progress bars, the table, files, the
baseline check."""

from __future__ import annotations


def add_parser(sub) -> None:
    from hal.comparison.harness import DEFAULT_BUDGET_S
    from hal.comparison.train import TRAIN_STEPS

    c = sub.add_parser("compare", help="every model on every usable device, side by side",
                       description="Measure models on devices the same way (warm-up, timed "
                       "calls until a budget, percentiles) and check each against "
                       "cpu@reference. With no arguments: the whole zoo on every usable "
                       "device at batch 1 and 64.")
    c.add_argument("--models", help="comma-separated zoo names or .onnx paths (default: the zoo)")
    c.add_argument("--devices", help="comma-separated devices (default: every usable one, "
                   "simulated ones included and labelled, slow simulations left out)")
    c.add_argument("--batch", default="1,64", help="comma-separated batch sizes (default 1,64)")
    c.add_argument("--precision", default=None,
                   help="comma-separated: fp32,fp16,bf16,int8 (default: each device's own, "
                        "fp32 except on int8-only accelerators)")
    c.add_argument("--calibration", choices=["dynamic"], default=None,
                   help="dynamic: the int8 rows quantize activations at run time (no "
                        "calibration data) instead of static scales from each model's own "
                        "example inputs")
    c.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S,
                   help="seconds of timed calls per row after warm-up (at least 5 calls; "
                   f"default {DEFAULT_BUDGET_S})")
    c.add_argument("--rounds", type=int, default=1,
                   help="measure the whole table N times, devices in a rotated order each "
                   "round; each row reports the median of the rounds and ± half the range of "
                   "their p50s (use 3 or more for figures to compare with another run)")
    c.add_argument("--json", metavar="FILE", help="write the rows and environment as JSON")
    c.add_argument("--csv", metavar="FILE", help="write the rows as CSV")
    c.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with plots")
    c.add_argument("--isolate", action="store_true",
                   help="measure each device in its own process")
    c.add_argument("--cluster", metavar="ray|ray://HOST:PORT|HOST:PORT", default=None,
                   help="measure on every alive node of this Ray cluster the devices it "
                   "advertises (`hal devices --ray-resources`) and --devices selects, each row "
                   "naming its host; 'ray': RAY_ADDRESS, else the cluster `ray start` began "
                   "here. With --isolate each device gets a fresh Ray worker process")
    c.add_argument("--baseline", metavar="OLD.json", help="flag rows slower or less accurate "
                   "than this earlier --json run beyond noise (exit status 1 if any)")
    c.add_argument("--scenario", choices=("single-stream", "offline", "server"),
                   help="measure through MLPerf LoadGen with this scenario's method and names")
    c.add_argument("--latency-bound-ms", type=float, default=None,
                   help="MLPerf Server latency bound (default: 10x one batch's latency)")
    c.add_argument("--train", action="store_true",
                   help="measure a full training step (forward, backward, AdamW update) per "
                   "micro-batch on every device that trains, and the losses of its first "
                   "--steps steps from the same initial weights; --precision fp32 (default), "
                   "bf16 or fp16")
    c.add_argument("--steps", type=int, default=TRAIN_STEPS,
                   help=f"with --train: steps behind each row's loss (default {TRAIN_STEPS})")
    c.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from hal.comparison import Results, compare
    from hal.comparison.interrupt import CompareInterrupted
    from hal.comparison.results import accelerator_text

    con = Console()
    if not con.is_terminal:
        con = Console(width=max(con.width, 200))
    baseline = Results.from_json(args.baseline) if args.baseline else None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task("comparing", total=None)

        def progress(done, total, current, row):
            prog.update(task, completed=done, total=total, description=current)
            if row is not None and not prog.console.is_terminal:  # a log: no bar, a line
                prog.console.print(escape(f"[{done}/{total}] {row_line(row)}"), soft_wrap=True)

        try:
            res = compare(args.models, args.devices, args.batch, args.precision,
                          budget_s=args.budget, isolate=args.isolate, progress=progress,
                          scenario=args.scenario, latency_bound_ms=args.latency_bound_ms,
                          rounds=args.rounds, train=args.train, train_steps=args.steps,
                          cluster=args.cluster, calibration=args.calibration)
        except CompareInterrupted as stop:  # the rows so far are shown and written below
            res = stop.results
    con.print(res.table())
    run = res.environment["run"]
    failed = sum(1 for r in res.rows if r.error)
    where = "one process per device" if args.isolate else "in this process"
    if args.cluster:
        where = ("a fresh Ray worker process per device" if args.isolate
                 else "a Ray worker process on each node")
    con.print(f"{len(res.rows)} rows ({failed} failed) in {run['wall_s']:.1f} s; peak memory "
              f"is host RSS above the pre-compile level "
              f"({where})")
    fleet = res.environment.get("fleet")
    if fleet:
        for host, node in fleet["nodes"].items():
            con.print(f"host {escape(host)}: ran {escape(', '.join(node['ran']) or 'nothing')}"
                      + (f" [red]{escape(node['error'])}[/]" if node.get("error") else ""))
    for r in res.rows:
        if r.accelerator:
            con.print(f"{escape(r.device)} {escape(r.model)} b{r.batch} "
                      f"{escape(accelerator_text(r.accelerator))}")
    for dev, why in run.get("left_out", {}).items():
        if args.train:
            con.print(f"not trained: {escape(dev)}: {escape(why)}")
        else:
            con.print(f"not compared by default: {escape(dev)}: {escape(why)}; name it in "
                      "--devices to include it")
    for flag, write in (("json", res.to_json), ("csv", res.to_csv), ("html", res.to_html)):
        path = getattr(args, flag)
        if path:
            write(path)
            con.print(f"wrote {path}")
    if res.interrupted:
        con.print(f"[bold red]{escape(res.interrupted)}[/]"
                  + ("; not checked against the baseline" if baseline is not None else ""))
        return 130  # as a shell reports a command ended by SIGINT
    if baseline is not None:
        return print_regressions(con, baseline, res, args.baseline)
    return 0


def row_line(row) -> str:
    """One finished row in a line, for a log where no progress bar can be drawn."""
    what = f"{row.model} b{row.batch} {row.precision} on {row.device}"
    if row.error:
        return f"{what}: error: {row.error[:200]}"
    return f"{what}: p50 {row.p50_ms:.3f} ms" if row.p50_ms is not None else what


def print_regressions(con, baseline, res, path: str) -> int:
    """The rows that changed against ``baseline`` beyond noise; 1 when one is a regression."""
    from rich.table import Table

    from hal.comparison import regressions

    changes = regressions(baseline, res)
    bad = [c for c in changes if c.regression]
    if not changes:
        con.print(f"[green]no change beyond noise against {path}[/]")
        return 0
    t = Table(title=f"changes against {path} (beyond each row's noise)")
    for c in ("change", "model", "device", "batch", "prec", "detail"):
        t.add_column(c, overflow="fold")
    for c in sorted(changes, key=lambda c: not c.regression):
        style = "red" if c.regression else "green" if c.kind in ("faster", "fixed") else ""
        t.add_row(f"[{style}]{c.kind}[/]" if style else c.kind, c.model, c.device,
                  str(c.batch), c.precision, c.detail)
    con.print(t)
    con.print(f"{len(bad)} regression(s)" if bad else "[green]no regression[/]")
    return 1 if bad else 0
