"""``hal compare --cluster``: one table from the nodes of a Ray cluster (hal.comparison.fleet).

The cluster is ``ray.cluster_utils.Cluster`` on this machine: a head node that advertises
``cpu@reference`` only and a node that advertises ``cpu@ort`` only, each started with the
``HAL_BACKENDS`` its resources were computed under, so its Ray workers see it too.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading

import pytest

from hal.comparison import fleet
from hal.errors import BackendError, OptionError
from tests.helpers import env

ray = pytest.importorskip("ray")


@contextlib.contextmanager
def time_limit(seconds: int):
    """Fail the test (rather than hang the suite) when it runs past ``seconds``."""
    def expired(signum, frame):
        raise TimeoutError(f"the test ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def resources(backends: str) -> dict[str, float]:
    with env(HAL_BACKENDS=backends):
        return fleet.node_resources()


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    # a throwaway cluster on this machine: Ray 2.59+ turns token authentication on by default
    # for local clusters unless RAY_AUTH_MODE says otherwise
    with env(RAY_AUTH_MODE="disabled"):
        c = None
        try:
            with time_limit(120):
                with env(HAL_BACKENDS="reference"):
                    c = Cluster(initialize_head=True, head_node_args={
                        "num_cpus": 1, "resources": resources("reference"),
                        # notice a removed node within about a second
                        "_system_config": {"health_check_period_ms": 500,
                                           "health_check_failure_threshold": 2}})
                with env(HAL_BACKENDS="ort"):
                    c.add_node(num_cpus=1, resources=resources("ort"))
                c.wait_for_nodes()
            yield c
        finally:
            if ray.is_initialized():
                ray.shutdown()
            if c is not None:
                c.shutdown()


def test_node_resources_follow_hal_backends():
    assert resources("reference") == {"hal:cpu:0@reference": 1.0}
    assert resources("ort") == {"hal:cpu:0@ort": 1.0}
    assert fleet.device_of("hal:fpga:0@emu") == "fpga:0@emu"
    assert fleet.device_of("CPU") is None


def test_cluster_address_is_checked_before_any_work():
    with pytest.raises(OptionError, match="not 'ray'"):
        fleet.address_of("no such thing")
    with pytest.raises(BackendError, match="ray start --head"):
        with time_limit(30):
            fleet.Fleet("127.0.0.1:1")  # nothing listens on port 1


def test_cli_prints_the_resources_and_names_an_unreachable_cluster(capsys):
    from hal.cli import main

    with env(HAL_BACKENDS="ort"):
        assert main(["devices", "--ray-resources"]) == 0
    assert json.loads(capsys.readouterr().out) == {"hal:cpu:0@ort": 1.0}
    with time_limit(30):
        assert main(["compare", "--models", "mlp", "--cluster", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:1" in err and "ray start --head" in err


def test_a_bare_kind_selects_each_nodes_best_backend():
    node = fleet.Node("n", "h", "1.2.3.4", ["cpu:0@ort", "cpu:0@reference", "fpga:0@emu"],
                      devices={"cpu:0@ort": {"priority": 50}, "cpu:0@reference": {"priority": 0},
                               "fpga:0@emu": {"simulated": True}})
    f = fleet.Fleet.__new__(fleet.Fleet)
    parse = fleet.DeviceSpec.parse
    assert f._select(node, parse("cpu")) == "cpu:0@ort"
    assert f._select(node, parse("cpu@reference")) == "cpu:0@reference"
    assert f._select(node, parse("fpga")) is None  # simulated: only by name
    assert f._select(node, parse("fpga@emu")) == "fpga:0@emu"
    node.order = ["reference", "ort"]  # the node's HAL_BACKENDS
    assert f._select(node, parse("cpu")) == "cpu:0@reference"


def test_a_plan_selects_per_node_and_refuses_what_no_node_has():
    a = fleet.Node("a", "h", "1.2.3.4", ["cpu:0@ort", "fpga:0@rtl"], host="h/a",
                   devices={"cpu:0@ort": {"priority": 50},
                            "fpga:0@rtl": {"simulated": True, "slow": "about 0.4 s per image",
                                           "default_precision": "int8"}})
    b = fleet.Node("b", "h", "1.2.3.5", ["cpu:0@reference"], host="h/b",
                   devices={"cpu:0@reference": {"priority": 0}})
    f = fleet.Fleet.__new__(fleet.Fleet)
    f.cluster, f.nodes, f.entries, f.left_out = "x:1", [], {}, {}
    f._nodes, f._probe = (lambda: [a, b]), (lambda: None)
    f.plan(None)  # every advertised device but slow simulations
    assert {k: [e.device for e in v] for k, v in f.entries.items()} == {
        "a": ["cpu:0@ort"], "b": ["cpu:0@reference"]}
    assert list(f.left_out) == ["h/a: fpga:0@rtl"]
    f.entries, f.left_out = {}, {}
    f.plan(["cpu", "fpga@rtl"])
    assert [(e.device, e.precision) for e in f.entries["a"]] == [("cpu:0@ort", "fp32"),
                                                                 ("fpga:0@rtl", "int8")]
    assert [e.device for e in f.entries["b"]] == ["cpu:0@reference"]
    with pytest.raises(OptionError, match=r"no node of the cluster advertises \['cpu@torch'\]"):
        f.plan(["cpu@torch"])


def test_one_table_from_two_nodes(cluster):
    import hal

    with env(RAY_AUTH_MODE="disabled"), time_limit(150):
        res = hal.compare(["mlp"], batch=1, budget_s=0.05, cluster=cluster.address)
    assert not ray.is_initialized()  # compare connected, so it disconnected
    got = {(r.host, r.device): r for r in res.rows}
    assert len(got) == 2 and all(r.ok for r in res.rows), [r.error for r in res.rows]
    assert {d for _, d in got} == {"cpu:0@reference", "cpu:0@ort"}
    hosts = {h for h, _ in got}
    assert len(hosts) == 2  # one hostname, told apart by the node id
    nodes = res.environment["fleet"]["nodes"]
    assert set(nodes) == hosts
    assert sorted(d for n in nodes.values() for d in n["ran"]) == ["cpu:0@ort",
                                                                   "cpu:0@reference"]
    assert "host" in [c.header for c in res.table().columns]


def test_a_node_that_leaves_mid_run_gives_error_rows(cluster):
    import hal

    with env(HAL_BACKENDS="reference", RAY_AUTH_MODE="disabled"):
        extra = cluster.add_node(num_cpus=1, resources=resources("reference"))
    cluster.wait_for_nodes()
    removed = threading.Event()

    def progress(done, total, current, row):
        # the task for the extra node was submitted: take the node away while it measures
        if extra.node_id[:8] in current and row is None and not removed.is_set():
            removed.set()
            threading.Timer(3.0, cluster.remove_node, (extra,)).start()

    with env(RAY_AUTH_MODE="disabled"), time_limit(150):
        res = hal.compare(["mlp"], batch=1, budget_s=3.0, min_runs=1, cluster=cluster.address,
                          progress=progress)
    assert removed.is_set()
    by_host = {}
    for r in res.rows:
        by_host.setdefault(r.host, []).append(r)
    assert len(by_host) == 3
    lost = [h for h in by_host if extra.node_id[:8] in h]
    assert len(lost) == 1
    assert all(not r.ok for r in by_host[lost[0]])
    assert "died or left" in by_host[lost[0]][0].error or "Died" in by_host[lost[0]][0].error
    kept = [r for h, rows in by_host.items() if h != lost[0] for r in rows]
    assert len(kept) == 2 and all(r.ok for r in kept), [r.error for r in kept]


def test_ctrl_c_keeps_the_rows_the_nodes_sent_back(cluster):
    from hal.comparison import CompareInterrupted, compare

    def progress(done, total, current, row):
        if row is not None and row.ok:  # the first row back from a node, then Ctrl-C
            raise KeyboardInterrupt

    with env(RAY_AUTH_MODE="disabled"), time_limit(150):
        with pytest.raises(CompareInterrupted) as stop:
            compare(["mlp"], batch=1, budget_s=0.05, cluster=cluster.address,
                    progress=progress)
    res = stop.value.results
    assert not ray.is_initialized()  # disconnected on the way out
    assert len(res.rows) == 1 and res.rows[0].ok and res.rows[0].host
    assert res.interrupted == ("interrupted (Ctrl-C) after 1 of 2 rows; the other rows were "
                               "not measured")
