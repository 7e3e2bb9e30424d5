"""A worker process and the pipe to it: start, request, notice its death, end it.

Shared by ``hal.compile(..., isolate=True)`` (``hal.isolation``) and ``hal compare --isolate``
(``hal.comparison.isolate``): the environment a worker needs to import this same HAL
(``worker_env``), how its exit is described (``exit_text``: "died of SIGSEGV (Segmentation
fault)"), and the end of what it printed (``tail``).

Messages are pickled with protocol 5, numpy arrays out of band: each array's bytes go over
the socket as they are, with no copy into the pickle, and arrive in a writable buffer.
The socket is a private pair between this process and its worker; the worker is HAL's own
(``python -m hal.isolation.worker``), never a file or a peer on the network.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

from hal.errors import BackendError

#: seconds a closed worker is given to exit before it is killed
EXIT_WAIT_S = 5.0


def worker_env() -> dict:
    """This process's environment, with the folder HAL was imported from first on PYTHONPATH,
    so that a worker imports the same ``hal`` wherever this one came from."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def exit_text(code: int | None) -> str:
    """How a worker ended, in words: "died of SIGABRT (Aborted)", "exited with code 3"."""
    if code is None:
        return "is still running"
    if code >= 0:
        return f"exited with code {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"died of signal {-code}"
    text = f"died of {sig.name} ({signal.strsignal(sig) or sig.name})"
    if sig == signal.SIGKILL:
        text += "; the kernel's out-of-memory killer sends SIGKILL when memory runs out"
    return text


def tail(file: IO, chars: int = 1200) -> str:
    """The end of what a worker wrote to ``file``, from its last fatal-error report when it
    wrote one (Python's faulthandler: "Fatal Python error: Segmentation fault" and the stack)."""
    try:
        file.flush()
        file.seek(0, os.SEEK_END)
        size = file.tell()
        file.seek(max(0, size - 16 * chars))
        text = file.read()
    except (OSError, ValueError):
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    start = text.rfind("Fatal Python error")
    if start >= 0:  # the error and the crashed thread's stack, without the module list
        text = text[start:].split("\nExtension modules:")[0]
        text = "\n".join(line for line in text.splitlines() if "<frozen runpy>" not in line)
    text = text.strip()
    return text if len(text) <= chars else text[:chars] + " ..."


