"""The long fuzz run (``make fuzz``): hal.testing.fuzz's cases in worker processes of
``--chunk`` cases each, so a case that crashes or exhausts memory ends its worker, not the run,
and is reported as a finding with the case that was running. Prints cases per second and
findings by kind.

    python bench/fuzz.py --cases 20000 [--chunk 2500] [--seed 0] [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from hal.testing.fuzz import Outcome, Report


def run_chunk(cases: int, seed: int, timeout: float, report: Report) -> None:
    """One worker: its outcomes into ``report``; if it dies, the case it was running is a
    finding named by how it died."""
    cmd = [sys.executable, "-m", "hal.testing.fuzz", "--jsonl", "--cases", str(cases),
           "--seed", str(seed), "--timeout", str(timeout)]
    running = None
    # HAL_MAX_TENSOR_BYTES bounds each tensor, not a model's sum: mutated dims can make many
    # tensors just under 4 GiB, so workers run with a lower limit unless one is set
    env = {**os.environ, "HAL_MAX_TENSOR_BYTES": os.environ.get("HAL_MAX_TENSOR_BYTES", "256MiB")}
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=env) as worker:
        for line in worker.stdout:
            kind, _, payload = line.rstrip("\n").partition("\t")
            if kind == "start":
                running = json.loads(payload)
            elif kind == "outcome":
                outcome = Outcome(**json.loads(payload))
                report.outcomes.append(outcome)
                running = None
                if outcome.finding:
                    print(f"finding: {outcome.line()}", flush=True)
        code = worker.wait()
    if code != 0:
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        case = running or {"source": "?", "mutation": "?", "seed": seed, "device": None,
                           "call": None}
        crash = Outcome(case["source"], case["mutation"], case["device"], case["call"],
                        f"worker {how}", f"case seed {case['seed']}", finding=True)
        report.outcomes.append(crash)
        print(f"finding: {crash.line()}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", type=int, default=20000)
    ap.add_argument("--chunk", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    args = ap.parse_args()
    report = Report()
    t0 = time.perf_counter()
    chunk = 0
    while len(report.outcomes) < args.cases:
        n = min(args.chunk, args.cases - len(report.outcomes))
        run_chunk(n, args.seed * 100_000 + chunk, args.timeout, report)
        chunk += 1
        elapsed = time.perf_counter() - t0
        print(f"{len(report.outcomes)} cases, {len(report.outcomes) / elapsed:.1f}/s",
              flush=True)
    report.seconds = time.perf_counter() - t0
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
