"""Files from strangers: external data only from the model's own folder, size limits before
parsing or allocating, and no pickle on any path that reads user data."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import hal
from tests.helpers import make_model

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = np.arange(4, dtype=np.float32)


def _model_with_external(folder: Path, location: str, name: str = "model") -> Path:
    """An Add model whose weight ``w`` names ``location`` as its external data."""
    proto = make_model([helper.make_node("Add", ["x", "w"], ["y"])], [("x", [4])], [("y", [4])],
                       {"w": WEIGHTS})
    w = proto.graph.initializer[0]
    onnx.external_data_helper.set_external_data(w, location, offset=0, length=WEIGHTS.nbytes)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    path = folder / f"{name}.onnx"
    onnx.save_model(proto, path)
    return path


@pytest.fixture
def folders(tmp_path):
    """(the model's folder, a folder beside it holding a file the model must never read)."""
    model_dir, outside = tmp_path / "model", tmp_path / "outside"
    model_dir.mkdir()
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"SECRET-BYTES-16!")
    return model_dir, outside


def test_external_data_inside_the_folder_loads(folders):
    model_dir, _ = folders
    WEIGHTS.tofile(model_dir / "weights.bin")
    model = hal.load(_model_with_external(model_dir, "weights.bin"))
    y = hal.compile(model, "cpu@reference")(np.ones(4, np.float32))[0]
    np.testing.assert_array_equal(y, WEIGHTS + 1)


def test_external_data_with_dotdot_is_refused(folders):
    model_dir, _ = folders
    path = _model_with_external(model_dir, "../outside/secret.bin")
    with pytest.raises(hal.ModelError, match=r"'\.\.'"):
        hal.load(path)


def test_external_data_with_absolute_location_is_refused(folders):
    model_dir, outside = folders
    path = _model_with_external(model_dir, str((outside / "secret.bin").resolve()))
    with pytest.raises(hal.ModelError, match="absolute path"):
        hal.load(path)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks on this platform")
def test_external_data_through_a_symlink_out_of_the_folder_is_refused(folders):
    model_dir, outside = folders
    (model_dir / "weights.bin").symlink_to(outside / "secret.bin")
    path = _model_with_external(model_dir, "weights.bin")
    with pytest.raises(hal.ModelError, match="symlink"):
        hal.load(path)


def test_external_data_symlink_inside_the_folder_loads(folders):
    model_dir, _ = folders
    WEIGHTS.tofile(model_dir / "real.bin")
    (model_dir / "weights.bin").symlink_to(model_dir / "real.bin")
    model = hal.load(_model_with_external(model_dir, "weights.bin"))
    assert model.graph.initializers["w"].const_value.numpy().tolist() == WEIGHTS.tolist()


def test_external_data_outside_the_file_or_of_the_wrong_size_is_refused(folders):
    model_dir, _ = folders
    WEIGHTS[:2].tofile(model_dir / "short.bin")
    with pytest.raises(hal.ModelError, match="outside 'short.bin'"):
        hal.load(_model_with_external(model_dir, "short.bin"))


def test_external_data_from_bytes_is_refused_without_a_folder(folders):
    model_dir, outside = folders
    path = _model_with_external(model_dir, str(outside / "secret.bin"))
    with pytest.raises(hal.ModelError, match="external data"):
        hal.load(path.read_bytes())
    with pytest.raises(hal.ModelError, match="external data"):
        hal.load(onnx.load_model(path, load_external_data=False))


def test_model_above_the_size_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    path = tmp_path / "big.onnx"
    path.write_bytes(b"\0" * 4096)  # not even a model: the size check comes first
    monkeypatch.setenv("HAL_MAX_MODEL_BYTES", "1KiB")
    with pytest.raises(hal.ModelError, match="HAL_MAX_MODEL_BYTES"):
        hal.load(path)
    with pytest.raises(hal.ModelError, match="HAL_MAX_MODEL_BYTES"):
        hal.load(path.read_bytes())


def test_a_size_limit_that_is_no_size_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_MAX_MODEL_BYTES", "lots")
    with pytest.raises(hal.ModelError, match="not a size"):
        hal.load(b"\x08\x07")


def test_no_pickle_where_user_data_is_read():
    """np.load with allow_pickle=False spelled out, and no pickle.load(s), in every module
    that reads what a user hands in."""
    # files HAL itself wrote for its own processes, never a user's
    internal = {"hal/training/launcher.py", "hal/training/ray_cluster.py",
                "hal/comparison/worker.py",
                # messages between a process and its own isolated worker, over a socketpair
                "hal/isolation/worker.py", "hal/isolation/process.py"}
    offenders = []
    for folder in ("hal", "backends", "models"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text()
            for m in re.finditer(r"np\.load\(([^)]*)\)", text):
                if "allow_pickle=False" not in m.group(1) and rel not in internal:
                    offenders.append(f"{rel}: np.load({m.group(1)})")
            if rel not in internal and re.search(r"pickle\.loads?\(", text):
                offenders.append(f"{rel}: pickle.load")
    assert not offenders, offenders
