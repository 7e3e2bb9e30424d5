"""The ``hal`` command: devices, run, compare."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import numpy as np

from hal.errors import HalError, OptionError


def example_inputs(model, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Deterministic inputs for ``model``: dynamic dims take ``batch``."""
    from hal import models

    if model.name in models.list() and len(model.inputs) == 1:
        return [models.example_input(model.name, batch, seed)]
    rng = np.random.default_rng(seed)
    out = []
    for spec in model.inputs:
        shape = tuple(d if isinstance(d, int) else batch for d in spec.shape)
        if np.issubdtype(spec.dtype, np.floating):
            out.append(rng.standard_normal(shape).astype(spec.dtype))
        elif spec.dtype == np.bool_:
            out.append(rng.integers(0, 2, shape).astype(bool))
        else:
            out.append(rng.integers(0, 10, shape).astype(spec.dtype))
    return out


def _console():
    from rich.console import Console

    return Console()


def cmd_devices(args) -> int:
    import hal

    devs = hal.devices()
    if args.json:
        print(json.dumps([d.to_dict() for d in devs], indent=2))
        return 0
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="HAL devices")
    for c in ("device", "usable", "simulated", "name / reason"):
        t.add_column(c)
    for d in devs:
        broken = d.details.get("broken")
        t.add_row(d.string, "[green]yes[/]" if d.usable else ("[red]broken[/]" if broken else "no"),
                  "[yellow]simulated[/]" if d.simulated else "",
                  escape((d.name + (f" (another name for {d.alias_of})" if d.alias_of else ""))
                         if d.usable else d.reason))
    _console().print(t)
    return 0


def cmd_run(args) -> int:
    import hal
    from hal.compare.harness import measure
    from hal.frontends import to_model
    from hal.ir.describe import node_rows

    model = to_model(args.model)
    options = {"opt_level": args.opt_level,
               "fallback": None if args.fallback == "none" else args.fallback}
    if args.precision is not None:
        options["precision"] = args.precision
    target, calibration, source = int8_calibration(args, model)
    if calibration is not None:
        options["calibration"] = calibration
    for key, value in backend_options(args.option):
        if key in options:
            raise OptionError(f"--option {key}= repeats a setting of its own flag; use the "
                              "flag (hal run --help)")
        options[key] = value
    compiled = hal.compile(target, args.device, **options)
    x = example_inputs(model, args.batch)
    timing, outs = measure(compiled, x, budget_s=args.budget, warmup=2, max_runs=args.repeat)
    result = {
        "model": model.name, "device": compiled.device.string,
        "simulated": compiled.device.simulated, "batch": args.batch,
        "inputs": [{"name": s.name, "shape": list(a.shape), "dtype": str(a.dtype)}
                   for s, a in zip(model.inputs, x)],
        "outputs": [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype)}
                    for n, o in zip(compiled.outputs, outs)],
        "first_call_ms": round(timing.first_call_ms, 4), "p50_ms": round(timing.pct(50), 4),
        "runs": len(timing.times_ms), "placement": compiled.placement,
        "report": compiled.report(),
    }
    if compiled.options.precision == "int8":
        result["calibration"] = source
    if args.json:
        if args.explain:
            result["graph"] = node_rows(compiled.model)
        print(json.dumps(result, indent=2, default=str))
        return 0
    _print_run(result, compiled, args.explain)
    return 0


def int8_calibration(args, model) -> tuple:
    """(what to compile, calibration arrays or None, where they come from) for ``hal run``:
    ``--calibration FILE`` (.npy: the single input; .npz: arrays by input name), else a zoo
    model is compiled by its name, so int8 calibrates on ``hal.models.calibration_data``."""
    from hal import models
    from hal.compiler import _zoo_name

    if args.calibration:
        data = load_calibration(args.calibration, model)
        n = len(data) if isinstance(data, np.ndarray) else \
            len(next(iter(data.values()), []))
        return model, data, f"{args.calibration} ({n} samples)"
    if _zoo_name(args.model):
        return args.model, None, models.calibration_source(args.model)
    return model, None, ""


def load_calibration(path: str, model):
    """Arrays from a .npy (one batch of the single input) or .npz (input name -> array; a
    single-input model takes a file holding one array under any name)."""
    import os

    from hal.errors import InputError

    if not os.path.isfile(path):
        raise InputError(f"calibration file {path!r} does not exist")
    if not path.endswith((".npy", ".npz")):
        raise InputError(f"calibration file {path!r} must be a .npy (the single input) or .npz "
                         f"(arrays named by input: {', '.join(str(s) for s in model.inputs)})")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read calibration file {path!r}: {exc}") from None
    if isinstance(data, np.ndarray):
        return data
    with data:
        arrays = {k: data[k] for k in data.files}
    names = [s.name for s in model.inputs]
    if len(names) == 1 and len(arrays) == 1 and names[0] not in arrays:
        return next(iter(arrays.values()))
    return arrays


