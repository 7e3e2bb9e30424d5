"""Load on ``hal serve``: throughput and latency at 1, 8, 32 and 128 concurrent clients.

    python bench/serve_load.py                       # 4 models x batching on/off x 4 loads
    python bench/serve_load.py --seconds 3 --clients 1,32 --models lenet,identity
    python bench/serve_load.py --overload-only       # the 10x overload check alone

The server runs as ``hal serve`` in a process of its own (all models in one server, so the
models share its event loop as they would in production); this process is the load: N
asyncio clients, each on a keep-alive connection of its own sending one sample (batch 1,
the binary tensor extension, as tritonclient sends it) and waiting for the answer before
the next, for ``--seconds`` after a warm-up. The requests are prepared once and the answers
parsed with httptools, so that the load costs the shared machine little CPU. Each
configuration reports requests answered per second, p50 and p99 latency as the client saw
it, failures, and the mean batch the server ran (its /metrics). Batching on:
``--max-batch`` rows within ``--max-delay-ms``; off: ``--no-batching``. ``identity`` is an
ONNX Identity of LeNet's input, so its row is the server's own ceiling (protocol, queue,
threads) at that payload.

The offline column is ``hal.compare`` on the same device at batch ``--max-batch``: samples
per second with no server, the bound batching can approach.

The overload check (``--overload-clients``, default 10x what the server holds: its queue
and one batch per instance) runs lenet with a small queue, and checks that every answer is
200 or 503, that the server's memory stays bounded (its RSS before and after) and that it
answers a request at once after the load stops.

The clients share the machine with the server: on a small machine the load generator's own
CPU time lowers the figures (the table says how many cores it had).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("lenet", "tiny_transformer", "resnet_lite", "identity")
CLIENTS = (1, 8, 32, 128)


def identity_model(folder: Path) -> Path:
    """An ONNX Identity on LeNet's input (N, 1, 28, 28)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, 28, 28])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])],
                              "identity", [x], [y])
    path = folder / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def example(name: str) -> np.ndarray:
    import hal

    return hal.models.example_input("lenet" if name == "identity" else name, 1)