def encode(obj: Any) -> list:
    """``obj`` as the frames ``send`` writes: a pickle whose arrays travel out of band, then
    each array's bytes. Raises (pickle.PicklingError, TypeError, AttributeError) on what
    cannot be pickled, before anything is written."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    return [pickle.dumps((head, [r.nbytes for r in raws]), protocol=5), *raws]


def send(conn: Connection, obj: Any, frames: list | None = None) -> None:
    for frame in frames if frames is not None else encode(obj):
        conn.send_bytes(frame)


def recv(conn: Connection) -> Any:
    head, sizes = pickle.loads(conn.recv_bytes())
    buffers = []
    for n in sizes:
        buf = bytearray(n)  # writable: arrays received are the caller's to change
        if n:
            conn.recv_bytes_into(buf)
        else:
            conn.recv_bytes()
        buffers.append(buf)
    return pickle.loads(head, buffers=buffers)


class WorkerGone(Exception):
    """The worker ended (or was ended) while a request was under way: ``how`` it ended
    ("died of SIGSEGV (Segmentation fault)") and the end of its ``output``."""

    def __init__(self, how: str, output: str = ""):
        super().__init__(how)
        self.how = how
        self.output = output


class Worker:
    """A ``python -m MODULE`` process holding one end of a socket pair.

    It dies with this process: it watches a lifeline pipe whose only writer is here, so the
    moment this process ends (or ``close`` closes it) the worker exits; ``close`` also runs
    when this object is garbage collected and at interpreter exit. Its stdout and stderr go
    to a temporary file, whose end ``tail`` reads when it dies. Requests are serialized
    (one at a time over the one socket), so several threads may share a worker.
    """

    def __init__(self, module: str, label: str):
        self.label = label
        self._lock = threading.Lock()
        ours, theirs = socket.socketpair()
        life_r, life_w = os.pipe()
        self._err = tempfile.TemporaryFile(prefix="hal-worker-")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, str(theirs.fileno()), str(life_r)],
                pass_fds=(theirs.fileno(), life_r), stdin=subprocess.DEVNULL,
                stdout=self._err, stderr=self._err, env=worker_env())
        except OSError as exc:
            ours.close()
            os.close(life_w)
            self._err.close()
            raise BackendError(f"could not start the isolated worker for {label} "
                               f"({sys.executable} -m {module}): {exc}") from exc
        finally:
            theirs.close()
            os.close(life_r)
        self.pid = self.proc.pid
        self._conn = Connection(ours.detach())
        self._life_w = life_w
        self.dead: str | None = None  # why the worker is gone, once it is
        self._finalizer = weakref.finalize(self, _shutdown, self.proc, self._conn, life_w,
                                           self._err)

    def request(self, message: Any, timeout_s: float | None = None) -> Any:
        """Send ``message`` and return the reply; WorkerGone if the worker ends first (it is
        then gone for good: ``dead`` says how it ended), or when ``timeout_s`` pass without
        a reply (it is then killed). Interrupted (Ctrl-C), the worker is ended too, as its
        reply would answer the next request."""
        with self._lock:
            if self.dead is not None:
                raise WorkerGone(self.dead)
            frames = encode(message)  # what cannot be sent fails here, the worker untouched
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            try:
                send(self._conn, message, frames)
                reply = self._reply(deadline, timeout_s)
                while isinstance(reply, tuple) and reply and reply[0] == "note":
                    self.on_note(reply[1])
                    reply = self._reply(deadline, timeout_s)
                return reply
            except (EOFError, OSError) as exc:
                self.dead, output = self._ended(exc)
                raise WorkerGone(self.dead, output) from None
            except WorkerGone:
                raise
            except BaseException:
                self.dead = "was ended when a request to it was interrupted"
                self.close()
                raise

    def _reply(self, deadline: float | None, timeout_s: float | None) -> Any:
        if deadline is not None and not self._conn.poll(max(0.0, deadline - time.monotonic())):
            self.proc.kill()  # hung: a reply arriving later would answer the next request
            self.proc.wait()
            self.dead = f"did not answer within {timeout_s:g} s and was killed"
            said = tail(self._err)
            self._finalizer()
            raise WorkerGone(self.dead, said)
        return recv(self._conn)

    def on_note(self, note: Any) -> None:
        """A message the worker sends before its reply (``hal.isolation``: which device it
        resolved, so that a crash after it names the backend)."""

    def _ended(self, exc: BaseException) -> tuple[str, str]:
        """How the worker ended, and the end of its output."""
        try:
            code = self.proc.wait(timeout=EXIT_WAIT_S)
            how = exit_text(code)
        except subprocess.TimeoutExpired:  # it closed its end yet lives on: end it
            self.proc.kill()
            self.proc.wait()
            how = f"closed its connection ({type(exc).__name__}) and was killed"
        said = tail(self._err)
        self._finalizer()
        return how, said

    @property
    def alive(self) -> bool:
        return self.dead is None and self.proc.poll() is None

    def close(self) -> None:
        """End the worker now (idempotent)."""
        if self.dead is None:
            self.dead = "was closed"
        self._finalizer()


def _shutdown(proc: subprocess.Popen, conn: Connection, life_w: int, err: IO) -> None:
    for close in (conn.close, lambda: os.close(life_w)):
        try:
            close()
        except OSError:
            pass
    try:  # the closed lifeline ends it at once; a worker stuck in native code is killed
        proc.wait(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err.close()
