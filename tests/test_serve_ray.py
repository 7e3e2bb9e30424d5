"""``hal serve --cluster``: the server as Ray Serve replicas on a two-node Ray cluster.

The cluster is ``ray.cluster_utils.Cluster`` on this machine, a head and a second node of
one CPU each, with Ray's token authentication on (``RAY_AUTH_MODE=token``, the nodes and this
process sharing ``RAY_AUTH_TOKEN``, as nodes started with ``ray start`` would). Two replicas
of one CPU each land one per node; the proxy listens on the head only (two proxies on one
machine would share the port). Slow (about a minute): ``pytest -m slow tests/test_serve_ray.py``.
"""

from __future__ import annotations

import secrets
import socket

import numpy as np
import pytest

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

import hal
from hal.serving import protocol as P
from tests.helpers import env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_replicas_on_two_nodes_behind_one_url():
    from ray.cluster_utils import Cluster

    with env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
             HAL_SERVE_TOKEN="http-token", HAL_SELECT="priority"):
        # this process read RAY_AUTH_MODE when it imported ray: read it again (Ray's own
        # tests do the same)
        from ray._private.authentication_test_utils import reset_auth_token_state

        reset_auth_token_state()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        serving = None
        try:
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes(timeout=120)
            port = free_port()
            serving = hal.serve(["lenet=cpu@ort"], cluster=cluster.address, replicas=2,
                                port=port, block=False, proxy_location="HeadOnly")
            auth = {"Authorization": "Bearer http-token"}
            assert httpx.get(f"{serving.url}/v2/models/lenet").status_code == 401
            from ray.util.state import list_actors

            replicas = [a for a in list_actors(filters=[("state", "=", "ALIVE")])
                        if a.class_name.startswith("ServeReplica:hal")]
            assert len(replicas) == 2 and len({a.node_id for a in replicas}) == 2, replicas
            assert httpx.get(f"{serving.url}/v2", headers=auth).json()["replica"]
            x = hal.models.example_input("lenet", 4)
            body, headers = P.encode_request({"input": x})
            r = httpx.post(f"{serving.url}/v2/models/lenet/infer", content=body,
                           headers={**headers, **auth}, timeout=60)
            assert r.status_code == 200, r.text
            got = P.decode_response(r.content, r.headers.get(P.HEADER_LENGTH))["output"]
            np.testing.assert_array_equal(got, hal.compile("lenet", "cpu@ort")(x)[0])
            r = httpx.post(f"{serving.url}/v2/repository/models/lenet/load", headers=auth)
            assert r.status_code == 400 and "deploy again" in r.json()["error"]
        finally:
            if serving is not None:
                serving.stop()
            if ray.is_initialized():
                ray.shutdown()
            cluster.shutdown()
    reset_auth_token_state()
