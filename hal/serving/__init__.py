"""Serving: models over HTTP with the Open Inference Protocol (``hal.serve``, ``hal serve``).

    import hal
    hal.serve(["lenet=cpu", "resnet_lite=cpu@torch"], port=8000)   # blocks; SIGTERM drains

Any KServe v2 client speaks to it (``tritonclient.http`` included, binary tensors too).
Requests for one model are batched together (``hal.serving.batcher``), each model has a
bounded queue (503 with ``Retry-After`` when full), ``GET /metrics`` gives Prometheus
metrics, and ``cluster="ray"`` runs replicas on a Ray cluster. Modules: ``protocol`` (the
wire format), ``repository`` (models, their configs, reloading), ``batcher``, ``metrics``,
``app`` (the routes), ``server`` (uvicorn, the drain), ``ray_serve``. Importing this package
imports no web framework; starting a server does (``pip install 'hal-accel[serve]'``).
"""

from __future__ import annotations

from hal.serving.config import ModelConfig
from hal.serving.server import Server, serve

__all__ = ["ModelConfig", "Server", "serve"]
