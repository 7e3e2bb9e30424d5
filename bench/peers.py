"""HAL's bare ``cpu`` against its peers, interleaved in one process, on the zoo and ResNet-50.

    python bench/peers.py [--models lenet,mobilenet_lite,resnet_lite,tiny_transformer,resnet50]
                          [--batch 1,64] [--budget 1.0] [--rounds 5] [--peers ...] [--json FILE]

HAL's side is ``hal.compile(model, "cpu", batch=b)``: measured selection (``hal.selection``)
picks the backend, from its cache when the choice is stored (``hal tune`` fills it). The
peers, each the framework's own API on the same model: ONNX Runtime (an InferenceSession on
the model saved as .onnx), OpenVINO (``Core.compile_model`` on CPU, reshaped to the batch,
``INFERENCE_PRECISION_HINT`` f32), IREE (IREE's ONNX importer, ``iree-compile`` for llvm-cpu
and the host CPU, the local-task runtime, shapes static), tinygrad (its ONNX runner, where it
imports), eager PyTorch and ``torch.compile`` (``bench/handwritten/torch_models.py``),
``jax.jit`` (``jax_models.py``) and TensorFlow ``tf.function`` (``tf_models.py``).

Method, per (model, batch): every contender is built, its first outputs checked against
cpu@reference (fp32-accurate: within ``hal.selection.measure.TOLERANCE`` of the reference's
scale), warmed up, then timed in ``--rounds`` rounds of ``--budget / rounds`` seconds each,
the contenders in a rotated order in each round (``hal compare``'s loop and rotation). A
contender's p50 is the median of its per-round p50s and its spread half their range. HAL
holds a row when its p50 is at most the fastest fp32-accurate peer's, within the two spreads.
ResNet-50 (``bench/resnet50.py``) has a fixed batch of 1. A peer that cannot run here is
listed with why.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import hal  # noqa: E402
from hal.comparison.rounds import device_order, spread  # noqa: E402
from hal.comparison.timing import timed_calls  # noqa: E402
from hal.inputs import example_inputs  # noqa: E402
from hal.selection.measure import disagreement  # noqa: E402

HAL = "HAL cpu"


class Skip(Exception):
    """This peer cannot run this model here; the message says why."""


# -- peers: each returns fn(*arrays) -> list of numpy arrays --------------------------------
def _handwritten(framework: str, name: str):
    try:
        mod = importlib.import_module(f"bench.handwritten.{framework}_models")
    except ModuleNotFoundError as exc:
        raise Skip(f"{exc.name} is not installed") from exc
    if name not in getattr(mod, "MODELS", ()):
        raise Skip(f"no hand-written {framework} {name!r}")
    return mod.build(name, hal.models.build(name))


def _as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def ort_peer(name, path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return lambda *xs: sess.run(None, dict(zip(names, xs)))


def openvino_peer(name, path, x):
    try:
        from hal.backends.common.frameworks import import_openvino
        ov = import_openvino()
    except ImportError as exc:
        raise Skip("openvino is not installed: pip install openvino") from exc
    core = ov.Core()
    m = core.read_model(str(path))
    m.reshape({i: ov.PartialShape(list(a.shape)) for i, a in enumerate(x)})
    compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    return lambda *xs: list(req.infer(list(xs), share_inputs=True).to_tuple())


def iree_peer(name, path, x):
    try:
        import iree.runtime as rt
        from iree.compiler import compile_str, ir
        from iree.compiler.extras import onnx_importer
    except ImportError as exc:
        raise Skip("iree is not installed: pip install iree-base-compiler "
                   "iree-base-runtime") from exc
    import onnx

    proto = onnx.load(str(path))
    proto.graph.name = "main"
    for value, a in zip(proto.graph.input, x):  # static shapes, as IREE compiles best
        for d, n in zip(value.type.tensor_type.shape.dim, a.shape):
            d.Clear()
            d.dim_value = n
    proto = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    context = ir.Context()
    info = onnx_importer.ModelInfo(proto)
    module = info.create_module(context=context).operation
    onnx_importer.NodeImporter.define_function(info.main_graph, module).import_all()
    vmfb = compile_str(module.get_asm(), target_backends=["llvm-cpu"],
                       extra_args=["--iree-llvmcpu-target-cpu=host"])
    loaded = rt.load_vm_flatbuffer(vmfb, driver="local-task")
    fn = loaded.main
    return lambda *xs: [np.array(o.to_host()) for o in _as_list(fn(*xs))]


def tinygrad_peer(name, path, x):
    try:
        from tinygrad import Tensor
        from tinygrad.frontend.onnx import OnnxRunner
    except ImportError as exc:
        raise Skip(f"tinygrad does not import here ({exc})") from exc
    import onnx

    runner = OnnxRunner(onnx.load(str(path)))
    names = [i.name for i in onnx.load(str(path)).graph.input]
    return lambda *xs: [v.numpy() for v in runner(
        {n: Tensor(a) for n, a in zip(names, xs)}).values()]


def torch_peer(name, path, x, compiled=False):
    try:
        import torch
    except ImportError as exc:
        raise Skip("torch is not installed") from exc
    net = _handwritten("torch", name)
    if compiled:
        torch._dynamo.reset()  # a fresh compile cache per row, as in a program of its own
        net = torch.compile(net)

    def run(*xs):
        with torch.inference_mode():
            out = net(*(torch.from_numpy(a) for a in xs))
        return [o.numpy() for o in _as_list(out)]

    return run


def jax_peer(name, path, x):
    fn = _handwritten("jax", name)  # already jax.jit-ed
    return lambda *xs: [np.asarray(o) for o in _as_list(fn(*xs))]


def tf_peer(name, path, x):
    fn = _handwritten("tf", name)  # a tf.function
    return lambda *xs: [np.asarray(o) for o in _as_list(fn(*xs))]


PEERS: dict[str, Callable] = {
    "onnxruntime": ort_peer, "openvino": openvino_peer, "iree": iree_peer,
    "tinygrad": tinygrad_peer, "torch eager": torch_peer,
    "torch.compile": lambda n, p, x: torch_peer(n, p, x, compiled=True),
    "jax.jit": jax_peer, "tf.function": tf_peer,
}


# -- one row: every contender on one (model, batch), interleaved ------------------------------
def _load(name: str):
    if name == "resnet50":
        import resnet50

        return resnet50.model()
    return hal.models.get(name)


def measure_row(name: str, model, path: Path, batch: int, peers: list[str], budget_s: float,
                rounds: int, log) -> dict:
    x = example_inputs(model, batch)
    ref = [np.asarray(y) for y in hal.compile(model, "cpu@reference")(*x)]
    fns: dict[str, Callable] = {}
    out: dict[str, dict] = {}
    t0 = time.perf_counter()
    compiled = hal.compile(model, "cpu", batch=batch)
    sel = compiled.selection
    out[HAL] = {"device": compiled.device.string, "compile_s": round(time.perf_counter() - t0, 2),
                "selection": {"cached": sel["cached"], "why": sel["why"],
                              "options": sel.get("winner_options", {})}}
    fns[HAL] = compiled
    for peer in peers:
        t0 = time.perf_counter()
        try:
            fns[peer] = PEERS[peer](name, path, x)
            out[peer] = {"compile_s": round(time.perf_counter() - t0, 2)}
        except Skip as exc:
            out[peer] = {"skipped": str(exc)}
        except Exception as exc:  # a peer failing is a result, not a crash
            out[peer] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    for k, fn in list(fns.items()):
        try:
            ys = [np.asarray(y) for y in fn(*x)]
            for _ in range(3):  # torch.compile and jax.jit settle on the shape first
                fn(*x)
        except Exception as exc:
            out[k] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            del fns[k]
            continue
        err, why = disagreement(ys, ref)
        out[k].update(max_err=float(f"{err:.3g}"), accurate=not why, **({"why": why} if why
                                                                        else {}))
    per_round: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k in device_order(list(fns), r):
            fn = fns[k]
            times = timed_calls(lambda: fn(*x), budget_s / rounds, max_runs=100_000,
                                min_runs=3)
            per_round[k].append(statistics.median(times))
    for k, p50s in per_round.items():
        out[k].update(p50_ms=statistics.median(p50s), spread_ms=spread(p50s),
                      round_p50_ms=[round(v, 4) for v in p50s])
    log(f"{name} b{batch}: " + ", ".join(f"{k} {v['p50_ms']:.3f}" for k, v in out.items()
                                         if "p50_ms" in v))
    del fns, compiled
    gc.collect()
    return {"model": name, "batch": batch, "contenders": out, **verdict(out)}


def verdict(out: dict) -> dict:
    """The fastest fp32-accurate peer and whether HAL's p50 is at most its, within spread."""
    hal_row = out.get(HAL, {})
    peers = {k: v for k, v in out.items() if k != HAL and v.get("accurate") and "p50_ms" in v}
    if "p50_ms" not in hal_row or not peers:
        return {"best_peer": None, "ratio": None, "holds": None}
    best = min(peers, key=lambda k: peers[k]["p50_ms"])
    b, h = peers[best], hal_row
    ratio = h["p50_ms"] / b["p50_ms"]
    holds = ratio <= 1.0 or h["p50_ms"] - h["spread_ms"] <= b["p50_ms"] + b["spread_ms"]
    return {"best_peer": best, "ratio": round(ratio, 3), "holds": bool(holds),
            "within_spread_only": bool(holds and ratio > 1.0)}


