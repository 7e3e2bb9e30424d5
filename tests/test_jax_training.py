"""Training on jax: value_and_grad of the shared training function, optax updates,
accumulation, resume, BatchNorm/Dropout in training mode, bf16 and fp16."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

import hal
from hal import nn
from hal.ir.model import from_proto
from hal.errors import DeviceNotFound, InputError, ModelError, OptionError
from hal.oracle.interpreter import Interpreter
from hal.trainer import OptimizerSpec, TrainSpec
from hal.training import build

jax = pytest.importorskip("jax")
pytest.importorskip("optax")

CLASSES = 3


def _skip_unless(device: str):
    try:
        hal.device(device)
        reason = None
    except DeviceNotFound as exc:
        reason = str(exc).splitlines()[0]
    return pytest.mark.skipif(reason is not None, reason=f"{device} unusable: {reason}")


DEVICES = [pytest.param(d, marks=_skip_unless(d)) for d in ("cpu@jax", "gpu@jax", "tpu@jax")]


def plain_cnn(seed: int = 0) -> hal.Model:
    """Conv, both pools and a log-softmax head: no batch statistics, nothing random."""
    with nn.seed(seed):
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, CLASSES),
                            nn.LogSoftmax(dim=1))
    return net.to_model((None, 1, 8, 8))


def bn_dropout_cnn(seed: int = 0, ratio: float = 0.3) -> hal.Model:
    """BatchNorm, then a Dropout node after the pool (hal.nn's Dropout writes none)."""
    with nn.seed(seed):
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, CLASSES))
    proto = net.to_model((None, 1, 8, 8)).to_proto()
    nodes = list(proto.graph.node)
    pool = next(i for i, n in enumerate(nodes) if n.op_type == "MaxPool")
    out = nodes[pool].output[0]
    nodes[pool].output[0] = out + ".kept"
    nodes.insert(pool + 1, helper.make_node("Dropout", [out + ".kept", "ratio"], [out]))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.graph.initializer.append(numpy_helper.from_array(np.asarray(ratio, np.float32), "ratio"))
    return from_proto(proto)


def data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Noise plus a bright quadrant that says the class: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(0, 0.5, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 0, (c // 2) * 4:(c // 2) * 4 + 4, (c % 2) * 4:(c % 2) * 4 + 4] += 1.5
    return x, y


def trainer(graph, device="cpu@jax", **spec):
    opt = spec.pop("optimizer", OptimizerSpec("sgd", lr=0.1, momentum=0.9))
    dev = hal.device(device)
    return dev.backend.compile_training(graph, dev, TrainSpec(opt, **spec))


def batch(graph, x, y) -> dict:
    return {"input": x, graph.target: y}


def _rel(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(b[k])), 1e-12))
               for k in b)


@pytest.mark.parametrize("jax_device", DEVICES)
def test_four_micro_batches_make_the_step_of_one_batch(jax_device):
    graph = build(plain_cnn())
    x, y = data(64)
    whole, parts = trainer(graph, jax_device), trainer(graph, jax_device)
    for _ in range(2):
        whole.step([batch(graph, x, y)], [1.0])
        parts.step([batch(graph, x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)], [0.25] * 4)
    assert _rel(parts.weights(), whole.weights()) < 1e-5
    assert _rel(whole.weights(), {n: graph.model.graph.initializers[n].const_value.numpy()
                                  for n in graph.params}) > 1e-3  # it did move


def test_initial_loss_is_the_oracles_and_evaluate_uses_the_trained_weights():
    graph = build(plain_cnn())
    x, y = data(32)
    oracle = Interpreter(graph.model.graph)([x, y])[0]
    t = trainer(graph)
    losses = [t.step([batch(graph, x, y)], [1.0])[0] for _ in range(5)]
    np.testing.assert_allclose(losses[0], oracle, rtol=1e-5)
    assert losses[-1] < losses[0] * 0.8
    run = Interpreter(graph.eval_model.graph)
    run.constants.update(t.weights())
    np.testing.assert_allclose(t.evaluate({"input": x})[0], run([x])[0], rtol=1e-4, atol=1e-5)


