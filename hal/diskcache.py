"""HAL's on-disk cache: one private folder, entries written atomically and verified before use.

The root is ``$HAL_CACHE_DIR`` (default ``~/.cache/hal``), with one subfolder per user of the
cache (``opencl``, ``fpga``, ``hls4ml``, ``iree``, ``selection``). The root and every folder
under it are created private to the user (0o700); one owned by someone else, or writable by
the group or the world, is refused with a ``CacheError``: its entries could have been
planted.

An entry is a file or a directory. Its hash list, in ``sha256sum`` format, is
``<entry>.sha256`` beside a file and ``hal.sha256`` inside a directory (so a copied
directory keeps it; ``sha256sum -c`` checks either by hand). The list is written last and
atomically, so it is the entry's commit: an entry without one (a build that crashed) is no
entry, and one whose bytes no longer match (tampered, truncated) is logged, removed and
built again, never loaded. A directory's list holds the files it had when it was sealed;
files added later (a board build's outputs) are not checked. ``<entry>.lock`` is the
entry's file lock: whoever builds an entry holds it, so two processes asking for the same
entry build it once and the second reads the first's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from hal.errors import HalError

log = logging.getLogger("hal")

ENV = "HAL_CACHE_DIR"
SIDECAR = ".sha256"
DIR_SIDECAR = "hal.sha256"
LOCK = ".lock"
#: seconds to wait for another process's lock before saying that we are waiting
PATIENCE_S = 2.0


class CacheError(HalError):
    """HAL's cache folder is not private to the user, or an entry name is not a plain name."""


def root() -> Path:
    """``$HAL_CACHE_DIR`` or ``~/.cache/hal``, created private and checked."""
    path = Path(os.environ.get(ENV) or Path.home() / ".cache" / "hal").absolute()
    _private_dir(path)
    return path


def folder(*parts: str) -> Path:
    """The subfolder ``parts`` of the root (``folder("opencl", "binaries")``), created private."""
    path = root()
    for part in parts:
        _plain_name(part)
        path = path / part
        _private_dir(path)
    return path


def _plain_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise CacheError(f"{name!r} is not a plain name for a cache folder or entry")


def _private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise CacheError(f"HAL's cache folder {path} exists and is not a folder; remove it or "
                         f"set {ENV} to another folder") from None
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        st = path.stat()  # a symlinked cache is the user's choice; its target is checked
    if st.st_uid != os.getuid():
        raise CacheError(f"HAL's cache folder {path} belongs to user id {st.st_uid}, not to you "
                         f"({os.getuid()}): its entries could have been planted. Set {ENV} to a "
                         f"folder of your own")
    if st.st_mode & 0o022:
        raise CacheError(f"HAL's cache folder {path} is writable by "
                         f"{'the world' if st.st_mode & 0o002 else 'its group'} "
                         f"(mode {stat.S_IMODE(st.st_mode):o}): its entries could have been "
                         f"planted. Remove it (HAL makes a private one) or run "
                         f"`chmod 700 {path}` if you trust what is in it")
    if st.st_mode & 0o077:
        path.chmod(0o700)  # readable by others (made by an older HAL): ours, so tighten it


def sidecar(entry: Path) -> Path:
    """The hash list of ``entry``: beside a file, inside a directory (so a copied directory
    keeps it)."""
    return entry / DIR_SIDECAR if entry.is_dir() else entry.with_name(entry.name + SIDECAR)


@contextlib.contextmanager
def locked(entry: Path) -> Iterator[None]:
    """Hold ``entry``'s file lock (between processes and between threads). Where the lock
    cannot be created (a read-only cache) nobody can write the entry either: go unlocked."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(entry.with_name(entry.name + LOCK)), mode=0o600)
    try:
        try:
            lock.acquire(timeout=PATIENCE_S)
        except Timeout:
            log.info("waiting for another process to finish the cache entry %s", entry)
            lock.acquire()
    except OSError as exc:
        log.debug("cache entry %s not locked (%s)", entry, exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _base(entry: Path) -> Path:
    """The folder the names in ``entry``'s hash list are relative to."""
    return entry if entry.is_dir() else entry.parent


