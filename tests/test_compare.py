"""hal.compare: rows, failures kept as rows, writers, baselines, isolation, MLPerf scenarios.

Tiny budgets and small models: these check behaviour, never speed.
"""

from __future__ import annotations

import copy
import csv
import io
import json

import numpy as np
import pytest
from hal.backends.reference import ReferenceBackend

import hal
from hal.backend import Backend, Executable
from hal.comparison import FIELDS, Results, compare, harness, regressions
from hal.device import DeviceInfo
from hal.registry import REGISTRY
from tests.plugins import broken_plugins, installed

FAST = {"budget_s": 0.01, "warmup": 1, "min_runs": 3, "max_runs": 20}


@pytest.mark.parametrize("first", ["import hal.compare", "import hal.comparison",
                                   "from hal import compare", "import hal.compare as c",
                                   "import hal.cli", "import hal.inputs", "import hal",
                                   "import hal.comparison.harness", "from hal.compare import *"])
def test_hal_compare_is_always_the_function(first):
    """``hal.compare`` stays the function whatever was imported first (a fresh process each)."""
    import subprocess
    import sys

    code = (f"{first}\nimport hal, hal.compare, hal.comparison\n"
            "assert callable(hal.compare) and hal.compare is hal.comparison.compare\n"
            "import sys; assert sys.modules['hal.compare'] is hal.compare")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_compare_function_returns_results():
    res = hal.compare(models=["lenet"], devices=["cpu@reference"], batch=1, **FAST)
    assert isinstance(res, Results) and [r.device for r in res] == ["cpu:0@reference"]
    assert res.rows[0].error is None and res.rows[0].max_abs_err == 0.0


class ThirdCallFails(Executable):
    """Runs like the reference, but its third call raises (a device dying mid-run)."""

    def __init__(self, inner, device):
        super().__init__(device, inner.input_names, inner.output_names)
        self.inner, self.calls = inner, 0

    def run(self, buffers):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("device lost on call 3")
        return self.inner.run(buffers)


class Flaky(Backend):
    name = "flaky"
    kinds = ("cpu",)
    priority = -50

    @property
    def ops(self):
        return ReferenceBackend().ops

    def probe(self):
        return [DeviceInfo("cpu", 0, self.name, name="fails on its third call")]

    def compile(self, model, device, options):
        return ThirdCallFails(ReferenceBackend().compile(model, device, options), device)


class NeverRuns(Flaky):
    name = "neverruns"

    def compile(self, model, device, options):
        raise RuntimeError("this reference is broken")


@pytest.fixture(scope="module")
def small() -> Results:
    return compare(["mlp", "lenet"], ["cpu@reference"], batch=(1, 3), **FAST)


def test_every_field_present(small):
    assert len(small.rows) == 4
    for r in small.rows:
        d = r.to_dict()
        assert list(d) == FIELDS
        assert r.error is None, r.error
        for f in ("compile_s", "first_call_ms", "p50_ms", "p90_ms", "p99_ms", "iqr_ms",
                  "mad_ms", "throughput_per_s", "peak_mem_mb", "max_abs_err", "top1_agreement"):
            assert d[f] is not None and d[f] >= 0, f
        assert r.p50_ms <= r.p90_ms <= r.p99_ms
        assert r.runs >= 3 and r.max_abs_err == 0.0 and r.top1_agreement == 1.0
        assert r.backend == "reference" and r.device == "cpu:0@reference" and not r.simulated
        assert r.placement == {"cpu:0@reference": {"segments": 1, "nodes": r.segments[0][1]}}
        assert {"count", "bytes"} <= set(r.transfers) and r.mem_scope == "in-process"
    env = small.environment
    assert env["hal"] == hal.__version__ and env["cpu"]["logical_cores"] >= 1
    assert env["run"]["reference"] == "cpu@reference"
    assert "numpy" in env["frameworks"]


