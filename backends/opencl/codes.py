"""The numeric codes the OpenCL kernels switch on, given to every program as ``-D`` defines.

The kernel sources name the codes (``ACT_RELU``, ``U_EXP``, ``B_ADD``) and never number
them, so the numbers live here only: activation codes are ``hal.ir.schemas``'
(``activation_code``), the unary-math and binary-op codes are this backend's own.
"""

from __future__ import annotations

import re

from hal.ir.schemas import ACTIVATIONS, activation_code

#: unary ops of ``unary_f32`` besides the activations; their codes follow the activations'
MATH = ("Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Erf")
#: binary ops of ``binary_f32`` / ``binary_same_f32``, coded by position
BINARY = ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min")
#: ops ``unary_f32`` runs
UNARY = ACTIVATIONS + MATH


def macro(op: str) -> str:
    """``LeakyRelu`` -> ``LEAKY_RELU``: the op's part of its kernel macro name."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", op).upper()


def unary_code(op: str) -> int:
    if op in ACTIVATIONS:
        return activation_code(op)
    return activation_code(ACTIVATIONS[-1]) + 1 + MATH.index(op)


def binary_code(op: str) -> int:
    return BINARY.index(op)


def defines() -> dict[str, int]:
    """Every code as the macro the kernels use: ``ACT_*``, ``U_*`` and ``B_*``."""
    out = {"ACT_NONE": 0}
    out.update({f"ACT_{macro(op)}": activation_code(op) for op in ACTIVATIONS})
    out.update({f"U_{macro(op)}": unary_code(op) for op in MATH})
    out.update({f"B_{macro(op)}": binary_code(op) for op in BINARY})
    return out
