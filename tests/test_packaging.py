"""The wheel holds every module and data file of the source tree, and no build output.

The wheel is built once from a copy of the packaging files and the four source folders
(``hal/``, ``backends/``, ``models/``, ``bitstreams/``) taken as they are on disk, with a few
build outputs and caches planted in the copy. Its file list must equal what git tracks or
would track (``git ls-files --cached --others --exclude-standard``) under those folders, mapped
through pyproject's ``package-dir``; dot files (a folder's ``.gitignore``) are not shipped.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ("pyproject.toml", "setup.py", "README.md")
# Outputs a build or a test run leaves in the tree; none may reach the wheel.
DECOYS = ("bitstreams/hal_int8/build/rtl/ecp5-25f/hal_int8.bit", "hal/__pycache__/cli.cpython-311.pyc",
          "backends/fpga/.pytest_cache/v/cache/nodeids", "models/weights/.hidden.npz",
          "hal/nn/stale.pyc")


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _folders() -> dict[str, str]:
    """Source folder → its path in the wheel, from pyproject's package-dir."""
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    return {folder: package.replace(".", "/") for package, folder in mapping.items()}


def _in_wheel(path: str, folders: dict[str, str]) -> str:
    folder = max((f for f in folders if path.startswith(f + "/")), key=len)
    return folders[folder] + path[len(folder):]


def _source_files(folders: dict[str, str]) -> set[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard",
                              "--", *folders], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"needs a git checkout to list the source files: {e}")
    files = [p for p in out.splitlines() if not any(s.startswith(".") for s in p.split("/"))
             and (ROOT / p).is_file()]
    return {_in_wheel(p, folders) for p in files}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in PACKAGING:
        shutil.copy2(ROOT / name, src / name)
    for folder in _folders():
        shutil.copytree(ROOT / folder, src / folder, symlinks=True)
    for decoy in DECOYS:
        (src / decoy).parent.mkdir(parents=True, exist_ok=True)
        (src / decoy).write_bytes(b"not a source file")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    (path,) = (tmp / "dist").glob("hal_accel-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def _shipped(wheel: zipfile.ZipFile) -> set[str]:
    return {n for n in wheel.namelist() if ".dist-info/" not in n}


def test_wheel_holds_every_source_file(wheel):
    missing = sorted(_source_files(_folders()) - _shipped(wheel))
    assert not missing, f"left out of the wheel: {missing}"


def test_wheel_holds_no_build_output(wheel):
    extra = sorted(_shipped(wheel) - _source_files(_folders()))
    assert not extra, f"in the wheel but not source files: {extra}"


def test_entry_points_name_shipped_modules(wheel):
    project = _pyproject()["project"]
    targets = dict(project["scripts"])
    for group in project["entry-points"].values():
        targets.update(group)
    shipped = _shipped(wheel)
    for name, target in targets.items():
        module = target.split(":")[0].replace(".", "/")
        assert {module + ".py", module + "/__init__.py"} & shipped, f"{name} = {target!r}"
