"""Runs an IR graph node by node with the oracle's numpy kernels.

Used by the ``cpu@reference`` backend, by calibration (statistics of a float model) and by
anything else in HAL that needs the exact numbers of a graph without choosing a device.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import onnx_ir as ir

from hal.errors import BackendError
from hal.ir.attributes import attributes
from hal.oracle import OPS


class Interpreter:
    """A graph prepared once (kernels and attributes looked up), run on numpy arrays."""

    def __init__(self, graph: ir.Graph, where: str = "cpu@reference"):
        self.where = where
        self.input_names = [v.name for v in graph.inputs if v.name not in graph.initializers]
        self.output_names = [v.name for v in graph.outputs]
        self.constants = {name: v.const_value.numpy() for name, v in graph.initializers.items()
                          if v.const_value is not None}
        self.plan: list[tuple[ir.Node, Callable, list, list, dict, list]] = []
        last_use: dict[str, int] = {}
        for i, node in enumerate(graph):
            fn = OPS.get(node.op_type)
            if fn is None:
                raise BackendError(f"{where} has no kernel for {node.op_type} "
                                   f"(node {node.name!r})")
            ins = [v.name if v is not None else None for v in node.inputs]
            outs = [v.name for v in node.outputs]
            self.plan.append((node, fn, ins, outs, attributes(node), []))
            last_use.update((n, i) for n in ins + outs if n)
        # intermediates are dropped after their last use, so a big model's peak memory is
        # its live values, not every value it ever computed
        keep = set(self.output_names) | set(self.input_names) | set(self.constants)
        for name, i in last_use.items():
            if name not in keep:
                self.plan[i][5].append(name)

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        env: dict[str, np.ndarray] = dict(self.constants)
        env.update(zip(self.input_names, inputs))
        for node, fn, ins, outs, attrs, dead in self.plan:
            args = [env[n] if n else None for n in ins]
            try:
                res = fn(*args, **attrs)
            except BackendError:
                raise
            except Exception as exc:
                shapes = [None if a is None else getattr(a, "shape", None) for a in args]
                raise BackendError(f"{self.where} failed in node {node.name!r} ({node.op_type}) "
                                   f"on inputs of shapes {shapes}: {type(exc).__name__}: {exc}") \
                    from exc
            if not isinstance(res, tuple):
                res = (res,)
            for name, val in zip(outs, res):
                if name:
                    env[name] = val
            for name in dead:
                env.pop(name, None)
        return [np.asarray(env[n]) for n in self.output_names]


def evaluate(node: ir.Node, args: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """The outputs of one node on constant inputs (constant folding)."""
    res = OPS[node.op_type](*args, **attributes(node))
    return [np.asarray(a) for a in (res if isinstance(res, (tuple, list)) else [res])]