class ServerProcess:
    """``hal serve`` in a subprocess, on a free port; its URL and its RSS."""

    def __init__(self, specs: list[str], args: list[str]):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HAL_SELECT": "priority"}
        cmd = [sys.executable, "-m", "hal.cli", "serve", *specs, "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, env=env)
        for line in self.proc.stdout:
            if line.startswith("serving "):
                self.url = line.rsplit(" at ", 1)[1].split()[0]
                break
        else:
            raise RuntimeError(f"hal serve did not start: {' '.join(cmd)}")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        """CPU seconds the server process has used (user + system, every thread)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Connection(asyncio.Protocol):
    """One client's keep-alive HTTP/1.1 connection: it writes a request prepared once and
    parses the answer with httptools (uvicorn's parser), so that the load generator, which
    shares the machine with the server, costs it little CPU."""

    def __init__(self):
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.answer: asyncio.Future | None = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # a malformed answer is this request's failure, and the
            self._finish(type(exc).__name__)  # stream past it unusable: the client reconnects
            self.transport.close()

    def on_message_complete(self):
        self._finish(str(self.parser.get_status_code()))

    def connection_lost(self, exc):
        self.transport = None
        self._finish("ConnectionLost")

    def _finish(self, code: str):
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(code)

    async def send(self, request: bytes) -> str:
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.answer


def prepared_request(url: str, model: str, x: np.ndarray) -> tuple[str, int, bytes]:
    """(host, port, the whole HTTP request): one sample, the binary tensor extension, as
    tritonclient sends it."""
    from urllib.parse import urlsplit

    from hal.serving.protocol import encode_request

    body, headers = encode_request({"input": x}, outputs=["output"])
    where = urlsplit(url)
    head = [f"POST /v2/models/{model}/infer HTTP/1.1", f"Host: {where.netloc}",
            f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return where.hostname, where.port, ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def load(url: str, model: str, x: np.ndarray, clients: int, seconds: float,
               warmup_s: float = 1.0) -> dict:
    """``clients`` closed-loop clients for ``seconds`` (after ``warmup_s``), each on a
    connection of its own (opened again if the server closes it)."""
    host, port, request = prepared_request(url, model, x)
    loop = asyncio.get_running_loop()
    lat: list[float] = []
    codes: dict[str, int] = {}
    warm = [0]
    t_start = time.perf_counter()
    t_measure, t_end = t_start + warmup_s, t_start + warmup_s + seconds

    async def client():
        conn = None
        while True:
            t0 = time.perf_counter()
            if t0 >= t_end:
                break
            try:
                if conn is None or conn.transport is None:
                    _, conn = await loop.create_connection(Connection, host, port)
                code = await conn.send(request)
            except OSError as exc:
                code = type(exc).__name__
            t1 = time.perf_counter()
            if t0 < t_measure:
                warm[0] += 1
            else:
                codes[code] = codes.get(code, 0) + 1
                if code == "200":
                    lat.append(t1 - t0)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    ok = codes.get("200", 0)
    ms = np.array(lat) * 1e3 if lat else np.array([np.nan])
    return {"throughput": ok / seconds, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "ok": ok,
            "failures": sum(n for c, n in codes.items() if c != "200"), "codes": codes,
            "warm": warm[0]}


def instance_count(url: str, model: str) -> int:
    """The copies of ``model`` the server runs (its config's instance group)."""
    import urllib.request

    config = json.loads(urllib.request.urlopen(f"{url}/v2/models/{model}/config").read())
    return sum(g["count"] for g in config["instance_group"])


def server_batches(url: str) -> dict[str, tuple[float, float]]:
    """model -> (batches run, rows run) from the server's /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"{url}/metrics").read().decode()
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        for suffix, i in (("_count", 0), ("_sum", 1)):
            if line.startswith(f"hal_serve_batch_size{suffix}{{"):
                model = line.split('model="')[1].split('"')[0]
                out.setdefault(model, [0.0, 0.0])[i] = float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def offline(models: list[str], identity: Path, device: str, batch: int,
            budget_s: float) -> dict[str, float]:
    """Samples per second at ``batch`` with no server (hal.compare's timing loop)."""
    import hal

    names = [str(identity) if m == "identity" else m for m in models]
    res = hal.compare(models=names, devices=[device], batch=[batch], budget_s=budget_s)
    out = {}
    for row in res.rows:
        name = "identity" if row.model in (str(identity), "identity") else row.model
        out[name] = row.throughput_per_s if row.ok else float("nan")
    return out


def run_load(models, clients, seconds, device, max_batch, max_delay_ms, queue, folder,
             rounds=1, options=(), instances=1):
    """Both servers (batching on and off) up at once; each row's on and off runs back to
    back, ``rounds`` times, so that both see the same machine; the median round is kept."""
    identity = identity_model(folder)
    specs = [f"{identity}={device}" if m == "identity" else f"{m}={device}" for m in models]
    common = ["--max-batch", str(max_batch), "--max-delay-ms", str(max_delay_ms), "--queue",
              str(queue), "--instances", str(instances),
              *[a for o in options for a in ("--option", o)]]
    servers = {}
    try:
        for batching in (True, False):
            servers[batching] = ServerProcess(specs, common + ([] if batching
                                                               else ["--no-batching"]))
        rows = []
        for model in models:
            x = example(model)
            for n in clients:
                runs: dict[bool, list[dict]] = {True: [], False: []}
                for _ in range(rounds):
                    for batching, server in servers.items():
                        before = server_batches(server.url).get(model, (0.0, 0.0))
                        load1 = os.getloadavg()[0]
                        cpu0 = server.cpu_s()
                        r = asyncio.run(load(server.url, model, x, n, seconds, warmup_s=0.5))
                        cpu = server.cpu_s() - cpu0
                        after = server_batches(server.url).get(model, (0.0, 0.0))
                        batches = after[0] - before[0]
                        answered = r["ok"] + r["failures"] + r["warm"]
                        r.update(model=model, batching=batching, clients=n,
                                 cpu_us=1e6 * cpu / answered if answered else float("nan"),
                                 mean_batch=(after[1] - before[1]) / batches if batches
                                 else 0.0, loadavg=round((load1 + os.getloadavg()[0]) / 2, 1))
                        runs[batching].append(r)
                for batching, rs in runs.items():
                    r = sorted(rs, key=lambda r: r["throughput"])[len(rs) // 2]
                    r["rounds"] = [round(x["throughput"]) for x in rs]
                    rows.append(r)
                    print(f"{model:17s} batching={'on ' if batching else 'off'} "
                          f"clients={n:4d}  {r['throughput']:8.0f}/s  p50 {r['p50_ms']:7.2f} ms"
                          f"  p99 {r['p99_ms']:7.2f} ms  failures {r['failures']}  "
                          f"mean batch {r['mean_batch']:.1f}  server CPU {r['cpu_us']:.0f} "
                          f"us/request (rounds {r['rounds']}, load "
                          f"average {r['loadavg']})", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return rows, identity


def overload(device: str, seconds: float, clients: int | None, queue: int,
             max_batch: int, options=()) -> dict:
    """lenet at 10x what the server holds (its queue and a batch on each instance): only 200
    and 503, bounded memory, recovery."""
    server = ServerProcess([f"lenet={device}"], ["--queue", str(queue), "--max-batch",
                                                 str(max_batch),
                                                 *[a for o in options for a in ("--option", o)]])
    try:
        instances = instance_count(server.url, "lenet")
        clients = clients or 10 * (queue + instances * max_batch)
        x = example("lenet")
        asyncio.run(load(server.url, "lenet", x, 8, 1.0, 0.5))  # warm
        rss0 = server.rss_mb()
        r = asyncio.run(load(server.url, "lenet", x, clients, seconds, 1.0))
        rss1 = server.rss_mb()
        t0 = time.perf_counter()
        after = asyncio.run(load(server.url, "lenet", x, 1, 1.0, 0.0))
        recovered_s = time.perf_counter() - t0
        return {"clients": clients, "queue": queue, "max_batch": max_batch,
                "instances": instances,
                "codes": r["codes"], "throughput": r["throughput"], "p99_ms": r["p99_ms"],
                "only_200_503": set(r["codes"]) <= {"200", "503"},
                "rss_before_mb": round(rss0, 1), "rss_after_mb": round(rss1, 1),
                "after": {"codes": after["codes"], "p50_ms": after["p50_ms"]},
                "recovered": set(after["codes"]) == {"200"}, "check_s": round(recovered_s, 2)}
    finally:
        server.stop()


def table(rows: list[dict], offline_tp: dict[str, float], max_batch: int) -> str:
    lines = ["| model | clients | batching on: req/s | p50 ms | p99 ms | mean batch | "
             "CPU µs/req | batching off: req/s | p50 ms | p99 ms | CPU µs/req | offline at "
             f"batch {max_batch}, samples/s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    by = {(r["model"], r["clients"], r["batching"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        for n in sorted({r["clients"] for r in rows if r["model"] == model}):
            on, off = by.get((model, n, True)), by.get((model, n, False))

            def cells(r, batch=False):
                if r is None:
                    return ["", "", "", ""] + ([""] if batch else [])
                fail = f" ({r['failures']} failed)" if r["failures"] else ""
                c = [f"{r['throughput']:,.0f}{fail}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"]
                return c + ([f"{r['mean_batch']:.1f}"] if batch else []) + [f"{r['cpu_us']:.0f}"]

            lines.append("| " + " | ".join([model, str(n), *cells(on, True), *cells(off),
                                            f"{offline_tp.get(model, float('nan')):,.0f}"])
                         + " |")
    return "\n".join(lines)


def efficiency(rows: list[dict], offline_tp: dict[str, float]) -> list[str]:
    """Each model's throughput with batching on as a share of the smaller of its offline
    throughput and the server's ceiling (identity's throughput at the same load)."""
    on = {(r["model"], r["clients"]): r["throughput"] for r in rows if r["batching"]}
    lines = []
    for (model, n), tp in on.items():
        ceiling = on.get(("identity", n))
        if model == "identity" or ceiling is None:
            continue
        bound = min(offline_tp.get(model, float("nan")), ceiling)
        lines.append(f"{model} at {n} clients: {tp:,.0f} requests/s = {tp / bound:.0%} of "
                     f"min(offline {offline_tp.get(model, float('nan')):,.0f}, ceiling "
                     f"{ceiling:,.0f})")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per row")
    p.add_argument("--device", default="cpu@ort")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-delay-ms", type=float, default=0.0)
    p.add_argument("--queue", type=int, default=1024)
    p.add_argument("--instances", type=int, default=1, help="copies of each model, each running "
                   "its own batches (hal serve --instances)")
    p.add_argument("--rounds", type=int, default=1, help="runs of each row (the median "
                   "kept), batching on and off interleaved")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a compile option for hal serve, e.g. intra_op_num_threads=1")
    p.add_argument("--overload-clients", type=int, default=None)
    p.add_argument("--overload-queue", type=int, default=32)
    p.add_argument("--overload-only", action="store_true")
    p.add_argument("--no-overload", action="store_true", help="skip the overload check")
    p.add_argument("--json", default=None, help="write every figure here")
    a = p.parse_args()
    models = [m for m in a.models.split(",") if m]
    clients = [int(c) for c in a.clients.split(",") if c]
    out: dict = {"cores": os.cpu_count(), "device": a.device, "seconds": a.seconds,
                 "rounds": a.rounds, "options": a.option, "instances": a.instances,
                 "max_batch": a.max_batch, "max_delay_ms": a.max_delay_ms,
                 "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        if not a.overload_only:
            rows, identity = run_load(models, clients, a.seconds, a.device, a.max_batch,
                                      a.max_delay_ms, a.queue, Path(tmp), a.rounds, a.option,
                                      a.instances)
            offline_tp = offline(models, identity, a.device, a.max_batch, budget_s=1.0)
            out["rows"], out["offline"] = rows, offline_tp
            print()
            print(table(rows, offline_tp, a.max_batch))
            out["efficiency"] = efficiency(rows, offline_tp)
            print("\n".join(["", *out["efficiency"]]))
        if not a.no_overload:
            ov = overload(a.device, a.seconds, a.overload_clients, a.overload_queue, a.max_batch,
                          a.option)
            out["overload"] = ov
            print()
            print(f"overload: {ov['clients']} clients on lenet (queue {ov['queue']}, max_batch "
                  f"{ov['max_batch']}, {ov['instances']} instances): answers {ov['codes']}, {ov['throughput']:.0f} answered/s; "
                  f"only 200/503: {ov['only_200_503']}; server RSS {ov['rss_before_mb']} -> "
                  f"{ov['rss_after_mb']} MB; after the load: {ov['after']['codes']} at p50 "
                  f"{ov['after']['p50_ms']:.2f} ms (recovered: {ov['recovered']})")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
