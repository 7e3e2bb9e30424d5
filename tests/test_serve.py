"""``hal serve``: the Open Inference Protocol over HTTP, checked with Triton's own client.

Servers run in a thread of this process on a free loopback port (``Server.start``), except
the SIGTERM test, which needs a process of its own. Models that need to be slow or to count
their calls are plain callables with ``inputs``/``outputs`` specs (``Doubler``), which the
server takes as compiled models.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

import hal
from hal.errors import ModelError, OptionError
from hal.ir.model import TensorSpec
from hal.serving import ModelConfig, Server
from hal.serving import protocol as P


class Doubler:
    """y = 2x, after ``delay`` seconds; records the rows of every call (the batches)."""

    def __init__(self, delay: float = 0.0, shape=("N", 4)):
        self.inputs = [TensorSpec("x", tuple(shape), np.dtype(np.float32))]
        self.outputs = [TensorSpec("y", tuple(shape), np.dtype(np.float32))]
        self.delay = delay
        self.calls: list[int] = []
        self.device = "custom"

    def __call__(self, x):
        self.calls.append(len(x))
        if self.delay:
            time.sleep(self.delay)
        return [x * 2]


def post(url: str, model: str, inputs: dict, client=None, **kw) -> httpx.Response:
    body, headers = P.encode_request(inputs, **kw)
    return (client or httpx).post(f"{url}/v2/models/{model}/infer", content=body,
                                  headers=headers, timeout=30)


def outputs(r: httpx.Response) -> dict:
    assert r.status_code == 200, r.text
    return P.decode_response(r.content, r.headers.get(P.HEADER_LENGTH))


def metric(url: str, name: str, **labels) -> float:
    """The value of one series of the server's /metrics (0 when absent)."""
    text = httpx.get(f"{url}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def zoo_server():
    """lenet on cpu and resnet_lite on cpu@torch, bodies limited to 1 MB."""
    pytest.importorskip("torch")
    s = Server(["lenet=cpu", "resnet_lite=cpu@torch"], port=0, max_body_mb=1).start()
    yield s
    s.stop()


@pytest.fixture()
def triton(zoo_server):
    th = pytest.importorskip("tritonclient.http")
    client = th.InferenceServerClient(zoo_server.url.removeprefix("http://"))
    yield th, client
    client.close()


# -- Done when 1: Triton's client gets what hal.compile computes ---------------------------

@pytest.mark.parametrize("name,target", [("lenet", "cpu"), ("resnet_lite", "cpu@torch")])
def test_tritonclient_outputs_equal_compile(triton, name, target):
    th, client = triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name)
    meta = client.get_model_metadata(name)
    assert meta["inputs"][0]["datatype"] == "FP32" and meta["inputs"][0]["shape"][0] == -1
    x = hal.models.example_input(name, 3)
    expected = hal.compile(name, target)(x)[0]
    for binary in (True, False):  # the binary tensor extension, and plain JSON
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = th.InferRequestedOutput("output", binary_data=binary)
        got = client.infer(name, [inp], outputs=[out]).as_numpy("output")
        np.testing.assert_array_equal(got, expected)
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)  # no outputs named: all of them, binary
    got = client.infer(name, [inp], request_compression_algorithm="gzip",
                       response_compression_algorithm="deflate").as_numpy("output")
    np.testing.assert_array_equal(got, expected)
    config = client.get_model_config(name)
    assert config["max_batch_size"] == 32 and config["input"][0]["dims"] == list(x.shape[1:])


def test_server_metadata_and_repository_index(triton):
    th, client = triton
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    index = client.get_model_repository_index()
    assert [(m["name"], m["state"]) for m in index] == [("lenet", "READY"),
                                                        ("resnet_lite", "READY")]


def test_tritonclient_sees_the_error_message(triton):
    th, client = triton
    inp = th.InferInput("input", [1, 1, 28, 28], "FP64")
    inp.set_data_from_numpy(np.zeros((1, 1, 28, 28)))
    with pytest.raises(Exception) as e:
        client.infer("lenet", [inp])
    assert e.value.status() == "400"
    assert "input 'input' of model 'lenet' has datatype FP64, expected FP32" in e.value.message()


# -- bad requests: status and message -------------------------------------------------------

X = np.zeros((1, 1, 28, 28), np.float32)


def _binary_short() -> tuple[bytes, dict]:
    body, headers = P.encode_request({"input": X})
    return body[:-4], headers


