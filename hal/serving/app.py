"""The HTTP application: the Open Inference Protocol's routes over a ``Repository``.

Routes (KServe v2 REST, with Triton's model repository and configuration extensions)::

    GET  /v2/health/live                        200 while the process serves
    GET  /v2/health/ready                       200 once every model is loaded
    GET  /v2                                    server metadata
    GET  /v2/models/NAME[/versions/V]           model metadata: inputs, outputs
    GET  /v2/models/NAME[/versions/V]/ready     200 when NAME serves
    GET  /v2/models/NAME[/versions/V]/config    the model's configuration (Triton's shape)
    POST /v2/models/NAME[/versions/V]/infer     inference (JSON, or JSON + binary tensors)
    POST /v2/repository/index                   every model and its state
    POST /v2/repository/models/NAME/load        (re)load NAME, optionally with a config
    POST /v2/repository/models/NAME/unload      take NAME out
    GET  /metrics                               Prometheus metrics

Every error is JSON ``{"error": "..."}`` with its status, never a traceback. With a token,
every route but the two health checks needs ``Authorization: Bearer TOKEN``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from hal.serving.protocol import (HEADER_LENGTH, ServeError, compress, decompress,
                                  encode_response, parse_request)
from hal.serving.repository import Repository, request_timeout

log = logging.getLogger("hal.serving")

#: routes open without the token: orchestrators probe them without credentials
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "parameters"]
#: a body past the limit is read (and dropped) up to this much more, so that the client,
#: still sending, reads the 413 instead of a reset connection
DRAIN_BYTES = 16 << 20
#: JSON bodies larger than this are parsed in a worker thread, off the event loop
PARSE_OFF_LOOP = 1 << 20


def error(status: int, message: str, headers: dict | None = None) -> Response:
    return Response(json.dumps({"error": message}), status, headers=headers,
                    media_type="application/json")


def _json(doc, status: int = 200) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")), status,
                    media_type="application/json")


class BearerAuth:
    """ASGI middleware: a request without ``Authorization: Bearer TOKEN`` gets 401."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = b""
        for key, value in scope["headers"]:
            if key == b"authorization":
                given = value
                break
        scheme, _, credential = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self.token):
            return await self.app(scope, receive, send)
        message = "this server needs a bearer token: send Authorization: Bearer TOKEN" \
            if not given else "the bearer token is wrong"
        response = error(401, message, {"WWW-Authenticate": 'Bearer realm="hal"'})
        await response(scope, receive, send)


