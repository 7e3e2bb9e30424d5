"""hal.distill and loss "distill": the loss against numpy on every training backend, the
teacher's logits as data (the teacher never changes), alpha=0 as plain cross-entropy, the
refusals, and (slow) a half-width LeNet taught by an int8 LeNet on the emulated FPGA."""

from __future__ import annotations

import numpy as np
import pytest

import hal
from hal import nn
from hal.compression.distill_students import half_lenet
from hal.errors import InputError, ModelError, OptionError
from hal.oracle.interpreter import Interpreter
from hal.registry import REGISTRY
from hal.training import build

FEATURES, CLASSES = 12, 4


def mlp(head=None, *, seed=0, hidden=16, features=FEATURES, classes=CLASSES):
    with nn.seed(seed):
        layers = [nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, classes)]
        return nn.Sequential(*layers, *([head] if head else [])).to_model((None, features),
                                                                           name="mlp")


def data(n=48, seed=0, features=FEATURES):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, features), dtype=np.float32), rng.integers(0, CLASSES, n)


def log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def kd_loss(scores, teacher_logits, y, temperature, alpha, probabilities=False):
    """The formula in float64: alpha T^2 KL(p_t || p_s) + (1 - alpha) CE(s, y)."""
    s = np.log(scores.astype(np.float64)) if probabilities else scores.astype(np.float64)
    log_ps = log_softmax(s / temperature)
    log_pt = log_softmax(teacher_logits.astype(np.float64) / temperature)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1).mean()
    ce = -log_softmax(s)[np.arange(len(y)), y].mean()
    return alpha * temperature ** 2 * kl + (1 - alpha) * ce


def usable(device):
    try:
        REGISTRY.resolve(device)
    except hal.errors.HalError as exc:
        pytest.skip(f"{device} is not usable here: {exc}")


def weights(model):
    return {k: v.const_value.numpy() for k, v in model.graph.initializers.items()}


@pytest.mark.parametrize("head, probabilities", [(None, False), (nn.LogSoftmax(dim=1), False),
                                                 (nn.Softmax(dim=1), True)])
def test_the_training_graph_computes_the_formula(head, probabilities):
    model = mlp(head)
    tg = build(model, "distill", loss_options={"temperature": 3.0, "alpha": 0.7})
    assert [v.name for v in tg.model.graph.inputs] == ["input", "target", "teacher_logits"]
    x, y = data()
    t = np.random.default_rng(1).standard_normal((len(y), CLASSES)).astype(np.float32) * 3
    loss, scores = Interpreter(tg.model.graph)([x, y, t])
    assert abs(float(loss) - kd_loss(scores, t, y, 3.0, 0.7, probabilities)) < 1e-5


@pytest.mark.parametrize("trains_on", ["cpu@torch", "cpu@jax", "cpu@tf"])
def test_one_batch_loss_is_the_numpy_formula_on_each_backend(trains_on):
    usable(trains_on)
    model, (x, y) = mlp(nn.LogSoftmax(dim=1)), data()
    t = np.random.default_rng(2).standard_normal((len(y), CLASSES)).astype(np.float32) * 4
    scores = hal.compile(model, "cpu@reference")(x)[0]
    result = hal.train(model, {"input": x, "target": y, "teacher_logits": t}, device=trains_on,
                       loss="distill", loss_options={"temperature": 2.5, "alpha": 0.6},
                       epochs=1, batch_size=len(y), progress=False)
    # the one step's loss is computed on the initial weights, before the update
    assert abs(result.history[0]["loss"] - kd_loss(scores, t, y, 2.5, 0.6)) < 1e-5


@pytest.mark.parametrize("trains_on", ["cpu@torch", "cpu@jax"])
def test_distill_feeds_the_teachers_logits_and_leaves_every_input_alone(trains_on):
    usable(trains_on)
    teacher, student, (x, y) = mlp(seed=5, hidden=32), mlp(nn.LogSoftmax(dim=1)), data()
    digests, x0, y0 = (teacher.digest(), student.digest()), x.copy(), y.copy()
    options = dict(device=trains_on, epochs=2, batch_size=16, lr=1e-2, seed=3, progress=False)
    got = hal.distill(teacher, student, (x, y), teacher_device="cpu@reference",
                      temperature=2.0, alpha=0.8, **options)
    assert (teacher.digest(), student.digest()) == digests  # the teacher is never trained
    assert np.array_equal(x, x0) and np.array_equal(y, y0)
    t = hal.compile(teacher, "cpu@reference")(x)[0]
    by_hand = hal.train(student, {"input": x, "target": y, "teacher_logits": t},
                        loss="distill", loss_options={"temperature": 2.0, "alpha": 0.8},
                        **options)
    for name, w in weights(by_hand.model).items():
        np.testing.assert_allclose(weights(got.model)[name], w, atol=1e-6, err_msg=name)
    assert weights(got.model).keys() == weights(student).keys()
    assert got.model.compression.teacher_logits == "per sample, before training"


