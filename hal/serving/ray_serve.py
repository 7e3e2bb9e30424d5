"""``hal serve --cluster ray``: the same server as Ray Serve replicas on a Ray cluster.

One Ray Serve deployment, ``replicas`` copies of it spread over the cluster's nodes, each
replica an ordinary HAL server: it compiles every model itself (on its own node's devices),
batches its own requests and keeps its own metrics, and its ASGI application is the one
``hal serve`` runs on one machine (``serve.ingress``), so the routes, the errors, the
protocol and the bearer token are the same. Ray Serve's HTTP proxy listens on ``host:port``
of every node and spreads requests over the replicas.

What differs from one process: a model's source travels to the replicas as ONNX bytes (a
path is read here, where the command runs); ``/metrics`` shows the replica that answered;
and ``POST /v2/repository/models/NAME/load`` would reach one replica only, so reloading is
refused: deploy again (run ``hal serve --cluster ...`` again, which replaces the application).

Authentication: the bearer token guards the HTTP routes. The cluster itself keeps Ray's own
token authentication: nodes started with ``ray start`` share ``RAY_AUTH_TOKEN`` (Ray 2.60
turns it on by default), and this process needs the same variable to connect.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hal.errors import BackendError, OptionError
from hal.serving.config import ModelConfig, read_repository
from hal.serving.repository import compiled_specs
from hal.serving.server import model_configs

APP_NAME = "hal"


def _portable(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with a model every node can load: a zoo name as is, a file as its bytes."""
    from hal.frontends import is_zoo_name
    from hal.ir.model import Model

    m = cfg.model
    if compiled_specs(m) is not None:
        raise OptionError(f"model {cfg.name!r} was given compiled; on a Ray cluster every "
                          f"replica compiles its own copy: give its source (a zoo name, an "
                          f".onnx path or a hal.Model)")
    if isinstance(m, str) and is_zoo_name(m):
        return cfg
    if isinstance(m, (str, os.PathLike)):
        path = Path(m)
        if not path.is_file():
            raise OptionError(f"model {cfg.name!r}: {str(path)!r} is not a file")
        return replace(cfg, model=path.read_bytes())
    if isinstance(m, Model):
        return replace(cfg, model=m.to_proto().SerializeToString())
    if isinstance(m, (bytes, bytearray)):
        return cfg
    raise OptionError(f"model {cfg.name!r}: a {type(m).__name__} cannot travel to the "
                      f"replicas; give a zoo name, an .onnx path, ONNX bytes or a hal.Model")


class Replica:
    """One Ray Serve replica: the models compiled, the HTTP application built."""

    def __init__(self, configs: list[ModelConfig], token: str | None, max_body_bytes: int):
        import socket

        import ray

        from hal.serving.app import build_app
        from hal.serving.metrics import Metrics
        from hal.serving.repository import Repository

        metrics = Metrics()
        repo = Repository(configs, None, {}, metrics)
        repo.load_all()
        node = ray.get_runtime_context().get_node_id()
        self._app = build_app(repo, token=token, max_body_bytes=max_body_bytes,
                              metrics=metrics, reload=False,
                              replica=f"{socket.gethostname()}/{node[:8]}/{os.getpid()}")

    def __serve_build_asgi_app__(self):
        return self._app


class RayServing:
    """The application running on the cluster: ``url``, ``wait()`` (until SIGTERM or
    SIGINT, then ``stop()``), ``stop()`` (deletes the application)."""

    def __init__(self, ray, serve, url: str, started_ray: bool):
        self._ray, self._serve = ray, serve
        self.url = url
        self._started_ray = started_ray
        self._stopped = False

    def wait(self) -> None:
        done = threading.Event()
        main = threading.current_thread() is threading.main_thread()
        old = {}
        if main:
            for sig in (signal.SIGTERM, signal.SIGINT):
                old[sig] = signal.signal(sig, lambda *_: done.set())
        try:
            while not done.wait(1.0):
                pass
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.stop()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._serve.delete(APP_NAME)  # Ray Serve drains the replicas' requests first
        finally:
            if self._started_ray:
                self._ray.shutdown()


def serve_on_ray(models: Any, *, cluster: str, replicas: int = 1,
                 repository: str | None = None, host: str = "127.0.0.1", port: int = 8000,
                 token: str | None = None, block: bool = True, max_body_mb: float = 64,
                 num_cpus: float = 1, proxy_location: str = "EveryNode",
                 **defaults: Any) -> RayServing | None:
    """Deploy the models as ``replicas`` Ray Serve replicas (see ``hal.serve``).

    ``num_cpus``: the CPUs Ray reserves for each replica (so replicas spread over the
    nodes). ``proxy_location``: where Ray Serve's HTTP proxy listens on ``host:port``:
    "EveryNode" (Ray's default; a load balancer in front may use any node) or "HeadOnly"
    (one address; also for a test cluster of several nodes on one machine, whose proxies
    would share the port)."""
    from hal.comparison.fleet import address_of

    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise OptionError(f"replicas must be a whole number >= 1, got {replicas!r}")
    defaults = {k: v for k, v in defaults.items() if v is not None or k == "precision"}
    configs = model_configs(models, defaults)
    if repository is not None:
        for name, cfg in read_repository(repository, defaults).items():
            if isinstance(cfg, str):
                raise OptionError(cfg)
            if any(c.name == name for c in configs):
                raise OptionError(f"model {name!r} is both given and a folder of the "
                                  f"repository {repository!r}; give it once")
            configs.append(cfg)
    if not configs:
        raise OptionError("nothing to serve: name models (e.g. lenet=cpu) or a repository "
                          "folder")
    configs = [_portable(c) for c in configs]
    token = token if token is not None else os.environ.get("HAL_SERVE_TOKEN") or None
    address = address_of(cluster)
    try:
        import ray
        from ray import serve
    except ImportError:
        raise OptionError("--cluster serves with Ray Serve: pip install 'hal-accel[ray]'") \
            from None
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except Exception as exc:  # ConnectionError, RuntimeError: Ray's words say why
            raise BackendError(f"cannot connect to the Ray cluster at {address!r} "
                               f"(cluster={cluster!r}): {type(exc).__name__}: {exc}; start one "
                               f"with `ray start --head` (nodes sharing RAY_AUTH_TOKEN)") \
                from None
        started = True
    try:
        serve.start(http_options={"host": host, "port": port, "location": proxy_location})
        deployment = serve.deployment(serve.ingress()(Replica), name="hal",
                                      num_replicas=replicas,
                                      ray_actor_options={"num_cpus": num_cpus},
                                      max_ongoing_requests=1024)
        app = deployment.bind(configs, token, int(max_body_mb * (1 << 20)))
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    except Exception as exc:
        if started:
            ray.shutdown()
        if isinstance(exc, (OptionError, BackendError)):
            raise
        raise BackendError(f"Ray Serve could not deploy the models: {type(exc).__name__}: "
                           f"{exc}") from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    handle = RayServing(ray, serve, f"http://{shown}:{port}", started)
    _wait_ready(handle.url, token)
    if not block:
        return handle
    handle.wait()
    return None


def _wait_ready(url: str, token: str | None, timeout_s: float = 120) -> None:
    """Until the proxy answers the health route (the replicas have compiled their models)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise BackendError(f"the Ray Serve application did not become ready at {url} "
                               f"within {timeout_s:g} s")
        time.sleep(0.5)