def test_batchnorm_and_dropout_train_and_evaluation_is_deterministic():
    graph = build(bn_dropout_cnn())
    assert graph.updates, "the training graph names BatchNorm's running statistics"
    x, y = data(32)
    t = trainer(graph, optimizer=OptimizerSpec("adamw", lr=1e-2))
    losses = [t.step([batch(graph, x, y)], [1.0])[0] for _ in range(6)]
    assert losses[-1] < losses[0]
    w = t.weights()
    for stat in graph.updates.values():
        initial = graph.model.graph.initializers[stat].const_value.numpy()
        assert not np.allclose(w[stat], initial), f"{stat} did not change"
    first, again = t.evaluate({"input": x})[0], t.evaluate({"input": x})[0]
    np.testing.assert_array_equal(first, again)
    run = Interpreter(graph.eval_model.graph)  # BatchNorm on running stats, Dropout off
    run.constants.update(w)
    np.testing.assert_allclose(first, run([x])[0], rtol=1e-4, atol=1e-4)


def test_dropout_masks_follow_the_seed_and_the_step():
    graph = build(bn_dropout_cnn())
    x, y = data(16)
    t = trainer(graph)
    start = t.state()

    def losses(state):
        t.load_state(state)
        return [t.step([batch(graph, x, y)], [1.0])[0] for _ in range(2)]

    same = losses(start)
    assert losses(start) == same
    assert losses({**start, "rng/seed": np.asarray(1, np.int64)}) != same


def test_resume_continues_exactly():
    graph = build(bn_dropout_cnn())
    x, y = data(48)
    opt = OptimizerSpec("adamw", lr=1e-2, schedule="cosine", warmup_steps=2, total_steps=6,
                        clip_norm=1.0)
    batches = [batch(graph, x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)]
    straight = trainer(graph, optimizer=opt, seed=3)
    for b in batches:
        straight.step([b], [1.0])
    saved = straight.state()
    for b in batches:
        straight.step([b], [1.0])
    assert saved["step"] == 3 and any(k.startswith("opt/") for k in saved)
    resumed = trainer(graph, optimizer=opt, seed=99)  # the state's seed wins
    resumed.load_state(saved)
    for b in batches:
        resumed.step([b], [1.0])
    assert _rel(resumed.weights(), straight.weights()) < 1e-6


def test_a_state_that_does_not_fit_is_refused_by_name():
    graph = build(plain_cnn())
    t = trainer(graph)
    state = t.state()
    name = f"param/{graph.params[0]}"
    bad = dict(state, **{name: np.zeros((2, 2), np.float32)})
    with pytest.raises(InputError, match=name):
        t.load_state(bad)
    with pytest.raises(InputError, match="'step' is missing"):
        t.load_state({k: v for k, v in state.items() if k != "step"})


def test_bf16_trains_with_fp32_master_weights():
    graph = build(plain_cnn())
    x, y = data(32)
    oracle = Interpreter(graph.model.graph)([x, y])[0]
    t = trainer(graph, precision="bf16")
    losses = [t.step([batch(graph, x, y)], [1.0])[0] for _ in range(5)]
    np.testing.assert_allclose(losses[0], oracle, rtol=2e-2)
    assert losses[-1] < losses[0] * 0.8
    assert all(v.dtype == np.float32 for v in t.weights().values())
    assert t.evaluate({"input": x})[0].dtype == np.float32  # computed in bf16, given as fp32


def test_fp16_is_for_gpus_and_unknown_options_are_refused():
    graph = build(plain_cnn())
    with pytest.raises(OptionError, match="bf16"):
        trainer(graph, precision="fp16")
    with pytest.raises(OptionError, match="no backend options"):
        trainer(graph, extra={"xla": True})


