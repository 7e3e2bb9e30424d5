"""HAL's training library: the training graph (its loss checked through the oracle by hand),
the loop on an in-process numpy trainer (accumulation, data order, resume, checkpoints,
refusal, history, callbacks) and, where the frameworks train, end to end on each of them."""

from __future__ import annotations

import numpy as np
import pytest

import hal
from hal import nn
from hal.errors import ModelError
from hal.oracle import OPS
from hal.oracle.interpreter import Interpreter
from hal.training import build
from helpers import make_model, rand
from onnx import helper


def run(model, *inputs):
    return Interpreter(model.graph)(list(inputs))


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def small_net(head=None, *, bn=False):
    with nn.seed(0):
        layers = [nn.Conv2d(1, 4, 3, padding=1)]
        layers += [nn.BatchNorm2d(4)] if bn else []
        layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)] + ([head] if head else [])
        return nn.Sequential(*layers).to_model((None, 1, 6, 6), name="small")


def batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 6, 6), dtype=np.float32), rng.integers(0, 5, n)


@pytest.mark.parametrize("head, op", [(None, "SoftmaxCrossEntropyLoss"),
                                      (nn.LogSoftmax(dim=1), "NegativeLogLikelihoodLoss"),
                                      (nn.Softmax(dim=1), "NegativeLogLikelihoodLoss")])
def test_cross_entropy_through_the_oracle_is_the_hand_computed_one(head, op):
    model = small_net(head)
    before = model.digest()
    tg = build(model)
    assert model.digest() == before  # the user's model is untouched
    assert [n.op_type for n in tg.model.graph][-1] == op
    x, y = batch()
    loss, out = run(tg.model, x, y)
    scores = run(tg.eval_model, x)[0]
    logp = {None: log_softmax, nn.Softmax: np.log, nn.LogSoftmax: lambda s: s}[
        type(head) if head else None](scores)
    assert loss.shape == () and loss.dtype == np.float32
    np.testing.assert_allclose(loss, -logp[np.arange(len(y)), y].mean(), rtol=1e-6)
    np.testing.assert_allclose(out, scores, rtol=1e-6)
    assert [v.name for v in tg.model.graph.inputs] == ["input", "target"]
    assert [v.name for v in tg.model.graph.outputs] == ["loss", *tg.outputs]
    assert tg.params == list(model.graph.initializers) and tg.frozen == [] and not tg.updates


def test_nll_and_mse_losses():
    model = small_net(nn.LogSoftmax(dim=1))
    x, y = batch()
    loss = run(build(model, "nll").model, x, y)[0]
    logp = run(model, x)[0]
    np.testing.assert_allclose(loss, -logp[np.arange(len(y)), y].mean(), rtol=1e-6)
    raw = small_net()
    target = np.random.default_rng(1).standard_normal((8, 5)).astype(np.float32)
    tg = build(raw, "mse")
    assert {n.op_type for n in tg.model.graph} >= {"Sub", "Mul", "ReduceMean"}
    loss = run(tg.model, x, target)[0]
    np.testing.assert_allclose(loss, ((run(raw, x)[0] - target) ** 2).mean(), rtol=1e-6)


