"""``hal cache info`` and ``hal cache clear``: what HAL keeps on disk, and emptying it."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    c = sub.add_parser("cache", help="show or empty HAL's on-disk cache (compiled programs, "
                                     "libraries, hls4ml projects, selection choices)")
    actions = c.add_subparsers(dest="action", required=True)
    info = actions.add_parser("info", help="the cache's folder, and entries and size per "
                                           "subfolder")
    info.add_argument("--json", action="store_true", help="print the same as JSON")
    info.set_defaults(func=cmd_info)
    clear = actions.add_parser("clear", help="empty the cache, or one subfolder of it")
    clear.add_argument("--backend", metavar="NAME",
                       help="only this subfolder (opencl, fpga, hls4ml, iree, selection; "
                            "`hal cache info` lists them)")
    clear.set_defaults(func=cmd_clear)


def cmd_info(args) -> int:
    from rich.table import Table

    from hal import diskcache
    from hal.cli import console

    found = diskcache.info()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    t = Table(title=f"HAL cache: {found['root']}")
    for c in ("folder", "entries", "size"):
        t.add_column(c, justify="left" if c == "folder" else "right")
    for f in found["folders"]:
        t.add_row(f["name"], str(f["entries"]), _size(f["bytes"]))
    total = sum(f["bytes"] for f in found["folders"])
    t.add_row("[bold]total", str(sum(f["entries"] for f in found["folders"])), _size(total))
    console().print(t)
    return 0


def cmd_clear(args) -> int:
    from hal import diskcache

    removed = diskcache.clear(args.backend)
    where = diskcache.root()
    print(f"removed {', '.join(removed)} from {where}" if removed else f"{where} is empty")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
