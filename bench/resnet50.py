"""ResNet-50 with seeded random weights, from the graph the onnx package ships.

    python bench/resnet50.py [OUT.onnx]

The onnx package carries ResNet-50's graph as a "light" test model
(``onnx/backend/test/data/light/light_resnet50.onnx``, opset 9, input 1x3x224x224): every
weight there is a ``ConstantOfShape`` filling a tensor with 0.02. Here each one becomes an
initializer of seeded random values -- He-scaled convolution and dense weights, batch-norm
statistics near the identity, damped scales -- and the result is loaded into HAL's opset.
The numbers are those of an untrained network (for timing and agreement, not accuracy).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAME = "resnet50"


def source_path() -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend/test/data/light/light_resnet50.onnx"


def random_weights(proto, seed: int = 0):
    """``proto`` (modified in place) with its ConstantOfShape weights as random initializers."""
    from onnx import numpy_helper

    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in proto.graph.initializer}
    keep, made = [], []
    for node in proto.graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            keep.append(node)
            continue
        shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
        made.append(numpy_helper.from_array(_weight(node.output[0], shape, rng),
                                            node.output[0]))
    shapes = {n.input[0] for n in proto.graph.node if n.op_type == "ConstantOfShape"}
    kept_inits = [t for t in proto.graph.initializer if t.name not in shapes]
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept_inits + made)
    weights = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights and i.name not in shapes]
    del proto.graph.input[:]
    proto.graph.input.extend(inputs)
    proto.ir_version = max(proto.ir_version, 4)  # initializers need not be graph inputs
    return proto


def _weight(name: str, shape: tuple, rng) -> np.ndarray:
    if name.endswith("_bn_s_0"):  # batch-norm scale: damped, so the residual sums stay small
        return rng.uniform(0.3, 0.6, shape).astype(np.float32)
    if name.endswith(("_bn_b_0", "_b_0")):
        return (0.05 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith("_bn_rm_0"):
        return (0.05 * rng.standard_normal(shape)).astype(np.float32)
    if name.endswith("_bn_riv_0"):
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def model(seed: int = 0):
    """ResNet-50 (random weights, batch 1) as a hal.Model named "resnet50"."""
    import onnx

    import hal

    proto = random_weights(onnx.load(str(source_path())), seed)
    return hal.load(proto.SerializeToString(), name=NAME)


def main(argv=None) -> int:
    import hal

    out = (argv or sys.argv[1:] or [f"{NAME}.onnx"])[0]
    m = model()
    hal.save(m, out)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB): inputs "
          f"{', '.join(str(s) for s in m.inputs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
