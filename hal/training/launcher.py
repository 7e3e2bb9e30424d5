"""One ``hal.train`` call run in fresh worker processes, for a parallel run whose engine cannot
start in this process.

XLA's host device count and TensorFlow's logical devices are fixed when the framework
initializes (HAL's device probes do that), and torch's DistributedDataParallel runs one
process per worker. So ``hal.train(..., workers=N)`` asks the backend how to launch
(``Backend.launch_training``) and, unless the current process can host the run, starts the
processes the backend asks for, each with the backend's environment plus torch's rendezvous
variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), and
runs the same call there. Rank 0 sends the result back. The call travels in a private
temporary folder (pickled: it holds the caller's own arrays and callbacks, and is read only by
the workers started here); a worker's HAL error comes back as the same error class.

    python -m hal.training.worker FOLDER     # what each worker runs
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hal import errors
from hal.errors import BackendError, HalError
from hal.trainer import Launch
from hal.training.interrupt import TrainingInterrupted, ask_to_stop

#: set in every worker, to the run's folder: a worker whose backend still cannot host the
#: run fails instead of launching again, and Ctrl-C is agreed on there
#: (``hal.training.interrupt.SharedBoundary``)
WORKER_ENV = "HAL_TRAIN_WORKER"
#: the exit status of a worker that stopped on Ctrl-C (as a shell reports SIGINT)
INTERRUPTED = 130
CALL, RESULT = "call.pkl", "result.pkl"


def run_elsewhere(launch: Launch, call: dict[str, Any], timeout: float | None = None):
    """Run ``hal.train(**call)`` in ``launch.processes`` fresh processes; rank 0's
    TrainResult. ``call["model"]`` is a hal.Model (sent as ONNX)."""
    if os.environ.get(WORKER_ENV):
        raise BackendError(f"this training worker cannot host the run either ({launch.why}); "
                           f"its environment was {sorted(launch.env)}")
    with tempfile.TemporaryDirectory(prefix="hal-train-") as tmp:
        folder = Path(tmp)
        model = call["model"]
        call = {**call, "model": (model.to_proto().SerializeToString(), model.name)}
        (folder / CALL).write_bytes(pickle.dumps(call, protocol=5))
        procs = _start(launch, folder)
        _wait(procs, folder, timeout)
        _interrupted(folder)
        return _result(folder)


def _start(launch: Launch, folder: Path) -> list[subprocess.Popen]:
    base = {**os.environ, **{k: str(v) for k, v in launch.env.items()},
            WORKER_ENV: str(folder)}
    if launch.processes > 1:
        base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                    WORLD_SIZE=str(launch.processes))
        # the cores shared out, as torchrun does, unless the caller chose: N processes each
        # with every core's worth of threads oversubscribe them
        base.setdefault("OMP_NUM_THREADS",
                        str(max(1, (os.cpu_count() or 1) // launch.processes)))
    procs = []
    for rank in range(launch.processes):
        env = dict(base)
        if launch.processes > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank))
        if rank == 0:  # one progress bar: rank 0's
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "hal.training.worker", str(folder)], env=env))
            continue
        with open(folder / f"stderr-{rank}.txt", "wb") as err:  # the child keeps its own copy
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "hal.training.worker", str(folder)], env=env,
                stdout=subprocess.DEVNULL, stderr=err))
    return procs


def _wait(procs: list[subprocess.Popen], folder: Path, timeout: float | None) -> None:
    """Until every worker ends. The first Ctrl-C asks them to stop after one same step
    (``hal.training.interrupt``); a second one ends them at once."""
    deadline = None if timeout is None else time.monotonic() + timeout
    asked = False
    while True:
        try:
            _watch(procs, folder, deadline, timeout)
            break
        except KeyboardInterrupt:
            if asked:
                _stop(procs)
                raise
            asked = True
            ask_to_stop(folder, len(procs))
        except BaseException:
            _stop(procs)
            raise
    for rank, p in enumerate(procs):
        if p.returncode and not _stopped(rank, p, folder):
            _raise(rank, p.returncode, folder)


def _stopped(rank: int, proc: subprocess.Popen, folder: Path) -> bool:
    """Whether the worker ended on Ctrl-C, having said where it stopped."""
    return proc.returncode == INTERRUPTED and (folder / f"interrupted-{rank}.pkl").exists()


def _interrupted(folder: Path) -> None:
    """Rank 0 stopped on Ctrl-C: the run's TrainingInterrupted, here."""
    sent = folder / "interrupted-0.pkl"
    if sent.exists():
        checkpoint, epoch, step = pickle.loads(sent.read_bytes())
        raise TrainingInterrupted(Path(checkpoint) if checkpoint else None, epoch, step)


def _watch(procs: list[subprocess.Popen], folder: Path, deadline: float | None,
           timeout: float | None) -> None:
    while any(p.poll() is None for p in procs):
        failed = [(r, p) for r, p in enumerate(procs)
                  if p.poll() not in (None, 0) and not _stopped(r, p, folder)]
        if failed:
            _stop(procs)
            _raise(failed[0][0], failed[0][1].returncode, folder)
        if deadline is not None and time.monotonic() > deadline:
            _stop(procs)
            raise BackendError(f"the training workers did not finish within {timeout:g} s; "
                               f"they were stopped")
        time.sleep(0.05)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _raise(rank: int, code: int, folder: Path) -> None:
    sent = folder / f"error-{rank}.pkl"
    if sent.exists():
        cls_name, message = pickle.loads(sent.read_bytes())
        cls = getattr(errors, cls_name, HalError)
        raise cls(f"training worker {rank}: {message}")
    tail = ""
    log = folder / f"stderr-{rank}.txt"
    if log.exists():
        tail = log.read_text(errors="replace")[-1500:]
    raise BackendError(f"training worker {rank} exited with status {code}"
                       + (f"; its last output:\n{tail}" if tail else ""))


def _result(folder: Path):
    from hal.ir.model import load
    from hal.training.result import TrainResult

    path = folder / RESULT
    if not path.exists():
        raise BackendError("the training workers finished without a result from rank 0")
    fields = pickle.loads(path.read_bytes())
    fields["model"] = load(*fields["model"])
    return TrainResult(**fields)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(folder: Path) -> int:
    """Run the call in ``folder``; rank 0 writes the result. Returns the exit status."""
    from hal.ir.model import load
    from hal.training.loop import train

    rank = int(os.environ.get("RANK", "0"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launching process decides (see _wait)
    try:
        call = pickle.loads((folder / CALL).read_bytes())
        model, data = load(*call.pop("model")), call.pop("data")
        result = train(model, data, **call)
    except HalError as exc:
        (folder / f"error-{rank}.pkl").write_bytes(pickle.dumps((type(exc).__name__, str(exc))))
        return 1
    except TrainingInterrupted as stop:
        saved = str(stop.checkpoint) if stop.checkpoint else None
        (folder / f"interrupted-{rank}.pkl").write_bytes(
            pickle.dumps((saved, stop.epoch, stop.step)))
        return INTERRUPTED
    if rank == 0:
        fields = {k: getattr(result, k) for k in result.__dataclass_fields__}
        fields["model"] = (result.model.to_proto().SerializeToString(), result.model.name)
        (folder / RESULT).write_bytes(pickle.dumps(fields, protocol=5))
    return 0
