"""The ``hal`` command: devices, run, tune, train, compare, compress, fpga build, serve, cache.

One module per command (``devices``, ``run``, ``tune``, ``train``, ``compare``, ``compress``,
``fpga``, ``serve``, ``cache``), each adding its parser and the function that runs it; this
module parses the command line and turns a ``HalError`` into one line on stderr and exit
status 2, never a traceback. The command line sits above the library: nothing in ``hal``
imports it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hal.errors import HalError


def build_parser() -> argparse.ArgumentParser:
    from hal.cli import cache, compare, compress, devices, fpga, run, serve, train, tune

    p = argparse.ArgumentParser(prog="hal", description="Run and compare neural networks on any "
                                "device HAL can reach.")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show HAL's debug log and the start-up logs of the frameworks it "
                        "imports (TensorFlow, jax), which it otherwise keeps off stderr "
                        "(the same as HAL_VERBOSE=1)")
    sub = p.add_subparsers(dest="command", required=True)
    for command in (devices, run, tune, train, compare, compress, fpga, serve, cache):
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        _verbose()
    try:
        return args.func(args)
    except HalError as exc:
        print(f"hal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _verbose() -> None:
    import logging
    import os

    os.environ["HAL_VERBOSE"] = "1"  # read when a backend first imports its framework
    logging.basicConfig(format="%(name)s: %(levelname)s: %(message)s")
    logging.getLogger("hal").setLevel(logging.DEBUG)


def console():
    """A rich console on stdout."""
    from rich.console import Console

    return Console()
