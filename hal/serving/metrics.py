"""Prometheus metrics of one server, in a registry of its own (``GET /metrics``).

Every series is labelled by ``model`` and ``device``: requests and failures (by reason:
invalid, overloaded, timeout, error, unavailable, ...), the time a request waited in its
model's queue, the time a batch took to compute, a request's whole time in the server, the
rows of each batch the model ran, and the requests queued and in flight now.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LABELS = ("model", "device")


class Metrics:
    """The server's metrics; ``child(model, device)`` gives one model's series."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("hal_serve_requests", "Inference requests for a served model",
                                LABELS, registry=r)
        self.failures = Counter("hal_serve_failures", "Inference requests answered with an "
                                "error, by reason", (*LABELS, "reason"), registry=r)
        self.queue_seconds = Histogram("hal_serve_queue_seconds", "Time a request waited in "
                                       "its model's queue before its batch started", LABELS,
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.compute_seconds = Histogram("hal_serve_compute_seconds", "Time one batch took "
                                         "to run on the model's device", LABELS,
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.request_seconds = Histogram("hal_serve_request_seconds", "Time from a request's "
                                         "arrival to its response, for answered requests",
                                         LABELS, buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("hal_serve_batch_size", "Rows (samples) in each batch "
                                    "the model ran", LABELS, buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("hal_serve_queue_depth", "Requests waiting in the model's "
                                 "queue", LABELS, registry=r)
        self.inflight = Gauge("hal_serve_inflight", "Requests accepted for the model and not "
                              "yet answered (queued or running)", LABELS, registry=r)

    def child(self, model: str, device: str) -> ModelMetrics:
        return ModelMetrics(self, model, device)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class ModelMetrics:
    """One model's series, resolved once (``labels()`` is not free on the hot path)."""

    def __init__(self, m: Metrics, model: str, device: str):
        self._m, self._labels = m, (model, device)
        self.requests = m.requests.labels(model, device)
        self.queue_seconds = m.queue_seconds.labels(model, device)
        self.compute_seconds = m.compute_seconds.labels(model, device)
        self.request_seconds = m.request_seconds.labels(model, device)
        self.batch_size = m.batch_size.labels(model, device)
        self.queue_depth = m.queue_depth.labels(model, device)
        self.inflight = m.inflight.labels(model, device)

    def failure(self, reason: str) -> None:
        self._m.failures.labels(*self._labels, reason).inc()
