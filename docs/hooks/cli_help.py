"""MkDocs hook: ``<!-- hal-help: run -->`` in a page becomes the output of ``hal run --help``.

The CLI reference is the command's own help, run at build time, so it cannot drift from the
code. A command that fails stops the build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"<!-- hal-help:([^>]*)-->")


def _help(args: str) -> str:
    cmd = [sys.executable, "-m", "hal.cli", *args.split(), "--help"]
    run = subprocess.run(cmd, capture_output=True, text=True,
                         env=dict(os.environ, COLUMNS="96"))
    if run.returncode != 0:
        raise PluginError(f"`hal {args.strip()} --help` failed: {run.stderr.strip()}")
    return f"```text\n$ hal {args.strip()} --help\n{run.stdout.rstrip()}\n```"


def on_page_markdown(markdown, page, config, files):
    return MARKER.sub(lambda m: _help(m.group(1)), markdown)