def _print_run(result: dict, compiled, explain: bool) -> None:
    from rich.table import Table

    from hal.ir.describe import node_rows

    con = _console()
    sim = " [yellow](simulated)[/]" if result["simulated"] else ""
    con.print(f"[bold]{result['model']}[/] on [bold]{result['device']}[/]{sim}, "
              f"batch {result['batch']}")
    for o in result["outputs"]:
        con.print(f"  output {o['name']}: {o['dtype']}{o['shape']}")
    rep = result["report"]
    con.print(f"  compile {rep['compile_s'] * 1e3:.1f} ms, first call {result['first_call_ms']:.3f}"
              f" ms, median {result['p50_ms']:.3f} ms over {result['runs']} runs")
    if explain and result.get("calibration"):
        con.print(f"  int8 calibration data: {result['calibration']}")
    if explain:
        g = Table(title=f"validated graph after flow {rep['flow']}")
        for c in ("node", "op", "inputs", "outputs", "device"):
            g.add_column(c)
        for r in node_rows(compiled.model):
            g.add_row(r["node"], r["op"], "\n".join(r["inputs"]), "\n".join(r["outputs"]),
                      compiled.placement.get(r["node"], ""))
        con.print(g)
        p = Table(title=f"passes ({rep['flow']})")
        for c in ("pass", "changed", "ms", "nodes", "detail"):
            p.add_column(c)
        for r in rep["passes"]:
            p.add_row(r["pass"], "yes" if r["modified"] else "no", f"{r['ms']:.2f}",
                      f"{r['nodes_before']}→{r['nodes_after']}", r.get("detail", ""))
        con.print(p)
    s = Table(title="placement")
    for c in ("segment", "device", "nodes", "ops", "inputs", "outputs"):
        s.add_column(c)
    for seg in rep["segments"]:
        dev = seg["device"] + (" (simulated)" if seg["simulated"] else "")
        s.add_row(str(seg["index"]), dev, str(seg["nodes"]),
                  ", ".join(f"{k}×{v}" for k, v in seg["ops"].items()),
                  ", ".join(seg["inputs"]), ", ".join(seg["outputs"]))
    con.print(s)
    for seg in rep["segments"]:
        for k, v in (seg.get("info") or {}).items():
            con.print(f"  segment {seg['index']} {k}: {v}")
    grouped: dict[tuple, list] = {}
    for f in rep["fallbacks"]:
        grouped.setdefault((f["op"], f["device"], f["reason"]), []).append(f["node"])
    for (op, dev, reason), nodes in grouped.items():
        con.print(f"  [yellow]fallback[/] {op}×{len(nodes)} → {dev}: {reason}")
    t = rep["transfers"]["last_call"]
    con.print(f"  transfers per call: {t['count']} copies, {t['bytes']:,} bytes "
              f"(host→device {t['h2d_count']} / {t['h2d_bytes']:,} B, "
              f"device→host {t['d2h_count']} / {t['d2h_bytes']:,} B)")


def backend_options(pairs: list[str] | None) -> list[tuple[str, object]]:
    """``--option KEY=VALUE`` pairs: VALUE read as JSON when it parses (8, true, 1.5, "x"),
    else kept as text; ``hal.compile`` says which keys the device's backend takes."""
    out = []
    for pair in pairs or []:
        key, eq, text = pair.partition("=")
        if not eq or not key.strip().isidentifier():
            raise OptionError(f"--option takes KEY=VALUE (e.g. --option reuse_factor=4), "
                              f"got {pair!r}")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        out.append((key.strip(), value))
    return out


