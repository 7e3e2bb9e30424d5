"""An accelerator's ``manifest.json``: load, validate, look up targets, refresh file hashes.

The manifest is the contract between the accelerator folder and everything that uses it
(driver, transports, RTL, boards): register map, buffers, arithmetic, limits, the targets with
their files and build commands, and the golden vectors. Files are listed with a ``status``:
``"unbuilt"`` (``sha256`` null) until a real build produced them; ``--refresh`` (the folder's
``make manifest``) records the sha256 of every listed file that exists.

    python -m hal.backends.fpga.manifest [manifest.json]            validate, print a summary
    python -m hal.backends.fpga.manifest --refresh [manifest.json]  hash existing files, rewrite
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path, PurePosixPath

from hal.errors import BackendError

from .files import accelerator_dir

SCHEMA = 1
TOP_KEYS = ("schema", "accelerator", "parameters", "registers", "buffers", "arithmetic",
            "limits", "cycle_model", "targets", "golden")
STATUSES = ("built", "unbuilt")
ACCESS = ("r", "w", "rw", "toc")
_SHA = re.compile(r"[0-9a-f]{64}")


def default_path() -> Path:
    return accelerator_dir() / "manifest.json"


def load(path: str | Path | None = None) -> dict:
    """Parse and validate a manifest (default: hal_int8's); BackendError naming every problem."""
    path = Path(path) if path else default_path()
    try:
        manifest = json.loads(path.read_text())
    except OSError as e:
        raise BackendError(f"cannot read the accelerator manifest {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise BackendError(f"{path} is not valid JSON ({e}); restore it from the source tree")
    validate(manifest, where=str(path))
    return manifest


def validate(manifest: dict, where: str = "manifest") -> None:
    """Check structure and consistency (not the files on disk: see :func:`check_files`)."""
    problems = list(_problems(manifest))
    if problems:
        raise BackendError(f"{where} is invalid:\n  - " + "\n  - ".join(problems))


def _problems(m):
    if not isinstance(m, dict):
        yield f"the manifest must be a JSON object, got {type(m).__name__}"
        return
    missing = [k for k in TOP_KEYS if k not in m]
    if missing:
        yield f"missing top-level keys {missing}"
        return
    if m["schema"] != SCHEMA:
        yield f"schema is {m['schema']!r}; this HAL reads schema {SCHEMA}"
    acc = m["accelerator"]
    if not (isinstance(acc, dict) and isinstance(acc.get("name"), str)
            and isinstance(acc.get("version"), str)):
        yield "accelerator must have a string 'name' and 'version'"
    yield from _register_problems(m["registers"])
    args = {r.get("arg") for r in m["registers"] if isinstance(r, dict)}
    for name in m["buffers"]:
        if name not in args:
            yield f"buffer {name!r} has no register with that 'arg'"
    if not isinstance(m["targets"], dict) or not m["targets"]:
        yield "targets must be a non-empty object"
    else:
        for name, t in m["targets"].items():
            yield from (f"target {name!r}: {p}" for p in _target_problems(t))
    golden = m["golden"]
    if not isinstance(golden, dict) or not isinstance(golden.get("files"), list):
        yield "golden must be an object with a 'files' list"
    else:
        for g in golden["files"]:
            if not (isinstance(g, dict) and _relative(g.get("path"))
                    and _SHA.fullmatch(str(g.get("sha256")))):
                yield f"golden entry {g!r} needs a relative 'path' and its 'sha256'"


def _register_problems(regs):
    if not isinstance(regs, list) or not regs:
        yield "registers must be a non-empty list"
        return
    taken: dict[int, str] = {}
    for r in regs:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            yield f"register {r!r} needs a 'name'"
            continue
        name = r["name"]
        try:
            off = int(r["offset"], 16)
        except (KeyError, TypeError, ValueError):
            yield f"register {name}: 'offset' must be a hex string like '0x10'"
            continue
        if off % 4:
            yield f"register {name}: offset {r['offset']} is not 32-bit aligned"
        if r.get("width") not in (32, 64):
            yield f"register {name}: width must be 32 or 64, got {r.get('width')!r}"
        if r.get("access") not in ACCESS:
            yield f"register {name}: access must be one of {ACCESS}, got {r.get('access')!r}"
        if "arg" not in r or not (r["arg"] is None or isinstance(r["arg"], str)):
            yield f"register {name}: 'arg' must be the kernel argument's name or null"
        for word in range(off, off + (8 if r.get("width") == 64 else 4), 4):
            if word in taken:
                yield f"register {name} overlaps {taken[word]} at 0x{word:02x}"
            taken[word] = name


def _target_problems(t):
    if not isinstance(t, dict):
        yield "must be an object"
        return
    for key in ("kind", "files", "tools", "build"):
        if key not in t:
            yield f"missing {key!r}"
    if not (isinstance(t.get("build"), str) and t["build"].startswith("make ")):
        yield "'build' must be the make command that builds it"
    files = t.get("files")
    if not isinstance(files, list) or not files:
        yield "'files' must be a non-empty list"
        return
    for f in files:
        if not isinstance(f, dict) or not _relative(f.get("path")):
            yield f"file {f!r} needs a relative 'path' inside the accelerator folder"
            continue
        status, sha = f.get("status"), f.get("sha256")
        if status not in STATUSES:
            yield f"{f['path']}: status must be one of {STATUSES}, got {status!r}"
        elif status == "unbuilt" and sha is not None:
            yield f"{f['path']}: an unbuilt file has sha256 null"
        elif status == "built" and not _SHA.fullmatch(str(sha)):
            yield f"{f['path']}: a built file needs its sha256 (run the folder's `make manifest`)"


def _relative(p) -> bool:
    return isinstance(p, str) and bool(p) and not PurePosixPath(p).is_absolute() \
        and ".." not in PurePosixPath(p).parts


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def registers(manifest: dict) -> dict[str, int]:
    """Register name -> byte offset."""
    return {r["name"]: int(r["offset"], 16) for r in manifest["registers"]}


def kernel_args(manifest: dict) -> list[str]:
    """The kernel's arguments in register (= OpenCL argument) order."""
    regs = [r for r in manifest["registers"] if r["arg"]]
    return [r["arg"] for r in sorted(regs, key=lambda r: int(r["offset"], 16))]


def target(manifest: dict, name: str) -> dict:
    """The target ``name``; BackendError listing the known ones."""
    try:
        return manifest["targets"][name]
    except KeyError:
        raise BackendError(f"{manifest['accelerator']['name']} has no target {name!r}; "
                           f"targets: {', '.join(manifest['targets'])}") from None


def target_file(manifest: dict, name: str, kind: str, root: Path | None = None) -> Path:
    """The built file of ``kind`` (e.g. "bitstream") for target ``name``, checked against its
    sha256; BackendError with the build command when it is unbuilt, missing or altered."""
    t = target(manifest, name)
    root = Path(root) if root else accelerator_dir(manifest["accelerator"]["name"])
    entry = next((f for f in t["files"] if f.get("kind") == kind), None)
    if entry is None:
        raise BackendError(f"target {name!r} lists no {kind!r} file; it has "
                           f"{sorted({f.get('kind') for f in t['files']})}")
    path = root / entry["path"]
    how = f"build it with `{t['build']}` (needs {_tools(t)}), then `make manifest` in {root}"
    if entry["status"] != "built":
        raise BackendError(f"{manifest['accelerator']['name']} for {name} is not built: "
                           f"{entry['path']} is 'unbuilt' in the manifest; {how}")
    if not path.is_file():
        raise BackendError(f"{path} is listed as built but is missing; {how}")
    got = sha256(path)
    if got != entry["sha256"]:
        raise BackendError(f"{path} does not match the manifest (sha256 {got[:12]}..., expected "
                           f"{entry['sha256'][:12]}...); rebuild it or run `make manifest`")
    return path


def _tools(t: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in t.get("tools", {}).items()) or "its vendor tools"


def check_files(manifest: dict, root: Path) -> list[str]:
    """Problems with the files on disk: built files missing or altered, golden files likewise."""
    out = []
    for name, t in manifest["targets"].items():
        for f in t["files"]:
            p = root / f["path"]
            if f["status"] != "built":
                continue
            if not p.is_file():
                # build outputs (build/...) are not committed: a fresh checkout lacks them
                # until `make bitstreams`; the sha256 records what that build produced
                if not f["path"].startswith("build/"):
                    out.append(f"target {name}: {f['path']} is missing")
            elif sha256(p) != f["sha256"]:
                out.append(f"target {name}: {f['path']} differs from its sha256")
    for g in manifest["golden"]["files"]:
        p = root / g["path"]
        if not p.is_file() or sha256(p) != g["sha256"]:
            out.append(f"golden {g['path']} is missing or differs from its sha256")
    return out


def refresh(path: str | Path) -> list[str]:
    """Set status/sha256 of every target file from what exists next to the manifest (and the
    golden files' sha256); rewrite the manifest if anything changed; returns the changes."""
    path = Path(path)
    manifest = load(path)
    root, changes = path.parent, []
    for name, t in manifest["targets"].items():
        for f in t["files"]:
            p = root / f["path"]
            new = ("built", sha256(p)) if p.is_file() else ("unbuilt", None)
            if (f["status"], f["sha256"]) != new:
                changes.append(f"{name}: {f['path']} {f['status']} -> {new[0]}")
                f["status"], f["sha256"] = new
    for g in manifest["golden"]["files"]:
        p = root / g["path"]
        if p.is_file() and sha256(p) != g["sha256"]:
            changes.append(f"golden: {g['path']} sha256 updated")
            g["sha256"] = sha256(p)
    if changes:
        write(manifest, path)
    return changes


def write(manifest: dict, path: str | Path) -> None:
    validate(manifest, where=str(path))
    Path(path).write_text(dumps(manifest))


def dumps(obj, indent: int = 0, width: int = 100) -> str:
    """JSON with every object or list that fits on one line kept on one line (readable diffs)."""
    return _dump(obj, indent, width) + ("\n" if indent == 0 else "")


def _dump(obj, indent, width):
    flat = json.dumps(obj, ensure_ascii=False)
    if not isinstance(obj, (dict, list)) or indent + len(flat) <= width:
        return flat
    pad = " " * (indent + 2)
    if isinstance(obj, dict):
        items = [f"{pad}{json.dumps(k)}: {_dump(v, indent + 2, width)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _dump(v, indent + 2, width) for v in obj]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hal.backends.fpga.manifest",
                                 description="validate an FPGA accelerator manifest")
    ap.add_argument("path", nargs="?", help="manifest.json (default: hal_int8's)")
    ap.add_argument("--refresh", action="store_true",
                    help="record sha256/status of the listed files that exist, rewrite")
    a = ap.parse_args(argv)
    path = Path(a.path) if a.path else default_path()
    try:
        if a.refresh:
            changes = refresh(path)
            print("\n".join(changes) if changes else f"{path}: up to date")
        manifest = load(path)
        problems = check_files(manifest, path.parent)
    except BackendError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, t in manifest["targets"].items():
        states = sorted({f["status"] for f in t["files"]})
        print(f"{name:16} {'/'.join(states):8} {t['build']}")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
