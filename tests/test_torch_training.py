"""cpu@torch (and cuda@torch) trains HAL's training graph: autograd, torch.optim, autocast."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from helpers import make_model, rand
from onnx import helper

import hal
from hal.errors import InputError, ModelError, OptionError
from hal.oracle.interpreter import Interpreter
from hal.trainer import OptimizerSpec, TrainSpec
from hal.training import build

torch = pytest.importorskip("torch")
HAS_CUDA = torch.cuda.is_available()


def trainer(graph, spec=TrainSpec(), device="cpu@torch"):
    dev = hal.device(device)
    return dev.backend.compile_training(graph, dev, spec)


def sgd(**kw) -> TrainSpec:
    return TrainSpec(OptimizerSpec(name="sgd", **kw))


def digits_like(n: int, shape=(1, 28, 28), seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, 10, n)


def bn_dropout_model(ratio: float = 0.3) -> hal.Model:
    """Conv, BatchNorm, ReLU, Dropout, pooling and a classifier: resnet_lite's training-mode
    ops in a graph small enough to step in milliseconds."""
    nodes = [
        helper.make_node("Conv", ["input", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "b", "mean", "var"], ["n"]),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Dropout", ["r", "ratio"], ["d"]),
        helper.make_node("GlobalAveragePool", ["d"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["output"], transB=1),
    ]
    inits = {"cw": rand(8, 3, 3, 3, seed=1) * 0.3, "cb": rand(8, seed=2) * 0.1,
             "s": 1 + 0.1 * rand(8, seed=3), "b": 0.1 * rand(8, seed=4),
             "mean": 0.1 * rand(8, seed=5), "var": 1 + 0.1 * np.abs(rand(8, seed=6)),
             "ratio": np.array(ratio, np.float32), "fw": rand(10, 8, seed=7) * 0.3,
             "fb": np.zeros(10, np.float32)}
    return hal.load(make_model(nodes, [("input", ["N", 3, 8, 8])], [("output", ["N", 10])],
                               inits))


@pytest.fixture(scope="module")
def lenet_graph():
    return build(hal.models.get("lenet"))  # BatchNorm-free, LogSoftmax -> NLL loss


def rel_diff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-12)) for k in b)


# -- accumulation ----------------------------------------------------------------------------

def test_four_micro_batches_make_the_step_of_one_batch(lenet_graph):
    x, y = digits_like(64)
    spec = sgd(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    big, small = trainer(lenet_graph, spec), trainer(lenet_graph, spec)
    for _ in range(2):
        [loss] = big.step([{"input": x, "target": y}], [1.0])
        parts = small.step([{"input": x[i:i + 16], "target": y[i:i + 16]}
                            for i in range(0, 64, 16)], [0.25] * 4)
        assert np.mean(parts) == pytest.approx(loss, rel=1e-5)
    assert rel_diff(small.weights(), big.weights()) < 1e-5
    assert rel_diff(big.weights(), dict(zip(lenet_graph.params, (
        w.const_value.numpy() for w in map(lenet_graph.model.graph.initializers.get,
                                           lenet_graph.params))))) > 1e-3  # it moved


def test_batchnorm_takes_each_micro_batch_update_in_order():
    """Batch statistics are per micro-batch (as in every framework); the running ones take the
    micro-batches' updates one after the other, ONNX momentum each time (checked against the
    oracle's BatchNormalization on the batch's own activations)."""
    graph = build(bn_dropout_model(ratio=0.0))
    tr = trainer(graph, sgd(lr=0.0))
    x = rand(12, 3, 8, 8, seed=9)
    init = {n: v.const_value.numpy() for n, v in graph.model.graph.initializers.items()}
    conv = hal.oracle.OPS["Conv"](x, init["cw"], init["cb"], pads=[1, 1, 1, 1])
    mean, var = init["mean"], init["var"]
    for part in (conv[:4], conv[4:]):
        _, mean, var = hal.oracle.OPS["BatchNormalization"](
            part, init["s"], init["b"], mean, var, training_mode=1)
    tr.step([{"input": x[:4], "target": np.zeros(4, np.int64)},
             {"input": x[4:], "target": np.ones(8, np.int64)}], [1 / 3, 2 / 3])
    w = tr.weights()
    np.testing.assert_allclose(w["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w["var"], var, rtol=1e-5, atol=1e-6)


# -- BatchNorm, Dropout, evaluation ----------------------------------------------------------

def test_batchnorm_dropout_model_trains_and_evaluates_deterministically():
    graph = build(bn_dropout_model())
    tr = trainer(graph, TrainSpec(OptimizerSpec(name="adam", lr=1e-2)))
    x, y = digits_like(32, (3, 8, 8), seed=3)
    before = tr.evaluate({"input": x})[0]
    stats0 = {k: v.copy() for k, v in tr.weights().items() if k in ("mean", "var")}
    losses = [tr.step([{"input": x, "target": y}], [1.0])[0] for _ in range(15)]
    assert losses[-1] < losses[0]
    w = tr.weights()
    assert not np.allclose(w["mean"], stats0["mean"]) and not np.allclose(w["var"], stats0["var"])
    after = tr.evaluate({"input": x})[0]
    np.testing.assert_array_equal(after, tr.evaluate({"input": x})[0])  # dropout off
    assert not np.allclose(after, before)
    # the trained weights in the inference graph give the trainer's evaluation in the oracle
    model = hal.Model(graph.eval_model).copy()
    for name, value in w.items():
        model.graph.initializers[name].const_value = ir.tensor(value)
    ref = Interpreter(model.graph)([x])[0]
    np.testing.assert_allclose(after, ref, rtol=1e-4, atol=1e-5)


def test_dropout_masks_follow_the_seed_and_the_step():
    graph = build(bn_dropout_model(ratio=0.5))
    x, y = digits_like(16, (3, 8, 8))
    batch = [{"input": x, "target": y}]
    run = [trainer(graph, sgd(lr=0.0, momentum=0.0), device="cpu@torch") for _ in range(2)]
    other = trainer(graph, TrainSpec(OptimizerSpec(name="sgd", lr=0.0), seed=1))
    a = [run[0].step(batch, [1.0])[0] for _ in range(3)]
    assert a == [run[1].step(batch, [1.0])[0] for _ in range(3)]
    assert len(set(a)) == 3  # lr 0: only the masks change from step to step
    assert other.step(batch, [1.0])[0] != a[0]


def test_dropout_draw_keeps_and_scales_as_onnx():
    from hal.backends.torch_backend.train_lowering import _dropout_draw  # noqa: PLC2701

    g = torch.Generator().manual_seed(0)
    x = torch.ones(100_000)
    y, keep = _dropout_draw(x, 0.25, g, True)
    assert abs(1 - keep.float().mean().item() - 0.25) < 0.01
    assert torch.equal(y[keep], torch.full_like(y[keep], 1 / 0.75))
    assert torch.equal(y[~keep], torch.zeros_like(y[~keep]))


def test_loss_converters_match_the_oracle():
    nodes = [helper.make_node("SoftmaxCrossEntropyLoss", ["x", "t", "w"], ["out", "logp"],
                              reduction="mean", ignore_index=2)]
    proto = make_model(nodes, [("x", [6, 5, 3])], [("out", []), ("logp", [6, 5, 3])],
                       {"w": np.abs(rand(5, seed=4))})
    t = helper.make_tensor_value_info("t", 7, [6, 3])  # int64 labels
    proto.graph.input.append(t)
    model = hal.load(proto)
    x, labels = rand(6, 5, 3), np.random.default_rng(1).integers(0, 5, (6, 3))
    dev = hal.device("cpu@torch")  # the backend's own compile: hal.compile probes every device
    got = dev.backend.compile(model.ir, dev, hal.CompileOptions())(x, labels)
    want = Interpreter(model.graph)([x, labels])
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


# -- resume ----------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "fp16"])  # fp16: the loss scaler's state too
def test_resumed_run_equals_the_uninterrupted_one(precision):
    graph = build(bn_dropout_model())
    spec = TrainSpec(OptimizerSpec(name="adamw", lr=1e-2, warmup_steps=2, schedule="cosine",
                                   total_steps=6, clip_norm=0.5), seed=7, precision=precision)
    batches = [[{"input": x, "target": y}] for x, y in
               (digits_like(16, (3, 8, 8), seed=s) for s in range(6))]
    whole = trainer(graph, spec)
    losses = [whole.step(b, [1.0]) for b in batches]
    first = trainer(graph, spec)
    for b in batches[:3]:
        first.step(b, [1.0])
    saved = {k: np.array(v) for k, v in first.state().items()}
    resumed = trainer(graph, spec)
    resumed.load_state(saved)
    assert [resumed.step(b, [1.0])[0] for b in batches[3:]] == pytest.approx(
        [loss for [loss] in losses[3:]], rel=1e-6)
    assert rel_diff(resumed.weights(), whole.weights()) < 1e-6
    assert int(resumed.state()["step"]) == 6


def test_bad_states_name_what_is_wrong(lenet_graph):
    tr = trainer(lenet_graph, TrainSpec(OptimizerSpec(name="adam")))
    x, y = digits_like(8)
    tr.step([{"input": x, "target": y}], [1.0])
    good = tr.state()
    fresh = trainer(lenet_graph, TrainSpec(OptimizerSpec(name="adam")))
    cases = [
        ({k: v for k, v in good.items() if k != "param/5.weight"}, "'param/5.weight' is missing"),
        ({**good, "param/0.bias": np.zeros(3, np.float32)}, r"'param/0.bias' has shape \(3,\)"),
        ({k: v for k, v in good.items() if not k.startswith("opt/state/")},
         "optimizer's state .* is missing"),
        ({k: v for k, v in good.items() if k != "opt/state/0.weight/exp_avg"},
         "'opt/state/0.weight/exp_avg' is missing"),
        ({**good, "param/extra": np.zeros(1, np.float32)}, "'param/extra' names no trainable"),
        ({**good, "step": np.zeros(2, np.int64)}, r"'step' has shape \(2,\)"),
        ({k: v for k, v in good.items() if k != "sched/last_epoch"}, "'sched/last_epoch'"),
    ]
    for state, match in cases:
        with pytest.raises(ModelError, match=match):
            fresh.load_state(state)
    with pytest.raises(ModelError, match="dict of named arrays"):
        fresh.load_state([1, 2])
    before = fresh.weights()
    assert rel_diff(fresh.weights(), before) == 0  # a refused state changes nothing
    fresh.load_state(good)
    assert rel_diff(fresh.weights(), tr.weights()) == 0


# -- optimizers, schedules, precision --------------------------------------------------------

@pytest.mark.parametrize("opt", [
    OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
                  schedule="step", step_size=2, gamma=0.5, warmup_steps=1),
    OptimizerSpec(name="adam", lr=1e-3, betas=(0.8, 0.99), eps=1e-6, schedule="cosine",
                  total_steps=5, warmup_steps=2),
    OptimizerSpec(name="adamw", lr=3e-3),
])
def test_optimizer_and_schedule_follow_the_spec(opt):
    model = hal.nn.Linear(4, 3).to_model((None, 4))
    tr = trainer(build(model, loss="mse"), TrainSpec(opt))
    group = tr.optimizer.param_groups[0]
    assert group["weight_decay"] == opt.decay and (opt.name != "adamw" or opt.decay == 0.01)
    assert type(tr.optimizer).__name__ == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[
        opt.name]
    x, t = rand(8, 4), rand(8, 3, seed=1)
    for i in range(5):
        assert group["lr"] == pytest.approx(opt.lr_at(i), rel=1e-12, abs=1e-15)
        tr.step([{"input": x, "target": t}], [1.0])


def test_sgd_step_is_the_hand_computed_gradient_step():
    model = hal.nn.Linear(4, 3).to_model((None, 4))
    graph = build(model, loss="mse")
    init = {n: graph.model.graph.initializers[n].const_value.numpy() for n in graph.params}
    w_name = next(n for n in graph.params if init[n].ndim == 2)
    b_name = next(n for n in graph.params if init[n].ndim == 1)
    w, b = init[w_name].astype(np.float64), init[b_name].astype(np.float64)
    x, t = rand(8, 4), rand(8, 3, seed=1)
    dy = 2 * (x @ w.T + b - t) / t.size
    tr = trainer(graph, sgd(lr=0.5, weight_decay=0.1))
    tr.step([{"input": x, "target": t}], [1.0])
    got = tr.weights()
    np.testing.assert_allclose(got[w_name], w - 0.5 * (dy.T @ x + 0.1 * w), rtol=1e-5)
    np.testing.assert_allclose(got[b_name], b - 0.5 * (dy.sum(0) + 0.1 * b), rtol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_close_to_fp32_with_fp32_master_weights(lenet_graph, precision):
    x, y = digits_like(16)
    runs = {}
    for p in ("fp32", precision):
        tr = trainer(lenet_graph, TrainSpec(OptimizerSpec(name="sgd", lr=0.05), precision=p))
        runs[p] = ([tr.step([{"input": x, "target": y}], [1.0])[0] for _ in range(4)], tr)
    losses, tr = runs[precision]
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(losses, runs["fp32"][0], rtol=0.03)
    assert all(p.dtype == torch.float32 for p in tr.params.values())
    assert all(v.dtype == np.float32 for v in tr.weights().values())
    assert tr.evaluate({"input": x})[0].dtype == np.float32
    if precision == "fp16":
        assert float(tr.state()["scaler/scale"]) > 0


def test_bad_options_and_inputs_are_refused(lenet_graph):
    with pytest.raises(OptionError, match="unknown optimizer 'lamb'"):
        trainer(lenet_graph, TrainSpec(OptimizerSpec(name="lamb")))
    with pytest.raises(OptionError, match="unknown schedule"):
        trainer(lenet_graph, TrainSpec(OptimizerSpec(schedule="exp")))
    with pytest.raises(OptionError, match="nesterov needs momentum"):
        trainer(lenet_graph, sgd(nesterov=True))
    with pytest.raises(OptionError, match="precision 'int8'"):
        trainer(lenet_graph, TrainSpec(precision="int8"))
    with pytest.raises(OptionError, match="no backend options"):
        trainer(lenet_graph, TrainSpec(extra={"channels_last": True}))
    tr = trainer(lenet_graph)
    x, y = digits_like(4)
    with pytest.raises(InputError, match=r"lacks \['target'\]"):
        tr.step([{"input": x}], [1.0])
    with pytest.raises(InputError, match="one weight each"):
        tr.step([{"input": x, "target": y}], [0.5, 0.5])
    with pytest.raises(InputError, match=r"has shape \(4, 1, 27, 27\)"):
        tr.step([{"input": x[:, :, 1:, 1:], "target": y}], [1.0])
    with pytest.raises(InputError, match="float32"):
        tr.evaluate({"input": x.astype(np.complex64)})


# -- CUDA ------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device (torch.cuda.is_available() is False)")
def test_cuda_trains_through_the_same_code(lenet_graph):
    x, y = digits_like(64)
    batches = [{"input": x[i:i + 32], "target": y[i:i + 32]} for i in (0, 32)]
    cpu, gpu = trainer(lenet_graph, sgd(lr=0.05, momentum=0.9)), \
        trainer(lenet_graph, sgd(lr=0.05, momentum=0.9), device="cuda@torch")
    for _ in range(2):
        np.testing.assert_allclose(gpu.step(batches, [0.5, 0.5]), cpu.step(batches, [0.5, 0.5]),
                                   rtol=1e-4)
    assert rel_diff(gpu.weights(), cpu.weights()) < 1e-4
    bf16 = trainer(lenet_graph, TrainSpec(OptimizerSpec(name="adamw"), precision="bf16"),
                   device="cuda@torch")
    assert np.isfinite(bf16.step(batches, [0.5, 0.5])).all()
