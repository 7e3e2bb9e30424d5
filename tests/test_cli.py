"""The `hal` command, run as a user would (a separate process)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import hal


def hal_cli(*args, check=False):
    r = subprocess.run([sys.executable, "-m", "hal.cli", *args], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_devices_json():
    devs = json.loads(hal_cli("devices", "--json", check=True).stdout)
    ref = [d for d in devs if d["device"] == "cpu:0@reference"][0]
    assert ref["usable"] and ref["simulated"] is False
    for d in devs:
        assert d["usable"] or d["reason"], d  # an unusable device always says why


def test_run_zoo_json():
    out = json.loads(hal_cli("run", "lenet", "--device", "cpu", "--json", "--batch", "2",
                             check=True).stdout)
    assert out["outputs"][0]["shape"] == [2, 10]
    assert out["p50_ms"] > 0 and out["placement"]
    assert out["report"]["segments"][0]["device"] == out["device"]


def test_run_onnx_file(tmp_path):
    path = tmp_path / "some.onnx"
    hal.save(hal.models.get("dwsep"), path)
    r = hal_cli("run", str(path), "--device", "cpu", check=True)
    assert "float32[1, 10]" in r.stdout


def test_run_explain_shows_graph_and_passes():
    r = hal_cli("run", "mlp", "--device", "cpu@reference", "--explain", check=True)
    for word in ("Gemm", "passes", "placement", "transfers per call"):
        assert word in r.stdout


@pytest.mark.parametrize("args,needle", [
    (("run", "lenet", "--device", "nosuch"), "cpu:0@reference"),
    (("run", "nomodel", "--device", "cpu"), "zoo model"),
    (("run", "lenet", "--device", "CPU!"), "malformed device string"),
    (("run", "/tmp/does/not/exist.onnx"), "does not exist"),
    (("run", "lenet", "--precision", "fp7"), "precision"),
    (("run", "mlp", "--device", "cpu@reference", "--option", "tile=8"), "unknown compile option"),
    (("run", "mlp", "--option", "8"), "KEY=VALUE"),
    (("run", "mlp", "--option", "opt_level=2"), "its own flag"),
])
def test_user_errors_exit_nonzero_without_traceback(args, needle):
    r = hal_cli(*args)
    assert r.returncode != 0
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_compare_json(tmp_path):
    out = tmp_path / "out.json"
    r = hal_cli("compare", "--models", "lenet,mlp", "--devices", "cpu@reference", "--batch", "1",
                "--budget", "0.05", "--json", str(out), check=True)
    assert "lenet" in r.stdout
    data = json.loads(out.read_text())
    assert {row["model"] for row in data["rows"]} == {"lenet", "mlp"}
    for row in data["rows"]:
        assert row["error"] is None and row["max_abs_err"] == 0.0 and row["p50_ms"] > 0
    assert data["environment"]["cores"] >= 1


def test_backend_options_are_typed_and_reach_the_backend():
    from hal.cli.run import backend_options

    assert backend_options(["a=8", "b=true", "c=io_stream", "d=1.5", "e="]) == [
        ("a", 8), ("b", True), ("c", "io_stream"), ("d", 1.5), ("e", "")]
    out = json.loads(hal_cli("run", "mlp", "--device", "cpu@ort", "--option",
                             "intra_op_num_threads=1", "--json", check=True).stdout)
    assert out["device"] == "cpu:0@ort" and out["p50_ms"] > 0


def test_framework_start_up_logs_stay_off_stderr_unless_verbose():
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HAL_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")}
    quiet = subprocess.run([sys.executable, "-m", "hal.cli", "devices"], capture_output=True,
                           text=True, env=env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    if not any(d.backend == "tf" and d.usable for d in hal.devices()):
        return  # nothing prints start-up lines in this environment
    loud = subprocess.run([sys.executable, "-m", "hal.cli", "--verbose", "devices"],
                          capture_output=True, text=True, env=env)
    assert loud.returncode == 0 and loud.stderr, "--verbose should let the frameworks log"
