"""``hal serve``: models over HTTP with the Open Inference Protocol (KServe v2 / Triton)."""

from __future__ import annotations

import ipaddress
import os
import sys

from hal.errors import OptionError


def add_parser(sub) -> None:
    s = sub.add_parser(
        "serve", help="serve models over HTTP (KServe v2 / Triton protocol)",
        description="Serve models over HTTP with the Open Inference Protocol (KServe v2, as "
                    "Triton speaks it), with dynamic batching, a bounded queue per model (503 "
                    "and Retry-After when full), Prometheus metrics at /metrics and a "
                    "graceful drain on SIGTERM.")
    s.add_argument("models", nargs="*", metavar="MODEL[=DEVICE]",
                   help="a zoo model or an .onnx file (served under the zoo name or the "
                        "file's stem), on DEVICE (default --device), e.g. lenet=cpu "
                        "resnet_lite=cpu@torch")
    s.add_argument("--repository", metavar="DIR",
                   help="a model repository: one folder per model holding its .onnx and/or "
                        "config.json|config.toml (device, precision, max_batch, ...); "
                        "reloadable with POST /v2/repository/models/NAME/load")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1; 0.0.0.0 for every interface)")
    s.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    s.add_argument("--device", default="cpu", help="device of a model named without one")
    s.add_argument("--precision", default=None, help="fp32, fp16, bf16 or int8")
    s.add_argument("--max-batch", type=int, default=32,
                   help="rows per batch at most, and per request (0: no batch axis)")
    s.add_argument("--max-delay-ms", type=float, default=0.0,
                   help="how long the oldest queued request may wait for others to join its "
                        "batch (default 0: a batch takes what queued while the model was busy)")
    s.add_argument("--no-batching", dest="batching", action="store_false",
                   help="run every request alone, as it came")
    s.add_argument("--queue", type=int, default=256,
                   help="queued requests per model at most; past it: 503 with Retry-After")
    s.add_argument("--instances", type=int, default=1,
                   help="compiled copies of each model running batches side by side (default 1)")
    s.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a compile option of the devices' backend for every model, e.g. "
                        "--option intra_op_num_threads=1 on cpu@ort (repeatable)")
    s.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="a request's time limit in the server (504 past it)")
    s.add_argument("--token", default=None,
                   help="require Authorization: Bearer TOKEN (default: HAL_SERVE_TOKEN; "
                        "prefer the variable, a flag shows in the process list)")
    s.add_argument("--max-body-mb", type=float, default=64,
                   help="larger request bodies get 413")
    s.add_argument("--drain-timeout", type=float, default=30, metavar="SECONDS",
                   help="on SIGTERM, how long accepted requests may take to finish")
    s.add_argument("--cluster", default=None, metavar="ray|ray://HOST:PORT",
                   help="serve on a Ray cluster with Ray Serve (RAY_ADDRESS, else the cluster "
                        "`ray start` began here, for 'ray')")
    s.add_argument("--replicas", type=int, default=1,
                   help="with --cluster: copies of the server (each with every model)")
    s.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level")
    s.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    from hal.serving import Server

    from hal.cli.run import backend_options

    defaults = {"options": dict(backend_options(args.option)),
                "device": args.device, "precision": args.precision,
                "max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms,
                "batching": args.batching, "queue": args.queue, "instances": args.instances,
                "timeout_s": args.timeout}
    token = args.token if args.token is not None else os.environ.get("HAL_SERVE_TOKEN") or None
    if not args.models and not args.repository:
        raise OptionError("nothing to serve: name models (e.g. hal serve lenet=cpu) or "
                          "--repository DIR")
    if token is None and not _loopback(args.host):
        print(f"hal serve: warning: listening on {args.host} without a token; anyone who "
              f"reaches the port can run the models (set HAL_SERVE_TOKEN)", file=sys.stderr)
    if args.cluster is not None:
        from hal.serving.ray_serve import serve_on_ray

        url = serve_on_ray(args.models, cluster=args.cluster, replicas=args.replicas,
                           repository=args.repository, host=args.host, port=args.port,
                           token=token, block=False, max_body_mb=args.max_body_mb,
                           **defaults)
        print(f"serving on Ray ({args.replicas} replica(s)) at {url.url}; Ctrl-C or SIGTERM "
              f"takes the application down", flush=True)
        url.wait()
        return 0
    if args.replicas != 1:
        raise OptionError("--replicas runs copies of the server on a Ray cluster: add "
                          "--cluster ray (on one machine, --instances runs copies of a model)")

    def progress(cfg) -> None:
        print(f"compiling {cfg.name} for {cfg.device}"
              + (f" ({cfg.precision})" if cfg.precision else ""), flush=True)

    server = Server(args.models, repository=args.repository, host=args.host, port=args.port,
                    token=token, max_body_mb=args.max_body_mb,
                    drain_timeout_s=args.drain_timeout, log_level=args.log_level,
                    progress=progress, **defaults)
    server.bind()
    models = ", ".join(f"{name} on {m.device}" for name, m in server.repository.models.items())
    print(f"serving {models} at {server.url}"
          + (" (bearer token required)" if token else ""), flush=True)
    server.run()
    print("hal serve: stopped; every accepted request was answered", flush=True)
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