BAD = {
    "unknown model": (404, "nope", lambda: P.encode_request({"input": X}),
                      "unknown model 'nope'; this server serves: lenet, resnet_lite"),
    "wrong input name": (400, "lenet", lambda: P.encode_request({"image": X}),
                         "model 'lenet' has no input 'image'; it takes 'input' "
                         "(FP32 [-1, 1, 28, 28])"),
    "wrong shape": (400, "lenet", lambda: P.encode_request({"input": X[..., :27]}),
                    "input 'input' of model 'lenet' has shape [1, 1, 28, 27], expected "
                    "[-1, 1, 28, 28]"),
    "wrong rank": (400, "lenet", lambda: P.encode_request({"input": X[0]}),
                   "has shape [1, 28, 28], expected [-1, 1, 28, 28]"),
    "wrong datatype": (400, "lenet", lambda: P.encode_request({"input": X.astype(np.int32)}),
                       "input 'input' of model 'lenet' has datatype INT32, expected FP32"),
    "too many rows": (400, "lenet", lambda: P.encode_request({"input": np.zeros(
        (33, 1, 28, 28), np.float32)}), "has 33 rows (shape [33, 1, 28, 28]); a request "
                                        "holds 1 to max_batch 32"),
    "unknown output": (400, "lenet", lambda: P.encode_request({"input": X}, outputs=["prob"]),
                       "model 'lenet' has no output 'prob'; its outputs: 'output'"),
    "data too short": (400, "lenet", lambda: (json.dumps({"inputs": [{
        "name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [1.0]}]}).encode(),
        {}), "input 'input' holds 1 value(s) in \"data\", but its shape needs 784"),
    "binary too short": (400, "lenet", _binary_short,
                         "input 'input' declares binary_data_size 3136 but only 3132"),
    "no header length": (400, "lenet", lambda: (P.encode_request({"input": X})[0], {}),
                         "needs the Inference-Header-Content-Length header"),
    "not json": (400, "lenet", lambda: (b"{oops", {}), "the request is not valid JSON"),
    "no inputs": (400, "lenet", lambda: (b'{"inputs": []}', {}), "a non-empty list"),
    "nested too deeply": (400, "lenet", lambda: (b"[" * 100_000, {}), "nested too deeply"),
    "strings for floats": (400, "lenet", lambda: (json.dumps({"inputs": [{
        "name": "input", "shape": [1], "datatype": "FP32", "data": ["a"]}]}).encode(), {}),
        "has shape [1], expected [-1, 1, 28, 28]"),
    "unknown datatype": (400, "lenet", lambda: (json.dumps({"inputs": [{
        "name": "input", "shape": [1], "datatype": "FLOAT", "data": [1]}]}).encode(), {}),
        "input 'input' has datatype 'FLOAT'; the protocol's datatypes are BOOL"),
    "oversized body": (413, "lenet", lambda: (b" " * 1_100_000, {}),
                       "the request body of 1,100,000 bytes exceeds the limit of 1,048,576"),
    "oversized, chunked": (413, "lenet", lambda: (iter([b" " * 600_000] * 2), {}),
                           "exceeds the limit of 1,048,576 bytes"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request(zoo_server, case):
    status, model, make, message = BAD[case]
    body, headers = make()
    r = httpx.post(f"{zoo_server.url}/v2/models/{model}/infer", content=body, headers=headers,
                   timeout=30)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert message in r.json()["error"], r.json()["error"]
    assert "Traceback" not in r.text


def test_bad_routes_are_json(zoo_server):
    r = httpx.get(f"{zoo_server.url}/v1/models")
    assert r.status_code == 404 and "the API is under /v2" in r.json()["error"]
    r = httpx.delete(f"{zoo_server.url}/v2/models/lenet")
    assert r.status_code == 405 and "DELETE is not allowed" in r.json()["error"]
    r = httpx.get(f"{zoo_server.url}/v2/models/lenet/versions/7")
    assert r.status_code == 404 and "has no version '7'" in r.json()["error"]
    r = httpx.get(f"{zoo_server.url}/v2/models/nope/ready")
    assert r.status_code == 404


def test_metrics_count_requests_and_failures(zoo_server):
    url = zoo_server.url
    before = metric(url, "hal_serve_failures_total", model="lenet", reason="invalid")
    assert outputs(post(url, "lenet", {"input": X}))["output"].shape == (1, 10)
    assert post(url, "lenet", {"input": X[..., :2]}).status_code == 400
    assert metric(url, "hal_serve_failures_total", model="lenet", reason="invalid") == before + 1
    dev = zoo_server.repository.models["lenet"].device
    assert metric(url, "hal_serve_requests_total", model="lenet", device=dev) >= 2
    assert metric(url, "hal_serve_request_seconds_count", model="lenet") >= 1
    assert metric(url, "hal_serve_compute_seconds_count", model="lenet") >= 1


# -- authentication ------------------------------------------------------------------------

def test_token(monkeypatch):
    monkeypatch.setenv("HAL_SERVE_TOKEN", "s3cret-token")
    with Server({"double": Doubler()}, port=0) as s:
        x = {"x": np.ones((1, 4), np.float32)}
        r = post(s.url, "double", x)
        assert r.status_code == 401 and "needs a bearer token" in r.json()["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        body, headers = P.encode_request(x)
        for wrong in ("Bearer nope", "Basic s3cret-token", "Bearer s3cret-token-and-more"):
            r = httpx.post(f"{s.url}/v2/models/double/infer", content=body,
                           headers={**headers, "Authorization": wrong})
            assert r.status_code == 401 and "error" in r.json(), wrong
        assert httpx.get(f"{s.url}/metrics").status_code == 401
        assert httpx.get(f"{s.url}/v2/models/nope").status_code == 401  # reveals nothing
        assert httpx.get(f"{s.url}/v2/health/ready").status_code == 200  # probes stay open
        r = httpx.post(f"{s.url}/v2/models/double/infer", content=body,
                       headers={**headers, "Authorization": "Bearer s3cret-token"})
        np.testing.assert_array_equal(outputs(r)["y"], 2 * x["x"])


# -- batching, backpressure, timeouts --------------------------------------------------------

def test_concurrent_requests_are_batched_and_answered_in_order():
    model = Doubler(delay=0.05)
    with Server({"double": model}, port=0, max_batch=16, max_delay_ms=100) as s:
        def one(i):
            x = np.full((1 + i % 3, 4), i, np.float32)
            return i, x, post(s.url, "double", {"x": x})

        with cf.ThreadPoolExecutor(24) as pool:
            results = list(pool.map(one, range(24)))
        for i, x, r in results:  # each caller gets its own rows back
            np.testing.assert_array_equal(outputs(r)["y"], 2 * x)
        rows = sum(x.shape[0] for _, x, _ in results)
        assert sum(model.calls) == rows and max(model.calls) <= 16
        assert len(model.calls) < len(results)  # merged
        count = metric(s.url, "hal_serve_batch_size_count", model="double")
        total = metric(s.url, "hal_serve_batch_size_sum", model="double")
        assert count == len(model.calls) and total / count > 1


def test_only_requests_of_the_same_shape_share_a_batch():
    model = Doubler(delay=0.05, shape=("N", "S"))
    with Server({"double": model}, port=0, max_batch=32, max_delay_ms=100) as s:
        def one(i):
            x = np.full((1, 2 + i % 2), i, np.float32)
            return x, post(s.url, "double", {"x": x})

        with cf.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, range(12)))
        for x, r in results:
            np.testing.assert_array_equal(outputs(r)["y"], 2 * x)
        assert len(model.calls) >= 2 and sum(model.calls) == 12


def test_batching_off_runs_each_request_alone():
    model = Doubler(delay=0.02)
    with Server({"double": model}, port=0, batching=False) as s:
        with cf.ThreadPoolExecutor(8) as pool:
            rs = list(pool.map(lambda i: post(s.url, "double", {"x": np.ones((2, 4),
                                                                            np.float32)}),
                               range(8)))
        assert all(r.status_code == 200 for r in rs) and model.calls == [2] * 8


def test_lenet_batched_under_concurrency_equals_one_by_one(zoo_server):
    compiled = hal.compile("lenet", "cpu")
    xs = [hal.models.example_input("lenet", 1, seed=i) for i in range(16)]
    with cf.ThreadPoolExecutor(16) as pool:
        rs = list(pool.map(lambda x: post(zoo_server.url, "lenet", {"input": x}), xs))
    for x, r in zip(xs, rs):
        np.testing.assert_allclose(outputs(r)["output"], compiled(x)[0], rtol=1e-5, atol=1e-6)


def test_full_queue_answers_503_with_retry_after_then_recovers():
    model = Doubler(delay=0.5)
    client = httpx.Client(limits=httpx.Limits(max_connections=10))
    with Server({"slow": model}, port=0, queue=2, batching=False) as s, client:
        with cf.ThreadPoolExecutor(8) as pool:
            rs = list(pool.map(lambda i: post(s.url, "slow", {"x": np.ones((1, 4),
                                                                          np.float32)},
                                              client), range(8)))
        codes = sorted(r.status_code for r in rs)
        assert set(codes) == {200, 503} and codes.count(200) >= 3, codes
        refused = [r for r in rs if r.status_code == 503]
        for r in refused:
            assert int(r.headers["retry-after"]) >= 1
            assert "model 'slow' is overloaded: its queue holds 2 request(s)" in r.json()["error"]
        assert metric(s.url, "hal_serve_failures_total", model="slow",
                      reason="overloaded") == len(refused)
        r = post(s.url, "slow", {"x": np.ones((1, 4), np.float32)})  # the queue drained
        assert r.status_code == 200


def test_request_timeout_gives_504():
    with Server({"slow": Doubler(delay=0.5)}, port=0, batching=False) as s:
        r = post(s.url, "slow", {"x": np.ones((1, 4), np.float32)},
                 parameters={"timeout": 100_000})  # microseconds, as in Triton
        assert r.status_code == 504 and "timeout of 0.1 s" in r.json()["error"]
        r = post(s.url, "slow", {"x": np.ones((1, 4), np.float32)},
                 parameters={"timeout": -1})
        assert r.status_code == 400 and "microseconds" in r.json()["error"]


# -- the repository: reload while serving ------------------------------------------------------

def test_repository_load_unload_and_config(tmp_path):
    folder = tmp_path / "repo" / "mlp"
    folder.mkdir(parents=True)
    hal.save(hal.models.get("mlp"), folder / "model.onnx")
    (folder / "config.json").write_text(json.dumps({"device": "cpu@reference",
                                                    "max_batch": 8}))
    (tmp_path / "repo" / "broken").mkdir()
    (tmp_path / "repo" / "broken" / "config.json").write_text('{"devise": "cpu"}')
    with pytest.raises(OptionError, match=r"unknown key\(s\) \['devise'\]"):
        Server(repository=str(tmp_path / "repo"), port=0)
    (tmp_path / "repo" / "broken" / "config.json").unlink()
    (tmp_path / "repo" / "broken").rmdir()
    with Server(repository=str(tmp_path / "repo"), port=0) as s:
        cfg = httpx.get(f"{s.url}/v2/models/mlp/config").json()
        assert cfg["max_batch_size"] == 8 and cfg["parameters"]["device"]["string_value"] \
            == "cpu:0@reference"
        x = np.ones((2, 784), np.float32)
        expected = outputs(post(s.url, "mlp", {"input": x}))["output"]
        # the folder changes, then a load request reads it again and swaps the model, while
        # requests keep coming: every one is answered, by the old model or the new
        (folder / "config.json").write_text(json.dumps({"device": "cpu@reference",
                                                        "max_batch": 4}))
        with cf.ThreadPoolExecutor(4) as pool:
            during = [pool.submit(post, s.url, "mlp", {"input": x}) for _ in range(40)]
            assert httpx.post(f"{s.url}/v2/repository/models/mlp/load").status_code == 200
        for f in during:  # batched with others: a bigger GEMM may round the last bit apart
            np.testing.assert_allclose(outputs(f.result())["output"], expected, rtol=1e-6,
                                       atol=1e-7)
        assert httpx.get(f"{s.url}/v2/models/mlp/config").json()["max_batch_size"] == 4
        # a load request may override settings, never the model's file
        r = httpx.post(f"{s.url}/v2/repository/models/mlp/load",
                       json={"parameters": {"config": json.dumps({"max_batch": 2})}})
        assert r.status_code == 200
        assert httpx.get(f"{s.url}/v2/models/mlp/config").json()["max_batch_size"] == 2
        r = httpx.post(f"{s.url}/v2/repository/models/mlp/load",
                       json={"parameters": {"config": {"model": "/etc/passwd"}}})
        assert r.status_code == 400 and "it may set device" in r.json()["error"]
        r = httpx.post(f"{s.url}/v2/repository/models/mlp/load",  # its error lists devices
                       json={"parameters": {"config": {"device": "cpu@nothing"}}}, timeout=120)
        assert r.status_code == 400 and "failed to load" in r.json()["error"]
        np.testing.assert_array_equal(outputs(post(s.url, "mlp", {"input": x}))["output"],
                                      expected)  # a failed reload keeps the model serving
        assert httpx.post(f"{s.url}/v2/repository/models/mlp/unload").status_code == 200
        r = post(s.url, "mlp", {"input": x})
        assert r.status_code == 404 and "is not loaded (unavailable: unloaded)" in r.json()["error"]
        index = httpx.post(f"{s.url}/v2/repository/index").json()
        assert index == [{"name": "mlp", "state": "UNAVAILABLE", "reason": "unloaded"}]
        assert httpx.get(f"{s.url}/v2/health/ready").status_code == 503
        assert httpx.post(f"{s.url}/v2/repository/models/mlp/load").status_code == 200
        assert httpx.post(f"{s.url}/v2/repository/models/nope/load").status_code == 404
        np.testing.assert_array_equal(outputs(post(s.url, "mlp", {"input": x}))["output"],
                                      expected)


# -- SIGTERM: stop accepting, answer every accepted request ----------------------------------

SLOW_SERVER = """
import sys, time
import numpy as np
from hal.ir.model import TensorSpec
from hal.serving import Server

class Slow:
    inputs = [TensorSpec("x", ("N", 4), np.dtype(np.float32))]
    outputs = [TensorSpec("y", ("N", 4), np.dtype(np.float32))]
    def __call__(self, x):
        time.sleep(0.4)
        return [x * 2]

s = Server({"slow": Slow()}, port=0, max_batch=2, max_delay_ms=0)
s.bind()
print(s.url, flush=True)
s.run()
print("drained", flush=True)
"""


def test_sigterm_answers_every_accepted_request(tmp_path):
    script = tmp_path / "slow_server.py"
    script.write_text(SLOW_SERVER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ,
                                                                    "PYTHONPATH": os.getcwd()})
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        n = 12  # six batches of two, 0.4 s each: 2.4 s of work queued at once
        client = httpx.Client(limits=httpx.Limits(max_connections=n + 2))
        with cf.ThreadPoolExecutor(n) as pool, client:
            futures = [pool.submit(post, url, "slow", {"x": np.full((1, 4), i, np.float32)},
                                   client) for i in range(n)]
            deadline = time.monotonic() + 20
            while metric(url, "hal_serve_inflight", model="slow") < n:
                assert time.monotonic() < deadline, "the requests never all arrived"
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            with pytest.raises(httpx.ConnectError):  # no longer accepting
                httpx.get(f"{url}/v2/health/live", timeout=2)
            for i, f in enumerate(futures):
                np.testing.assert_array_equal(outputs(f.result())["y"],
                                              np.full((1, 4), 2 * i, np.float32))
        assert proc.wait(30) == 0
        assert "drained" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- configuration and the command ----------------------------------------------------------

def test_configuration_errors():
    with pytest.raises(OptionError, match="nothing to serve"):
        Server(port=0)
    with pytest.raises(ModelError, match="neither a zoo model"):
        Server(["lenett=cpu"], port=0)
    with pytest.raises(OptionError, match="queue must be a whole number >= 1"):
        Server({"d": Doubler()}, port=0, queue=0)
    with pytest.raises(OptionError, match="unknown serving option"):
        Server({"d": Doubler()}, port=0, max_batch_size=4)
    with pytest.raises(OptionError, match="model name 'a b'"):
        Server({"a b": Doubler()}, port=0)
    with pytest.raises(OptionError, match="two models are named 'd'"):
        Server([ModelConfig("d", Doubler()), ModelConfig("d", Doubler())], port=0)
    with pytest.raises(OptionError, match="replicas= runs copies"):
        hal.serve({"d": Doubler()}, replicas=2)


def test_cli(capsys):
    from hal.cli import main

    assert main(["serve"]) == 2
    assert "nothing to serve" in capsys.readouterr().err
    assert main(["serve", "lenett=cpu", "--port", "0"]) == 2
    assert "neither a zoo model" in capsys.readouterr().err
    assert main(["serve", "lenet", "--replicas", "2"]) == 2
    assert "--cluster ray" in capsys.readouterr().err
    assert main(["serve", "lenet", "--option", "threads"]) == 2
    assert "--option takes KEY=VALUE" in capsys.readouterr().err


def test_protocol_round_trip():
    arrays = {"a": np.arange(6, dtype=np.int64).reshape(2, 3), "b": np.array([True, False]),
              "c": np.array([[b"x", b"yz"]], dtype=object),
              "d": np.linspace(0, 1, 4, dtype=np.float16)}
    for binary in (True, False):
        body, headers = P.encode_request(arrays, binary=binary)
        req = P.parse_request(body, headers.get(P.HEADER_LENGTH))
        for t in req.inputs:
            got = t.array()
            assert got.dtype == arrays[t.name].dtype and got.tolist() == arrays[t.name].tolist()
        resp, head = P.encode_response("m", "1", "id-7", [(k, v, binary)
                                                           for k, v in arrays.items()])
        back = P.decode_response(resp, head)
        assert all(back[k].tolist() == v.tolist() for k, v in arrays.items())
    nested = json.dumps({"inputs": [{"name": "a", "shape": [2, 2], "datatype": "INT32",
                                     "data": [[1, 2], [3, 4]]}]}).encode()
    assert P.parse_request(nested, None).inputs[0].array().tolist() == [[1, 2], [3, 4]]
    for data, message in (([1.5, 2, 3, 4], "INT32 data must be integers"),
                          ([1, 2, 3, 2 ** 40], "out of the range of INT32")):
        doc = json.dumps({"inputs": [{"name": "a", "shape": [4], "datatype": "INT32",
                                      "data": data}]}).encode()
        with pytest.raises(P.ServeError, match=re.escape(message)):
            P.parse_request(doc, None).inputs[0].array()
    with pytest.raises(P.ServeError, match="more than the limit"):
        import zlib

        P.decompress(zlib.compress(b"0" * 10_000), "deflate", 1000)


def test_serve_is_lazy():
    code = ("import sys, hal; assert 'starlette' not in sys.modules; "
            "assert callable(hal.serve); assert 'starlette' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_thread_safety_of_stop():
    s = Server({"d": Doubler()}, port=0).start()
    t = threading.Thread(target=s.stop)
    t.start()
    t.join(30)
    assert not t.is_alive()


def test_instances_are_compiled_with_the_backends_serving_options():
    pytest.importorskip("onnxruntime")
    from hal.serving.repository import compile_instances

    copies = compile_instances(ModelConfig("lenet", device="cpu@ort", instances=3).check())
    assert len(copies) == 3
    assert [c.executables[0].info["allow_spinning"] for c in copies] == [False] * 3
    x = hal.models.example_input("lenet", 4)
    expected = hal.compile("lenet", "cpu@reference")(x)[0]
    for c in copies:
        np.testing.assert_allclose(c(x)[0], expected, rtol=1e-4, atol=1e-5)
    # an option the model sets is kept; a backend without serving options compiles as asked
    mine = compile_instances(ModelConfig("lenet", device="cpu@ort",
                                         options={"allow_spinning": True}).check())
    assert len(mine) == 1 and mine[0].executables[0].info["allow_spinning"] is True
    assert len(compile_instances(ModelConfig("lenet", device="cpu@reference").check())) == 1
    with pytest.raises(OptionError, match=r"instances must be a whole number >= 1, got 'auto'"):
        ModelConfig("lenet", instances="auto").check()


def test_instances_keep_the_options_selection_chose(monkeypatch):
    pytest.importorskip("onnxruntime")
    import hal.selection
    from hal.serving.repository import compile_instances

    real = hal.selection.compile

    def choose(source, device, **options):  # measured selection picking ort on one thread
        if device != "cpu":
            return real(source, device, **options)
        options.pop("batch", None)
        chosen = real(source, "cpu@ort", intra_op_num_threads=1, **options)
        chosen.selection = {"mode": "measured", "winner": chosen.device.string,
                            "winner_options": {"intra_op_num_threads": 1}}
        return chosen

    monkeypatch.setattr(hal.selection, "compile", choose)
    copies = compile_instances(ModelConfig("lenet", device="cpu", instances=2).check())
    assert [(c.executables[0].info["intra_op_num_threads"],
             c.executables[0].info["allow_spinning"]) for c in copies] == [(1, False)] * 2


def test_served_config_counts_the_instances():
    pytest.importorskip("onnxruntime")
    with Server(["lenet=cpu@ort"], port=0, instances=2) as s:
        cfg = httpx.get(f"{s.url}/v2/models/lenet/config").json()
        assert cfg["instance_group"][0]["count"] == 2 and cfg["hal"]["instances"] == 2
        x = hal.models.example_input("lenet", 1)
        np.testing.assert_allclose(outputs(post(s.url, "lenet", {"input": x}))["output"],
                                   hal.compile("lenet", "cpu@reference")(x)[0],
                                   rtol=1e-4, atol=1e-5)
