"""Reading an accelerator's build targets from its ``manifest.json``.

A target (a board such as ``kv260``, or an OpenCL FPGA platform such as ``u50``) lists the
files a build makes, each with a status: ``unbuilt`` until a real build put it there (the
repository never holds a fake bitstream). These helpers find a target's files, say whether
it is built, and give the command that builds it, so that asking for an unbuilt target ends
in an error a user can act on.
"""

from __future__ import annotations

import json
from pathlib import Path

from hal.errors import BackendError

from .files import accelerator_dir

#: make targets of bitstreams/<accelerator>/Makefile by the kind of file a build produces
MAKE_BY_SUFFIX = {".xclbin": "xclbin", ".aocx": "aocx"}


def manifest(accelerator: Path | None = None) -> dict:
    path = (accelerator or accelerator_dir()) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot read the accelerator manifest {path}: {exc}") from exc


def targets(man: dict) -> dict[str, dict]:
    """name -> target entry (the manifest may hold a mapping or a list with ``name``)."""
    t = man.get("targets") or {}
    if isinstance(t, list):
        return {str(e.get("name")): e for e in t if isinstance(e, dict)}
    return {str(k): v for k, v in t.items() if isinstance(v, dict)}


def files(target: dict) -> list[dict]:
    """The target's files as ``{"path", "status", ...}`` entries."""
    f = target.get("files") or []
    if isinstance(f, dict):
        f = [{"path": k, **(v if isinstance(v, dict) else {"status": v})} for k, v in f.items()]
    return [e for e in f if isinstance(e, dict) and e.get("path")]


def is_built(target: dict) -> bool:
    fs = files(target)
    if fs:
        return all(e.get("status") == "built" for e in fs)
    return target.get("status") == "built"


def file_with(target: dict, *suffixes: str) -> str | None:
    for e in files(target):
        if str(e["path"]).endswith(suffixes):
            return str(e["path"])
    return None


def clock_mhz(target: dict) -> float | None:
    for key in ("clock_mhz", "fmax_mhz", "clock"):
        v = target.get(key)
        if isinstance(v, dict):
            v = v.get("mhz") or v.get("target_mhz") or v.get("achieved_mhz")
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    return None


def build_command(name: str, target: dict, accelerator: Path | None = None) -> str:
    cmd = target.get("build") or target.get("build_command") or target.get("make")
    if isinstance(cmd, str) and cmd.strip():
        return cmd.strip() if " " in cmd.strip() else f"make -C bitstreams/{_acc(accelerator)} {cmd}"
    binary = file_with(target, *MAKE_BY_SUFFIX)
    goal = MAKE_BY_SUFFIX[Path(binary).suffix] if binary else name
    return f"make -C bitstreams/{_acc(accelerator)} {goal}"


def _acc(accelerator: Path | None) -> str:
    return (accelerator or accelerator_dir()).name


def require_built(accelerator: Path, man: dict, name: str, *suffixes: str) -> Path:
    """The path of target ``name``'s file with one of ``suffixes``; BackendError naming the
    build command when the target is unknown or not built yet."""
    known = targets(man)
    if name not in known:
        raise BackendError(f"accelerator {accelerator.name!r} has no target {name!r}; its "
                           f"manifest lists {sorted(known) or 'none'}")
    t = known[name]
    rel = file_with(t, *suffixes)
    path = accelerator / rel if rel else None
    if rel is None or not is_built(t) or not path.is_file():
        why = ("is unbuilt" if rel is None or not is_built(t) else f"lists {rel}, which is missing")
        raise BackendError(
            f"target {name!r} of {accelerator.name} {why} (no {'/'.join(suffixes)} yet). Build it"
            f" with `{build_command(name, t, accelerator)}` (needs the vendor tools named in "
            f"bitstreams/{accelerator.name}/Makefile), then `make -C bitstreams/"
            f"{accelerator.name} manifest`; without hardware use fpga@emu")
    return path


def pick(man: dict, kind: str, wanted: str | None = None) -> str | None:
    """The target to use for a transport ``kind`` ("pynq" boards, "opencl" platforms):
    ``wanted`` if given, else the first of that kind."""
    if wanted:
        return wanted
    for name, t in targets(man).items():
        k = str(t.get("transport") or t.get("kind") or "").lower()
        binary = file_with(t, ".bit", ".xclbin", ".aocx") or ""
        if kind == "pynq" and ("pynq" in k or binary.endswith(".bit")):
            return name
        if kind == "opencl" and ("opencl" in k or binary.endswith((".xclbin", ".aocx"))):
            return name
    return None
