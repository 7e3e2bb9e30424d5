"""Compare the register offsets Vitis HLS generated (``xhal_int8_layer_hw.h``, copied into the
IP output folder by run_hls.tcl) with the register map in manifest.json.

Usage: python check_regmap.py <path to xhal_int8_layer_hw.h> [manifest.json]
Exit status 1 and a list of differences if they disagree.
"""

import json
import re
import sys
from pathlib import Path


def main(argv):
    header = Path(argv[1]).read_text()
    manifest = Path(argv[2] if len(argv) > 2 else Path(__file__).parents[1] / "manifest.json")
    regs = json.loads(manifest.read_text())["registers"]
    found = {m[1].lower(): int(m[2], 16) for m in
             re.finditer(r"#define\s+XHAL_INT8_LAYER_CONTROL_ADDR_(\w+?)_DATA\s+0x([0-9a-fA-F]+)",
                         header)}
    bad = []
    for reg in regs:
        arg = reg.get("arg")
        if arg is None:
            continue
        want = int(reg["offset"], 16)
        got = found.get(arg.lower())
        if got != want:
            bad.append(f"{reg['name']} ({arg}): manifest 0x{want:02x}, HLS "
                       f"{'missing' if got is None else hex(got)}")
    for line in bad:
        print(line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
