"""HAL's on-disk cache (hal.diskcache): private folders, atomic entries verified by their
SHA-256, a tampered or truncated entry rebuilt and never loaded, one build of an entry when
two processes ask at once, and ``hal cache info|clear``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import hal
from hal import diskcache
from hal.cli import main
from hal.diskcache import CacheError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("HAL_CACHE_DIR", str(root))
    return root


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _sha256sum_ok(entry: Path) -> bool:
    """The hash list checked the way ``sha256sum -c`` would, independently of hal.diskcache."""
    side = diskcache.sidecar(entry)
    base = entry if entry.is_dir() else entry.parent
    lines = side.read_text().splitlines()
    return bool(lines) and all(
        hashlib.sha256((base / name).read_bytes()).hexdigest() == digest
        for digest, name in (line.split("  ", 1) for line in lines))


# --- the module itself ------------------------------------------------------------------


def test_entries_are_written_atomically_with_their_hash(cache):
    folder = diskcache.folder("unit")
    assert cache.stat().st_mode & 0o777 == 0o700 and folder.stat().st_mode & 0o777 == 0o700
    entry = folder / "a.bin"
    with diskcache.locked(entry):
        diskcache.write_bytes(entry, b"compiled bytes")
    assert diskcache.read_bytes(entry) == b"compiled bytes"
    assert diskcache.sidecar(entry).read_text() == \
        f"{hashlib.sha256(b'compiled bytes').hexdigest()}  a.bin\n"
    assert _sha256sum_ok(entry)
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
    diskcache.write_bytes(entry, b"replaced")  # a rewrite replaces both, never mixes them
    assert diskcache.read_bytes(entry) == b"replaced" and _sha256sum_ok(entry)


@pytest.mark.parametrize("damage", [_flip, _truncate, lambda p: diskcache.sidecar(p).unlink()],
                         ids=["flipped", "truncated", "no hash list"])
def test_a_damaged_file_entry_is_removed_not_read(cache, caplog, damage):
    entry = diskcache.folder("unit") / "a.bin"
    diskcache.write_bytes(entry, bytes(range(256)) * 4)
    damage(entry)
    with caplog.at_level(logging.DEBUG, logger="hal"):
        assert diskcache.read_bytes(entry) is None
    assert not entry.exists() and not diskcache.sidecar(entry).exists()
    assert "a.bin" in caplog.text and "building it again" in caplog.text


def test_a_directory_entry_is_checked_file_by_file(cache, tmp_path):
    project = diskcache.folder("unit") / "project"
    (project / "firmware").mkdir(parents=True)
    (project / "firmware" / "kernel.cpp").write_text("int f() { return 1; }")
    (project / "lib.so").write_bytes(b"\x7fELF" + bytes(100))
    assert not diskcache.verified(project) and not project.exists()  # never sealed: removed
    (project / "firmware").mkdir(parents=True)
    (project / "firmware" / "kernel.cpp").write_text("int f() { return 1; }")
    (project / "lib.so").write_bytes(b"\x7fELF" + bytes(100))
    diskcache.seal(project)
    assert diskcache.verified(project) and _sha256sum_ok(project)
    (project / "board.log").write_text("added after sealing: not checked")
    assert diskcache.verified(project)
    copy = tmp_path / "copied"  # a project copied to another machine keeps its hash list
    os.rename(project, copy)
    assert _sha256sum_ok(copy)
    os.rename(copy, project)
    (project / "firmware" / "kernel.cpp").write_text("int f() { return 2; }")
    assert not diskcache.verified(project) and not project.exists()


def test_a_world_or_group_writable_cache_is_refused(cache):
    diskcache.folder("opencl")
    cache.chmod(0o777)
    with pytest.raises(CacheError, match="writable by the world"):
        diskcache.folder("opencl")
    cache.chmod(0o770)
    with pytest.raises(CacheError, match="writable by its group"):
        diskcache.root()
    cache.chmod(0o700)
    (cache / "opencl").chmod(0o757)
    with pytest.raises(CacheError, match="chmod 700"):
        diskcache.folder("opencl")
    (cache / "opencl").chmod(0o755)  # only readable by others (an older HAL's): tightened
    assert diskcache.folder("opencl").stat().st_mode & 0o777 == 0o700


def test_a_cache_owned_by_someone_else_is_refused(cache, monkeypatch):
    diskcache.root()
    monkeypatch.setattr(diskcache.os, "getuid", lambda: cache.stat().st_uid + 1)
    with pytest.raises(CacheError, match="belongs to user id"):
        diskcache.root()


def test_entry_names_must_be_plain(cache):
    for bad in ("..", "a/b", ""):
        with pytest.raises(CacheError, match="plain name"):
            diskcache.folder(bad)


# --- the caches built on it --------------------------------------------------------------


OPENCL = "opencl:0@opencl"


def _usable(device: str) -> bool:
    try:
        hal.device(device)
        return True
    except hal.HalError:  # not installed, or no device: the reason is in `hal devices`
        return False


needs_opencl = pytest.mark.skipif(not _usable(OPENCL), reason="no usable OpenCL device")


def _small_model():
    from tests.helpers import make_model, rand
    from onnx import helper

    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["y"])]
    return make_model(nodes, [("x", ["N", 8])], [("y", ["N", 16])],
                      {"w": rand(16, 8, seed=5), "b": rand(16, seed=6)})


@needs_opencl
def test_a_tampered_opencl_binary_is_rebuilt_not_loaded(cache, monkeypatch, caplog):
    from hal.backends.opencl import programs

    built_from_source = []
    real = programs._from_source

    def spy(dev, name, source, opts, digest, path, t0):
        built_from_source.append(digest)
        return real(dev, name, source, opts, digest, path, t0)

    monkeypatch.setattr(programs, "_from_source", spy)
    monkeypatch.setattr(programs, "_programs", {})
    model = _small_model()
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    want = hal.compile(model, OPENCL, autotune=False)(x)[0]
    binaries = sorted((cache / "opencl" / "binaries").glob("*.bin"))
    assert len(binaries) >= 2 and all(_sha256sum_ok(b) for b in binaries)
    flipped, truncated = binaries[:2]
    _flip(flipped)
    _truncate(truncated)
    built_from_source.clear()
    monkeypatch.setattr(programs, "_programs", {})  # as in a new process
    with caplog.at_level(logging.WARNING, logger="hal"):
        got = hal.compile(model, OPENCL, autotune=False)(x)[0]
    np.testing.assert_array_equal(got, want)
    assert sorted(built_from_source) == sorted([flipped.stem, truncated.stem])
    assert flipped.name in caplog.text and truncated.name in caplog.text
    assert all(_sha256sum_ok(b) for b in (flipped, truncated))  # rewritten whole


@pytest.mark.skipif(not _usable("cpu@iree"), reason="cpu@iree is not usable here")
def test_a_tampered_iree_module_is_compiled_again(cache, caplog):
    model = _small_model()
    x = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)  # one module
    want = hal.compile(model, "cpu@iree", fallback=None)(x)[0]
    (module,) = (cache / "iree").glob("*.vmfb")
    _flip(module)
    with caplog.at_level(logging.WARNING, logger="hal"):
        again = hal.compile(model, "cpu@iree", fallback=None)
        np.testing.assert_array_equal(again(x)[0], want)
    assert [m["cache"] for m in again.executables[0].info["modules"]] == ["cold"]
    assert module.name in caplog.text and _sha256sum_ok(module)


def test_a_tampered_selection_entry_is_measured_again(cache, monkeypatch):
    monkeypatch.delenv("HAL_SELECT", raising=False)
    monkeypatch.setenv("HAL_SELECT_BUDGET", "0.02")
    monkeypatch.setenv("HAL_BACKENDS", "reference,ort")
    assert not hal.compile("lenet", "cpu").selection["cached"]
    (entry,) = (cache / "selection").glob("*.json")
    assert hal.compile("lenet", "cpu").selection["cached"]
    # a flipped byte that keeps the JSON valid and the key equal: only the hash sees it
    text = entry.read_text()
    at = text.index('"measure_s": ') + len('"measure_s": ')
    entry.write_text(text[:at] + ("9" if text[at] != "9" else "8") + text[at + 1:])
    json.loads(entry.read_text())
    assert not hal.compile("lenet", "cpu").selection["cached"]
    assert _sha256sum_ok(entry)
    _truncate(entry)
    assert not hal.compile("lenet", "cpu").selection["cached"]
    assert _sha256sum_ok(entry) and hal.compile("lenet", "cpu").selection["cached"]


WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np
    import hal
    from hal.backends.opencl import programs
    from hal.models import get

    go, ready = Path(sys.argv[1]), Path(sys.argv[2])
    cold = []
    real = programs._from_source

    def slow(dev, name, source, opts, digest, path, t0):
        cold.append(digest)
        time.sleep(0.3)  # widen the window in which a second builder could slip in
        return real(dev, name, source, opts, digest, path, t0)

    programs._from_source = slow
    model = get("lenet")
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    y = hal.compile(model, "opencl:0@opencl", autotune=False)(x)[0]
    print(json.dumps({"cold": cold, "y": y.tolist()}))
""")