def test_fp16_loss_scaling_skips_an_overflowed_update():
    """The fp16 path itself, on the CPU (which hal.train refuses for speed, not sense)."""
    import jax.numpy as jnp

    from hal.backends.jax_backend.optim import LossScale
    from hal.backends.jax_backend.trainer import JaxTrainer

    graph = build(plain_cnn())
    x, y = data(16)
    dev = hal.device("cpu@jax")
    t = JaxTrainer(dev, graph, TrainSpec(OptimizerSpec("sgd", lr=0.1), precision="fp16"),
                   dev.backend.jax_device(dev), jnp.float16)
    t.step([batch(graph, x, y)], [1.0])
    state = t.state()
    assert state["scale/scale"] == LossScale.INITIAL and state["scale/good_steps"] == 1
    before = t.weights()
    t.scaler = jax.device_put(LossScale(jnp.float32(3e38), jnp.int32(0)), t.jdev)  # overflows
    t.step([batch(graph, x, y)], [1.0])
    assert float(t.scaler.scale) == pytest.approx(1.5e38)
    assert _rel(t.weights(), before) == 0


def test_loss_scale_grows_after_a_run_of_finite_steps():
    import jax.numpy as jnp

    from hal.backends.jax_backend.optim import LossScale

    s = LossScale(jnp.float32(8.0), jnp.int32(LossScale.GROWTH_INTERVAL - 1))
    grown = s.adjust(jnp.bool_(True))
    assert float(grown.scale) == 16.0 and int(grown.good_steps) == 0
    assert float(LossScale(jnp.float32(1.0), jnp.int32(5)).adjust(jnp.bool_(False)).scale) == 1.0


def test_bad_batches_are_input_errors():
    graph = build(plain_cnn())
    t = trainer(graph)
    x, y = data(4)
    with pytest.raises(InputError, match="missing"):
        t.step([{"input": x}], [1.0])
    with pytest.raises(InputError, match="shape"):
        t.step([batch(graph, x[:, :, :4], y)], [1.0])
    with pytest.raises(InputError, match="int64"):
        t.step([batch(graph, x, y.astype(np.float32))], [1.0])
    with pytest.raises(InputError, match="one weight per micro-batch"):
        t.step([batch(graph, x, y)], [0.5, 0.5])


def test_a_graph_that_breaks_the_contract_is_a_model_error():
    graph = build(plain_cnn())
    graph.loss = "nope"
    with pytest.raises(ModelError, match="'nope' is not a graph output"):
        trainer(graph)


# -- optax against torch.optim: the same names mean the same update ------------------
@pytest.mark.parametrize("spec", [
    OptimizerSpec("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    OptimizerSpec("sgd", lr=0.05),
    OptimizerSpec("adam", lr=0.01, weight_decay=0.1),
    OptimizerSpec("adamw", lr=0.01, weight_decay=0.1, betas=(0.8, 0.99)),
], ids=["sgd-nesterov-l2", "sgd", "adam-l2", "adamw"])
def test_optimizers_update_as_torch_optim_does(spec):
    torch = pytest.importorskip("torch")
    import optax

    from hal.backends.jax_backend.optim import optimizer

    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5,)).astype(np.float32)
    grads = [rng.normal(size=(5,)).astype(np.float32) for _ in range(4)]
    tx = optimizer(spec)
    w, state = jax.numpy.asarray(w0), tx.init(jax.numpy.asarray(w0))
    for g in grads:
        upd, state = tx.update(jax.numpy.asarray(g), state, w)
        w = optax.apply_updates(w, upd)
    p = torch.nn.Parameter(torch.tensor(w0))
    kw = {"lr": spec.lr, "weight_decay": spec.decay}
    if spec.name == "sgd":
        opt = torch.optim.SGD([p], momentum=spec.momentum, nesterov=spec.nesterov, **kw)
    else:
        cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
        opt = cls([p], betas=spec.betas, eps=spec.eps, **kw)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(np.asarray(w), p.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", [
    OptimizerSpec(schedule="step", step_size=3, gamma=0.5, warmup_steps=2),
    OptimizerSpec(schedule="cosine", total_steps=10, warmup_steps=3),
    OptimizerSpec(schedule="constant", warmup_steps=4),
])
def test_schedules_are_lr_at(spec):
    from hal.backends.jax_backend.optim import schedule

    fn = schedule(spec)
    for step in range(14):
        assert float(fn(step)) == pytest.approx(spec.lr_at(step), rel=1e-5, abs=1e-9)


def test_cosine_without_total_steps_is_refused():
    from hal.backends.jax_backend.optim import schedule

    with pytest.raises(OptionError, match="total_steps"):
        schedule(OptimizerSpec(schedule="cosine"))