def _listing(entry: Path) -> str:
    files = sorted(p for p in entry.rglob("*") if p.is_file() and p.name != DIR_SIDECAR) \
        if entry.is_dir() else [entry]
    return "".join(f"{_digest_file(p)}  {p.relative_to(_base(entry)).as_posix()}\n"
                   for p in files)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def seal(entry: Path) -> None:
    """Record the hashes of a finished entry (a file or a directory built in place)."""
    _write_atomic(sidecar(entry), _listing(entry).encode())


def write_bytes(entry: Path, data: bytes) -> None:
    """Store ``data`` as ``entry``: a temporary file in the same folder, ``os.replace``,
    then its hash. Raises OSError where the cache cannot be written."""
    sidecar(entry).unlink(missing_ok=True)
    _write_atomic(entry, data)
    _write_atomic(sidecar(entry), f"{hashlib.sha256(data).hexdigest()}  {entry.name}\n".encode())


def commit(tmp: Path, entry: Path) -> None:
    """Move a finished file ``tmp`` (in ``entry``'s folder) into place, then seal it."""
    sidecar(entry).unlink(missing_ok=True)
    os.replace(tmp, entry)
    seal(entry)


def _mismatch(entry: Path) -> str | None:
    """Why ``entry`` does not match its recorded hashes, or None when it does."""
    try:
        lines = sidecar(entry).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return f"its hash list is unreadable ({exc})"
    if not lines:
        return "its hash list is empty"
    base = _base(entry)
    for line in lines:
        digest, _, name = line.partition("  ")
        parts = Path(name).parts
        outside = parts != (entry.name,) if base == entry.parent else \
            not parts or Path(name).is_absolute() or ".." in parts
        if outside:
            return f"its hash list names {name!r}, outside the entry"
        try:
            actual = _digest_file(base / name)
        except OSError as exc:
            return f"{name} is unreadable ({exc})"
        if actual != digest:
            return f"{name} does not match its SHA-256"
    return None


def verified(entry: Path) -> bool:
    """Whether ``entry`` exists and matches its hashes. One that exists but does not match
    (tampered, truncated, or never sealed) is logged and removed, so it is built again."""
    if not entry.exists() and not sidecar(entry).exists():
        return False
    if not sidecar(entry).exists():
        why = "it has no hash list (an interrupted build, or an older HAL's entry)"
        log.debug("cache entry %s is not used: %s; building it again", entry, why)
    else:
        why = _mismatch(entry) if entry.exists() else "its hash list has no entry"
        if why is None:
            return True
        log.warning("cache entry %s is not used: %s; building it again", entry, why)
    discard(entry)
    return False


def read_bytes(entry: Path) -> bytes | None:
    """The verified contents of a file entry, or None (missing, or removed as bad)."""
    try:
        data = entry.read_bytes()
        recorded = sidecar(entry).read_text()
    except (OSError, UnicodeDecodeError):
        verified(entry)  # says why and removes what is left
        return None
    if recorded == f"{hashlib.sha256(data).hexdigest()}  {entry.name}\n":
        return data
    log.warning("cache entry %s is not used: it does not match its SHA-256; building it "
                "again", entry)
    discard(entry)
    return None


def discard(entry: Path) -> None:
    """Remove ``entry`` (file or directory) and its hash list."""
    with contextlib.suppress(OSError):
        sidecar(entry).unlink(missing_ok=True)
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def info() -> dict:
    """The root and, per subfolder, its sealed entries and bytes on disk."""
    base = root()
    folders = []
    for sub in sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink()):
        files = [p for p in sub.rglob("*") if p.is_file() and not p.is_symlink()]
        folders.append({"name": sub.name,
                        "entries": sum(p.name.endswith(SIDECAR) for p in files),
                        "bytes": sum(p.stat().st_size for p in files)})
    return {"root": str(base), "folders": folders}


def clear(name: str | None = None) -> list[str]:
    """Empty the cache, or only its subfolder ``name``; returns the folders removed."""
    base = root()
    present = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.is_symlink())
    if name is not None:
        _plain_name(name)
        if name not in present:
            raise CacheError(f"HAL's cache {base} has no folder {name!r}; it has "
                             f"{', '.join(present) or 'none'}")
        present = [name]
    for sub in present:
        shutil.rmtree(base / sub)
    return present
