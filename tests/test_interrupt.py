"""Ctrl-C (SIGINT) during `hal compare` and `hal train`, sent to the command as a user's
terminal would: the work done so far is kept, the command exits 130 and says so.

Each test waits for a marker of progress (a printed row, a checkpoint file) before it
interrupts, and for the process to end with a generous limit: nothing here is timed.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import hal
from hal import nn
from hal.comparison import Results
from hal.training import TrainingInterrupted
from hal.training.checkpoint import load

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc for child pids")

LIMIT_S = 600  # a loaded machine: generous, never asserted on


def start(*args, env=None) -> subprocess.Popen:
    """`hal ARGS` with SIGINT at its default (a shell may have started this test with it
    ignored, which a child would inherit)."""
    return subprocess.Popen([sys.executable, "-m", "hal.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def children(pid: int) -> list[int]:
    out = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[1]) == pid:
            out.append(int(stat.split("/")[2]))
    return out


def torch_cpu():
    try:
        return hal.registry.device("cpu@torch")
    except hal.HalError as exc:
        pytest.skip(f"cpu@torch is not usable here: {exc}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("isolate", [True, False], ids=["isolated", "in-process"])
def test_ctrl_c_during_compare_writes_the_rows_so_far(tmp_path, isolate):
    files = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "html")}
    proc = start("compare", "--models", "lenet", "--devices", "cpu@reference,cpu@ort",
                 "--batch", "1,64", "--budget", "5", *(["--isolate"] if isolate else []),
                 *(a for k, p in files.items() for a in (f"--{k}", str(p))))
    seen = []
    for line in proc.stderr:  # one line per finished row where no progress bar can be drawn
        seen.append(line)
        if line.startswith("[1/4] "):
            break
    else:
        pytest.fail(f"no row was reported; exit {proc.wait()}, stderr: {''.join(seen)}")
    workers = children(proc.pid)
    if isolate:
        assert workers, "the isolated worker should be measuring the next row"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=LIMIT_S)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert not [pid for pid in workers if alive(pid)], "a worker outlived the run"

    data = json.loads(files["json"].read_text())
    note, rows = data["interrupted"], data["rows"]
    assert 1 <= len(rows) < 4 and f"interrupted (Ctrl-C) after {len(rows)} of 4 rows" in note
    assert note in out and data["environment"]["run"]["interrupted"] == note
    assert (rows[0]["device"], rows[0]["batch"], rows[0]["error"]) == ("cpu:0@reference", 1,
                                                                       None)
    assert rows[0]["p50_ms"] > 0
    with open(files["csv"], newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == len(rows) and {r["interrupted"] for r in records} == {note}
    assert f"<p class='warn'>{note}</p>" in files["html"].read_text()
    assert Results.from_json(files["json"]).interrupted == note


def test_compare_keeps_a_row_finished_just_before_ctrl_c():
    """Ctrl-C right after a row is reported done (in the progress callback, before the row
    reaches the harness's list), in round 2 of 2: the row is kept, the rounds merge."""
    from hal.comparison import CompareInterrupted, compare

    def progress(done, total, current, row):
        if row is not None and done == 3:
            raise KeyboardInterrupt

    with pytest.raises(CompareInterrupted) as stop:
        compare("mlp", "cpu@reference", batch=(1, 2), budget_s=0, min_runs=2, warmup=1,
                rounds=2, progress=progress)
    res = stop.value.results
    assert res.interrupted == ("interrupted (Ctrl-C) in round 2 of 2, after 3 of 4 row "
                               "measurements; the rest were not made")
    assert [(r.batch, r.rounds) for r in res.rows] == [(1, 2), (2, 1)]
    assert all(r.error is None and r.p50_ms > 0 for r in res.rows)
    assert "interrupted" in repr(res) and "interrupted" in Results.from_json(res.to_json()) \
        .to_csv().splitlines()[0]


def test_resume_without_a_checkpoint_folder_says_what_to_pass(capsys):
    from hal.cli import main

    assert main(["train", "lenet", "--device", "cpu", "--resume"]) == 2
    assert "pass --checkpoint DIR" in capsys.readouterr().err


def test_ctrl_c_during_train_leaves_a_checkpoint_that_resumes(tmp_path):
    torch_cpu()
    from hal.data import digits

    x, y = digits("train", 28, 1)  # lenet's input
    np.savez(tmp_path / "digits.npz", x=x[:256], y=y[:256])  # 4 updates an epoch at batch 64
    args = ["train", "lenet", "--device", "cpu@torch", "--data", str(tmp_path / "digits.npz"),
            "--json", "--no-progress"]
    # no --checkpoint: an interrupted run still leaves one, in a folder of its own under TMPDIR
    proc = start(*args, "--epochs", "10000", env={"TMPDIR": str(tmp_path)})
    while not glob.glob(str(tmp_path / "hal-train-*" / "last.safetensors")):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)  # until the end of epoch 1
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=LIMIT_S)
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    hint = err.rpartition("run the same command with ")[2].split()
    assert hint[0] == "--checkpoint" and hint[2] == "--resume", err
    folder = hint[1]

    saved = load(os.path.join(folder, "last.safetensors")).meta["loop"]
    assert saved["epoch"] >= 1 and saved["step"] == 4 * saved["epoch"] + saved["position"]
    epochs = saved["epoch"] + 1  # finish the epoch it stopped in
    done = subprocess.run([sys.executable, "-m", "hal.cli", *args, "--epochs", str(epochs),
                           "--checkpoint", folder, "--resume"], capture_output=True, text=True,
                          timeout=LIMIT_S)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["steps"] == 4 * epochs and len(result["history"]) == epochs
    # the epochs before the checkpoint are the interrupted run's own records (their wall
    # times too), not a second run's: the run went on from the file
    assert result["history"][:saved["epoch"]] == saved["history"]


