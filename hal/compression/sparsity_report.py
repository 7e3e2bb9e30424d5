"""What sparsity did to a model: per weight its size, zeros and sparsity, the total, and the
size of the model's .onnx file before and after gzip (where zeros pay on every device)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field

import numpy as np

from hal.ir.model import Model
from hal.passes.sparsity import PrunableWeight


@dataclass
class SparsityReport:
    """``rows``: one dict per prunable weight (``layer``, ``weight``, ``op``, ``shape``,
    ``count``, ``zeros``, ``sparsity``, ``note``: why it was left as it was, or "");
    ``total``: ``count``, ``zeros``, ``sparsity`` over the weights sparsity was applied to
    (rows without a note); ``overall``: the same over every row; ``settings``: what was
    asked; ``file_bytes``: the .onnx file's size and gzip size, "before" and "after"."""

    rows: list[dict]
    settings: dict = field(default_factory=dict)
    file_bytes: dict = field(default_factory=dict)

    @property
    def total(self) -> dict:
        return total([r for r in self.rows if not r["note"]])

    @property
    def overall(self) -> dict:
        return total(self.rows)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "total": self.total, "overall": self.overall,
                "settings": self.settings, "file_bytes": self.file_bytes}

    def __str__(self) -> str:
        head = ("layer", "weight", "shape", "weights", "zeros", "sparsity")
        lines = [(r["layer"], r["weight"], "x".join(map(str, r["shape"])), str(r["count"]),
                  str(r["zeros"]), f"{r['sparsity']:8.2%}" + (f"  ({r['note']})" if r["note"]
                                                             else "")) for r in self.rows]
        sums = [("total", self.total)]
        if self.overall != self.total:
            sums = [("total pruned", self.total), ("all weights", self.overall)]
        lines += [(label, "", "", str(t["count"]), str(t["zeros"]), f"{t['sparsity']:8.2%}")
                  for label, t in sums]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(head)]
        widths[-1] = len(head[-1])  # the notes run on past the table
        fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths[:-1]))
        fmt += "  {}"
        out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        out += [fmt.format(*line) for line in lines]
        if self.settings:
            out.insert(0, "sparsity: " + ", ".join(f"{k}={v!r}" for k, v in
                                                   self.settings.items()))
        for when, sizes in self.file_bytes.items():
            out.append(f".onnx {when}: {sizes['raw']:,} bytes, gzip {sizes['gzip']:,} bytes")
        return "\n".join(out)

    def __repr__(self) -> str:
        return (f"<SparsityReport {len(self.rows)} weights, {self.total['zeros']}/"
                f"{self.total['count']} zero ({self.total['sparsity']:.2%})>")


def row(weight: PrunableWeight, array: np.ndarray, note: str = "") -> dict:
    zeros = int(array.size - np.count_nonzero(array))
    return {"layer": weight.node, "weight": weight.name, "op": weight.op,
            "shape": list(array.shape), "count": int(array.size), "zeros": zeros,
            "sparsity": zeros / array.size if array.size else 0.0, "note": note}


def total(rows: list[dict]) -> dict:
    count, zeros = sum(r["count"] for r in rows), sum(r["zeros"] for r in rows)
    return {"count": count, "zeros": zeros, "sparsity": zeros / count if count else 0.0}


def file_bytes(model: Model) -> dict:
    """The model's .onnx file size, raw and gzipped (level 6)."""
    data = model.to_proto().SerializeToString()
    return {"raw": len(data), "gzip": len(gzip.compress(data, compresslevel=6, mtime=0))}