def build_app(repo: Repository, *, token: str | None = None,
              max_body_bytes: int = 64 << 20, metrics=None, name: str = "hal",
              reload: bool = True, replica: str | None = None) -> Starlette:
    """The Starlette application serving ``repo``; ``token``: the bearer token (None: no
    authentication); ``max_body_bytes``: larger request bodies get 413; ``reload``: False
    refuses the load and unload routes (replicas, where one request reaches one copy);
    ``replica``: which copy this is, shown in the server metadata (Ray Serve replicas)."""
    from hal.version import __version__

    state = {"draining": False}

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise ServeError(400, f"Content-Length {declared!r} is not a number") from None
            if size > max_body_bytes:
                if size <= max_body_bytes + DRAIN_BYTES:
                    await _drain(request)
                raise _too_large(size)
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    await _drain(request, size)
                    raise _too_large(None)
                chunks.append(chunk)
        except ClientDisconnect:
            raise ServeError(400, "the client went away while sending the body") from None
        return b"".join(chunks)

    async def _drain(request: Request, seen: int = 0) -> None:
        with contextlib.suppress(ClientDisconnect, RuntimeError):
            async for chunk in request.stream():
                seen += len(chunk)
                if seen > max_body_bytes + DRAIN_BYTES:
                    break

    def _too_large(size: int | None) -> ServeError:
        what = f"{size:,} bytes" if size is not None else "more bytes"
        return ServeError(413, f"the request body of {what} exceeds the limit of "
                               f"{max_body_bytes:,} bytes (the server's --max-body-mb)")

    async def live(request: Request) -> Response:
        return _json({"live": True})

    async def ready(request: Request) -> Response:
        if state["draining"]:
            return error(503, "the server is shutting down")
        if not repo.ready():
            return error(503, "not every model is loaded: POST /v2/repository/index lists "
                              "their states")
        return _json({"ready": True})

    async def server_metadata(request: Request) -> Response:
        doc = {"name": name, "version": __version__, "extensions": EXTENSIONS}
        if replica:
            doc["replica"] = replica
        return _json(doc)

    def served(request: Request):
        p = request.path_params
        return repo.get(p["model"], p.get("version"))

    async def model_metadata(request: Request) -> Response:
        return _json(served(request).metadata())

    async def model_ready(request: Request) -> Response:
        served(request)
        return _json({"name": request.path_params["model"], "ready": True})

    async def model_config(request: Request) -> Response:
        return _json(served(request).triton_config())

    async def infer(request: Request) -> Response:
        t0 = time.perf_counter()
        model = served(request)
        m = model.metrics
        if m is not None:
            m.requests.inc()
            m.inflight.inc()
        try:
            model.batcher.admit()  # a full queue costs the server no parsing
            body = await read_body(request)
            body = decompress(body, request.headers.get("content-encoding"), max_body_bytes)
            header_length = request.headers.get(HEADER_LENGTH)
            if len(body) > PARSE_OFF_LOOP:
                req = await asyncio.to_thread(parse_request, body, header_length)
            else:
                req = parse_request(body, header_length)
            if model.batcher.closing:  # reloaded while the body came in: the new one answers
                model = served(request)
            arrays, rows, wanted = model.check(req)
            timeout = request_timeout(req, model)
            results = await model.batcher.submit(arrays, rows, timeout)
            payload, head = encode_response(model.name, model.version, req.id,
                                            [(model.outputs[i].name, results[i], binary)
                                             for i, binary in wanted])
        except ServeError as exc:
            if m is not None:
                m.failure(exc.reason)
            raise
        except Exception:
            if m is not None:
                m.failure("error")
            raise
        finally:
            if m is not None:
                m.inflight.dec()
        payload, encoding = compress(payload, request.headers.get("accept-encoding"))
        headers = {}
        if head is not None:
            headers[HEADER_LENGTH] = str(head)
        if encoding:
            headers["Content-Encoding"] = encoding
        if m is not None:
            m.request_seconds.observe(time.perf_counter() - t0)
        return Response(payload, headers=headers, media_type="application/octet-stream"
                        if head is not None else "application/json")

    async def json_body(request: Request) -> dict:
        body = await read_body(request)
        if not body.strip():
            return {}
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise ServeError(400, f"the request is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ServeError(400, "the request must be a JSON object")
        return doc

    async def repository_index(request: Request) -> Response:
        doc = await json_body(request)
        return _json(repo.index(ready_only=bool(doc.get("ready", False))))

    def reloads() -> None:
        if not reload:
            raise ServeError(400, "this server runs as replicas of a Ray Serve application, "
                                  "and a load request would reach one of them: deploy again "
                                  "(hal serve --cluster ...) to change a model")

    async def load(request: Request) -> Response:
        reloads()
        doc = await json_body(request)
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise ServeError(400, "\"parameters\" must be a JSON object")
        files = [k for k in params if k.startswith("file:")]
        if files:
            raise ServeError(400, f"loading model files sent in the request ({files[0]}, ...) "
                                  f"is not supported: put them in the repository folder")
        override = params.get("config")
        if isinstance(override, str):
            try:
                override = json.loads(override)
            except ValueError as exc:
                raise ServeError(400, f"the \"config\" parameter is not valid JSON: {exc}") \
                    from None
        if override is not None and not isinstance(override, dict):
            raise ServeError(400, "the \"config\" parameter must be a JSON object of settings")
        await repo.load(request.path_params["model"], override)
        return _json({})

    async def unload(request: Request) -> Response:
        reloads()
        await json_body(request)
        await repo.unload(request.path_params["model"])
        return _json({})

    async def metrics_route(request: Request) -> Response:
        if metrics is None:
            return error(404, "this server keeps no metrics")
        return Response(metrics.exposition(), media_type=metrics.content_type)

    async def on_serve_error(request: Request, exc: ServeError) -> Response:
        return error(exc.status, exc.message, exc.headers)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return error(404, f"no route {request.url.path!r}: the API is under /v2 (the Open "
                              f"Inference Protocol) and /metrics")
        if exc.status_code == 405:
            return error(405, f"{request.method} is not allowed on {request.url.path}",
                         dict(exc.headers or {}))
        return error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        state["draining"] = True
        await repo.close()  # the connections are done: finish whatever a batcher still holds

    versioned = "/v2/models/{model}/versions/{version}"
    plain = "/v2/models/{model}"
    routes = [  # inference first: Starlette tries the routes in order
        Route(plain + "/infer", infer, methods=["POST"]),
        Route(versioned + "/infer", infer, methods=["POST"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        Route("/v2/repository/models/{model}/load", load, methods=["POST"]),
        Route("/v2/repository/models/{model}/unload", unload, methods=["POST"]),
        Route("/metrics", metrics_route, methods=["GET"]),
    ]
    for base in (plain, versioned):
        routes += [Route(base, model_metadata, methods=["GET"]),
                   Route(base + "/ready", model_ready, methods=["GET"]),
                   Route(base + "/config", model_config, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ServeError: on_serve_error, HTTPException: on_http_error,
                                        Exception: on_crash})
    app.state.repository = repo
    app.state.serving = state
    if token:
        app.add_middleware(BearerAuth, token=token)
    return app
