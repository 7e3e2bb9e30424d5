"""``python -m hal.comparison.worker``: measure one device's rows for ``hal compare --isolate``.

Reads a job as JSON on stdin (see ``hal.comparison.isolate``) and writes one line per row,
prefixed with a marker, on a private copy of stdout.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def main() -> int:
    # Ctrl-C in a terminal reaches every process of the group: the parent keeps the rows
    # finished so far and stops this one; dying here first would race it with error rows
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed to stdout goes to stderr
    sys.stdout = sys.stderr

    import numpy as np

    from hal.comparison.environment import frameworks, opencl
    from hal.comparison.harness import Job, Reference, run_job
    from hal.frontends import to_model
    from hal.comparison.isolate import MARK, MEM_SCOPE

    def send(kind: str, payload) -> None:
        out.write(f"{MARK}{kind} {json.dumps(payload, default=str)}\n")

    spec = json.loads(sys.stdin.read())
    job = Job(**spec["job"])
    refs: dict = {}
    for name, by_batch in spec["refs"].items():
        refs[name] = {}
        for b, r in by_batch.items():
            with np.load(r["npz"]) as z:
                refs[name][int(b)] = Reference([z[f"x{i}"] for i in range(r["n_in"])],
                                               [z[f"y{i}"] for i in range(r["n_out"])] or None,
                                               r["error"])
    models = {name: to_model(name) for name in job.models}

    class Tick:
        def start(self, row):
            send("start", f"{row.model} b{row.batch} {row.precision} on {row.device}")

        def done(self, row):
            pass

    for row in run_job(job, models, refs, Tick(), mem_scope=MEM_SCOPE):
        send("row", row.to_dict())
    env = {"frameworks": frameworks(), "pid": os.getpid()}
    cl = opencl()
    if cl:
        env["opencl"] = cl
    send("env", env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
