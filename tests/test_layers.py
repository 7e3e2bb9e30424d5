"""The import graph keeps HAL's layers pointing one way (tests/import_graph.py)."""

from __future__ import annotations

import textwrap

import pytest

import import_graph as G


def test_the_source_tree_has_no_layering_problem():
    found = G.problems()
    assert not found, "\n".join(found)


def _tree(tmp_path, files: dict[str, str]):
    for folder in G.SOURCES:
        (tmp_path / folder).mkdir()
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return tmp_path


BASE = {"hal/__init__.py": "from hal.compiler import compile\n",
        "hal/errors.py": "", "hal/ir/__init__.py": "", "hal/backend.py": "import hal.ir\n",
        "hal/passes/__init__.py": "from hal.backend import x\n",
        "hal/compiler.py": "from hal.passes import y\n", "hal/cli.py": "import hal\n",
        "backends/__init__.py": "", "backends/a/__init__.py": "from hal.backend import x\n",
        "backends/b/__init__.py": "", "backends/b/util.py": "def _secret(): pass\n",
        "models/__init__.py": "from hal import nn\n", "hal/nn/__init__.py": "import hal.ir\n"}


def test_a_clean_tree_passes(tmp_path):
    assert G.problems(_tree(tmp_path, BASE)) == []


@pytest.mark.parametrize("path, text, expected", [
    ("hal/backend.py", "from hal.passes import Flow\n", "a higher layer"),
    ("hal/ir/__init__.py", "def f():\n    from hal.cli import main\n", "a higher layer"),
    ("backends/a/__init__.py", "from hal.backends.b.util import _secret\n", "private names"),
    ("hal/compiler.py", "from hal import models\n", "imports the zoo"),
    ("hal/compiler.py", "from hal.passes import _helper\n", "private names"),
    ("models/__init__.py", "from hal.backend import x\n", "may use only hal.nn"),
    ("hal/ir/__init__.py", "from hal.nn import y\n", "import cycle"),
])
def test_each_kind_of_problem_is_found(tmp_path, path, text, expected):
    root = _tree(tmp_path, {**BASE, path: text})
    found = G.problems(root)
    assert any(expected in p for p in found), found


def test_type_checking_imports_do_not_count(tmp_path):
    text = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from hal.passes import F\n"
    assert G.problems(_tree(tmp_path, {**BASE, "hal/backend.py": text})) == []


def test_layers_are_ordered_as_documented():
    assert G.layer("hal.ir.schemas") < G.layer("hal.oracle.nn") < G.layer("hal.passes.quantize") \
        < G.layer("hal.backends.jax_backend") < G.layer("hal.compiler") < G.layer("hal") \
        < G.layer("hal.cli")
    assert G.layer("hal.oracle.nn") < G.layer("hal.passes.quantize") < G.layer("hal.compiler")
