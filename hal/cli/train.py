"""``hal train``: train a model on a device (digits or arrays from a file), save the result."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from hal.errors import InputError, OptionError

#: training images written by --save-calibration (int8 calibration for the trained model)
CALIBRATION_SAMPLES = 256


def add_parser(sub) -> None:
    t = sub.add_parser("train", help="train a model on a device that trains (torch, jax, tf)")
    t.add_argument("model", help="a zoo model name or an .onnx path")
    t.add_argument("--device", default="cpu",
                   help="a device whose backend trains (default: the best such CPU backend)")
    t.add_argument("--data", default="digits", metavar="digits|FILE.npz",
                   help="'digits' (scikit-learn's digits sized to the model's input; its test "
                        "split validates) or an .npz with x and y (and optionally x_val, y_val)")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--batch", type=int, default=64, help="samples per micro-batch")
    t.add_argument("--accumulate", type=int, default=1, help="micro-batches per update")
    t.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16")
    t.add_argument("--optimizer", default="adamw", help="sgd, adam or adamw")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--loss", default="cross_entropy", help="cross_entropy, nll or mse")
    t.add_argument("--quantize", choices=["int8"],
                   help="quantization-aware training: the saved model is int8 (QDQ), "
                        "calibrated on the first training samples")
    t.add_argument("--power-of-two", action="store_true",
                   help="with --quantize: power-of-two scales (shift-only hardware)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint", metavar="DIR", help="write checkpoints to DIR")
    t.add_argument("--resume", action="store_true", help="continue from DIR's last checkpoint")
    t.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="an optimizer option (momentum=0.9, schedule=\"cosine\", "
                        "clip_norm=1.0, ...) or one of the backend's training options")
    t.add_argument("--out", metavar="FILE.onnx", help="save the trained model")
    t.add_argument("--save-calibration", metavar="FILE.npy",
                   help=f"save {CALIBRATION_SAMPLES} training inputs, for `hal run "
                        f"--precision int8 --calibration FILE.npy` of the trained model")
    t.add_argument("--workers", type=int, default=1,
                   help="workers on the backend's own engine (DistributedDataParallel, a jax "
                        "device mesh, MirroredStrategy)")
    t.add_argument("--strategy", default="data", help="data, pipeline or tensor")
    t.add_argument("--stages", type=int, default=2, help="pipeline stages")
    t.add_argument("--explain", action="store_true", help="say what runs where")
    t.add_argument("--cluster", metavar="ray|ray://HOST:PORT",
                   help="train as Ray Train workers on a Ray cluster (torch devices)")
    t.add_argument("--max-failures", type=int, default=0,
                   help="with --cluster: restarts from the last epoch's checkpoint when a "
                        "worker dies")
    t.add_argument("--estimate-scaling", metavar="N,N,...",
                   help="instead of training: time one worker's step at --batch and model the "
                        "step of N data-parallel workers (ring all-reduce; a model, not a "
                        "measurement)")
    t.add_argument("--bandwidth", default="100Gbit",
                   help="link bandwidth for --estimate-scaling (100Gbit, 25Gb/s, 12.5GB/s)")
    t.add_argument("--latency-us", type=float, default=5.0,
                   help="per-message latency for --estimate-scaling, microseconds")
    t.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    import numpy as np

    import hal
    from hal.cli.run import backend_options
    from hal.frontends import to_model
    from hal.training.interrupt import TrainingInterrupted

    model = to_model(args.model)
    (x, y), validation = load_data(args.data, model)
    if args.estimate_scaling:
        return estimate_scaling(args, model, x, y)
    options = dict(backend_options(args.option))
    if args.resume and not args.checkpoint:
        raise OptionError("--resume continues from the last checkpoint in --checkpoint DIR: "
                          "pass --checkpoint DIR (the one an interrupted run named)")
    scratch = None  # without --checkpoint, Ctrl-C still leaves a checkpoint: here
    if not args.checkpoint and not args.cluster:
        scratch = tempfile.mkdtemp(prefix="hal-train-")
    try:
        result = hal.train(model, (x, y), device=args.device, loss=args.loss,
                           optimizer=args.optimizer, lr=args.lr, epochs=args.epochs,
                           batch_size=args.batch, accumulate=args.accumulate,
                           precision=args.precision, seed=args.seed, validation=validation,
                           checkpoint_dir=args.checkpoint or scratch, resume=args.resume,
                           progress=not args.no_progress, workers=args.workers,
                           strategy=args.strategy, stages=args.stages, explain=args.explain,
                           **({"cluster": args.cluster, "max_failures": args.max_failures}
                              if args.cluster else {}),
                           **({"quantize": args.quantize, "power_of_two": args.power_of_two}
                              if args.quantize else {}), **options)
    except TrainingInterrupted as stop:
        if scratch and stop.checkpoint is None:
            shutil.rmtree(scratch, ignore_errors=True)
        return print_interrupted(stop, args.checkpoint)
    except BaseException:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    if scratch:  # the run finished: its checkpoints were only there for a Ctrl-C
        shutil.rmtree(scratch, ignore_errors=True)
        result.best_checkpoint = result.last_checkpoint = None
    if args.out:
        hal.save(result.model, args.out)
    if args.save_calibration:
        np.save(args.save_calibration, x[:CALIBRATION_SAMPLES])
    report = {"model": model.name, "data": args.data, "samples": len(y), **result.to_dict(),
              "out": args.out, "calibration": args.save_calibration}
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_result(report)
    return 0


def print_interrupted(stop, checkpoint_dir: str | None) -> int:
    """What Ctrl-C left and how to go on from it; 130, as a shell reports SIGINT."""
    print(f"hal train: interrupted in epoch {stop.epoch + 1} after {stop.step} updates",
          file=sys.stderr)
    if stop.checkpoint is None:
        print("hal train: stopped within an update: no checkpoint was written"
              + (f"; {checkpoint_dir} keeps the last epoch's, if any" if checkpoint_dir
                 else ""), file=sys.stderr)
    else:
        how = "--resume" if checkpoint_dir else \
            f"--checkpoint {shlex.quote(str(stop.checkpoint.parent))} --resume"
        print(f"hal train: checkpoint {stop.checkpoint}\nhal train: to resume, run the same "
              f"command with {how}", file=sys.stderr)
    return 130


def estimate_scaling(args, model, x, y) -> int:
    from hal.training.scaling import estimate, measure_step, parse_bandwidth, parse_workers

    counts, bps = parse_workers(args.estimate_scaling), parse_bandwidth(args.bandwidth)
    step_s, grad_bytes = measure_step(model, x, y, args.device, args.batch, args.optimizer,
                                      args.lr, args.loss)
    rows = estimate(step_s, args.batch, grad_bytes, counts, bps, args.latency_us * 1e-6)
    report = {"model": model.name, "device": args.device, "batch_per_worker": args.batch,
              "measured_step_ms": step_s * 1e3, "gradient_bytes": grad_bytes,
              "bandwidth_bits_per_s": bps, "latency_us": args.latency_us,
              "note": "a model, not a measurement: one worker's measured step plus a ring "
                      "all-reduce of the fp32 gradients, no overlap",
              "rows": [vars(r) for r in rows]}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.table import Table

    from hal.cli import console

    con = console()
    con.print(f"[bold]{model.name}[/] on {args.device}: one worker's step at batch "
              f"{args.batch} measured {step_s * 1e3:.2f} ms; gradients {grad_bytes:,} bytes; "
              f"{args.bandwidth}, {args.latency_us:g} us per message")
    t = Table(title="ESTIMATED scaling (a model, not a measurement)")
    for c in ("workers", "step ms", "all-reduce ms", "samples/s", "efficiency"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(str(r.workers), f"{r.step_s * 1e3:.2f}", f"{r.allreduce_s * 1e3:.3f}",
                  f"{r.samples_per_s:,.0f}", f"{r.efficiency:.1%}")
    con.print(t)
    return 0


def load_data(spec: str, model) -> tuple[tuple, tuple | None]:
    """((x, y) to train on, validation or None) for ``--data``."""
    if spec == "digits":
        return digits_for(model)
    path = Path(spec)
    if path.suffix != ".npz" or not path.is_file():
        raise OptionError(f"--data takes 'digits' or an existing .npz file, got {spec!r}")
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {spec!r} as .npz arrays: {exc}") from None
    if "x" not in arrays or "y" not in arrays:
        raise InputError(f"{spec!r} holds {sorted(arrays)}; it needs arrays 'x' and 'y' "
                         f"(and optionally 'x_val', 'y_val')")
    val = (arrays["x_val"], arrays["y_val"]) if "x_val" in arrays and "y_val" in arrays else None
    return (arrays["x"], arrays["y"]), val


def digits_for(model) -> tuple[tuple, tuple]:
    """The digits train and test splits sized to ``model``'s single image input."""
    from hal.data import digits

    specs = model.inputs
    shape = specs[0].shape if len(specs) == 1 else ()
    ok = len(shape) == 4 and shape[1] in (1, 3) and isinstance(shape[2], int) \
        and shape[2] == shape[3]
    if not ok:
        got = ", ".join(str(s) for s in specs)
        raise OptionError(f"--data digits fits models with one image input [N, 1 or 3, S, S]; "
                          f"{model.name!r} takes {got}: pass --data FILE.npz")
    size, channels = shape[2], shape[1]
    return digits("train", size, channels), digits("test", size, channels)


def print_result(report: dict) -> None:
    from rich.table import Table

    from hal.cli import console

    con = console()
    con.print(f"[bold]{report['model']}[/] trained on [bold]{report['device']}[/] with "
              f"{report['data']} ({report['samples']} samples): {report['steps']} updates")
    history = report["history"]
    t = Table()
    columns = [k for k in history[0] if k not in ("step", "lr")] if history else []
    for c in columns:
        t.add_column(c.replace("_", " "), justify="right")
    for r in history:
        t.add_row(*(_fmt(r[c]) for c in columns))
    con.print(t)
    if report["stopped_early"]:
        con.print("  stopped early")
    for key, what in (("out", "trained model"), ("best_checkpoint", "best checkpoint"),
                      ("last_checkpoint", "last checkpoint"), ("calibration", "calibration")):
        if report.get(key):
            con.print(f"  {what}: {report[key]}")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4f}"
    return str(v)