def test_failing_device_keeps_the_rest(tmp_path):
    with installed(broken_plugins(tmp_path)):  # real entry points, one compiles nothing
        hal.register_backend(Flaky)  # and one in-process device that dies mid-run
        res = compare(["mlp", "lenet"], ["cpu@reference", "cpu@flaky", "cpu@compileboom"],
                      batch=(1, 2), **FAST)
    assert len(res.rows) == 2 * 3 * 2
    by = {(r.model, r.device, r.batch): r for r in res.rows}
    for m in ("mlp", "lenet"):
        assert by[m, "cpu:0@reference", 1].error is None
        assert by[m, "cpu:0@reference", 2].error is None
        # dies mid-run at batch 1 (its 3rd call), keeps going at batch 2
        assert "device lost on call 3" in by[m, "cpu:0@flaky", 1].error
        assert by[m, "cpu:0@flaky", 2].error is None
        assert by[m, "cpu:0@flaky", 2].max_abs_err == 0.0
        for b in (1, 2):
            assert "kernel generator crashed" in by[m, "cpu:0@compileboom", b].error
    table = res.table()
    assert table.row_count == len(res.rows)


def test_reference_failure_gives_error_rows_for_that_model(monkeypatch):
    hal.register_backend(NeverRuns)
    try:
        monkeypatch.setattr(harness, "REFERENCE", "cpu@neverruns")
        res = compare(["mlp"], ["cpu@reference"], batch=(1,), **FAST)
    finally:
        REGISTRY.unregister("neverruns")
    (row,) = res.rows
    assert "no reference for 'mlp'" in row.error and "this reference is broken" in row.error


def test_bad_arguments_fail_before_any_work():
    with pytest.raises(hal.DeviceNotFound, match="nosuch"):
        compare(["mlp"], ["nosuch"])
    with pytest.raises(hal.ModelError, match="zoo model"):
        compare(["no_model"], ["cpu@reference"])
    with pytest.raises(hal.OptionError, match="precision"):
        compare(["mlp"], ["cpu@reference"], precision="fp7")
    with pytest.raises(hal.OptionError, match="batch"):
        compare(["mlp"], ["cpu@reference"], batch=(0,))


def test_unsupported_precision_is_an_error_row():
    res = compare(["mlp"], ["cpu@reference"], batch=1, precision=("fp32", "fp16"), **FAST)
    ok, bad = res.rows
    assert ok.precision == "fp32" and ok.error is None
    assert bad.precision == "fp16" and "precision" in bad.error


def test_progress_reports_every_row():
    seen = []
    compare(["mlp"], ["cpu@reference"], batch=(1, 2),
            progress=lambda **kw: seen.append((kw["done"], kw["total"], kw["row"])), **FAST)
    finished = [s for s in seen if s[2] is not None]
    assert [d for d, _, _ in finished] == [1, 2] and all(t == 2 for _, t, _ in seen)


