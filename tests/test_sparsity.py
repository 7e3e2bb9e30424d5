"""hal.sparsify and the Sparsity training callback, checked against counts made by hand in
numpy, cpu@reference and runs without the callback."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import hal
from hal.compression import Sparsity
from hal.compression.sparsity import sparsity_of
from hal.compression.sparsity_schedule import polynomial_sparsity
from hal.errors import OptionError
from hal.training.callbacks import Callback

LENET_WEIGHTS = {"0.weight": 1, "2.weight": 1, "5.weight": 1, "7.weight": 1}  # name -> K axis


@pytest.fixture(scope="module")
def lenet():
    return hal.models.get("lenet")


def initializers(model: hal.Model) -> dict[str, np.ndarray]:
    return {n: v.const_value.numpy().copy() for n, v in model.graph.initializers.items()}


def groups(w: np.ndarray, axis: int, m: int = 4) -> np.ndarray:
    """``w``'s groups of m consecutive entries along ``axis``, one per row."""
    return np.moveaxis(w, axis, -1).reshape(-1, m)


def matmul_gemm_model(seed: int = 0) -> hal.Model:
    """x[N, 8] -> MatMul W1[8, 12] (K on axis 0) -> Gemm W2[12, 4] transB=0 (+ bias)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 12)).astype(np.float32)
    w2 = rng.standard_normal((12, 4)).astype(np.float32)
    b2 = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
         helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], name="gemm")], "mg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(b2, "b2")])
    return hal.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))


# -- hal.sparsify -------------------------------------------------------------------------

def test_global_half_prunes_exactly_half_and_only_the_smallest(lenet):
    before = initializers(lenet)
    sparse = hal.sparsify(lenet, sparsity=0.5)
    after = initializers(sparse)
    size = sum(before[n].size for n in LENET_WEIGHTS)
    zeros = sum(int((after[n] == 0).sum()) for n in LENET_WEIGHTS)
    assert zeros == size // 2 == 215250
    pruned = np.concatenate([np.abs(before[n][after[n] == 0]) for n in LENET_WEIGHTS])
    kept = np.concatenate([np.abs(before[n][after[n] != 0]) for n in LENET_WEIGHTS])
    assert pruned.max() <= kept.min()  # one threshold over every weight
    for n in LENET_WEIGHTS:  # kept weights keep their values; biases are untouched
        np.testing.assert_array_equal(after[n][after[n] != 0], before[n][after[n] != 0])
        np.testing.assert_array_equal(after[n.replace("weight", "bias")],
                                      before[n.replace("weight", "bias")])


def test_layer_scope_prunes_half_of_each_weight(lenet):
    before = initializers(lenet)
    after = initializers(hal.sparsify(lenet, sparsity=0.5, scope="layer"))
    for n in LENET_WEIGHTS:
        assert (after[n] == 0).sum() == int(np.floor(before[n].size * 0.5 + 0.5)), n
        assert np.abs(before[n][after[n] == 0]).max() <= np.abs(before[n][after[n] != 0]).min()


def test_2_4_keeps_the_two_largest_of_every_four_input_channels(lenet):
    before = initializers(lenet)
    sparse = hal.sparsify(lenet, pattern="2:4")
    after = initializers(sparse)
    for n in ("2.weight", "5.weight", "7.weight"):
        g_before, g_after = groups(before[n], 1), groups(after[n], 1)
        assert ((g_after == 0).sum(axis=1) >= 2).all(), n
        for row_before, row_after in zip(g_before[:200], g_after[:200]):
            largest = sorted(range(4), key=lambda i: -abs(row_before[i]))[:2]
            assert sorted(np.flatnonzero(row_after)) == sorted(largest)
    # LeNet's first conv reads 1 input channel: it stays dense, and the report says why
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])
    first = next(r for r in sparse.compression.rows if r["weight"] == "0.weight")
    assert "not a multiple of 4" in first["note"]
    assert sparse.compression.total["sparsity"] == 0.5


def test_n_m_runs_along_the_reduction_axis_of_matmul_and_gemm():
    model = matmul_gemm_model()
    after = initializers(hal.sparsify(model, pattern="1:4"))
    # MatMul w1[K=8, N=12] and Gemm w2[K=12, N=4] (transB=0): groups run down axis 0
    for n in ("w1", "w2"):
        assert ((groups(after[n], 0) != 0).sum(axis=1) == 1).all(), n
        assert not ((groups(after[n], 1) != 0).sum(axis=1) == 1).all(), n
    np.testing.assert_array_equal(after["b2"], initializers(model)["b2"])


def test_report_matches_a_hand_count(lenet):
    sparse = hal.sparsify(lenet, sparsity=0.3, exclude=["7.weight"])
    report = sparse.compression
    after = initializers(sparse)
    by_weight = {r["weight"]: r for r in report.rows}
    assert set(by_weight) == set(LENET_WEIGHTS)
    for n in LENET_WEIGHTS:
        zeros = int(np.count_nonzero(after[n] == 0))
        assert (by_weight[n]["count"], by_weight[n]["zeros"]) == (after[n].size, zeros)
    count = sum(after[n].size for n in ("0.weight", "2.weight", "5.weight"))
    assert report.total["count"] == count
    assert report.total["zeros"] == int(np.floor(0.3 * count + 0.5))
    assert report.overall["count"] == count + 5000
    text = str(report)
    assert "5.weight" in text and "excluded" in text and "total pruned" in text
    assert report.to_dict()["total"] == report.total
    sizes = report.file_bytes
    assert sizes["after"]["gzip"] < sizes["before"]["gzip"]
    assert sizes["after"]["raw"] == sizes["before"]["raw"]


def test_exclude_leaves_weights_and_nodes_dense(lenet):
    before = initializers(lenet)
    after = initializers(hal.sparsify(lenet, sparsity=0.9, exclude=["0.*", "7/Gemm"]))
    np.testing.assert_array_equal(after["0.weight"], before["0.weight"])
    np.testing.assert_array_equal(after["7.weight"], before["7.weight"])
    assert (after["5.weight"] == 0).mean() > 0.8
    with pytest.raises(OptionError, match="matches no prunable weight.*5.weight"):
        hal.sparsify(lenet, exclude=["5.wieght"])


@pytest.mark.parametrize("options, fix", [
    ({"sparsity": 1.0}, r"a number in \[0, 1\)"),
    ({"sparsity": -0.1}, r"a number in \[0, 1\)"),
    ({"sparsity": "0.5"}, r"a number in \[0, 1\)"),
    ({"sparsity": True}, r"a number in \[0, 1\)"),
    ({"pattern": "2-4"}, "'N:M' with 0 < N < M"),
    ({"pattern": "4:2"}, "'N:M' with 0 < N < M"),
    ({"pattern": "0:4"}, "'N:M' with 0 < N < M"),
    ({"pattern": "4:4"}, "'N:M' with 0 < N < M"),
    ({"pattern": 24}, "'N:M' with 0 < N < M"),
    ({"scope": "model"}, "'global'.*or 'layer'"),
    ({"pattern": "2:4", "sparsity": 0.75}, "pass one or the other"),
])
def test_bad_options_name_the_fix(lenet, options, fix):
    with pytest.raises(OptionError, match=fix):
        hal.sparsify(lenet, **options)


def test_the_users_model_is_unchanged(lenet):
    digest, before = lenet.digest(), initializers(lenet)
    hal.sparsify(lenet, sparsity=0.5)
    hal.sparsify(lenet, pattern="2:4")
    assert lenet.digest() == digest and lenet.compression is None
    for n, a in initializers(lenet).items():
        np.testing.assert_array_equal(a, before[n])


def test_the_sparse_model_runs_alike_on_reference_and_ort(lenet):
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    dense_out = hal.compile(lenet, "cpu@reference")(x)[0]
    for sparse in (hal.sparsify(lenet, sparsity=0.5), hal.sparsify(lenet, pattern="2:4")):
        ref = hal.compile(sparse, "cpu@reference")(x)[0]
        ort = hal.compile(sparse, "cpu@ort")(x)[0]
        np.testing.assert_allclose(ort, ref, rtol=1e-4, atol=1e-5)
        assert not np.allclose(ref, dense_out)  # the zeros reached the computation


# -- the Sparsity callback ----------------------------------------------------------------

def test_polynomial_schedule_is_tf_mot_polynomial_decay():
    at = [polynomial_sparsity(s, 0.1, 0.8, 10, 110, 3) for s in (0, 10, 60, 110, 500)]
    assert at == pytest.approx([0.1, 0.1, 0.8 + (0.1 - 0.8) * 0.5 ** 3, 0.8, 0.8])


@pytest.mark.parametrize("options, fix", [
    ({"target": 1.0}, r"target .*\[0, 1\)"),
    ({"schedule": "cubic"}, "schedule must be one of"),
    ({"keep": True, "target": 0.5}, "pass no target="),
    ({"frequency": 0}, "frequency must be an int >= 1"),
    ({"pattern": "2:4", "target": 0.8}, "pass one or the other"),
    ({"initial": 0.6, "target": 0.5}, "only rises"),
    ({"scope": "net"}, "'global'"),
])
def test_callback_bad_options_name_the_fix(options, fix):
    with pytest.raises(OptionError, match=fix):
        Sparsity(**options)


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return hal.data.digits("train", size=28), hal.data.digits("test", size=28)


def accuracy(model: hal.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float((hal.compile(model, "cpu@reference")(x)[0].argmax(1) == y).mean())


def zero_fraction(model: hal.Model, names=LENET_WEIGHTS) -> float:
    w = initializers(model)
    return sum(int((w[n] == 0).sum()) for n in names) / sum(w[n].size for n in names)


@pytest.mark.parametrize("trainer", ["cpu@torch", "cpu@jax", "cpu@tf"])
def test_gradual_sparsity_ends_at_the_target_on_every_backend(lenet, digits, trainer):
    (x, y), _ = digits
    cb = Sparsity(target=0.8, frequency=2)
    res = hal.train(lenet, (x[:160], y[:160]), device=trainer, epochs=1, batch_size=16,
                    progress=False, callbacks=[cb])
    assert res.steps == 10
    assert zero_fraction(res.model) == 0.8  # 344,400 of 430,500 weights
    assert sparsity_of(res.model).total["zeros"] == 344400
    assert cb.report.total["sparsity"] == 0.8
    assert zero_fraction(lenet) == 0.0


def test_end_step_past_the_run_is_refused(lenet, digits):
    (x, y), _ = digits
    with pytest.raises(OptionError, match="past this run's last update"):
        hal.train(lenet, (x[:32], y[:32]), device="cpu@torch", batch_size=16, progress=False,
                  callbacks=[Sparsity(end_step=50)])


def test_fine_tuning_a_2_4_model_with_kept_masks_keeps_the_pattern(lenet, digits):
    (x, y), _ = digits
    sparse = hal.sparsify(lenet, pattern="2:4")
    kw = dict(device="cpu@torch", epochs=1, batch_size=32, lr=2e-3, progress=False)
    kept = hal.train(sparse, (x[:256], y[:256]), callbacks=[Sparsity(keep=True)], **kw)
    free = hal.train(sparse, (x[:256], y[:256]), **kw)
    before, after, filled = initializers(sparse), initializers(kept.model), initializers(free.model)
    for n in ("2.weight", "5.weight", "7.weight"):
        np.testing.assert_array_equal(after[n] == 0, before[n] == 0, err_msg=n)
        assert ((groups(after[n], 1) == 0).sum(axis=1) >= 2).all(), n
        assert not np.array_equal(after[n], before[n])  # the kept weights did train
        assert (filled[n] == 0).sum() < (before[n] == 0).sum() // 10  # the oracle: no mask
    with pytest.raises(OptionError, match="they have none"):
        hal.train(lenet, (x[:32], y[:32]), callbacks=[Sparsity(keep=True)], **kw)


def test_a_2_4_pattern_while_training_then_kept_while_fine_tuning_on_jax(lenet, digits):
    (x, y), _ = digits
    kw = dict(device="cpu@jax", epochs=1, batch_size=16, progress=False)
    cb = Sparsity(pattern="2:4", frequency=3)
    pruned = hal.train(lenet, (x[:96], y[:96]), callbacks=[cb], **kw)
    tuned = hal.train(pruned.model, (x[96:192], y[96:192]), callbacks=[Sparsity(keep=True)],
                      **kw)
    before, after = initializers(pruned.model), initializers(tuned.model)
    for n in ("2.weight", "5.weight", "7.weight"):
        assert ((groups(before[n], 1) == 0).sum(axis=1) == 2).all(), n
        np.testing.assert_array_equal(after[n] == 0, before[n] == 0, err_msg=n)
    assert (before["0.weight"] != 0).all()  # one input channel: left dense, and reported
    assert "not a multiple of 4" in cb.report.rows[0]["note"]


def test_a_resumed_run_ends_at_the_weights_of_an_uninterrupted_one(lenet, digits, tmp_path):
    (x, y), _ = digits
    kw = dict(device="cpu@torch", batch_size=16, progress=False, optimizer="sgd", lr=0.05,
              momentum=0.9)
    data = (x[:64], y[:64])
    # masks are recomputed at updates 5, 10, 15 and 16: the resumed run starts at update 9
    # with the masks it rebuilds from the checkpoint
    whole = hal.train(lenet, data, epochs=4, callbacks=[Sparsity(0.6, frequency=5)], **kw)
    first = hal.train(lenet, data, epochs=4, checkpoint_dir=tmp_path, callbacks=[
        Sparsity(0.6, frequency=5), StopAfter(2)], **kw)
    rest = hal.train(lenet, data, epochs=4, checkpoint_dir=tmp_path, resume=True, callbacks=[
        Sparsity(0.6, frequency=5), StopAfter(99)], **kw)
    assert (first.steps, rest.steps, whole.steps) == (8, 16, 16)
    assert zero_fraction(rest.model) == pytest.approx(0.6, abs=1e-6)
    a, b = initializers(whole.model), initializers(rest.model)
    for n in a:
        np.testing.assert_allclose(b[n], a[n], rtol=1e-5, atol=1e-6, err_msg=n)
        np.testing.assert_array_equal(b[n] == 0, a[n] == 0, err_msg=n)


class StopAfter(Callback):
    """Stop the run after ``epochs`` epochs (as an interruption would)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, run, record):
        run.stop = run.epoch >= self.epochs  # epochs done