def cmd_compare(args) -> int:
    """A thin layer over hal.compare(): progress bars, the table, files, the baseline check."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    from rich.markup import escape

    from hal.compare import Results, compare

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

        res = compare(args.models, args.devices, args.batch, args.precision,
                      budget_s=args.budget, isolate=args.isolate, progress=progress,
                      scenario=args.scenario, latency_bound_ms=args.latency_bound_ms,
                      rounds=args.rounds)
    con.print(res.table())
    run = res.environment["run"]
    failed = sum(1 for r in res.rows if r.error)
    con.print(f"{len(res.rows)} rows ({failed} failed) in {run['wall_s']:.1f} s; peak memory "
              f"is host RSS above the pre-compile level "
              f"({'one process per device' if args.isolate else 'in this process'})")
    for r in res.rows:
        for seg, text in (r.accelerator or {}).items():
            con.print(f"{escape(r.device)} {escape(r.model)} b{r.batch} segment {seg}: "
                      f"{escape(text)}")
    for dev, why in run.get("left_out", {}).items():
        con.print(f"not compared by default: {escape(dev)}: {escape(why)}; name it in --devices "
                  "to include it")
    for flag, write in (("json", res.to_json), ("csv", res.to_csv), ("html", res.to_html)):
        path = getattr(args, flag)
        if path:
            write(path)
            con.print(f"wrote {path}")
    if baseline is not None:
        return _print_regressions(con, baseline, res, args.baseline)
    return 0


def _print_regressions(con, baseline, res, path: str) -> int:
    from rich.table import Table

    from hal.compare import regressions

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


def cmd_fpga_build(args) -> int:
    """``hal fpga build``: the per-model hls4ml design for a board (see fpga@hls4ml)."""
    from hal.backends.hls4ml_backend.board import fpga_build

    options = {k: v for k, v in (("io_type", args.io_type), ("strategy", args.strategy),
                                 ("reuse_factor", args.reuse_factor)) if v is not None}
    return fpga_build(args.model, args.board, options, args.calibration)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hal", description="Run and compare neural networks on any "
                                "device HAL can reach.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("devices", help="list every device, usable or not, and why")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_devices)

    r = sub.add_parser("run", help="compile and run a model on a device")
    r.add_argument("model", help="a zoo model name or an .onnx path")
    r.add_argument("--device", default="cpu")
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--precision", default=None,
                   help="fp32, fp16, bf16 or int8 (default: the device's own, fp32 for most)")
    r.add_argument("--calibration", metavar="FILE.npy|.npz",
                   help="int8 calibration inputs: .npy for the single input, .npz by input "
                   "name (zoo models default to hal.models.calibration_data)")
    r.add_argument("--opt-level", type=int, default=1)
    r.add_argument("--fallback", default="cpu", help="fallback device, or 'none' for strict")
    r.add_argument("--repeat", type=int, default=20, help="timed calls (at most)")
    r.add_argument("--budget", type=float, default=0.5, help="seconds of timed calls (at most)")
    r.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a compile option of the device's backend, e.g. --option "
                   "reuse_factor=4 on fpga@hls4ml or --option xla=false on tpu/cpu@tf "
                   "(repeatable; an unknown key is an error naming the ones it takes)")
    r.add_argument("--explain", action="store_true", help="show graph, passes and placement")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)

    from hal.compare.harness import DEFAULT_BUDGET_S as DEFAULT_COMPARE_BUDGET_S

    c = sub.add_parser("compare", help="every model on every usable device, side by side",
                       description="Measure models on devices the same way (warm-up, timed "
                       "calls until a budget, percentiles) and check each against "
                       "cpu@reference. With no arguments: the whole zoo on every usable "
                       "device at batch 1 and 64.")
    c.add_argument("--models", help="comma-separated zoo names or .onnx paths (default: the zoo)")
    c.add_argument("--devices", help="comma-separated devices (default: every usable one, "
                   "simulated ones included and labelled)")
    c.add_argument("--batch", default="1,64", help="comma-separated batch sizes (default 1,64)")
    c.add_argument("--precision", default=None,
                   help="comma-separated: fp32,fp16,bf16,int8 (default: each device's own, "
                        "fp32 except on int8-only accelerators)")
    c.add_argument("--budget", type=float, default=DEFAULT_COMPARE_BUDGET_S,
                   help="seconds of timed calls per row after warm-up (at least 5 calls; "
                   f"default {DEFAULT_COMPARE_BUDGET_S})")
    c.add_argument("--rounds", type=int, default=1,
                   help="measure the whole table N times, devices in a rotated order each "
                   "round; each row reports the median of the rounds and ± half the range of "
                   "their p50s (use 3 or more for figures to compare with another run)")
    c.add_argument("--json", metavar="FILE", help="write the rows and environment as JSON")
    c.add_argument("--csv", metavar="FILE", help="write the rows as CSV")
    c.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with plots")
    c.add_argument("--isolate", action="store_true",
                   help="measure each device in its own process")
    c.add_argument("--baseline", metavar="OLD.json", help="flag rows slower or less accurate "
                   "than this earlier --json run beyond noise (exit status 1 if any)")
    c.add_argument("--scenario", choices=("single-stream", "offline", "server"),
                   help="measure through MLPerf LoadGen with this scenario's method and names")
    c.add_argument("--latency-bound-ms", type=float, default=None,
                   help="MLPerf Server latency bound (default: 10x one batch's latency)")
    c.set_defaults(func=cmd_compare)

    f = sub.add_parser("fpga", help="FPGA designs: build a model's hls4ml design for a board")
    fsub = f.add_subparsers(dest="fpga_command", required=True)
    fb = fsub.add_parser("build", help="write a model's hls4ml project (PYNQ driver, Vivado "
                         "block design) and build its bitstream when Vivado is on PATH")
    fb.add_argument("model", help="a zoo model name or an .onnx path")
    fb.add_argument("--board", default="pynq-z2", choices=("pynq-z2", "zcu102"))
    fb.add_argument("--io-type", choices=("io_parallel", "io_stream"))
    fb.add_argument("--strategy", choices=("Latency", "Resource"))
    fb.add_argument("--reuse-factor", type=int)
    fb.add_argument("--calibration", metavar="X.npy", help="calibration inputs for int8 "
                    "(zoo models bring their own)")
    fb.set_defaults(func=cmd_fpga_build)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HalError as exc:
        print(f"hal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
