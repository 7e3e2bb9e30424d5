"""The checks of ``hal.compare``'s arguments: each bad one is an OptionError naming the fix,
raised before any work."""

from __future__ import annotations

from typing import Any

from hal import registry
from hal.backend import CompileOptions
from hal.errors import OptionError


def as_list(v: Any) -> list | None:
    if v is None:
        return None
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return list(v)


def batches(batch: Any) -> list[int]:
    items = [batch] if isinstance(batch, int) else as_list(batch)
    try:
        out = [int(b) for b in items]
    except (TypeError, ValueError):
        out = []
    if not out or any(b < 1 for b in out):
        raise OptionError(f"batch must be positive integers, e.g. (1, 64); got {batch!r}")
    return list(dict.fromkeys(out))


def check_calibration(calibration: Any, precision: list[str], train: bool) -> None:
    if calibration is None:
        return
    if calibration != "dynamic":
        raise OptionError(f"calibration must be 'dynamic' (activations quantized at run time) "
                          f"or None (static int8 scales from each model's example inputs); got "
                          f"{calibration!r}")
    if train:
        raise OptionError("calibration='dynamic' applies to int8 inference; leave it out with "
                          "train=True")
    if "int8" not in precision:
        raise OptionError("calibration='dynamic' applies to int8 rows: add precision='int8' "
                          "(e.g. precision=['fp32', 'int8'])")


def precisions(precision: Any) -> list[str]:
    """The precisions asked for; [] means each device's default."""
    if precision is None:
        return []
    out = as_list(precision) or []
    bad = [p for p in out if p not in CompileOptions.PRECISIONS]
    if not out or bad:
        raise OptionError(f"precision must be among {list(CompileOptions.PRECISIONS)}; got "
                          f"{precision!r}")
    return list(dict.fromkeys(out))


def device_strings(devices: Any) -> list[str]:
    out = [registry.device(d).string for d in as_list(devices)]  # DeviceNotFound says why
    if not out:
        raise OptionError("devices is empty; leave it out to use every usable device")
    return list(dict.fromkeys(out))