def print_tables(rows: list[dict], peers: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    t = Table(title="p50 ms per call (± half the range of the per-round p50s); * not "
                    "fp32-accurate; HAL / best = HAL cpu p50 over the fastest accurate peer's")
    cols = ["model", "batch", "HAL cpu"] + peers + ["best peer", "HAL / best"]
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "best peer") else "right")
    for row in rows:
        cells = [row["model"], str(row["batch"])]
        for k in [HAL] + peers:
            v = row["contenders"].get(k, {})
            if "p50_ms" in v:
                star = "" if v.get("accurate") else "*"
                dev = f" ({v['device'].split('@')[-1]})" if k == HAL else ""
                cells.append(f"{v['p50_ms']:.3f}±{v['spread_ms']:.3f}{star}{dev}")
            else:
                cells.append("[yellow]-[/]")
        ok = row["holds"]
        mark = "" if ok is None else (" [green]holds[/]" if ok else " [red]loses[/]")
        cells += [row["best_peer"] or "-",
                  (f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-") + mark]
        t.add_row(*cells)
    con.print(t)
    notes = {(k, v.get("skipped") or v.get("error") or v.get("why"))
             for row in rows for k, v in row["contenders"].items()
             if v.get("skipped") or v.get("error") or v.get("why")}
    for k, why in sorted(notes):
        con.print(f"  {k}: {why}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,mobilenet_lite,resnet_lite,tiny_transformer,"
                                        "resnet50")
    p.add_argument("--batch", default="1,64")
    p.add_argument("--budget", type=float, default=1.0,
                   help="seconds of timed calls per contender and row, over all rounds")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--peers", default=",".join(PEERS))
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    peers = args.peers.split(",")
    unknown = [k for k in peers if k not in PEERS]
    if unknown:
        p.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="hal-peers-"))
    for name in args.models.split(","):
        model = _load(name)
        path = tmp / f"{name}.onnx"
        hal.save(model, path)
        batches = [1] if name == "resnet50" else [int(b) for b in args.batch.split(",")]
        for b in batches:
            rows.append(measure_row(name, model, path, b, peers, args.budget, args.rounds,
                                    lambda s: print(s, file=sys.stderr)))
    print_tables(rows, peers)
    if args.json:
        from hal.comparison.environment import environment

        Path(args.json).write_text(json.dumps({"rows": rows, "environment": environment()},
                                              indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