def test_alpha_zero_is_plain_cross_entropy_training():
    teacher, student, (x, y) = mlp(seed=5), mlp(nn.LogSoftmax(dim=1)), data()
    options = dict(device="cpu@torch", epochs=1, batch_size=16, lr=1e-2, seed=1,
                   progress=False)
    usable("cpu@torch")
    got = hal.distill(teacher, student, (x, y), teacher_device="cpu@reference", alpha=0.0,
                      **options)
    plain = hal.train(student, (x, y), loss="cross_entropy", **options)
    for name, w in weights(plain.model).items():
        np.testing.assert_allclose(weights(got.model)[name], w, rtol=0, atol=1e-7,
                                   err_msg=name)


def test_batches_get_the_teachers_logits_as_drawn_and_validation_reports_both():
    usable("cpu@torch")
    teacher, student = mlp(seed=5), mlp()
    x, y = data(64)
    xv, yv = data(40, seed=9)
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    result = hal.distill(teacher, student, batches, device="cpu@torch",
                         teacher_device="cpu@reference", validation=(xv, yv), epochs=1,
                         temperature=2.0, alpha=0.5, progress=False)
    report = result.model.compression
    assert report.teacher_logits == "per batch, as drawn" and result.steps == 4
    t = hal.compile(teacher, "cpu@reference")(xv)[0]
    assert report.teacher_accuracy == pytest.approx(float((t.argmax(1) == yv).mean()))
    scores = hal.compile(result.model, "cpu@reference")(xv)[0]
    record = result.history[-1]
    assert record["val_accuracy"] == pytest.approx(float((scores.argmax(1) == yv).mean()))
    assert record["val_loss"] == pytest.approx(kd_loss(scores, t, yv, 2.0, 0.5), abs=1e-4)
    assert report.student_accuracy == record["val_accuracy"]
    assert "teacher accuracy" in str(report) and report.temperature == 2.0


@pytest.mark.parametrize("options, match", [
    ({"temperature": 0}, "temperature must be a finite number > 0"),
    ({"temperature": -1.0}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"alpha": 1.5}, r"alpha .* in \[0, 1\]"), ({"alpha": -0.1}, "alpha"),
    ({"loss": "nll"}, "sets .*loss.* itself"), ({"workers": 2}, "one worker"),
])
def test_bad_options_are_refused_with_the_fix(options, match):
    teacher, student = mlp(seed=5), mlp()
    with pytest.raises(OptionError, match=match):
        hal.distill(teacher, student, data(), teacher_device="cpu@reference", **options)


def test_incompatible_models_are_refused_naming_the_shapes():
    x, y = data()
    with pytest.raises(ModelError, match=r"same classes on axis 1.*\[N, 4\].*\[N, 3\]"):
        hal.distill(mlp(), mlp(classes=3), (x, y), teacher_device="cpu@reference")
    with pytest.raises(ModelError, match=r"same inputs.*\[N, 8\].*\[N, 12\]"):
        hal.distill(mlp(features=8), mlp(), (x, y), teacher_device="cpu@reference")


def test_the_loss_needs_its_teacher_logits_and_options_of_its_own():
    x, y = data()
    with pytest.raises(InputError, match="teacher_logits"):
        hal.train(mlp(), (x, y), device="cpu@torch", loss="distill", progress=False)
    with pytest.raises(OptionError, match="unknown"):
        build(mlp(), "distill", loss_options={"temperature": 2.0, "beta": 1})
    with pytest.raises(ModelError, match="takes no loss_options"):
        build(mlp(), "cross_entropy", loss_options={"alpha": 0.5})


@pytest.mark.slow
def test_a_half_lenet_taught_by_int8_lenet_on_the_fpga_beats_itself_alone():
    """bench/distill.py's scarce-label setting (--samples 256), one seed: a 256-image transfer
    set, 30 epochs."""
    usable("cpu@torch")
    (x, y), (xt, yt) = hal.data.digits("train", 28), hal.data.digits("test", 28)
    teacher = hal.train(hal.models.get("lenet"), (x, y), device="cpu@torch", epochs=5,
                        batch_size=32, lr=2e-3, schedule="cosine", progress=False).model
    transfer = (x[:256], y[:256])
    options = dict(device="cpu@torch", epochs=30, batch_size=32, lr=2e-3, schedule="cosine",
                   seed=0, progress=False)
    taught = hal.distill(teacher, half_lenet(0), transfer, teacher_device="fpga@emu",
                         teacher_options={"precision": "int8", "calibration": x[:256]},
                         **options)
    alone = hal.train(half_lenet(0), transfer, **options)
    assert taught.model.compression.teacher_precision == "int8"
    accuracy = {name: float((hal.compile(r.model, "cpu@reference")(xt)[0].argmax(1) == yt)
                            .mean()) for name, r in (("taught", taught), ("alone", alone))}
    assert accuracy["taught"] >= accuracy["alone"], accuracy