def test_ctrl_c_within_a_step_waits_for_it_then_resumes_where_it_stopped(tmp_path,
                                                                        monkeypatch):
    """The SIGINT lands inside a training step: the step finishes, the checkpoint is written
    after it, and resuming reaches the weights of a run never interrupted."""
    dev = torch_cpu()
    with nn.seed(0):
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).to_model((None, 1, 4, 4),
                                                                       name="linear")
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((96, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 96))
    kw = dict(device="cpu@torch", optimizer="adamw", lr=0.01, epochs=2, batch_size=16,
              progress=False)
    whole = hal.train(model, data, **kw)

    compile_training = dev.backend.compile_training

    def interrupted_in_step_9(*args):
        trainer = compile_training(*args)
        step, calls = trainer.step, []

        def step_with_ctrl_c(*a):
            calls.append(1)
            if len(calls) == 9:  # epoch 2, third step
                os.kill(os.getpid(), signal.SIGINT)
            return step(*a)

        trainer.step = step_with_ctrl_c
        return trainer

    monkeypatch.setattr(dev.backend, "compile_training", interrupted_in_step_9)
    with pytest.raises(TrainingInterrupted) as stop:
        hal.train(model, data, checkpoint_dir=tmp_path, **kw)
    monkeypatch.undo()
    assert stop.value.checkpoint == tmp_path / "last.safetensors"
    assert (stop.value.epoch, stop.value.step) == (1, 9)
    assert isinstance(stop.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back

    rest = hal.train(model, data, checkpoint_dir=tmp_path, resume=True, **kw)
    assert rest.steps == whole.steps == 12
    for name, v in whole.model.graph.initializers.items():
        np.testing.assert_allclose(rest.model.graph.initializers[name].const_value.numpy(),
                                   v.const_value.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)


def test_ctrl_c_stops_every_worker_after_the_same_step(tmp_path):
    """Two DistributedDataParallel workers: Ctrl-C to the launching command stops both after
    one same step (or one would wait forever in its next all-reduce), rank 0 writes the
    checkpoint, and the run resumes from it with two workers."""
    torch_cpu()
    from hal.data import digits

    x, y = digits("train", 28, 1)
    np.savez(tmp_path / "digits.npz", x=x[:256], y=y[:256])  # 4 updates an epoch at batch 64
    args = ["train", "lenet", "--device", "cpu@torch", "--workers", "2", "--data",
            str(tmp_path / "digits.npz"), "--json", "--no-progress",
            "--checkpoint", str(tmp_path / "ckpt")]
    proc = start(*args, "--epochs", "10000")
    while not (tmp_path / "ckpt" / "last.safetensors").exists():
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)  # until the end of epoch 1
    workers = children(proc.pid)
    proc.send_signal(signal.SIGINT)
    for pid in workers:  # as a terminal does: the whole process group
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    out, err = proc.communicate(timeout=LIMIT_S)
    assert proc.returncode == 130, err
    assert "workers stop after step" in err and "Traceback" not in err, err
    assert not any(alive(pid) for pid in workers)
    saved = load(str(tmp_path / "ckpt" / "last.safetensors")).meta["loop"]
    assert saved["step"] == 4 * saved["epoch"] + saved["position"] and saved["step"] > 4
    epochs = saved["epoch"] + 1
    done = subprocess.run([sys.executable, "-m", "hal.cli", *args, "--epochs", str(epochs),
                           "--resume"], capture_output=True, text=True, timeout=LIMIT_S)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"] == 4 * epochs
