"""MLPerf scenarios: drive a compiled model through MLPerf LoadGen and keep its figures.

SingleStream (one sample per query, the next issued when the last completes; metric: 90th
percentile latency), Offline (every sample at once, the system under test batches them;
metric: samples per second) and Server (Poisson arrivals at a target rate; metric: the
scheduled samples per second of a VALID run, i.e. one whose 99th-percentile latency stays
within the latency bound). Runs are kept short (``min_duration_ms`` from the row budget,
small ``min_query_count``), so results say so: MLPerf's own minimums are far longer and
LoadGen may call a short run INVALID for that reason alone; its verdict is kept verbatim.
"""

from __future__ import annotations

import os
import queue
import re
import tempfile
import threading
import time

import numpy as np

from hal.errors import HalError, OptionError

MLPERF_NAMES = {"single-stream": "SingleStream", "offline": "Offline", "server": "Server"}
INSTALL = "pip install mlcommons-loadgen  (or: pip install 'hal-accel[compare]')"


def check_scenario(scenario: str) -> None:
    if scenario not in MLPERF_NAMES:
        raise OptionError(f"scenario {scenario!r} is not one of {list(MLPERF_NAMES)}")
    loadgen()


def loadgen():
    try:
        import mlperf_loadgen
    except ImportError as exc:
        raise HalError(f"MLPerf scenarios run through MLPerf LoadGen, which is not installed: "
                       f"{INSTALL}") from exc
    return mlperf_loadgen


class _SUT:
    """The system under test: a thread that runs queued samples through the compiled model.

    Batches are padded to ``batch`` so a backend never sees a new shape (and re-traces)
    while LoadGen is timing it: only batch 1 and ``batch`` occur, both warmed up first.
    """

    def __init__(self, lg, compiled, samples: list[list[np.ndarray]], batch: int):
        self.lg, self.compiled, self.samples, self.batch = lg, compiled, samples, batch
        self.queue: queue.Queue = queue.Queue()
        self.latencies_ms: list[float] = []
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def issue(self, query_samples) -> None:
        now = time.perf_counter()
        for q in query_samples:
            self.queue.put((q.id, q.index, now))

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join()

    def _loop(self) -> None:
        lg = self.lg
        while True:
            item = self.queue.get()
            if item is None:
                return
            work = [item]
            while len(work) < self.batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)
                    break
                work.append(nxt)
            try:
                if self.failure is None:
                    self._run([self.samples[i] for _, i, _ in work])
            except BaseException as exc:  # reported after LoadGen returns
                self.failure = exc
            done = time.perf_counter()
            self.latencies_ms.extend((done - t) * 1e3 for _, _, t in work)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0) for qid, _, _ in work])

    def _run(self, samples: list[list[np.ndarray]]) -> None:
        n = len(samples)
        size = 1 if n == 1 else self.batch
        samples = samples + [samples[-1]] * (size - n)
        arrays = [np.concatenate(parts) if size > 1 else parts[0] for parts in zip(*samples)]
        self.compiled(*arrays)
        self.compiled.sync()


