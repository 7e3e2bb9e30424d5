"""Is a row's p50 reproducible within the spread ``hal compare`` reports? Two runs, compared.

    python bench/repeat.py [--models lenet,resnet_lite] [--devices cpu@ort,cpu@torch]
                           [--batch 1] [--budget 1] [--rounds 5] [--pause 30]

Runs ``hal compare ... --rounds N --json`` twice as separate processes (``--pause`` seconds
apart), then prints, per row, both p50s, both reported spreads (± half the range of the
per-round p50s) and whether the two p50s agree within them: |p50_a - p50_b| <= ± a + ± b,
the test ``hal compare --baseline`` applies. ``--rounds 1`` shows the same with the
per-call MAD as the spread, which cannot see drift between runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args, path: Path) -> dict:
    cmd = [sys.executable, "-m", "hal.cli", "compare", "--models", args.models, "--devices",
           args.devices, "--batch", args.batch, "--budget", str(args.budget), "--rounds",
           str(args.rounds), "--json", str(path)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads(path.read_text())["rows"]
    return {(r["model"], r["device"], r["batch"], r["precision"]): r for r in rows}


def spread(r: dict) -> float:
    if r.get("p50_spread_ms") is not None:
        return r["p50_spread_ms"]
    return 1.4826 * (r.get("mad_ms") or 0.0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet,resnet_lite")
    p.add_argument("--devices", default="cpu@ort,cpu@torch")
    p.add_argument("--batch", default="1")
    p.add_argument("--budget", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--pause", type=float, default=30.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a = run(args, Path(tmp, "a.json"))
        time.sleep(args.pause)
        b = run(args, Path(tmp, "b.json"))
    what = "± half-range of round p50s" if args.rounds > 1 else "± 1.4826 MAD of calls"
    print(f"two runs, --rounds {args.rounds}, --budget {args.budget}; spread: {what}")
    print(f"{'model':<14}{'device':<18}{'b':>3}  {'p50 a':>9}{'± a':>8}  {'p50 b':>9}"
          f"{'± b':>8}  {'|a-b|':>8}  within")
    held = 0
    for key, ra in a.items():
        rb = b.get(key)
        if rb is None or ra.get("error") or rb.get("error"):
            print(f"{key[0]:<14}{key[1]:<18}{key[2]:>3}  error or missing row")
            continue
        gap, limit = abs(ra["p50_ms"] - rb["p50_ms"]), spread(ra) + spread(rb)
        held += gap <= limit
        print(f"{key[0]:<14}{key[1]:<18}{key[2]:>3}  {ra['p50_ms']:9.3f}{spread(ra):8.3f}  "
              f"{rb['p50_ms']:9.3f}{spread(rb):8.3f}  {gap:8.3f}  "
              f"{'yes' if gap <= limit else 'NO'}")
    print(f"{held} of {len(a)} rows agree within the reported spread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
