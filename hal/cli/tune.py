"""``hal tune``: measure which backend serves a bare kind fastest for each model and batch,
and store the choice, so that ``hal.compile(model, "cpu")`` later measures nothing."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    t = sub.add_parser("tune", help="measure and store the fastest backend of a kind for "
                                    "models (what a bare 'cpu' compiles to)")
    t.add_argument("models", nargs="+", metavar="MODEL", help="zoo model names or .onnx paths")
    t.add_argument("--device", default="cpu", help="a bare kind: cpu, cuda, gpu (default cpu)")
    t.add_argument("--batch", type=int, nargs="+", default=[1],
                   help="batch sizes to choose for (each is its own decision; default 1)")
    t.add_argument("--budget", type=float, default=None,
                   help="seconds of timed calls per candidate (default 0.3, or "
                        "HAL_SELECT_BUDGET)")
    t.add_argument("--force", action="store_true",
                   help="measure again even where a choice is stored")
    t.add_argument("--json", action="store_true", help="print the decisions as JSON")
    t.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    from hal.frontends import to_model
    from hal.selection import tune

    from hal.cli import console

    out = []
    con = console()
    for name in args.models:
        model = to_model(name)  # a typo is a ModelError naming the zoo
        for b in args.batch:
            compiled = tune(model, args.device, batch=b, select_budget_s=args.budget,
                            force=args.force)
            sel = compiled.selection
            out.append({"model": model.name, **sel})
            if not args.json:
                print_selection(con, model.name, sel)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    return 0


def print_selection(con, model: str, sel: dict) -> None:
    """How a bare kind chose its device: the candidates, their times, why one won."""
    from rich.table import Table

    if sel["mode"] != "measured":
        con.print(f"  {sel['kind']} -> [bold]{sel['winner']}[/]: {sel['why']}")
        return
    how = (f"stored choice (measured {sel.get('measured_at')}), nothing measured now"
           if sel["cached"] else f"measured now in {sel['measure_s']:.2f} s")
    options = "".join(f" {k}={v}" for k, v in sel.get("winner_options", {}).items())
    t = Table(title=f"{model}: {sel['kind']} at inputs "
                    f"{', '.join(str(shape) for shape, _ in sel['inputs'] or [])} -> "
                    f"{sel['winner']}{options} ({how})")
    for c in ("backend", "status", "p50 ms (runs)", "compile s", "max err", "why not"):
        t.add_column(c, justify="left" if c in ("backend", "status", "why not") else "right",
                     overflow="fold")
    for c in sel["candidates"]:
        won = c.get("device") == sel["winner"] and \
            c.get("options", {}) == sel.get("winner_options", {})
        t.add_row(("[bold green]" if won else "") + c["backend"],
                  "winner" if won else c["status"],
                  f"{c['p50_ms']:.4f} ({c['runs']})" if "p50_ms" in c else "",
                  f"{c['compile_s']:.2f}" if "compile_s" in c else "",
                  f"{c['max_err']:.1e}" if "max_err" in c else "", c.get("reason", ""))
    con.print(t)
    con.print(f"  why: {sel['why']}; outputs checked {sel.get('checked')}")