def test_batchnorm_trains_on_batch_statistics_and_updates_running_ones():
    model = small_net(bn=True)
    tg = build(model)
    bn = next(n for n in tg.model.graph if n.op_type == "BatchNormalization")
    assert bn.attributes["training_mode"].value == 1
    mean_name, var_name = bn.inputs[3].name, bn.inputs[4].name
    assert sorted(tg.updates.values()) == sorted([mean_name, var_name])
    assert mean_name not in tg.params and var_name not in tg.params
    x, y = batch()
    outs = dict(zip([v.name for v in tg.model.graph.outputs], run(tg.model, x, y)))
    conv = OPS["Conv"](x, *(model.graph.initializers[n].const_value.numpy()
                            for n in ("0.weight", "0.bias")), pads=[1, 1, 1, 1])
    old_mean = model.graph.initializers[mean_name].const_value.numpy()
    old_var = model.graph.initializers[var_name].const_value.numpy()
    new = {v: k for k, v in tg.updates.items()}
    # ONNX: running = running * momentum + batch * (1 - momentum), population variance
    np.testing.assert_allclose(outs[new[mean_name]],
                               0.9 * old_mean + 0.1 * conv.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(outs[new[var_name]],
                               0.9 * old_var + 0.1 * conv.var(axis=(0, 2, 3)), rtol=1e-5)
    # the evaluation graph normalizes by the running statistics: deterministic, batch-free
    ev = tg.eval_model.graph
    assert all(n.attributes.get("training_mode") is None or n.attributes["training_mode"].value
               == 0 for n in ev if n.op_type == "BatchNormalization")
    np.testing.assert_allclose(run(tg.eval_model, x[:1])[0], run(tg.eval_model, x)[0][:1],
                               rtol=1e-5)


def test_dropout_is_on_in_training_and_off_in_evaluation():
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
             helper.make_node("Dropout", ["h", "ratio"], ["y"])]
    proto = make_model(nodes, [("x", ["N", 4])], [("y", ["N", 3])],
                       {"w": rand(3, 4), "b": rand(3), "ratio": np.array(0.5, np.float32)})
    model = hal.load(proto)
    tg = build(model)
    assert tg.params == ["w", "b"]  # the ratio is a setting
    drop = next(n for n in tg.model.graph if n.op_type == "Dropout")
    mode = drop.inputs[2]
    assert mode.const_value is not None and bool(mode.const_value.numpy())
    assert mode.name not in tg.params
    ev = next(n for n in tg.eval_model.graph if n.op_type == "Dropout")
    assert len(ev.inputs) < 3 or ev.inputs[2] is None
    x = rand(64, 4)
    np.testing.assert_array_equal(run(tg.eval_model, x)[0], run(model, x)[0])
    dropped = run(tg.model, x, np.zeros(64, np.int64))[1]
    assert 0.3 < (dropped == 0).mean() < 0.7


def test_trainable_excludes_settings_integers_and_frozen_patterns(zoo):
    tg = build(zoo["mobilenet_lite"])
    assert not any(p.startswith("clip_") for p in tg.params)  # Clip bounds are settings
    tg = build(zoo["tiny_transformer"])
    assert "shape" not in tg.params and "axes" not in tg.params  # int64 shapes never train
    tg = build(zoo["lenet"], freeze=["0.*", "2.weight"])
    assert tg.frozen == ["0.weight", "0.bias", "2.weight"]
    assert tg.params == ["2.bias", "5.weight", "5.bias", "7.weight", "7.bias"]


def test_bad_requests_are_model_errors_that_say_what_to_do(zoo):
    lenet = zoo["lenet"]
    with pytest.raises(ModelError, match="unknown loss 'hinge'.*'cross_entropy'.*'nll'.*'mse'"):
        build(lenet, "hinge")
    with pytest.raises(ModelError, match="freeze pattern 'conv\\*' matches no trainable"):
        build(lenet, freeze=["conv*"])
    with pytest.raises(ModelError, match="nothing to train"):
        build(lenet, freeze=["*"])
    with pytest.raises(ModelError, match="output='logits' is not an output.*'output'"):
        build(lenet, output="logits")
    lin = nn.Linear(4, 3)
    two = nn.trace(lambda x: [lin(x), nn.functional.tanh(lin(x))], (None, 4))
    with pytest.raises(ModelError, match="2 outputs.*pass output=NAME"):
        build(two, "mse")
    assert build(two, "mse", output=two.outputs[1].name).outputs == [o.name for o in two.outputs]
    with pytest.raises(ModelError, match="from a hal.Model"):
        build("lenet")


def test_loss_kernels_weights_and_ignore_index_by_hand():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 4, 3)).astype(np.float32)
    target = rng.integers(0, 4, (6, 3))
    target[0, 0] = target[2, 1] = -1
    weight = np.array([0.5, 1.0, 2.0, 1.5], np.float32)
    logp = log_softmax(scores)
    keep = target != -1
    picked = np.take_along_axis(logp, np.where(keep, target, 0)[:, None], 1)[:, 0]
    w = np.where(keep, weight[np.where(keep, target, 0)], 0)
    want = -(picked * w).sum() / w.sum()
    loss, log_prob = OPS["SoftmaxCrossEntropyLoss"](scores, target, weight, ignore_index=-1)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(log_prob, logp, rtol=1e-5, atol=1e-6)
    nll = OPS["NegativeLogLikelihoodLoss"](logp, target, weight, ignore_index=-1,
                                           reduction="none")
    np.testing.assert_allclose(nll, -picked * w, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="target class 7 is outside"):
        OPS["NegativeLogLikelihoodLoss"](logp, np.full((6, 3), 7))
