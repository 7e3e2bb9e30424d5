"""Capability partitioning, visible fallback, transfer accounting, device-resident runs."""

from __future__ import annotations

import numpy as np
import pytest

import hal
from hal import nn
from hal.backend import Claim
from hal.backends.reference import ReferenceBackend
from hal.device import DeviceInfo
from hal.nn import functional as F
from hal.registry import REGISTRY
from tests.toy import toy  # noqa: F401  (fixture)


def test_partial_device_falls_back_and_agrees(toy):
    model = hal.models.get("resnet_lite")
    with pytest.warns(UserWarning, match="fallback"):
        compiled = hal.compile(model, "toy")
    devices = {s.device.string for s in compiled.segments}
    assert devices == {"toy:0@toy", hal.device("cpu").string}
    assert set(compiled.placement) == {n.name for n in compiled.model.graph}
    x = hal.models.example_input("resnet_lite", 3)
    y = compiled(x)[0]
    ref = hal.compile(model, "cpu@reference")(x)[0]
    assert np.max(np.abs(y - ref)) <= 1e-5
    t = compiled.last_transfers
    assert t.h2d_count > 0 and t.d2h_count > 0 and t.bytes > x.nbytes
    rep = compiled.report()
    assert rep["fallbacks"] and all(f["reason"] for f in rep["fallbacks"])
    assert rep["transfers"]["last_call"]["bytes"] == t.bytes


def test_strict_fallback_names_op_and_capable_devices(toy):
    with pytest.raises(hal.UnsupportedOp) as e:
        hal.compile(hal.models.get("resnet_lite"), "toy", fallback=None)
    msg = str(e.value)
    # BatchNorm is folded into the convs by the flow, so the residual Add is the first op
    assert "(op Add)" in msg and "toy:0@toy" in msg and "cpu:0@reference" in msg


def test_cheap_island_stays_on_fallback(toy):
    w = np.ones((4, 2, 3, 3), np.float32)

    def net(x):
        y = F.sigmoid(F.conv2d(x, w))   # Conv on toy, Sigmoid on cpu
        y = F.relu(y)                   # a lone cheap op toy could run: not worth two copies
        return F.tanh(y)

    compiled = hal.compile(nn.trace(net, (None, 2, 5, 5)), "toy")
    relu = [n.name for n in compiled.model.graph if n.op_type == "Relu"][0]
    conv = [n.name for n in compiled.model.graph if n.op_type == "Conv"][0]
    assert compiled.placement[conv] == "toy:0@toy"
    assert compiled.placement[relu] == hal.device("cpu").string


def test_run_buffers_stays_on_device(toy):
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    compiled = hal.compile(net, "toy", input_shape=(None, 16))
    assert [s.device.string for s in compiled.segments] == ["toy:0@toy"]
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    buf = toy.put(x)
    before = toy.transfers.copy()
    out1 = compiled.run([buf])
    out2 = compiled.run(out1)  # feed the device-resident output straight back
    assert compiled.last_transfers.count == 0
    assert (toy.transfers - before).count == 0
    ref = hal.compile(net, "cpu@reference", input_shape=(None, 16))
    np.testing.assert_allclose(out2[0].numpy(), ref(ref(x)[0])[0], atol=1e-5)
    assert (toy.transfers - before).d2h_count == 1  # only the explicit .numpy() above


def test_numpy_in_numpy_out_on_device(toy):
    net = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    compiled = hal.compile(net, "toy", input_shape=(None, 8))
    y = compiled(np.ones((2, 8), np.float32))
    assert isinstance(y[0], np.ndarray)
    assert compiled.last_transfers.h2d_count == 1 and compiled.last_transfers.d2h_count == 1


def test_buffer_round_trip(toy):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = toy.put(x)
    assert b.shape == (3, 4) and b.dtype == np.float32 and b.device is toy
    np.testing.assert_array_equal(b.numpy(), x)
    on_cpu = b.to(hal.device("cpu@reference"))
    np.testing.assert_array_equal(on_cpu.numpy(), x)
    assert on_cpu.to(toy).to(toy).numpy().tolist() == x.tolist()
    x[0, 0] = 99  # the device copy is independent of the user's array
    assert b.numpy()[0, 0] == 0


# -- claims over whole graphs ------------------------------------------------------------------

class Grouped(ReferenceBackend):
    """The reference kernels behind a claim() the test chooses (``claimer(graph)``)."""

    name = "grouped"
    kinds = ("grp",)
    claimer = None

    def probe(self):
        return [DeviceInfo("grp", 0, self.name, name="reference kernels, claimed by group")]

    def claim(self, graph, device):
        return self.claimer(graph)


@pytest.fixture
def grouped():
    backend = hal.register_backend(Grouped())
    try:
        yield backend
    finally:
        REGISTRY.unregister("grouped")