def test_writers(small, tmp_path):
    data = json.loads(small.to_json(tmp_path / "r.json"))
    assert data["schema"] == "hal-compare/1" and len(data["rows"]) == 4
    back = Results.from_json(tmp_path / "r.json")
    assert [r.to_dict() for r in back.rows] == [r.to_dict() for r in small.rows]

    small.to_csv(tmp_path / "r.csv")
    lines = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert len(lines) == 4 and {"p50_ms", "transfers_count", "placement"} <= set(lines[0])

    small.to_html(tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") >= 4
    assert "http" not in html and "<script" not in html and "<link" not in html
    for title in ("Latency per device", "Throughput vs batch", "Accuracy vs speed", "Placement"):
        assert title in html


def test_to_pandas(small):
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(hal.HalError, match="pip install pandas"):
            small.to_pandas()
        return
    df = small.to_pandas()
    assert len(df) == 4 and "p50_ms" in df.columns


def test_bad_baseline_file(tmp_path):
    with pytest.raises(hal.HalError, match="no comparison file"):
        Results.from_json(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(hal.HalError, match="not a `hal compare --json` file"):
        Results.from_json(tmp_path / "x.json")


def test_baseline_flags_slowed_row_only(small):
    assert not [c for c in regressions(small, small) if c.regression]
    slowed = copy.deepcopy(small)
    target = slowed.rows[1]
    target.p50_ms = small.rows[1].p50_ms * 3 + 10 * (small.rows[1].mad_ms or 0.0) + 1.0
    changes = regressions(small, slowed)
    assert [(c.kind, c.model, c.batch) for c in changes] == [("slower", target.model,
                                                              target.batch)]
    assert changes[0].regression and changes[0].new > changes[0].old + changes[0].threshold
    # noise: a move within the recorded spread is not flagged
    jitter = copy.deepcopy(small)
    r = jitter.rows[0]
    r.mad_ms = r.p50_ms
    r.p50_ms *= 1.5
    assert not [c for c in regressions(small, jitter) if c.regression]
    # accuracy and failures
    worse = copy.deepcopy(small)
    worse.rows[2].max_abs_err = 0.5
    worse.rows[3].error = "BackendError: boom"
    kinds = {(c.kind, c.batch, c.model) for c in regressions(small, worse)}
    assert ("less accurate", worse.rows[2].batch, worse.rows[2].model) in kinds
    assert ("now failing", worse.rows[3].batch, worse.rows[3].model) in kinds


def test_isolate_reference():
    res = compare(["mlp"], ["cpu@reference"], batch=(1, 2), isolate=True, **FAST)
    assert [r.error for r in res.rows] == [None, None]
    for r in res.rows:
        assert r.mem_scope.startswith("isolated") and r.max_abs_err == 0.0 and r.p50_ms > 0
    assert res.environment["run"]["isolate"]
    assert "numpy" in res.environment["workers"]["cpu:0@reference"]["frameworks"]


def test_isolate_worker_failure_is_an_error_row(tmp_path, monkeypatch):
    import sys

    crash = tmp_path / "crash.sh"
    crash.write_text("#!/bin/sh\necho 'segfault in vendor runtime' >&2\nexit 139\n")
    crash.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(crash))  # the worker process dies at once
    res = compare(["mlp"], ["cpu@reference"], batch=(1, 2), isolate=True, **FAST)
    for row in res.rows:
        assert "exited with code 139" in row.error and "segfault in vendor" in row.error


def test_cli_files_and_baseline(tmp_path, capsys):
    from hal.cli import main

    base = tmp_path / "base.json"
    args = ["compare", "--models", "mlp", "--devices", "cpu@reference", "--batch", "1,2",
            "--budget", "0.01"]
    assert main(args + ["--json", str(base), "--csv", str(tmp_path / "a.csv"),
                        "--html", str(tmp_path / "a.html")]) == 0
    out = capsys.readouterr().out
    assert "mlp" in out and "cpu:0@reference" in out
    assert (tmp_path / "a.csv").exists() and (tmp_path / "a.html").exists()
    data = json.loads(base.read_text())
    for r in data["rows"]:  # pretend the baseline was 10x faster
        r["p50_ms"] /= 10
        r["mad_ms"] = 0.0
    base.write_text(json.dumps(data))
    assert main(args + ["--baseline", str(base)]) == 1
    assert "slower" in capsys.readouterr().out


def test_scenario_needs_loadgen(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)
    with pytest.raises(hal.HalError, match="pip install mlcommons-loadgen"):
        compare(["mlp"], ["cpu@reference"], scenario="offline")
    with pytest.raises(hal.OptionError, match="scenario"):
        compare(["mlp"], ["cpu@reference"], scenario="batchy")


@pytest.mark.parametrize("scenario,name", [("single-stream", "SingleStream"),
                                           ("offline", "Offline"), ("server", "Server")])
def test_mlperf_scenarios(scenario, name):
    pytest.importorskip("mlperf_loadgen")
    res = compare(["mlp"], ["cpu@reference"], batch=(4,), scenario=scenario,
                  budget_s=0.05, min_runs=8, warmup=1)
    (row,) = res.rows
    assert row.error is None, row.error
    assert row.scenario == name and row.mlperf["scenario"] == name
    assert row.batch == (1 if name == "SingleStream" else 4)
    assert row.p90_ms > 0 and row.throughput_per_s > 0 and row.runs >= 1
    assert row.mlperf["result"] in ("VALID", "INVALID") and row.mlperf["value"] is not None
    assert row.max_abs_err == 0.0


def test_measure_uses_device_sync():
    calls = []

    class Fake:
        def __call__(self, x):
            calls.append("call")
            return [x]

        def sync(self):
            calls.append("sync")

    timing, _ = harness.measure(Fake(), [np.zeros(1)], budget_s=0.0, warmup=1, min_runs=3)
    assert len(timing.times_ms) == 3
    assert calls == ["call", "sync"] * 5


class Second(Flaky):
    """A healthy in-process device beside the reference (to see the order of each round)."""

    name = "second"

    def compile(self, model, device, options):
        return ReferenceBackend().compile(model, device, options)


def test_rounds_rotate_devices_and_merge_rows():
    hal.register_backend(Second)
    order: list[str] = []

    def progress(done, total, current, row):
        if row is None and " on " in current:
            order.append(current.rsplit(" on ", 1)[1])
    try:
        res = compare(["mlp"], ["cpu@reference", "cpu@second"], batch=(1,), rounds=3,
                      progress=progress, **FAST)
    finally:
        REGISTRY.unregister("second")
    assert order == ["cpu:0@reference", "cpu:0@second", "cpu:0@second", "cpu:0@reference",
                     "cpu:0@reference", "cpu:0@second"]
    assert len(res.rows) == 2 and res.environment["run"]["rounds"] == 3
    for r in res.rows:
        assert r.error is None and r.rounds == 3 and len(r.round_p50_ms) == 3
        assert r.p50_ms == sorted(r.round_p50_ms)[1]
        assert r.p50_spread_ms == (max(r.round_p50_ms) - min(r.round_p50_ms)) / 2
        assert r.runs >= 9 and r.max_abs_err == 0.0
    assert "3 rounds" in res.table().caption
    assert "round_p50_ms" in res.to_csv().splitlines()[0]


def test_merge_of_rounds():
    from hal.comparison.rounds import merge
    from hal.comparison.row import Row

    def row(p50, runs, mean, error=None):
        return Row(model="m", device="d", p50_ms=p50, p90_ms=p50 * 2, runs=runs, mean_ms=mean,
                   min_ms=p50 / 2, peak_mem_mb=p50, error=error)

    (m,) = merge([[row(1.0, 10, 1.0)], [row(3.0, 30, 3.0)], [row(2.0, 10, 2.0)]])
    assert (m.p50_ms, m.p90_ms, m.p50_spread_ms, m.runs) == (2.0, 4.0, 1.0, 50)
    assert m.round_p50_ms == [1.0, 3.0, 2.0] and m.mean_ms == pytest.approx(2.4)
    assert (m.min_ms, m.peak_mem_mb, m.rounds) == (0.5, 3.0, 3)
    assert m.throughput_per_s == pytest.approx(1 / 2.4e-3)
    (bad,) = merge([[row(1.0, 5, 1.0)], [row(1.0, 0, None, error="BackendError: lost")]])
    assert bad.error == "round 2 of 2: BackendError: lost"


def test_rounds_spread_widens_the_baseline_noise(small):
    old, new = copy.deepcopy(small), copy.deepcopy(small)
    for r in old.rows + new.rows:
        r.mad_ms = 0.0
    new.rows[0].p50_ms = old.rows[0].p50_ms * 1.4  # beyond the 10% floor
    assert [c.kind for c in regressions(old, new)] == ["slower"]
    old.rows[0].p50_spread_ms = new.rows[0].p50_spread_ms = old.rows[0].p50_ms * 0.25
    assert regressions(old, new) == []  # within the drift both runs measured


def test_rounds_must_be_positive():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(hal.OptionError, match="rounds"):
            compare(["mlp"], ["cpu@reference"], rounds=bad)


def test_a_simulated_device_is_best_only_where_no_real_one_ran():
    from hal.comparison.results import Results
    from hal.comparison.row import Row

    rows = [Row(model="m", batch=1, device="fpga@rtl", precision="int8", p50_ms=0.5,
                simulated=True),
            Row(model="m", batch=1, device="cpu@ort", precision="int8", p50_ms=2.0),
            Row(model="n", batch=1, device="fpga@emu", precision="int8", p50_ms=3.0,
                simulated=True),
            Row(model="n", batch=1, device="fpga@rtl", precision="int8", p50_ms=9.0,
                simulated=True)]
    best = Results(rows, {}).best()
    assert best[("m", 1, "int8")].device == "cpu@ort"
    assert best[("n", 1, "int8")].device == "fpga@emu"


def test_best_rows_are_the_same_in_table_json_and_html():
    from hal.comparison.results import Results
    from hal.comparison.row import Row

    rows = [Row(model="m", batch=1, device="fpga@rtl", precision="int8", p50_ms=0.5,
                p90_ms=0.5, simulated=True),
            Row(model="m", batch=1, device="cpu@ort", precision="int8", p50_ms=2.0, p90_ms=2.0),
            Row(model="m", batch=1, device="cpu@torch", precision="int8", p50_ms=3.0,
                p90_ms=3.0),
            Row(model="n", batch=1, device="fpga@emu", precision="int8", p50_ms=7.0,
                p90_ms=7.0, simulated=True),
            Row(model="m", batch=1, device="cpu@ort", precision="fp32", p50_ms=1.0, p90_ms=1.0)]
    res = Results(rows, {})
    flags = [False, True, False, True, True]  # per (model, batch, precision)
    assert [r["best"] for r in res.to_dict()["rows"]] == flags
    assert [r["best"] for r in json.loads(res.to_json())["rows"]] == flags
    chart = res.to_html().split("<h2>Throughput")[0]  # the latency bars
    assert ">2 ★</text>" in chart and ">7 ★</text>" in chart and ">1 ★</text>" in chart
    assert ">0.5 ★" not in chart and ">3 ★" not in chart
    assert Results.from_json(res.to_json()).rows == rows  # "best" is derived, not a field


def test_default_run_leaves_out_slow_simulations_with_why():
    from hal.comparison.policy import default_devices

    infos = [DeviceInfo("cpu", 0, "fast"), DeviceInfo("npu", 0, "sim", simulated=True),
             DeviceInfo("npu", 1, "sim", simulated=True, slow_simulation="gate-level: 1 min"),
             DeviceInfo("cpu", 0, "gone", usable=False, reason="not installed"),
             DeviceInfo("cpu", 1, "fast", alias_of="cpu:0@fast")]
    chosen, skipped = default_devices(infos)
    assert chosen == ["cpu:0@fast", "npu:0@sim"]
    assert skipped == {"npu:1@sim": "gate-level: 1 min"}
    assert infos[2].to_dict()["slow_simulation"] == "gate-level: 1 min"
    assert "slow_simulation" not in infos[1].to_dict()


def test_built_in_slow_simulations_say_so():
    from hal.comparison.policy import left_out

    for d in hal.devices():
        if d.backend in ("rtl", "hls4ml") and d.usable and d.simulated:
            assert left_out(d) and "simulation" in d.slow_simulation
        elif d.backend in ("reference", "emu", "ort"):
            assert left_out(d) is None


def test_accelerator_figures_are_typed():
    from hal.backend import AcceleratorStats, Estimate
    from hal.comparison.results import accelerator_text

    dev = hal.device("fpga@emu")  # DeviceNotFound says why when it is not usable here
    res = compare(["lenet"], [dev.string], batch=1, **FAST)
    row = res.rows[0]
    assert row.error is None and row.accelerator
    for seg, figures in row.accelerator.items():
        stats = AcceleratorStats.from_dict(figures)
        assert stats.cycles > 0 and stats.batch == 1 and len(stats.layer_cycles) >= 2
        assert all(isinstance(e, Estimate) and e.ms_per_call > 0 for e in stats.estimates)
        assert "ESTIMATED" in stats.basis
        assert f"segment {seg}: {stats.cycles:,} cycles" in accelerator_text(row.accelerator)
    assert "cycles for batch 1" in res.to_csv()
    again = Results.from_json(res.to_json()).rows[0]
    assert again.accelerator == row.accelerator


def test_int8_rows_with_dynamic_calibration(capsys):
    res = compare(["mlp"], ["cpu@reference"], batch=[1], precision=["fp32", "int8"],
                  budget_s=0, calibration="dynamic")
    fp32, int8 = res.rows
    assert (fp32.calibration, int8.calibration) == (None, "dynamic") and not int8.error
    assert res.environment["run"]["calibration"] == "dynamic"
    static = compare(["mlp"], ["cpu@reference"], batch=[1], precision="int8", budget_s=0)
    assert static.rows[0].calibration is None  # static scales: other numbers
    assert static.rows[0].max_abs_err != int8.max_abs_err
    assert int8.max_abs_err > 0 and "int8 dynamic" in str(_rendered(res))
    for kwargs, fix in [({"calibration": "static"}, "must be 'dynamic'"),
                        ({"calibration": "dynamic"}, "add precision='int8'")]:
        with pytest.raises(hal.errors.OptionError, match=fix):
            compare(["mlp"], ["cpu@reference"], batch=[1], budget_s=0, **kwargs)
    from hal.cli import main

    assert main(["compare", "--models", "mlp", "--devices", "cpu@reference", "--batch", "1",
                 "--budget", "0", "--precision", "int8", "--calibration", "dynamic"]) == 0
    assert "int8 dynamic" in capsys.readouterr().out


def _rendered(res) -> str:
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(res.table())
    return console.export_text()
