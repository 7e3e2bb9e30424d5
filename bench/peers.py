"""HAL against its peers on the zoo, measured by one harness (``hal.compare``) in one run.

    python bench/peers.py [--models lenet,mlp] [--batch 1,64] [--budget 0.3] [--json FILE]

HAL's side is ``hal.compare`` over every usable device; its best device per (model, batch)
is put next to each peer: ONNX Runtime (an InferenceSession on the model saved as .onnx),
eager PyTorch and ``torch.compile`` (``bench/handwritten/torch_models.py``), ``jax.jit``
(``jax_models.py``) and TensorFlow ``tf.function`` (``tf_models.py``). Every peer returns
numpy arrays, as HAL's compiled models do, and is timed by the same ``measure`` loop
(warm-up, calls until the budget, percentiles) and checked against cpu@reference.

"HAL speed-up" is peer p50 / HAL-best p50: above 1, HAL's best device is faster.
A peer whose framework or hand-written model is missing is skipped with the reason.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import hal  # noqa: E402
from hal.comparison import Results, Row, compare, measure  # noqa: E402
from hal.comparison.harness import record_accuracy  # noqa: E402
from hal.comparison.timing import PeakMemory  # noqa: E402


class Skip(Exception):
    """This peer cannot run this model here; the message says why."""


def _handwritten(framework: str):
    try:
        return importlib.import_module(f"bench.handwritten.{framework}_models")
    except ModuleNotFoundError as exc:
        if exc.name in (f"bench.handwritten.{framework}_models",):
            raise Skip(f"bench/handwritten/{framework}_models.py is not there yet") from exc
        raise Skip(f"{exc.name} is not installed") from exc


def _build(framework: str, name: str):
    mod = _handwritten(framework)
    if name not in getattr(mod, "MODELS", ()):
        raise Skip(f"no hand-written {framework} {name!r} (has {sorted(mod.MODELS)})")
    return mod.build(name, hal.models.build(name))


def ort_peer(name: str, model: hal.Model) -> Callable:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise Skip("onnxruntime is not installed: pip install onnxruntime") from exc
    path = Path(tempfile.mkdtemp(prefix="hal-peer-")) / f"{name}.onnx"
    hal.save(model, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return lambda *xs: sess.run(None, dict(zip(names, xs)))


def torch_peer(name: str, model: hal.Model, compiled: bool = False) -> Callable:
    try:
        import torch
    except ImportError as exc:
        raise Skip("torch is not installed: pip install torch") from exc
    net = _build("torch", name)
    if compiled:
        # a fresh compile cache per model, as in a program of its own: the hand-written models
        # share module code (nn.Sequential.forward), and one process compiling them all
        # runs into dynamo's recompile limits
        torch._dynamo.reset()
        net = torch.compile(net)

    def run(*xs):
        with torch.inference_mode():
            out = net(*(torch.from_numpy(x) for x in xs))
        return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else [out])]

    return run


def jax_peer(name: str, model: hal.Model) -> Callable:
    fn = _build("jax", name)  # already jax.jit-ed
    return lambda *xs: [np.asarray(o) for o in _as_list(fn(*xs))]


def tf_peer(name: str, model: hal.Model) -> Callable:
    fn = _build("tf", name)  # a tf.function
    return lambda *xs: [np.asarray(o) for o in _as_list(fn(*xs))]


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


PEERS: dict[str, Callable] = {
    "onnxruntime": ort_peer,
    "torch eager": torch_peer,
    "torch.compile": lambda n, m: torch_peer(n, m, compiled=True),
    "jax.jit": jax_peer,
    "tf.function": tf_peer,
}


def measure_peer(peer: str, name: str, model: hal.Model, batches: list[int],
                 budget_s: float) -> list[Row]:
    """Rows for one peer on one model, in the same shape as hal.compare's."""
    from hal.inputs import example_inputs

    ref = hal.compile(model, "cpu@reference")
    rows = []
    t0 = time.perf_counter()
    try:
        fn = PEERS[peer](name, model)
    except Skip as exc:
        return [Row(model=name, device=peer, backend=peer, batch=b, error=f"skipped: {exc}")
                for b in batches]
    compile_s = time.perf_counter() - t0
    for b in batches:
        row = Row(model=name, device=peer, backend=peer, batch=b, compile_s=compile_s,
                  mem_scope="in-process")
        x = example_inputs(model, b)
        try:
            # torch.compile and jax.jit compile again for each new input shape (torch.compile
            # twice: static, then dynamic); settle that before timing, as HAL's compile is
            # kept out of its p50 too
            t1 = time.perf_counter()
            for _ in range(3):
                fn(*x)
            row.compile_s = compile_s + time.perf_counter() - t1
            with PeakMemory() as mem:
                timing, outs = measure(lambda *a: fn(*a), x, budget_s)
            row.first_call_ms = timing.first_call_ms
            for k, v in timing.stats().items():
                setattr(row, k, v)
            row.throughput_per_s = b / (row.mean_ms / 1e3)
            row.peak_mem_mb = round(mem.peak_mb, 2)
            record_accuracy(row, outs, [np.asarray(y) for y in ref(*x)])
        except Skip as exc:
            row.error = f"skipped: {exc}"
        except Exception as exc:  # a peer failing is a result, not a crash
            row.error = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,mlp,mobilenet_lite,resnet_lite,tiny_transformer")
    p.add_argument("--devices", default=None, help="HAL devices (default: every usable one)")
    p.add_argument("--batch", default="1,64")
    p.add_argument("--budget", type=float, default=0.3)
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--in-process", action="store_true",
                   help="measure HAL's devices in this process too (default: one worker "
                   "process per device, so their runtimes' threads cannot slow the peers)")
    args = p.parse_args(argv)
    models = args.models.split(",")
    batches = [int(b) for b in args.batch.split(",")]

    from rich.console import Console
    from rich.table import Table

    con = Console(width=160)
    con.print("[bold]HAL[/] on every usable device ...")
    hal_res = compare(models, args.devices, batches, budget_s=args.budget,
                      isolate=not args.in_process)
    best = hal_res.best()
    peer_rows: list[Row] = []
    for name in models:
        model = hal.models.get(name) if name in hal.models.list() else hal.load(name)
        for peer in args.peers.split(","):
            con.print(f"{name}: {peer} ...")
            peer_rows += measure_peer(peer, name, model, batches, args.budget)

    t = Table(title="HAL's best device against each peer (p50 ms per call; speed-up = peer / "
                    "HAL, above 1 HAL is faster)")
    for c in ("model", "batch", "peer", "peer p50", "peer max err", "HAL best", "HAL p50",
              "HAL speed-up"):
        t.add_column(c, justify="left" if c in ("model", "peer", "HAL best") else "right")
    for r in peer_rows:
        h = best.get((r.model, r.batch, "fp32"))
        if r.error:
            t.add_row(r.model, str(r.batch), r.device, "[yellow]-[/]", "", "", "",
                      f"[yellow]{r.error[:70]}[/]")
            continue
        hp = h.p50_ms if h else None
        ratio = r.p50_ms / hp if hp else None
        style = "green" if ratio and ratio >= 1 else "red"
        t.add_row(r.model, str(r.batch), r.device, f"{r.p50_ms:.3f}", f"{r.max_abs_err:.1e}",
                  h.device if h else "-", f"{hp:.3f}" if hp else "-",
                  f"[{style}]{ratio:.2f}x[/]" if ratio else "-")
    con.print(t)
    if args.json:
        out = Results(hal_res.rows + peer_rows, hal_res.environment)
        Path(args.json).write_text(json.dumps(out.to_dict(), indent=2, default=str))
        con.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
