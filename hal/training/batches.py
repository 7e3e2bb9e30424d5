"""Training data as micro-batches: dicts by input name, the target included.

Data comes as ``(x, y)`` arrays, a dict by input name with ``"target"``, or any iterable of
such batches. Arrays are shuffled each epoch by a numpy Generator seeded from the run's seed
and the epoch, so the order is the same on every backend and after a resume; an iterable's
batches are taken as it gives them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from hal.errors import InputError
from hal.ir.model import TensorSpec

TARGET = "target"


@dataclass
class Feed:
    """What the training graph takes: the model's inputs, the target and any other input its
    loss reads (``extra``: the teacher's logits of loss "distill"), by name in a dict."""

    inputs: list[TensorSpec]
    target: TensorSpec
    extra: list[TensorSpec] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.inputs]

    def arrays(self, item: Any, where: str) -> dict[str, np.ndarray]:
        """One batch (or a whole data set) as checked arrays by input name plus ``target``;
        new arrays where a dtype changes, the caller's own otherwise (never written to)."""
        extras = [s.name for s in self.extra]
        if isinstance(item, dict):
            keys = [*self.names, TARGET, *extras]
            missing = [n for n in keys if n not in item]
            extra = [k for k in item if k not in keys]
            if missing or extra:
                raise InputError(f"{where}: a dict of data has the model's inputs {self.names} "
                                 f"and {[TARGET, *extras]}; missing {missing}, unexpected "
                                 f"{extra}")
            x, y = {n: item[n] for n in self.names}, item[TARGET]
        elif extras:
            raise InputError(f"{where}: the training graph also takes {extras}; pass a dict by "
                             f"input name with {[TARGET, *extras]}")
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            x, y = item
            if not isinstance(x, dict):
                if len(self.names) != 1:
                    raise InputError(f"{where}: the model has inputs {self.names}; pass x as a "
                                     f"dict by input name")
                x = {self.names[0]: x}
        else:
            raise InputError(f"{where}: expected (x, y) or a dict by input name with "
                             f"{TARGET!r}, got {type(item).__name__}")
        out = {spec.name: self._input(spec, x.get(spec.name), where) for spec in self.inputs}
        out[TARGET] = self._target(y, where)
        out.update((spec.name, self._input(spec, item[spec.name], where)) for spec in self.extra)
        sizes = {k: len(v) for k, v in out.items()}
        if len(set(sizes.values())) != 1:
            raise InputError(f"{where}: inputs and target differ in their number of samples "
                             f"{sizes}")
        if not next(iter(sizes.values())):
            raise InputError(f"{where}: no samples")
        return out

    def _input(self, spec: TensorSpec, value: Any, where: str) -> np.ndarray:
        if value is None:
            raise InputError(f"{where}: no array for input {spec.name!r}")
        a = np.asarray(value)
        if a.dtype != spec.dtype and not (a.dtype.kind in "fiub" and spec.dtype.kind in "fiub"):
            raise InputError(f"{where}: input {spec.name!r} is {a.dtype}, the model takes "
                             f"{spec.dtype}")
        _check_shape(a, spec, f"{where}: input {spec.name!r}")
        return a.astype(spec.dtype, copy=False)

    def _target(self, value: Any, where: str) -> np.ndarray:
        a = np.asarray(value)
        spec = self.target
        if spec.dtype.kind == "i" and a.dtype.kind not in "iu":
            raise InputError(f"{where}: the target must hold class indices (integers), got "
                             f"{a.dtype}; for one-hot targets pass y.argmax(axis=1)")
        _check_shape(a, spec, f"{where}: target")
        return a.astype(spec.dtype, copy=False)


def _check_shape(a: np.ndarray, spec: TensorSpec, what: str) -> None:
    want = spec.shape
    ok = a.ndim == len(want) and all(not isinstance(d, int) or d == s
                                     for d, s in zip(want[1:], a.shape[1:]))
    if not ok:
        dims = ", ".join("N" if i == 0 else "?" if not isinstance(d, int) else str(d)
                         for i, d in enumerate(want))
        raise InputError(f"{what} has shape {list(a.shape)}; expected [{dims}]")


def grouped(batches: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Consecutive micro-batches in groups of ``size`` (the last group may be shorter)."""
    group: list[dict] = []
    for b in batches:
        group.append(b)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def weights(group: Sequence[dict]) -> list[float]:
    """``n_i / sum(n)``: the group's step is the step of one batch of all its samples."""
    sizes = [len(b[TARGET]) for b in group]
    total = sum(sizes)
    return [n / total for n in sizes]


def generator(seed: int, epoch: int) -> np.random.Generator:
    """The Generator that orders epoch ``epoch`` (0-based) of a run seeded ``seed``."""
    return np.random.default_rng([seed, epoch])


class ArrayData:
    """Arrays in memory, shuffled each epoch."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.samples = len(arrays[TARGET])

    def batches_per_epoch(self, batch_size: int) -> int:
        return -(-self.samples // batch_size)

    def epoch(self, seed: int, epoch: int, batch_size: int, start: int = 0,
              shuffle: bool = True) -> tuple[Iterator[dict], dict]:
        """(micro-batches of epoch ``epoch`` from the ``start``-th on, the state of the
        Generator that ordered them)."""
        rng = generator(seed, epoch)
        order = rng.permutation(self.samples) if shuffle else np.arange(self.samples)
        return self._slices(order, batch_size, start), rng.bit_generator.state

    def _slices(self, order: np.ndarray, batch_size: int, start: int) -> Iterator[dict]:
        for i in range(start * batch_size, self.samples, batch_size):
            idx = order[i:i + batch_size]
            yield {k: v[idx] for k, v in self.arrays.items()}


class BatchStream:
    """The caller's own batches, in the order its iterable gives them, every epoch."""

    def __init__(self, iterable: Iterable, feed: Feed, where: str):
        self.iterable = iterable
        self.feed = feed
        self.where = where
        self.samples = None

    def batches_per_epoch(self, batch_size: int) -> int | None:
        try:
            return len(self.iterable)  # type: ignore[arg-type]
        except TypeError:
            return None

    def epoch(self, seed: int, epoch: int, batch_size: int, start: int = 0,
              shuffle: bool = True) -> tuple[Iterator[dict], dict]:
        return self._batches(epoch, start), {}

    def _batches(self, epoch: int, start: int) -> Iterator[dict]:
        given = 0
        for i, item in enumerate(self.iterable):
            given += 1
            if i >= start:
                yield self.feed.arrays(item, f"{self.where}, batch {i} of epoch {epoch + 1}")
        if given == 0:
            raise InputError(f"{self.where} gave no batches in epoch {epoch + 1}: a one-shot "
                             f"iterator (a generator) is used up after one epoch; pass a list "
                             f"or an object whose __iter__ starts over")


def source(data: Any, feed: Feed, where: str = "data") -> ArrayData | BatchStream:
    """``data`` as arrays (``(x, y)`` or a dict with ``target``) or a stream of batches."""
    if isinstance(data, dict) or _is_xy(data):
        return ArrayData(feed.arrays(data, where))
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise InputError(f"{where}: expected (x, y) arrays, a dict by input name with "
                         f"{TARGET!r}, or an iterable of such batches; got {type(data).__name__}")
    return BatchStream(data, feed, where)


def _is_xy(data: Any) -> bool:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    x, y = data
    return (isinstance(x, (np.ndarray, dict)) or hasattr(x, "__array__")) \
        and (isinstance(y, np.ndarray) or hasattr(y, "__array__"))
