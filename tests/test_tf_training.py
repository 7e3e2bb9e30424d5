"""The tf backend trains: a training graph differentiated by tf.GradientTape and updated by
Keras's optimizers, checked against the oracle's loss, torch's optimizer formulas written in
numpy, one large batch (accumulation), an uninterrupted run (resume), and its own eval graph."""

from __future__ import annotations

import numpy as np
import pytest

import hal
from hal import nn
from hal.errors import HalError, InputError, OptionError
from hal.oracle.interpreter import Interpreter
from hal.trainer import OptimizerSpec, TrainSpec
from hal.training import build
from helpers import make_model, rand
from onnx import helper

pytest.importorskip("tensorflow")


def trainer(graph, device="cpu@tf", **spec):
    optimizer = spec.pop("optimizer", OptimizerSpec("sgd", lr=0.1, momentum=0.9))
    dev = hal.device(device)
    return dev.backend.compile_training(graph, dev, TrainSpec(optimizer, **spec))


def conv_net(bn=False, dropout=0.0):
    """Conv, [BatchNorm], Relu, MaxPool, Flatten, [Dropout], Gemm on 1x8x8 images, 10 classes
    (written in ONNX: hal.nn records no Dropout)."""
    inits = {"conv.w": 0.5 * rand(4, 1, 3, 3), "conv.b": 0.1 * rand(4, seed=1),
             "fc.w": 0.2 * rand(10, 64, seed=2), "fc.b": np.zeros(10, np.float32)}
    nodes = [helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1])]
    x = "c"
    if bn:
        inits.update({"bn.scale": 1 + 0.1 * rand(4, seed=3), "bn.bias": 0.1 * rand(4, seed=4),
                      "bn.mean": np.zeros(4, np.float32), "bn.var": np.ones(4, np.float32)})
        nodes.append(helper.make_node("BatchNormalization",
                                      ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n"]))
        x = "n"
    nodes += [helper.make_node("Relu", [x], ["r"]),
              helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Flatten", ["p"], ["f"])]
    x = "f"
    if dropout:
        inits["ratio"] = np.float32(dropout)
        nodes.append(helper.make_node("Dropout", ["f", "ratio"], ["d"]))
        x = "d"
    nodes.append(helper.make_node("Gemm", [x, "fc.w", "fc.b"], ["output"], transB=1))
    proto = make_model(nodes, [("input", ["N", 1, 8, 8])], [("output", ["N", 10])], inits)
    return hal.load(proto, name="conv")


def data(n=64, seed=0):
    """Inputs and the classes of a fixed linear teacher: a task a small net learns."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    teacher = np.random.default_rng(99).standard_normal((64, 10))
    return x, (x.reshape(n, -1) @ teacher).argmax(1)


def feeds(x, y, parts):
    return [{"input": a, "target": b} for a, b in zip(np.split(x, parts), np.split(y, parts))]


def assert_weights_close(a, b, rtol):
    assert a.keys() == b.keys()
    for name in a:
        scale = np.abs(b[name]).max() or 1.0
        assert np.abs(a[name] - b[name]).max() <= rtol * scale, name


@pytest.fixture(scope="module")
def plain():
    return build(conv_net())


@pytest.fixture(scope="module")
def bn_dropout():
    return build(conv_net(bn=True, dropout=0.25))


# -- the done-when checks -----------------------------------------------------------------------
def test_first_loss_is_the_oracles_on_the_same_graph_and_weights():
    graph = build(conv_net(bn=True))
    x, y = data()
    oracle = Interpreter(graph.model.graph)([x, y])
    t = trainer(graph)
    assert t.step([{"input": x, "target": y}], [1.0])[0] == pytest.approx(float(oracle[0]),
                                                                          rel=1e-5)
    stats = t.weights()
    for out, init in graph.updates.items():  # the running statistics it took: the oracle's
        np.testing.assert_allclose(stats[init], oracle[graph.model.graph.outputs.index(
            next(v for v in graph.model.graph.outputs if v.name == out))], rtol=1e-5, atol=1e-7)


def test_four_micro_batches_make_the_step_of_one_large_batch(plain):
    x, y = data()
    large, micro = trainer(plain), trainer(plain)
    for _ in range(2):
        large.step(feeds(x, y, 1), [1.0])
        micro.step(feeds(x, y, 4), [0.25] * 4)
    assert_weights_close(micro.weights(), large.weights(), 1e-5)
    assert int(micro.state()["step"]) == 2


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(bn_dropout):
    x, y = data()
    spec = dict(optimizer=OptimizerSpec("adamw", lr=1e-2, schedule="cosine", warmup_steps=1,
                                        total_steps=4), seed=3)
    whole = trainer(bn_dropout, **spec)
    first = trainer(bn_dropout, **spec)
    for _ in range(2):
        whole.step(feeds(x, y, 2), [0.5, 0.5])
        first.step(feeds(x, y, 2), [0.5, 0.5])
    saved = first.state()
    assert {"step", "opt/adamw/iteration"} <= set(saved)
    resumed = trainer(bn_dropout, **spec)
    resumed.load_state(saved)
    for _ in range(2):
        assert whole.step(feeds(x, y, 2), [0.5, 0.5]) == resumed.step(feeds(x, y, 2),
                                                                        [0.5, 0.5])
    assert_weights_close(resumed.weights(), whole.weights(), 1e-6)


def test_batchnorm_and_dropout_train_and_evaluation_is_deterministic(bn_dropout):
    x, y = data()
    t = trainer(bn_dropout, optimizer=OptimizerSpec("sgd", lr=0.0))
    before = t.weights()
    losses = [t.step(feeds(x, y, 1), [1.0])[0] for _ in range(3)]
    # lr 0: only the dropout masks differ between steps, and the same seed draws them again
    assert len(set(losses)) == 3
    twice = t.step(feeds(x, y, 1) * 2, [0.5, 0.5])  # the same batch, another mask
    assert twice[0] != twice[1]
    assert [trainer(bn_dropout, optimizer=OptimizerSpec("sgd", lr=0.0)).step(
        feeds(x, y, 1), [1.0])[0]] == losses[:1]
    after = t.weights()
    for stat in bn_dropout.updates.values():
        assert not np.allclose(after[stat], before[stat])
    out = t.evaluate({"input": x[:8]})[0]
    np.testing.assert_array_equal(out, t.evaluate({"input": x[:8]})[0])
    oracle = Interpreter(bn_dropout.eval_model.graph)  # eval mode on the trained weights
    oracle.constants.update(after)
    np.testing.assert_allclose(out, oracle([x[:8]])[0], rtol=1e-4, atol=1e-5)


def fp16_trainer(graph, **spec):
    """fp16 as a GPU runs it, here on the CPU (compile_training refuses fp16 on cpu: too slow
    there to mean anything but a test of the loss scaling, which it is here)."""
    from hal.backends.tf_backend.training import TfTrainer

    spec.setdefault("optimizer", OptimizerSpec("sgd", lr=0.1, momentum=0.9))
    return TfTrainer(hal.device("cpu@tf"), graph, TrainSpec(precision="fp16", **spec), False,
                     True)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_trains_on_fp32_master_weights(plain, precision):
    x, y = data(256)
    spec = dict(optimizer=OptimizerSpec("adam", lr=1e-2))
    low = fp16_trainer(plain, **spec) if precision == "fp16" else trainer(plain, precision=precision,
                                                                           **spec)
    fp32 = trainer(plain, **spec)
    first = [t.step(feeds(x, y, 1), [1.0])[0] for t in (fp32, low)]
    assert first[0] != first[1] and first[1] == pytest.approx(first[0], rel=2e-2)  # computed low
    for _ in range(40):
        last = [t.step(feeds(x, y, 1), [1.0])[0] for t in (fp32, low)]
    assert last[1] < 0.5 * first[1] and last[1] == pytest.approx(last[0], abs=0.1)
    assert all(v.dtype == np.float32 for v in low.params.values())


def test_fp16_skips_an_overflowing_update_and_halves_the_scale(plain):
    x, y = data()
    t = fp16_trainer(plain)
    state = t.state()
    state["opt/loss_scale/dynamic_scale"] = np.float32(1e30)
    t.load_state(state)
    t.step(feeds(x, y, 1), [1.0])
    assert_weights_close(t.weights(), {k[6:]: v for k, v in state.items()
                                       if k.startswith("param/")}, 0.0)
    assert t.state()["opt/loss_scale/dynamic_scale"] == np.float32(5e29)


# -- the optimizers mean what OptimizerSpec says: torch's updates ------------------------------
def torch_updates(spec: OptimizerSpec, params: dict, grads_of, steps: int) -> dict:
    """``steps`` updates by torch.optim's documented algorithms, in numpy (float64)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    slots: dict = {k: [np.zeros_like(v), np.zeros_like(v)] for k, v in p.items()}
    for t in range(steps):
        lr, g = spec.lr_at(t), grads_of(p)
        if spec.clip_norm is not None:
            norm = np.sqrt(sum((v ** 2).sum() for v in g.values()))
            g = {k: v * spec.clip_norm / max(norm, spec.clip_norm) for k, v in g.items()}
        for k in p:
            gk, (a, b) = g[k], slots[k]
            if spec.name != "adamw":
                gk = gk + spec.decay * p[k]
            if spec.name == "sgd":
                a[:] = spec.momentum * a + gk if t else gk
                p[k] -= lr * (gk + spec.momentum * a if spec.nesterov else a)
                continue
            if spec.name == "adamw":
                p[k] *= 1 - lr * spec.decay
            b1, b2 = spec.betas
            a[:] = b1 * a + (1 - b1) * gk
            b[:] = b2 * b + (1 - b2) * gk * gk
            denom = np.sqrt(b / (1 - b2 ** (t + 1))) + spec.eps
            p[k] -= lr / (1 - b1 ** (t + 1)) * a / denom
    return p


@pytest.mark.parametrize("spec", [
    OptimizerSpec("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, clip_norm=0.05),
    OptimizerSpec("adam", lr=0.1, weight_decay=0.05, eps=1e-3, schedule="cosine",
                  warmup_steps=1, total_steps=4),
    OptimizerSpec("adamw", lr=0.1, schedule="step", step_size=2, gamma=0.5, clip_norm=0.05),
], ids=["sgd", "adam", "adamw"])
def test_updates_are_torchs(spec):
    with nn.seed(1):
        model = nn.Linear(4, 3).to_model((None, 4), name="linear")
    graph = build(model, loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4)).astype(np.float32)
    target = (1e-3 * rng.standard_normal((16, 3))).astype(np.float32)

    def grads_of(p):  # of mean((x W^T + b - target)^2)
        dy = 2 * (x @ p["weight"].T + p["bias"] - target) / target.size
        return {"weight": dy.T @ x, "bias": dy.sum(0)}

    t = trainer(graph, optimizer=spec)
    start = t.weights()
    for _ in range(4):
        t.step([{"input": x, "target": target}], [1.0])
    # Adam divides by sqrt(v) + eps: a gradient component near eps carries its fp32 rounding
    # amplified ~lr/eps into the step (2e-5 seen); Keras's own eps placement is 0.3 off here
    assert_weights_close(t.weights(), torch_updates(spec, start, grads_of, 4), 1e-4)


@pytest.mark.parametrize("spec", [
    OptimizerSpec(lr=0.1), OptimizerSpec(lr=0.1, schedule="step", step_size=3, gamma=0.5),
    OptimizerSpec(lr=0.1, schedule="cosine", total_steps=10, warmup_steps=3),
    OptimizerSpec(lr=0.1, warmup_steps=4)], ids=["constant", "step", "cosine", "warmup"])
def test_schedules_give_the_specs_rates(spec):
    from hal.backends.tf_backend.optimizers import schedule

    rate = schedule(spec)
    got = [float(rate(t)) if callable(rate) else rate for t in range(14)]
    np.testing.assert_allclose(got, [spec.lr_at(t) for t in range(14)], rtol=1e-6)


# -- refusals --------------------------------------------------------------------------------------
def test_bad_requests_are_refused_with_the_fix(plain):
    assert hal.device("cpu@tf").backend.trains
    with pytest.raises(OptionError, match="fp32"):
        trainer(plain, precision="int8")
    with pytest.raises(OptionError, match="gpu@tf.*bf16"):
        trainer(plain, precision="fp16")
    with pytest.raises(OptionError, match="xla"):
        trainer(plain, extra={"jit": True})
    with pytest.raises(OptionError, match="sgd"):
        trainer(plain, optimizer=OptimizerSpec("lion"))
    with pytest.raises(OptionError, match="momentum"):
        trainer(plain, optimizer=OptimizerSpec("sgd", nesterov=True))
    with pytest.raises(OptionError, match="total_steps"):
        trainer(plain, optimizer=OptimizerSpec(schedule="cosine"))
    t = trainer(plain)
    x, y = data(8)
    with pytest.raises(InputError, match="target"):
        t.step([{"input": x}], [1.0])
    state = t.state()
    state["param/conv.w"] = state["param/conv.w"][:1]
    del state["opt/sgd/iteration"]
    with pytest.raises(HalError, match=r"'opt/sgd/iteration' is missing.*'param/conv.w' has"):
        t.load_state(state)


def test_xla_steps_as_the_graph_executor_does(plain):
    """XLA is the default on gpu and tpu; on cpu it is the option ``xla``."""
    x, y = data()
    graph_mode, xla = trainer(plain), trainer(plain, extra={"xla": True})
    for t in (graph_mode, xla):
        t.step(feeds(x, y, 1), [1.0])
        t.step(feeds(x, y, 2), [0.5, 0.5])
    assert_weights_close(xla.weights(), graph_mode.weights(), 1e-5)


@pytest.mark.parametrize("kind", ["gpu", "tpu"])
def test_accelerators_train_through_the_same_code(plain, kind):
    info = next(d for d in hal.device("cpu@tf").backend.probe() if d.kind == kind)
    if not info.usable:  # tf's own devices only: probing every backend takes seconds
        pytest.skip(info.reason)
    x, y = data()
    on_cpu, on_device = trainer(plain), trainer(plain, device=f"{kind}@tf")
    for _ in range(2):
        on_cpu.step(feeds(x, y, 2), [0.5, 0.5])
        on_device.step(feeds(x, y, 2), [0.5, 0.5])
    assert_weights_close(on_device.weights(), on_cpu.weights(), 1e-4)
    moved = hal.device(f"{kind}@tf").transfers.copy()
    on_device.step(feeds(x, y, 2), [0.5, 0.5])  # two inputs of two batches in, two losses out
    assert (hal.device(f"{kind}@tf").transfers - moved).count == 6
    low = trainer(plain, device=f"{kind}@tf", precision="fp16" if kind == "gpu" else "bf16")
    losses = [low.step(feeds(x, y, 1), [1.0])[0] for _ in range(5)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
