"""The entry point of a training worker process (``python -m hal.training.worker FOLDER``):
a module of its own, so that running it does not import ``hal.training.launcher`` twice."""

import sys
from pathlib import Path

from hal.training.launcher import worker

if __name__ == "__main__":
    raise SystemExit(worker(Path(sys.argv[1])))