def _only(*ops):
    """A claimer: the nodes of ``ops`` as one group, every other node refused."""
    def claimer(graph):
        group = [n for n in graph if n.op_type in ops]
        return [Claim(group)] + [Claim([n], "not in the group") for n in graph
                                 if n.op_type not in ops]
    return claimer


W1 = np.random.default_rng(1).standard_normal((3, 2, 3, 3)).astype(np.float32)
W2 = np.random.default_rng(2).standard_normal((3, 2, 3, 3)).astype(np.float32)


def test_claimed_group_is_moved_together(grouped):
    def net(x):
        a = F.conv2d(x, W1)
        b = F.conv2d(x, W2)
        return F.relu(a) + b  # traced as conv, conv, relu, add: the group {conv, relu} apart

    model = nn.trace(net, (None, 2, 5, 5))
    first = next(n.name for n in model.graph if n.op_type == "Conv")
    grouped.claimer = lambda g: _group_of(g, first)
    with pytest.warns(UserWarning, match="fallback"):
        compiled = hal.compile(model, "grp", opt_level=0)
    order = [(n.op_type, compiled.placement[n.name]) for n in compiled.model.graph]
    cpu = hal.device("cpu").string
    assert order == [("Conv", "grp:0@grouped"), ("Relu", "grp:0@grouped"),
                     ("Conv", cpu), ("Add", cpu)]
    assert [s.device.string for s in compiled.segments] == ["grp:0@grouped", cpu]
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    ref = hal.compile(model, "cpu@reference")(x)[0]
    np.testing.assert_allclose(compiled(x)[0], ref, atol=1e-5)


def _group_of(graph, conv_name):
    """The Conv named ``conv_name`` with the Relu reading it as one group; the rest refused."""
    conv = next(n for n in graph if n.name == conv_name)
    relu = next(n for n in graph if n.op_type == "Relu")
    rest = [n for n in graph if n is not conv and n is not relu]
    return [Claim([conv, relu])] + [Claim([n], "not in the group") for n in rest]


def test_group_that_cannot_be_one_unit_names_backend_and_nodes(grouped):
    def net(x):
        a = F.conv2d(x, W1)
        return a + F.sigmoid(a)  # conv -> sigmoid -> add leaves {conv, add} and comes back

    grouped.claimer = _only("Conv", "Add")
    with pytest.raises(hal.BackendError) as e:
        hal.compile(nn.trace(net, (None, 2, 5, 5)), "grp", opt_level=0)
    msg = str(e.value)
    assert "'grouped'" in msg and "Conv" in msg and "Add" in msg and "one unit" in msg


@pytest.mark.parametrize("claimer, why", [
    (lambda g: 1 / 0, "claim() of backend 'grouped' raised ZeroDivisionError"),
    (lambda g: [Claim(list(nn.trace(F.relu, (None, 4)).graph))], "not in the graph"),
    (lambda g: [Claim(list(g)), Claim(list(g)[:1])], "twice"),
    (lambda g: ["Conv"], "not a hal.backend.Claim"),
])
def test_broken_claim_falls_back_saying_why(grouped, claimer, why):
    grouped.claimer = claimer
    model = nn.trace(lambda x: F.relu(F.conv2d(x, W1)), (None, 2, 5, 5))
    with pytest.warns(UserWarning, match="fallback"):
        compiled = hal.compile(model, "grp", opt_level=0)
    assert {s.device.string for s in compiled.segments} == {hal.device("cpu").string}
    assert all(why in f["reason"] for f in compiled.report()["fallbacks"])
    with pytest.raises(hal.UnsupportedOp, match=why.replace("(", r"\(").replace(")", r"\)")):
        hal.compile(model, "grp", opt_level=0, fallback=None)


def test_broken_fallback_claim_is_named_in_the_error(toy, grouped):
    grouped.claimer = lambda g: 1 / 0
    model = nn.trace(lambda x: F.sigmoid(F.conv2d(x, W1)), (None, 2, 5, 5))
    with pytest.raises(hal.UnsupportedOp) as e:
        hal.compile(model, "toy", opt_level=0, fallback="grp")
    assert "(op Sigmoid)" in str(e.value)
    assert "claim() of backend 'grouped' raised ZeroDivisionError" in str(e.value)


def test_default_claim_is_supports_per_node():
    class Picky(ReferenceBackend):
        def supports(self, node, device):
            if node.op_type == "Relu":
                raise RuntimeError("no relu today")
            return "no sigmoid" if node.op_type == "Sigmoid" else True

    graph = nn.trace(lambda x: F.sigmoid(F.relu(F.conv2d(x, W1))), (None, 2, 5, 5)).graph
    claims = Picky().claim(graph, None)
    assert [c.nodes for c in claims] == [[n] for n in graph]
    assert [c.reason for c in claims] == [None, "supports() raised RuntimeError: no relu today",
                                          "no sigmoid"]