@needs_opencl
def test_two_processes_compiling_the_same_model_build_each_entry_once(cache, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go = tmp_path / "go"
    env = {**os.environ, "HAL_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(script), str(go), str(tmp_path / f"r{i}")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        while not all((tmp_path / f"r{i}").exists() for i in range(2)):
            assert all(p.poll() is None for p in procs), procs[0].communicate()
            time.sleep(0.05)
        go.touch()
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    a, b = (json.loads(out.strip().splitlines()[-1]) for out, _ in outs)
    assert a["y"] == b["y"]
    assert not set(a["cold"]) & set(b["cold"]), "a program was built by both processes"
    binaries = sorted((cache / "opencl" / "binaries").glob("*.bin"))
    assert {p.stem for p in binaries} == set(a["cold"]) | set(b["cold"])
    assert all(_sha256sum_ok(p) for p in binaries)
    assert not [p for p in (cache / "opencl" / "binaries").iterdir() if p.suffix == ".tmp"]


# --- hal cache info | clear --------------------------------------------------------------


def test_cache_info_and_clear(cache, capsys):
    for name in ("opencl", "selection"):
        entry = diskcache.folder(name) / f"{name}.bin"
        diskcache.write_bytes(entry, b"x" * 1000)
    assert main(["cache", "info", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["root"] == str(cache)
    by_name = {f["name"]: f for f in found["folders"]}
    assert set(by_name) == {"opencl", "selection"}
    assert by_name["opencl"]["entries"] == 1 and by_name["opencl"]["bytes"] >= 1000
    assert main(["cache", "info"]) == 0
    assert "opencl" in capsys.readouterr().out
    assert main(["cache", "clear", "--backend", "nosuch"]) == 2
    assert "no folder 'nosuch'" in capsys.readouterr().err
    assert main(["cache", "clear", "--backend", "selection"]) == 0
    assert not (cache / "selection").exists() and (cache / "opencl").exists()
    assert main(["cache", "clear"]) == 0
    assert list(cache.iterdir()) == [] and cache.exists()
    cache.chmod(0o777)
    assert main(["cache", "clear"]) == 2
    assert "writable by the world" in capsys.readouterr().err