def run_scenario(row, compiled, inputs, job) -> list[np.ndarray]:
    """Fill ``row`` from a LoadGen run of ``compiled``; return the outputs on ``inputs``."""
    lg = loadgen()
    name = MLPERF_NAMES[job.scenario]
    t0 = time.perf_counter()
    outs = compiled(*inputs)
    compiled.sync()
    row.first_call_ms = (time.perf_counter() - t0) * 1e3
    batch = row.batch
    samples = [[a[i:i + 1] for a in inputs] for i in range(batch)]
    one = _time(compiled, samples[0], max(job.warmup, 5))
    full = _time(compiled, inputs, max(job.warmup, 5)) if batch > 1 else one

    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, name)
    s.mode = lg.TestMode.PerformanceOnly
    s.min_duration_ms = max(1, int(job.budget_s * 1000))
    s.max_duration_ms = max(10_000, int(job.budget_s * 1000) * 20)
    info: dict = {"scenario": name, "min_duration_ms": s.min_duration_ms}
    if name == "SingleStream":
        s.single_stream_expected_latency_ns = max(1, int(one * 1e6))
        s.min_query_count = job.min_runs
        info["metric"] = "90.0th percentile latency (ns)"
    elif name == "Offline":
        s.offline_expected_qps = batch / (full / 1e3)
        s.min_query_count = 1
        info["metric"] = "Samples per second"
    else:
        bound_ms = job.latency_bound_ms or max(10.0, 10 * full)
        s.server_target_latency_ns = int(bound_ms * 1e6)
        s.server_target_qps = 0.5 * batch / (full / 1e3)
        s.min_query_count = job.min_runs
        info.update(metric="Scheduled samples per second", latency_bound_ms=bound_ms)

    for _ in range(5):
        per_query = 1 if name == "SingleStream" else batch
        summary, lat = _run_loadgen(lg, s, compiled, samples, per_query)
        if name != "Server" or summary.get("Performance constraints satisfied") == "Yes":
            break
        s.server_target_qps /= 2  # latency bound missed: retry at half the rate
    info["result"] = summary.get("Result is", "unknown")
    info["summary"] = summary
    if name == "Server":
        info["target_qps"] = s.server_target_qps
    info["value"] = summary.get(info["metric"])

    def ms(key):
        v = summary.get(key)
        return None if v is None else v / 1e6

    row.p50_ms = ms("50.00 percentile latency (ns)")
    row.p90_ms = ms("90.00 percentile latency (ns)")
    row.p99_ms = ms("99.00 percentile latency (ns)")
    row.mean_ms = ms("Mean latency (ns)")
    row.min_ms = ms("Min latency (ns)")
    if lat:
        t = np.asarray(lat)
        p25, p50, p75 = np.percentile(t, [25, 50, 75])
        row.iqr_ms, row.mad_ms = float(p75 - p25), float(np.median(np.abs(t - p50)))
    row.runs = len(lat)
    row.throughput_per_s = {
        "SingleStream": summary.get("QPS w/o loadgen overhead"),
        "Offline": summary.get("Samples per second"),
        "Server": summary.get("Scheduled samples per second")}[name]
    row.mlperf = info
    return outs


def _time(compiled, arrays, n: int) -> float:
    """Median ms of ``n`` calls (the warm-up that also sizes LoadGen's expectations)."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        compiled(*arrays)
        compiled.sync()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def _run_loadgen(lg, settings, compiled, samples, batch) -> tuple[dict, list[float]]:
    sut_obj = _SUT(lg, compiled, samples, batch)
    sut = lg.ConstructSUT(sut_obj.issue, sut_obj.flush)
    qsl = lg.ConstructQSL(len(samples), len(samples), lambda idx: None, lambda idx: None)
    try:
        with tempfile.TemporaryDirectory(prefix="hal-loadgen-") as out:
            log = lg.LogSettings()
            log.log_output.outdir = out
            log.log_output.copy_summary_to_stdout = False
            log.enable_trace = False
            lg.StartTestWithLogSettings(sut, qsl, settings, log)
            sut_obj.stop()
            with open(os.path.join(out, "mlperf_log_summary.txt")) as f:
                summary = parse_summary(f.read())
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if sut_obj.failure is not None:
        raise sut_obj.failure
    return summary, sut_obj.latencies_ms


_LINE = re.compile(r"^\s*([^:=]+?)\s*:\s*(.+?)\s*$")


def parse_summary(text: str) -> dict:
    """LoadGen's ``mlperf_log_summary.txt`` as {label: number or text}."""
    out: dict = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m or line.startswith("*"):
            continue
        key, val = m.group(1), m.group(2)
        try:
            out[key] = float(val) if any(c in val for c in ".eE") else int(val)
        except ValueError:
            out[key] = val
    return out
