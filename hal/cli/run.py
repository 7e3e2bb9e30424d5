"""``hal run``: compile a model for a device, run it on example inputs, time it, explain it."""

from __future__ import annotations

import json

from hal.errors import OptionError


def add_parser(sub) -> None:
    r = sub.add_parser("run", help="compile and run a model on a device")
    r.add_argument("model", help="a zoo model name or an .onnx path")
    r.add_argument("--device", default="cpu",
                   help="a device string; a bare kind (cpu) is served by the fastest backend "
                   "of that kind, measured at --batch and stored (--select priority: the "
                   "fixed order)")
    r.add_argument("--select", choices=("measured", "priority"), default=None,
                   help="how a bare kind picks its backend (default: HAL_SELECT, else "
                   "measured)")
    r.add_argument("--batch", type=int, default=1)
    r.add_argument("--precision", default=None,
                   help="fp32, fp16, bf16 or int8 (default: the device's own, fp32 for most)")
    r.add_argument("--calibration", metavar="FILE.npy|.npz|dynamic",
                   help="int8 calibration inputs: .npy for the single input, .npz by input "
                   "name (zoo models default to hal.models.calibration_data); 'dynamic': "
                   "int8 weights, activations quantized at run time, no data")
    r.add_argument("--opt-level", type=int, default=1)
    r.add_argument("--fallback", default="cpu", help="fallback device, or 'none' for strict")
    r.add_argument("--repeat", type=int, default=20, help="timed calls (at most)")
    r.add_argument("--budget", type=float, default=0.5, help="seconds of timed calls (at most)")
    r.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a compile option of the device's backend, e.g. --option "
                   "reuse_factor=4 on fpga@hls4ml or --option xla=false on tpu/cpu@tf "
                   "(repeatable; an unknown key is an error naming the ones it takes)")
    r.add_argument("--explain", action="store_true",
                   help="show how the device was chosen, graph, passes and placement")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    import hal
    from hal.comparison import measure
    from hal.frontends import to_model
    from hal.inputs import example_inputs, load_calibration, samples
    from hal.ir.describe import node_rows

    model = to_model(args.model)  # a zoo model brings its own int8 calibration inputs
    options = {"opt_level": args.opt_level,
               "fallback": None if args.fallback == "none" else args.fallback}
    if args.precision is not None:
        options["precision"] = args.precision
    source = None
    if args.calibration == "dynamic":
        options["calibration"] = "dynamic"
    elif args.calibration:
        options["calibration"] = load_calibration(args.calibration, model)
        source = f"{args.calibration} ({samples(options['calibration'])} samples)"
    for key, value in backend_options(args.option):
        if key in options:
            raise OptionError(f"--option {key}= repeats a setting of its own flag; use the "
                              "flag (hal run --help)")
        options[key] = value
    if args.select is not None:
        options["select"] = args.select
    compiled = hal.compile(model, args.device, batch=args.batch, **options)
    x = example_inputs(model, args.batch)
    timing, outs = measure(compiled, x, budget_s=args.budget, warmup=2, max_runs=args.repeat)
    report = compiled.report()
    result = {
        "model": model.name, "device": compiled.device.string,
        "simulated": compiled.device.simulated, "batch": args.batch,
        "inputs": [{"name": s.name, "shape": list(a.shape), "dtype": str(a.dtype)}
                   for s, a in zip(model.inputs, x)],
        "outputs": [{"name": n, "shape": list(o.shape), "dtype": str(o.dtype)}
                    for n, o in zip(compiled.outputs, outs)],
        "first_call_ms": round(timing.first_call_ms, 4), "p50_ms": round(timing.pct(50), 4),
        "runs": len(timing.times_ms), "placement": compiled.placement,
        "report": report,
    }
    if compiled.options.precision == "int8":
        result["calibration"] = source or report.get("calibration", "")
    if args.json:
        if args.explain:
            result["graph"] = node_rows(compiled.model)
        print(json.dumps(result, indent=2, default=str))
        return 0
    print_run(result, compiled, args.explain)
    return 0


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


def print_run(result: dict, compiled, explain: bool) -> None:
    """``hal run``'s result as text: outputs, times, and with ``explain`` the graph after the
    flow, the passes and each segment's own figures."""
    from rich.table import Table

    from hal.cli import console
    from hal.ir.describe import node_rows

    con = console()
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
    if explain and rep.get("selection"):
        from hal.cli.tune import print_selection

        print_selection(con, result["model"], rep["selection"])
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
