"""HAL's layers, checked over the source's imports: run ``python tests/import_graph.py``.

Layers, lowest first; a module may import its own layer and the ones below it, never one
above (imports inside functions count: they run too; ``if TYPE_CHECKING`` ones do not):

    errors < IR < hal.nn and the zoo < core (devices, Backend, registry, the oracle)
           < passes and partitioning < backends < process isolation
           < compiler and frontends
           < public API, comparison, testing kit < CLI

Besides the direction: no cycle between subpackages; no module imports another's private
names (``_name``), nor a backend another backend's private modules; the zoo uses
only ``hal.nn`` (and errors).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folders and the package each one installs as
SOURCES = {"hal": "hal", "backends": "hal.backends", "models": "hal.models"}

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("errors", ("hal.errors",)),
    ("IR", ("hal.ir",)),
    ("builder, zoo and data", ("hal.nn", "hal.models", "hal.data")),
    ("core", ("hal.device", "hal.backend", "hal.trainer", "hal.registry", "hal.oracle",
              "hal.diskcache")),
    ("passes and partitioning", ("hal.passes", "hal.partition")),
    ("backends", ("hal.backends",)),
    ("process isolation", ("hal.isolation",)),
    ("compiler and training", ("hal.compiler", "hal.frontends", "hal.training")),
    ("public API and comparison", ("hal", "hal.comparison", "hal.compare", "hal.inputs",
                                   "hal.testing", "hal.compression")),
    ("CLI", ("hal.cli",)),
]
ZOO_MAY_IMPORT = ("hal.nn", "hal.errors", "hal.models")
#: the zoo is content, not library: the layers that may name it
ZOO_USERS = ("hal.models", "hal.frontends", "hal.comparison", "hal.compare", "hal.inputs",
             "hal.testing", "hal.cli", "hal.compression")


def layer(module: str) -> int:
    """Index in LAYERS of the longest prefix naming ``module``'s layer."""
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    if rank is None:
        raise KeyError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return rank


def group(module: str) -> str:
    """The unit cycles are counted between: hal.X, or hal.backends.X for a backend."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[:2] == ["hal", "backends"] else parts[:2])


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module
    names: tuple[str, ...]  # names taken from it (from-imports)
    line: int

    def where(self) -> str:
        return f"{self.source}:{self.line}"


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(not p.isidentifier() for p in parts):
                continue  # data and build scripts inside package folders
            found[".".join([package, *parts])] = path
    return found


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(module: str, path: Path, known: set[str]) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for n in child.orelse:
                    visit(n)
                continue
            if isinstance(child, ast.Import):
                out.extend(Import(module, a.name, (), child.lineno) for a in child.names
                           if a.name == "hal" or a.name.startswith("hal."))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")
                    up = up[:len(up) - child.level + 1]
                    base = ".".join(up + ([base] if base else []))
                if base != "hal" and not base.startswith("hal."):
                    continue
                names = tuple(a.name for a in child.names)
                # "from hal import nn" imports the submodule hal.nn, not hal/__init__
                subs = [n for n in names if f"{base}.{n}" in known]
                rest = tuple(n for n in names if f"{base}.{n}" not in known)
                out.extend(Import(module, f"{base}.{n}", (), child.lineno) for n in subs)
                if rest or not subs:
                    out.append(Import(module, base, rest, child.lineno))
            visit(child)

    visit(tree)
    return out


def problems(root: Path = ROOT) -> list[str]:
    mods = modules(root)
    known = set(mods)
    found: list[str] = []
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in mods.items():
        for imp in imports(module, path, known):
            if imp.target not in known:
                found.append(f"{imp.where()}: imports {imp.target}, which is not in the tree")
                continue
            src, dst = layer(imp.source), layer(imp.target)
            if dst > src:
                found.append(f"{imp.where()}: {imp.source} ({LAYERS[src][0]}) imports "
                             f"{imp.target} ({LAYERS[dst][0]}), a higher layer")
            if imp.source.startswith("hal.models") and not imp.target.startswith(ZOO_MAY_IMPORT):
                found.append(f"{imp.where()}: the zoo imports {imp.target}; it may use only "
                             f"hal.nn")
            if imp.target.startswith("hal.models") and \
                    not imp.source.startswith(ZOO_USERS) and imp.source != "hal":
                found.append(f"{imp.where()}: {imp.source} imports the zoo ({imp.target}); "
                             f"only frontends, the public API and the CLI name zoo models")
            a, b = group(imp.source), group(imp.target)
            private = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
            if private:
                found.append(f"{imp.where()}: {imp.source} imports private names of "
                             f"{imp.target}: {', '.join(private)}; a name used by another "
                             f"module is public (no underscore, documented)")
            elif a.startswith("hal.backends.") and b.startswith("hal.backends.") and a != b \
                    and any(p.startswith("_") for p in imp.target.split(".")[3:]):
                found.append(f"{imp.where()}: {a} imports a private module of {b}: "
                             f"{imp.target}")
            if a != b and not imp.target == a:
                edges[a].add(b)
    found += [f"import cycle between {' -> '.join(c)}" for c in cycles(edges)]
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            strong(v)
    return out


if __name__ == "__main__":
    found = problems()
    for p in found:
        print(p)
    print(f"{len(found)} layering problem(s)" if found else "layers: OK")
    sys.exit(1 if found else 0)
