"""Running the application: uvicorn on a socket, with a graceful drain on SIGTERM.

``Server`` compiles every model first (a model that fails to compile stops the start, with
HAL's error), then listens. On SIGTERM or SIGINT uvicorn stops accepting connections, lets
every request it accepted finish (up to ``drain_timeout_s``), and the application then
finishes whatever its batchers still hold before the process exits with status 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from hal.errors import OptionError
from hal.serving.config import ModelConfig, parse_spec
from hal.serving.repository import Repository

log = logging.getLogger("hal.serving")

#: settings every model takes from the server's defaults unless its own config sets them
MODEL_DEFAULTS = ("device", "precision", "max_batch", "max_delay_ms", "batching", "queue",
                  "instances", "timeout_s", "options")


def model_configs(models: Any, defaults: dict) -> list[ModelConfig]:
    """``hal.serve``'s ``models`` as configs: a spec string ("lenet=cpu"), a list of specs
    and ModelConfigs, or a mapping name -> spec/model/compiled model/settings dict."""
    if models is None:
        return []
    if isinstance(models, (str, ModelConfig)):
        models = [models]
    out = []
    if isinstance(models, dict):
        for name, value in models.items():
            if isinstance(value, ModelConfig):
                out.append(value)
            elif isinstance(value, dict):
                out.append(ModelConfig(**{**defaults, **value, "name": name}).check())
            else:
                out.append(ModelConfig(**{**defaults, "name": name, "model": value}).check())
        return out
    for m in models:
        if isinstance(m, ModelConfig):
            out.append(m.check())
        elif isinstance(m, str):
            out.append(parse_spec(m, defaults))
        else:
            raise OptionError(f"a model to serve is a 'MODEL=DEVICE' string or a ModelConfig; "
                              f"pass other objects as a mapping name -> model, got "
                              f"{type(m).__name__}")
    return out


class Server:
    """An inference server over HTTP: ``run()`` blocks, ``start()`` runs it in a thread.

    See ``hal.serve`` for the arguments.
    """

    def __init__(self, models: Any = None, *, repository: str | None = None,
                 host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 max_body_mb: float = 64, drain_timeout_s: float = 30,
                 log_level: str = "warning", progress=None, **defaults: Any):
        unknown = sorted(set(defaults) - set(MODEL_DEFAULTS))
        if unknown:
            raise OptionError(f"unknown serving option(s) {unknown}; a model takes "
                              f"{', '.join(MODEL_DEFAULTS)}")
        defaults = {k: v for k, v in defaults.items() if v is not None or k == "precision"}
        try:
            import uvicorn  # noqa: F401

            from hal.serving.app import build_app
            from hal.serving.metrics import Metrics
        except ImportError as exc:
            raise OptionError(f"serving needs starlette, uvicorn and prometheus_client "
                              f"({exc}): pip install 'hal-accel[serve]'") from None
        if isinstance(max_body_mb, bool) or not isinstance(max_body_mb, (int, float)) \
                or max_body_mb <= 0:
            raise OptionError(f"max_body_mb must be a number > 0, got {max_body_mb!r}")
        configs = model_configs(models, defaults)
        if not configs and repository is None:
            raise OptionError("nothing to serve: name models (e.g. lenet=cpu) or a repository "
                              "folder")
        token = token if token is not None else os.environ.get("HAL_SERVE_TOKEN") or None
        self.host, self.port = host, port
        self.token = token
        self.drain_timeout_s = drain_timeout_s
        self.log_level = log_level
        self.metrics = Metrics()
        self.repository = Repository(configs, repository, defaults, self.metrics)
        self.repository.load_all(progress)
        self.app = build_app(self.repository, token=token,
                             max_body_bytes=int(max_body_mb * (1 << 20)), metrics=self.metrics)
        self._server = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def bind(self) -> socket.socket:
        """Listen on host:port (port 0: a free port, then ``self.port`` says which)."""
        if self._socket is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                sock.close()
                raise OptionError(f"cannot listen on {self.host}:{self.port}: {exc}") from None
            sock.listen(2048)
            sock.set_inheritable(True)
            self.port = sock.getsockname()[1]
            self._socket = sock
        return self._socket

    def _uvicorn(self):
        import uvicorn

        config = uvicorn.Config(self.app, lifespan="on", log_level=self.log_level,
                                access_log=False, timeout_graceful_shutdown=self.drain_timeout_s,
                                server_header=False)
        self._server = uvicorn.Server(config)
        return self._server

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT (graceful: what was accepted is answered), then
        return; a SIGINT then raises KeyboardInterrupt, as Python's default handler does."""
        sock = self.bind()
        main = threading.current_thread() is threading.main_thread()
        # uvicorn raises the signal it drained for again once it is done: after a drain,
        # SIGTERM means "stopped as asked", so it returns instead of killing the process
        old = signal.signal(signal.SIGTERM, lambda *_: None) if main else None
        try:
            self._uvicorn().run(sockets=[sock])
        finally:
            if main:
                signal.signal(signal.SIGTERM, old)

    def start(self, timeout_s: float = 30) -> Server:
        """Serve in a background thread (no signal handling); ``stop()`` drains and ends."""
        sock = self.bind()
        server = self._uvicorn()
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name="hal-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OptionError(f"the server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 60) -> None:
        """Drain as SIGTERM does, and wait for the thread to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(models: Any = None, *, repository: str | None = None, host: str = "127.0.0.1",
          port: int = 8000, token: str | None = None, block: bool = True,
          cluster: str | None = None, replicas: int = 1, max_body_mb: float = 64,
          drain_timeout_s: float = 30, log_level: str = "warning",
          **defaults: Any) -> Server | None:
    """Serve models over HTTP with the Open Inference Protocol (KServe v2, as Triton speaks
    it: ``tritonclient.http`` works), with dynamic batching, metrics and graceful shutdown.

    ``models``: ``"lenet=cpu"`` specs (MODEL[=DEVICE], a zoo name or an .onnx path), a list
    of them or of ``ModelConfig``, or a mapping name -> model (anything ``hal.compile``
    takes, a compiled model, or a dict of ``ModelConfig`` settings). ``repository``: a
    folder of model folders (``hal.serving.repository``), reloadable while serving.
    ``defaults``: settings for every model that does not set its own: ``device`` ("cpu"),
    ``precision``, ``max_batch`` (32), ``max_delay_ms`` (0), ``batching`` (True), ``queue``
    (256), ``instances`` (1), ``timeout_s`` (None), ``options`` (further ``hal.compile``
    options, e.g. ``{"intra_op_num_threads": 1}`` on cpu@ort).
    ``token``: requests need ``Authorization: Bearer TOKEN`` (default ``HAL_SERVE_TOKEN``;
    unset: no authentication). ``max_body_mb``: larger requests get 413.
    ``drain_timeout_s``: how long SIGTERM waits for accepted requests.
    ``block``: False starts the server in a thread and returns it (``.url``, ``.stop()``).
    ``cluster``: "ray" or "ray://HOST:PORT": serve on a Ray cluster with Ray Serve,
    ``replicas`` copies of the server behind Ray's HTTP proxy (``hal.serving.ray_serve``).
    """
    if cluster is not None:
        from hal.serving.ray_serve import serve_on_ray

        return serve_on_ray(models, cluster=cluster, replicas=replicas, repository=repository,
                            host=host, port=port, token=token, block=block,
                            max_body_mb=max_body_mb, **defaults)
    if replicas != 1:
        raise OptionError("replicas= runs copies of the server on a Ray cluster: add "
                          "cluster='ray' (one process serves with instances= copies of a "
                          "model)")
    server = Server(models, repository=repository, host=host, port=port, token=token,
                    max_body_mb=max_body_mb, drain_timeout_s=drain_timeout_s,
                    log_level=log_level, **defaults)
    if not block:
        return server.start()
    server.run()
    return None
