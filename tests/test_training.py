"""HAL's training library: the training graph (its loss checked through the oracle by hand),
the loop on an in-process numpy trainer (accumulation, data order, resume, checkpoints,
refusal, history, callbacks) and, where the frameworks train, end to end on each of them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hal
from hal import nn
from hal.backends.reference import ReferenceBackend
from hal.device import DeviceInfo
from hal.errors import HalError, InputError, ModelError, OptionError
from hal.oracle import OPS
from hal.oracle.interpreter import Interpreter
from hal.registry import REGISTRY
from hal.trainer import Trainer, TrainGraph, TrainSpec
from hal.training import Callback, CheckpointError, EarlyStopping, build
from hal.training.checkpoint import load as load_checkpoint
from hal.training.settings import trainable_devices, training_device
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


# -- the loop, on an in-process numpy trainer ------------------------------------------------

class SoftmaxRegression(Trainer):
    """The training graph Flatten -> Gemm -> SoftmaxCrossEntropyLoss, differentiated by hand,
    updated by SGD with momentum; it records the targets of every micro-batch it is given."""

    def __init__(self, tg: TrainGraph, spec: TrainSpec):
        gemm = next(n for n in tg.model.graph if n.op_type == "Gemm")
        self.w_name, self.b_name = gemm.inputs[1].name, gemm.inputs[2].name
        inits = tg.model.graph.initializers
        self.p = {n: inits[n].const_value.numpy().astype(np.float64) for n in tg.params}
        self.v = {n: np.zeros_like(a) for n, a in self.p.items()}
        self.spec, self.steps, self.seen, self.tg = spec, 0, [], tg

    def forward(self, x):
        return x.reshape(len(x), -1) @ self.p[self.w_name].T + self.p[self.b_name]

    def grads(self, batch):
        x, y = batch["input"].reshape(len(batch["target"]), -1), batch["target"]
        logp = log_softmax(self.forward(x))
        dz = np.exp(logp)
        dz[np.arange(len(y)), y] -= 1
        dz /= len(y)
        return -logp[np.arange(len(y)), y].mean(), {self.w_name: dz.T @ x, self.b_name: dz.sum(0)}

    def step(self, batches, weights):
        opt = self.spec.optimizer
        losses, total = [], {n: 0.0 for n in self.p}
        for b, w in zip(batches, weights):
            self.seen.append(b["target"].copy())
            loss, g = self.grads(b)
            losses.append(float(loss))
            total = {n: total[n] + w * g[n] for n in self.p if n in g}
        lr = opt.lr_at(self.steps)
        for n in total:
            self.v[n] = opt.momentum * self.v[n] + total[n]
            self.p[n] -= lr * self.v[n]
        self.steps += 1
        return losses

    def evaluate(self, inputs):
        return [self.forward(inputs["input"]).astype(np.float32)]

    def state(self):
        return {**{f"param/{n}": a for n, a in self.p.items()},
                **{f"opt/velocity/{n}": a for n, a in self.v.items()},
                "step": np.array(self.steps, np.int64)}

    def load_state(self, state):
        for key, a in self.state().items():
            if key not in state or state[key].shape != a.shape:
                raise HalError(f"training state entry {key!r} is missing or mis-shaped")
        self.p = {n: state[f"param/{n}"].copy() for n in self.p}
        self.v = {n: state[f"opt/velocity/{n}"].copy() for n in self.v}
        self.steps = int(state["step"])

    def weights(self):
        return {n: a.astype(np.float32) for n, a in self.p.items()}


class NumpyTrainBackend(ReferenceBackend):
    name = "nptrain"
    priority = -100
    trains = True
    trainers: list = []

    def probe(self):
        return [DeviceInfo("cpu", 0, self.name, name="numpy softmax regression (tests)")]

    def compile_training(self, graph, device, spec):
        self.trainers.append(SoftmaxRegression(graph, spec))
        return self.trainers[-1]


@pytest.fixture
def nptrain():
    backend = hal.register_backend(NumpyTrainBackend())
    backend.trainers = []
    try:
        yield backend
    finally:
        REGISTRY.unregister("nptrain")


def linear(seed=0):
    with nn.seed(seed):
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).to_model((None, 1, 4, 4),
                                                                       name="linear")


def blobs(n=38, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 1, 4, 4)).astype(np.float32) * 0.5
    x[:, 0, 0, :3] += np.eye(3, dtype=np.float32)[y] * 2  # separable: a hot pixel per class
    return x, y


def fit(model=None, data=None, **kw):
    kw = {"device": "cpu@nptrain", "optimizer": "sgd", "lr": 0.1, "progress": False, **kw}
    return hal.train(model or linear(), data or blobs(), **kw)


def weights_of(result):
    return {k: v.const_value.numpy() for k, v in result.model.graph.initializers.items()}


def assert_same_weights(a, b, rtol=0.0):
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k], wb[k], rtol=rtol, atol=0, err_msg=k)


@pytest.mark.parametrize("n", [40, 38])  # whole groups, and a short last micro-batch
def test_accumulation_makes_the_step_of_one_large_batch(nptrain, n):
    data = blobs(n)
    big = fit(data=data, batch_size=16, epochs=2, momentum=0.9)
    small = fit(data=data, batch_size=4, accumulate=4, epochs=2, momentum=0.9)
    assert big.steps == small.steps == 6  # 3 updates per epoch: 16 + 16 + (8 or 6) samples
    assert_same_weights(big, small, rtol=1e-6)
    np.testing.assert_allclose([r["loss"] for r in big.history],
                               [r["loss"] for r in small.history], rtol=1e-6)
    sizes = [len(t) for t in nptrain.trainers[1].seen[:12]]
    assert sizes == [4] * 9 + [n - 36] + [4, 4]  # a group never spans two epochs


def test_data_order_is_the_seeded_generators_permutation(nptrain):
    x, y = blobs()
    fit(data=(x, y), batch_size=16, epochs=2, seed=7)
    seen = nptrain.trainers[0].seen
    for epoch in range(2):
        order = np.random.default_rng([7, epoch]).permutation(len(y))
        got = np.concatenate(seen[3 * epoch:3 * epoch + 3])
        np.testing.assert_array_equal(got, y[order])
    fit(data=(x, y), batch_size=16, seed=8)
    assert not np.array_equal(np.concatenate(nptrain.trainers[1].seen), np.concatenate(seen[:3]))


def test_result_history_and_the_users_model(nptrain):
    model, (x, y) = linear(), blobs(60)
    before = model.digest()
    res = fit(model, (x[:40], y[:40]), validation=(x[40:], y[40:]), epochs=3, batch_size=8,
              schedule="step", step_size=5, gamma=0.5)
    assert model.digest() == before and res.model is not model
    assert [r["epoch"] for r in res.history] == [1, 2, 3] and res.steps == 15
    assert set(res.history[0]) == {"epoch", "step", "loss", "seconds", "samples_per_s", "lr",
                                   "val_loss", "val_accuracy"}
    assert [r["lr"] for r in res.history] == [0.1, 0.05, 0.025]
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    # validation metrics are those of the returned model (run here by the oracle)
    logits = run(res.model, x[40:])[0]
    last = res.history[-1]
    assert last["val_accuracy"] == pytest.approx((logits.argmax(1) == y[40:]).mean())
    want = -log_softmax(logits.astype(np.float64))[np.arange(20), y[40:]].mean()
    assert last["val_loss"] == pytest.approx(want, rel=1e-5)
    assert last["val_accuracy"] >= 0.9


def test_resume_continues_to_the_weights_of_an_uninterrupted_run(nptrain, tmp_path):
    kw = dict(batch_size=8, momentum=0.9, validation=blobs(20, seed=1))
    whole = fit(epochs=4, **kw)
    first = fit(epochs=2, checkpoint_dir=tmp_path, **kw)
    assert first.last_checkpoint == tmp_path / "last.safetensors"
    rest = fit(epochs=4, checkpoint_dir=tmp_path, resume=True, **kw)
    assert_same_weights(whole, rest)
    assert [r["loss"] for r in rest.history] == [r["loss"] for r in whole.history]
    assert nptrain.trainers[-1].steps == whole.steps  # it ran epochs 3 and 4 only
    assert len(nptrain.trainers[-1].seen) == 2 * 5


class StopAt(Callback):
    def __init__(self, step):
        self.at = step

    def on_step_end(self, run):
        if run.step == self.at:
            raise KeyboardInterrupt


def test_an_interrupted_epoch_resumes_at_its_data_position(nptrain, tmp_path):
    whole = fit(epochs=2, batch_size=8, accumulate=2, momentum=0.5)
    with pytest.raises(KeyboardInterrupt):
        fit(epochs=2, batch_size=8, accumulate=2, momentum=0.5, checkpoint_dir=tmp_path,
            callbacks=[StopAt(4)])  # 3 updates per epoch: stopped in epoch 2
    rest = fit(epochs=2, batch_size=8, accumulate=2, momentum=0.5, checkpoint_dir=tmp_path,
               resume=True, callbacks=[StopAt(-1)])
    assert_same_weights(whole, rest)
    assert rest.history[-1]["loss"] == pytest.approx(whole.history[-1]["loss"], rel=1e-12)


def test_bad_checkpoints_are_errors_naming_the_file_and_the_mismatch(nptrain, tmp_path):
    fit(epochs=1, checkpoint_dir=tmp_path)
    last = tmp_path / "last.safetensors"
    data = last.read_bytes()
    with pytest.raises(CheckpointError, match="belongs to another run.*lr"):
        fit(epochs=2, checkpoint_dir=tmp_path, resume=True, lr=0.2)
    with pytest.raises(CheckpointError, match="belongs to another run.*model"):
        fit(linear(seed=1), epochs=2, checkpoint_dir=tmp_path, resume=True)
    last.write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match=f"{last.name}.*truncated or corrupt"):
        fit(epochs=2, checkpoint_dir=tmp_path, resume=True)
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    last.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=f"{last.name}.*corrupt: its tensors do not match"):
        fit(epochs=2, checkpoint_dir=tmp_path, resume=True)
    last.write_bytes(data)
    assert fit(epochs=2, checkpoint_dir=tmp_path, resume=True).steps == 2  # one per epoch
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary file


def test_a_device_that_cannot_train_is_refused_naming_those_that_can(nptrain):
    with pytest.raises(OptionError, match="'cpu@reference' cannot train.*cpu:0@nptrain"):
        fit(device="cpu@reference")
    assert training_device("cpu").backend.trains


def test_early_stopping_and_best_checkpoint(nptrain, tmp_path):
    # the learning rate never improves after the first epoch: patience 2 stops after epoch 3
    res = fit(epochs=10, callbacks=[EarlyStopping("lr", patience=2, mode="min")])
    assert len(res.history) == 3 and res.stopped_early
    res = fit(epochs=4, validation=blobs(20, seed=1), checkpoint_dir=tmp_path, lr=0.02)
    best = min(res.history, key=lambda r: r["val_loss"])
    assert res.best_checkpoint == tmp_path / "best.safetensors"
    assert load_checkpoint(res.best_checkpoint).meta["loop"]["epoch"] == best["epoch"]
    with pytest.raises(OptionError, match="monitors 'val_loss'.*pass validation="):
        fit(callbacks=[EarlyStopping("val_loss")])


def test_batches_from_an_iterable_and_the_progress_bar(nptrain, capfd):
    x, y = blobs(24)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 24, 8)]
    fit(data=batches, epochs=2, progress=True)
    seen = nptrain.trainers[0].seen
    np.testing.assert_array_equal(np.concatenate(seen), np.concatenate([y, y]))  # as given
    err = capfd.readouterr().err
    assert "samples/s" in err and "loss" in err
    with pytest.raises(InputError, match="gave no batches in epoch 2.*one-shot"):
        fit(data=(b for b in batches), epochs=2)


def test_cosine_fills_in_the_runs_updates(nptrain):
    fit(batch_size=8, accumulate=2, epochs=3, schedule="cosine")
    assert nptrain.trainers[0].spec.optimizer.total_steps == 3 * 3


@pytest.mark.parametrize("kw, error, match", [
    ({"data": (np.zeros((4, 1, 5, 5), np.float32), np.zeros(4, int))}, InputError,
     r"input 'input' has shape \[4, 1, 5, 5\]; expected \[N, 1, 4, 4\]"),
    ({"data": (np.zeros((4, 1, 4, 4), np.float32), np.zeros(4, np.float32))}, InputError,
     "class indices"),
    ({"data": (np.zeros((4, 1, 4, 4), np.float32), np.zeros(3, int))}, InputError,
     "number of samples"),
    ({"optimizer": "lion"}, OptionError, "unknown optimizer 'lion'"),
    ({"momentum": 0.9, "optimizer": "adam"}, OptionError, "sgd's options"),
    ({"resume": True}, OptionError, "pass checkpoint_dir="),
    ({"batch_size": 0}, OptionError, "batch_size must be a positive int"),
    ({"precision": "fp8"}, OptionError, "precision 'fp8' is not one of"),
])
def test_bad_arguments_are_hal_errors(nptrain, kw, error, match):
    with pytest.raises(error, match=match):
        fit(**kw)


# -- hal train -----------------------------------------------------------------------------

def test_hal_train_refuses_a_device_that_cannot_train(capsys):
    from hal.cli import main

    assert main(["train", "lenet", "--device", "cpu@reference", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot train" in err and "Traceback" not in err
    trainable = [d.string for d in trainable_devices()]
    assert all(d in err for d in trainable)


def test_hal_train_on_arrays_from_a_file(nptrain, tmp_path, capsys):
    from hal.cli import main

    x, y = blobs(60)
    np.savez(tmp_path / "d.npz", x=x[:40], y=y[:40], x_val=x[40:], y_val=y[40:])
    linear().save(tmp_path / "m.onnx")
    argv = ["train", str(tmp_path / "m.onnx"), "--device", "cpu@nptrain", "--data",
            str(tmp_path / "d.npz"), "--optimizer", "sgd", "--lr", "0.1", "--epochs", "2",
            "--batch", "8", "--option", "momentum=0.9", "--out", str(tmp_path / "t.onnx"),
            "--checkpoint", str(tmp_path / "ck"), "--no-progress"]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 10 and len(report["history"]) == 2
    assert report["settings"]["optimizer"]["momentum"] == 0.9
    trained = hal.load(tmp_path / "t.onnx")
    logits = run(trained, x[40:])[0]
    assert report["history"][-1]["val_accuracy"] == pytest.approx((logits.argmax(1) ==
                                                                   y[40:]).mean())
    assert main([*argv[:-5], "--epochs", "3", "--checkpoint", str(tmp_path / "ck"),
                 "--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "15 updates" in out and "best checkpoint" in out  # epoch 3 on top of 1 and 2
    assert main(["train", "mlp", "--device", "cpu@nptrain"]) == 2
    assert "--data digits fits models with one image input" in capsys.readouterr().err


# -- end to end on the frameworks' trainers -------------------------------------------------

FRAMEWORKS = ["cpu@torch", "cpu@jax", "cpu@tf"]


def trainer_device(device):
    try:
        return training_device(device).string
    except HalError as exc:
        pytest.skip(f"{device} does not train here: {exc}")


class FirstLosses(Callback):
    def __init__(self):
        self.losses = []

    def on_step_end(self, run):
        self.losses.append(run.losses)


@pytest.fixture(scope="module")
def lenet_digits():
    pytest.importorskip("sklearn")
    model = hal.models.get("lenet")
    train, test = hal.data.digits("train", 28), hal.data.digits("test", 28)
    tg = build(model)
    first = np.random.default_rng([0, 0]).permutation(256)[:64]  # of the first 256 samples
    oracle_loss = float(run(tg.model, train[0][first], train[1][first])[0])
    return model, train, test, oracle_loss


def dist(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_lenet_on_digits_starts_from_the_oracles_loss_and_learns(framework, lenet_digits,
                                                                 tmp_path):
    device = trainer_device(framework)
    model, (x, y), (xt, yt), oracle_loss = lenet_digits
    first = FirstLosses()
    kw = dict(device=device, epochs=1, batch_size=64, validation=(xt[:128], yt[:128]),
              checkpoint_dir=tmp_path, progress=False)
    res = hal.train(model, (x[:256], y[:256]), callbacks=[first], **kw)
    # same initial weights and first batch on every backend: the loss of HAL's training graph
    assert first.losses[0][0] == pytest.approx(oracle_loss, abs=5e-6)
    assert res.steps == 4 and max(first.losses[-1]) < oracle_loss
    logits = run(res.model, xt[:128])[0]  # the trained model, run by the oracle
    agree = (logits.argmax(1) == yt[:128]).mean()
    assert abs(res.history[0]["val_accuracy"] - agree) <= 1 / 128
    # the framework's state through a safetensors checkpoint and back: nothing left to run,
    # the same weights
    again = hal.train(model, (x[:256], y[:256]), callbacks=[FirstLosses()], resume=True, **kw)
    assert again.steps == 4 and again.history == res.history
    for name, a in weights_of(again).items():
        np.testing.assert_array_equal(a, weights_of(res)[name], err_msg=name)


@pytest.mark.slow  # each backend's own tests check accumulation and resume on its Trainer
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_accumulation_and_resume_through_hal_train(framework, lenet_digits, tmp_path):
    device = trainer_device(framework)
    model, (x, y), _, _ = lenet_digits
    data = (x[:128], y[:128])
    kw = dict(device=device, optimizer="sgd", lr=0.05, momentum=0.9, progress=False)
    big = hal.train(model, data, batch_size=64, **kw)
    small = hal.train(model, data, batch_size=16, accumulate=4, **kw)
    for name, a in weights_of(small).items():
        assert dist(a, weights_of(big)[name]) < 1e-5, name
    data = (x[:32], y[:32])
    whole = hal.train(model, data, batch_size=16, epochs=4, **kw)
    hal.train(model, data, batch_size=16, epochs=2, checkpoint_dir=tmp_path, **kw)
    rest = hal.train(model, data, batch_size=16, epochs=4, checkpoint_dir=tmp_path,
                     resume=True, **kw)
    for name, a in weights_of(rest).items():
        assert dist(a, weights_of(whole)[name]) < 1e-6, name


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_batchnorm_model_trains_and_its_running_statistics_change(framework, zoo):
    device = trainer_device(framework)
    pytest.importorskip("sklearn")
    x, y = hal.data.digits("train", 32, 3)
    model = zoo["resnet_lite"]
    res = hal.train(model, (x[:64], y[:64]), device=device, batch_size=32, progress=False)
    before, after = weights_of_model(model), weights_of(res)
    stats = [n for n in before if n.endswith(("running_mean", "running_var"))]
    assert stats and all(not np.array_equal(before[n], after[n]) for n in stats)
    once, twice = run(res.model, x[:8])[0], run(res.model, x[:8])[0]
    np.testing.assert_array_equal(once, twice)  # evaluation uses the running statistics


def weights_of_model(model):
    return {k: v.const_value.numpy() for k, v in model.graph.initializers.items()}


@pytest.mark.slow
def test_lenet_reaches_97_percent_on_digits_on_every_framework(lenet_digits):
    """The issue's figures: 5 epochs of AdamW from the same initial weights (batch 32, cosine
    decay to 0: the last epoch's accuracy settles; at batch 64 and a constant rate it lands
    anywhere in 95.7-97.6 %), and bf16 within a point of fp32."""
    model, train, (xt, yt), _ = lenet_digits
    accuracies = {}
    for device in FRAMEWORKS:
        try:
            device = training_device(device).string
        except HalError:
            continue
        for precision in ("fp32", "bf16"):
            res = hal.train(model, train, device=device, epochs=5, batch_size=32, lr=2e-3,
                            schedule="cosine", precision=precision, validation=(xt, yt),
                            progress=False)
            accuracies[device, precision] = res.history[-1]["val_accuracy"]
    print(f"\nLeNet, digits 28, 5 epochs: test accuracy {accuracies}")
    if not accuracies:
        pytest.skip("no framework trains here")
    fp32 = [a for (_, p), a in accuracies.items() if p == "fp32"]
    assert min(fp32) >= 0.97 and max(fp32) - min(fp32) <= 0.015, accuracies
    for (device, precision), a in accuracies.items():
        assert abs(a - accuracies[device, "fp32"]) <= 0.01, accuracies


@pytest.mark.slow
def test_hal_train_then_int8_on_the_emulated_fpga(tmp_path, capsys):
    """The issue's command line: train on cpu@jax, save model and calibration images, run the
    trained model in int8 on fpga@emu."""
    from hal.cli import main

    device = trainer_device("cpu@jax")
    pytest.importorskip("sklearn")
    out, calib = tmp_path / "t.onnx", tmp_path / "calib.npy"
    assert main(["train", "lenet", "--device", device, "--data", "digits", "--epochs", "2",
                 "--out", str(out), "--save-calibration", str(calib), "--no-progress",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["history"][-1]["val_accuracy"] > 0.9
    images = np.load(calib)
    assert images.shape == (256, 1, 28, 28)
    assert main(["run", str(out), "--device", "fpga@emu", "--calibration", str(calib),
                 "--repeat", "2", "--json"]) == 0
    ran = json.loads(capsys.readouterr().out)
    assert ran["simulated"] and ran["report"]["options"]["precision"] == "int8"
    assert "calib.npy" in ran["calibration"], ran["calibration"]
    x, y = hal.data.digits("test", 28)
    int8 = hal.compile(hal.load(out), "fpga@emu", calibration=images)
    assert (int8(x)[0].argmax(1) == y).mean() > 0.9
