"""``hal devices``: every device, usable or not, and why."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    d = sub.add_parser("devices", help="list every device, usable or not, and why")
    d.add_argument("--json", action="store_true")
    d.add_argument("--ray-resources", action="store_true",
                   help="print this machine's usable devices as Ray custom resources (JSON), "
                   "for `ray start --resources \"$(hal devices --ray-resources)\"` before "
                   "`hal compare --cluster`; HAL_BACKENDS restricts them")
    d.set_defaults(func=cmd_devices)


def cmd_devices(args) -> int:
    import hal
    from hal.cli import console

    if args.ray_resources:
        from hal.comparison.fleet import node_resources

        print(json.dumps(node_resources()))
        return 0
    devs = hal.devices()
    if args.json:
        print(json.dumps([d.to_dict() for d in devs], indent=2))
        return 0
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="HAL devices")
    for c in ("device", "usable", "simulated", "name / reason"):
        t.add_column(c)
    for d in devs:
        broken = d.details.get("broken")
        t.add_row(d.string, "[green]yes[/]" if d.usable else ("[red]broken[/]" if broken else "no"),
                  ("[yellow]simulated[/]" + (", slow" if d.slow_simulation else ""))
                  if d.simulated else "",
                  escape((d.name + (f" (another name for {d.alias_of})" if d.alias_of else ""))
                         if d.usable else d.reason))
    console().print(t)
    return 0