@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["cpu@torch", "cpu@jax"])
def test_80_percent_sparse_lenet_is_about_as_accurate_as_dense(lenet, digits, trainer):
    (x, y), (xt, yt) = digits
    kw = dict(device=trainer, epochs=3, batch_size=32, lr=2e-3, progress=False)
    dense = hal.train(lenet, (x, y), **kw)
    sparse = hal.train(lenet, (x, y), callbacks=[Sparsity(target=0.8, frequency=20)], **kw)
    assert zero_fraction(sparse.model) == 0.8
    dense_acc, sparse_acc = accuracy(dense.model, xt, yt), accuracy(sparse.model, xt, yt)
    assert dense_acc > 0.9
    assert sparse_acc >= dense_acc - 0.02, (dense_acc, sparse_acc)


@pytest.mark.parametrize("trainer", ["cpu@torch", "cpu@jax", "cpu@tf"])
def test_set_params_writes_only_the_parameters_named(lenet, digits, trainer):
    (x, y), _ = digits
    seen = {}

    class Probe(Callback):
        def on_step_end(self, run):
            if run.step != 1:
                return
            t = run.trainer
            before = t.state()
            zeros = np.zeros_like(t.weights()["2.weight"])
            t.set_params({"2.weight": zeros})
            after = t.state()
            seen["written"] = after["param/2.weight"]
            seen["others"] = all(np.array_equal(before[k], after[k]) for k in before
                                 if k != "param/2.weight")
            with pytest.raises(hal.errors.InputError, match="no trainable parameter"):
                t.set_params({"nothing": zeros})

    hal.train(lenet, (x[:64], y[:64]), device=trainer, epochs=1, batch_size=32,
              progress=False, callbacks=[Probe()])
    assert not seen["written"].any() and seen["others"]  # optimizer state and step as they were
