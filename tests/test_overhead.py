"""The fast call path (hal.compiler.CompiledModel): a call whose inputs are like the last
verified call's skips the checks, yet every wrong input and every wrong backend output is
still caught the first time it appears. (Its speed is measured by bench/overhead.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import hal
from hal.backend import Executable, HostBuffer
from hal.backends.reference import ReferenceBackend


class _NarrowsAtBatch3(Executable):
    def __init__(self, inner):
        super().__init__(inner.device, inner.input_names, inner.output_names)
        self.inner = inner

    def run(self, buffers):
        outs = self.inner.run(buffers)
        if buffers[0].shape[0] == 3:
            return [HostBuffer(o.numpy()[:, :5], self.device) for o in outs]
        return outs


class Narrowing(ReferenceBackend):
    name = "narrowing"
    priority = -50

    def compile(self, model, device, options):
        return _NarrowsAtBatch3(super().compile(model, device, options))


@pytest.fixture
def lenet():
    return hal.compile("lenet", "cpu@reference")


def test_wrong_inputs_are_caught_after_a_good_call(lenet):
    x = hal.models.example_input("lenet", 2)
    want = lenet(x)[0]
    np.testing.assert_array_equal(lenet(x)[0], want)  # the fast path: same answer
    with pytest.raises(hal.InputError, match="dtype float64"):
        lenet(x.astype(np.float64))
    with pytest.raises(hal.InputError, match="shape"):
        lenet(x[:, :, :20])
    with pytest.raises(hal.InputError, match="numpy array or hal Buffer"):
        lenet(x.tolist())
    with pytest.raises(hal.InputError, match="takes 1 input"):
        lenet(x, x)
    np.testing.assert_array_equal(lenet(x)[0], want)
    assert lenet(x[:1])[0].shape == (1, 10)  # another batch: checked, then fast
    np.testing.assert_array_equal(lenet.run([lenet.device.put(x)])[0].numpy(), want)


def test_a_wrong_output_shape_is_caught_for_each_new_input_shape():
    hal.register_backend(Narrowing, replace=True)
    try:
        compiled = hal.compile("lenet", "cpu@narrowing")
        for _ in range(2):
            assert compiled(hal.models.example_input("lenet", 2))[0].shape == (2, 10)
        with pytest.raises(hal.BackendError, match="returned shape \\[3, 5\\]"):
            compiled(hal.models.example_input("lenet", 3))
        with pytest.raises(hal.BackendError, match="returned shape"):  # not remembered as good
            compiled(hal.models.example_input("lenet", 3))
    finally:
        hal.registry.REGISTRY.unregister("narrowing")
