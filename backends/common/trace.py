"""The interpreter a tracing backend's function runs: a plan's steps, once per trace.

``traced_function(plan, cx, ...)`` is the Python function handed to ``jax.jit`` or
``tf.function``: each call walks the plan with a ``Trace``, so the framework records the
kernels' ops. A backend with its own layout handling subclasses ``Trace`` (tf's channels-last
trace) and passes the subclass.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from hal.backends.common.context import HOST_TYPES, Context
from hal.backends.common.lowering import SHAPE_ONLY, Plan, Step
from hal.errors import BackendError


class Trace:
    """Values by name during one trace, and the step-by-step evaluation."""

    def __init__(self, plan: Plan, cx: Context, values: dict[str, Any]):
        self.plan = plan
        self.cx = cx
        self.env = values

    def value(self, name: str) -> Any:
        """The value of ``name`` in ONNX's layout."""
        return self.env[name]

    def run(self) -> tuple:
        for step in self.plan.steps:
            self.step(step)
        return tuple(self.cx.output(self.value(n), dt)
                     for n, dt in zip(self.plan.output_names, self.plan.output_dtypes))

    def step(self, step: Step) -> None:
        args = [self.value(n) if n else None for n in step.inputs]
        self.store(step, self.call(step, args))

    def call(self, step: Step, args: list) -> Any:
        try:
            if step.static:
                return self.static_eval(step, args)
            return step.kernel(self.cx, *args, **step.attrs)
        except Exception as exc:
            raise self.error(step, args, exc) from exc

    def static_eval(self, step: Step, args: list) -> Any:
        """A step whose inputs are all known while tracing: computed in numpy, not traced."""
        from hal.oracle import OPS

        cx = self.cx
        if step.op in SHAPE_ONLY or any(a is not None and not isinstance(a, HOST_TYPES)
                                        for a in args):
            # a Shape of a dynamic dim is a framework value: what depends on it is traced too
            return step.kernel(cx, *args, **step.attrs)
        if step.op in OPS and "wanted" not in step.attrs and not _oracle_declines(step):
            return OPS[step.op](*args, **step.attrs)
        with cx.compile_time():  # eagerly, outside the trace
            res = step.kernel(cx, *args, **step.attrs)
            if isinstance(res, (tuple, list)):
                return tuple(cx.host(r) for r in res)
            return cx.host(res)

    def store(self, step: Step, res: Any) -> None:
        if not isinstance(res, tuple):
            res = (res,)
        dtypes = self.plan.dtypes
        for name, val in zip(step.outputs, res):
            if name:
                if step.static and dtypes.get(name) is not None and \
                        isinstance(val, (np.ndarray, np.generic)):
                    val = np.asarray(val).astype(dtypes[name], copy=False)
                self.env[name] = val

    def error(self, step: Step, args: list, exc: Exception) -> BackendError:
        node, backend = step.node, self.cx.backend
        if isinstance(exc, BackendError):
            return BackendError(f"{backend} cannot run node {node.name!r} ({step.op}): {exc}")
        shapes = [None if a is None else tuple(getattr(a, "shape", ())) for a in args]
        return BackendError(f"{backend} failed in node {node.name!r} ({step.op}) on inputs of "
                            f"shapes {shapes}: {type(exc).__name__}: {exc}")


def traced_function(plan: Plan, cx: Context, static_values: dict[str, np.ndarray],
                    trace: type[Trace] = Trace) -> Callable:
    """``f(params, *dynamic_inputs) -> tuple`` with the static inputs' values baked in."""
    dynamic = [plan.input_names[i] for i in plan.dynamic_inputs]

    def f(params, *xs):
        plan.traces += 1  # runs once per trace, i.e. once per new input signature
        values: dict[str, Any] = dict(plan.consts)
        values.update(static_values)
        values.update(zip(plan.param_names, params))
        values.update((name, cx.enter(x)) for name, x in zip(dynamic, xs))
        return trace(plan, cx, values).run()

    return f


def _oracle_declines(step: Step) -> bool:
    """A Cast to a type numpy lacks (bfloat16, float8): the framework's kernel computes it."""
    from hal.oracle.tensor import CAST_DTYPES

    return step.op == "Cast" and step.attrs.get("to") not in CAST_DTYPES
