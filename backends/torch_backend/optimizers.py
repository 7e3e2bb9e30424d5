"""OptimizerSpec -> torch.optim optimizer and LambdaLR schedule, and their state as named arrays.

The update rules are torch's own; HAL only maps its shared names onto their arguments. The
state of torch objects (optimizer, scheduler, loss scaler) is flattened to ``prefix/key/...``
numpy arrays and read back against the live object's own ``state_dict`` as the template, so
whatever torch keeps is what a checkpoint holds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hal.errors import ModelError, OptionError
from hal.trainer import OptimizerSpec


def build_optimizer(spec: OptimizerSpec, params: Sequence[torch.nn.Parameter]):
    """The torch.optim optimizer ``spec`` names, over ``params``."""
    spec.check()
    params = list(params)
    try:
        if spec.name == "sgd":
            return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                                   nesterov=spec.nesterov, weight_decay=spec.decay)
        cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
        return cls(params, lr=spec.lr, betas=tuple(spec.betas), eps=spec.eps,
                   weight_decay=spec.decay)
    except ValueError as exc:  # torch's own check of the hyper-parameters, e.g. a negative lr
        hint = " (nesterov needs momentum > 0)" if spec.nesterov else ""
        raise OptionError(f"optimizer {spec.name!r}: {exc}{hint}") from None


def build_schedule(spec: OptimizerSpec, optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's LambdaLR over ``spec.lr_at``: update i runs at exactly ``spec.lr_at(i)``
    (up to the rounding of lr * (lr_at(i) / lr))."""
    def factor(i: int) -> float:
        return spec.lr_at(i) / spec.lr if spec.lr else 0.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def state_keys(spec: OptimizerSpec) -> tuple[str, ...]:
    """The per-parameter state torch's optimizer keeps once it has stepped (asked of torch by
    stepping it once on a scalar, so no name is guessed here)."""
    p = torch.nn.Parameter(torch.zeros(()))
    p.grad = torch.zeros(())
    opt = build_optimizer(spec, [p])
    opt.step()
    return tuple(sorted(k for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)))


# -- state as named arrays ---------------------------------------------------------------------

def flatten(prefix: str, obj, out: dict[str, np.ndarray]) -> None:
    """Numbers, booleans and tensors of a nested state dict as ``prefix/key/...`` arrays;
    None and strings are configuration, not state, and are left out."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            flatten(f"{prefix}/{k}", v, out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            flatten(f"{prefix}/{i}", v, out)
    elif isinstance(obj, torch.Tensor):
        out[prefix] = obj.detach().cpu().numpy().copy()
    elif isinstance(obj, (bool, int, float)):
        out[prefix] = np.asarray(obj)


def unflatten(prefix: str, template, arrays: dict[str, np.ndarray], problems: list[str]):
    """``template`` (a live state dict) with each leaf that ``flatten`` writes read from
    ``arrays``; a missing or mis-shaped one is added to ``problems``."""
    if isinstance(template, dict):
        return {k: unflatten(f"{prefix}/{k}", v, arrays, problems) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        items = [unflatten(f"{prefix}/{i}", v, arrays, problems) for i, v in enumerate(template)]
        return type(template)(items)
    if not isinstance(template, (torch.Tensor, bool, int, float)):
        return template
    want = tuple(template.shape) if isinstance(template, torch.Tensor) else ()
    value = array_entry(arrays, prefix, want, problems)
    if value is None:
        return template
    if isinstance(template, torch.Tensor):
        return torch.from_numpy(value.astype(template.cpu().numpy().dtype, copy=True))
    return type(template)(value.item())


def array_entry(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...],
                problems: list[str]) -> np.ndarray | None:
    """``arrays[name]`` when it is an array of ``shape``, else None with the problem noted."""
    if name not in arrays:
        problems.append(f"{name!r} is missing")
        return None
    value = arrays[name]
    if not isinstance(value, np.ndarray):
        problems.append(f"{name!r} is a {type(value).__name__}, not a numpy array")
        return None
    if tuple(value.shape) != tuple(shape):
        problems.append(f"{name!r} has shape {tuple(value.shape)}, expected {tuple(shape)}")
        return None
    return value


def optimizer_state(optimizer, names: Sequence[str]) -> dict[str, np.ndarray]:
    """``opt/state/<param>/<key>`` per parameter (by initializer name, not torch's index) and
    ``opt/group/<i>/<key>`` for the hyper-parameters torch keeps with the groups."""
    sd = optimizer.state_dict()
    out: dict[str, np.ndarray] = {}
    for index, state in sd["state"].items():
        flatten(f"opt/state/{names[index]}", state, out)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    flatten("opt/group", groups, out)
    return out


def load_optimizer_state(optimizer, names: Sequence[str], shapes: Sequence[tuple[int, ...]],
                         keys: Sequence[str], arrays: dict[str, np.ndarray], stepped: bool,
                         problems: list[str]) -> dict | None:
    """The state dict to hand ``optimizer.load_state_dict``, read from ``arrays``: each
    parameter has all of ``keys`` or none (a parameter that never had a gradient); after an
    update at least one has them."""
    sd = optimizer.state_dict()
    state = {}
    for index, (name, shape) in enumerate(zip(names, shapes)):
        present = [k for k in keys if f"opt/state/{name}/{k}" in arrays]
        if not present:
            continue
        entry = {}
        for k in keys:
            full = f"opt/state/{name}/{k}"
            value = array_entry(arrays, full, () if k == "step" else shape, problems)
            if value is not None:
                entry[k] = torch.from_numpy(np.array(value, copy=True))
        state[index] = entry
    if stepped and keys and not state:
        problems.append(f"the optimizer's state ('opt/state/<param>/{keys[0]}', ...) is missing "
                        f"although updates were made")
    groups = [{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]
    groups = unflatten("opt/group", groups, arrays, problems)
    for g, live in zip(groups, sd["param_groups"]):
        g["params"] = live["params"]
    return {"state": state, "param_groups": groups}


def check_state(problems: list[str], what: str) -> None:
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more"
                                           if len(problems) > 8 else "")
        raise ModelError(f"cannot load the training state into {what}: {shown}. Load a state "
                         f"saved by a trainer of the same model and optimizer")
