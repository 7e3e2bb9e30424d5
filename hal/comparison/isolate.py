"""``--isolate``: each device measured in its own process, rows streamed back as JSON.

The parent computes the reference once and hands inputs and outputs over in .npz files;
the worker (``python -m hal.comparison.worker``) compiles and measures, writing one JSON line
per row on a private copy of stdout (the worker's own stdout goes to stderr, so a framework
printing cannot corrupt the stream). A worker that crashes or stays silent too long leaves
error rows for what it did not finish; the rows it did finish are kept. On Ctrl-C the
worker ignores SIGINT and the parent stops it (SIGTERM, then SIGKILL), so none outlives the
run.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np

from hal.comparison.row import Row
from hal.isolation.process import exit_text, worker_env

MARK = "HALCMP "
MEM_SCOPE = "isolated: one process per device"
SILENCE_LIMIT_S = 600.0  # no row for this long: the worker is taken to hang
STOP_GRACE_S = 5.0  # a worker stopped early gets this long to exit before SIGKILL


def run_isolated(job, refs: dict, tick=None, envs: dict | None = None,
                 python: str | None = None) -> Iterator[Row]:
    """Rows of ``job`` measured in a fresh worker process; ``envs[device]`` gets its environment."""
    with tempfile.TemporaryDirectory(prefix="hal-compare-") as tmp:
        spec = {"job": asdict(job), "refs": _write_refs(refs, job, tmp)}
        err_path = os.path.join(tmp, "stderr.txt")
        expected = [(m, p, b) for m in job.models for p in job.precision for b in job.batch]
        seen: set[tuple] = set()
        with open(err_path, "w+") as err:
            proc = subprocess.Popen([python or sys.executable, "-m", "hal.comparison.worker"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                    text=True, env=worker_env())
            try:
                proc.stdin.write(json.dumps(spec))
                proc.stdin.close()
            except BrokenPipeError:  # the worker died at start: its stderr says why, below
                pass
            why = None
            try:
                for kind, payload in _messages(proc):
                    if kind == "row":
                        row = Row.from_dict(payload)
                        seen.add((row.model, row.precision, row.batch))
                        if tick:
                            tick.done(row)
                        yield row
                    elif kind == "start" and tick:
                        tick.note(payload)
                    elif kind == "env" and envs is not None:
                        envs[job.device] = payload
                    elif kind == "timeout":
                        why = (f"the worker for {job.device} sent nothing for "
                               f"{SILENCE_LIMIT_S:.0f} s and was killed")
            except BaseException:  # Ctrl-C, or the caller closing this generator: no orphan
                _stop(proc)
                raise
            code = proc.wait()
            err.seek(0)
            tail = err.read()[-800:].strip()
        if why is None and code != 0:
            why = f"the worker for {job.device} {exit_text(code)}"
        for m, p, b in expected:
            if (m, p, b) not in seen:
                row = Row(model=m, device=job.device, batch=b, precision=p,
                          mem_scope=MEM_SCOPE, task=job.task,
                          error=f"{why or 'the worker returned no row'}"
                                + (f"; its stderr ends: {tail}" if tail else ""))
                if tick:
                    tick.done(row)
                yield row


def _stop(proc: subprocess.Popen) -> None:
    """End the worker: SIGTERM, then SIGKILL if it has not exited within a few seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()


def _messages(proc: subprocess.Popen):
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    last = time.monotonic()
    while True:
        if not sel.select(timeout=5.0):
            if time.monotonic() - last > SILENCE_LIMIT_S:
                proc.kill()
                yield "timeout", None
                return
            continue
        line = proc.stdout.readline()
        if not line:
            return
        last = time.monotonic()
        if not line.startswith(MARK):
            continue
        kind, _, body = line[len(MARK):].partition(" ")
        try:
            yield kind, json.loads(body)
        except json.JSONDecodeError:
            continue


def _write_refs(refs: dict, job, tmp: str) -> dict:
    out: dict = {}
    for name in job.models:
        out[name] = {}
        for b, ref in refs.get(name, {}).items():  # training rows have none
            path = os.path.join(tmp, f"ref{len(os.listdir(tmp))}.npz")
            arrays = {f"x{i}": a for i, a in enumerate(ref.inputs)}
            arrays.update({f"y{i}": a for i, a in enumerate(ref.outputs or [])})
            np.savez(path, **arrays)
            out[name][str(b)] = {"npz": path, "error": ref.error,
                                 "n_in": len(ref.inputs), "n_out": len(ref.outputs or [])}
    return out
