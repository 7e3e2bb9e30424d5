"""``hal compare --cluster``: one comparison table across a fleet of machines, on Ray.

Each node advertises its usable HAL devices as Ray custom resources (``node_resources``;
``hal devices --ray-resources`` prints them for ``ray start --resources``). The comparison
reads every alive node's resources, selects on each node the devices asked for, and runs each
(node, device) pair's ``Job`` as a Ray task pinned to that node
(``NodeAffinitySchedulingStrategy(node_id, soft=False)`` plus a tiny share of the device's
resource) that returns the rows as plain dicts. Ray reuses a node's worker process from one
task to the next, as the devices of a run on one machine share its process; with ``isolate``
each device gets a fresh worker process (``max_calls=1``), as ``--isolate`` does on one
machine. Nodes work in parallel; one node's devices run one after another, so they do not disturb
each other's timings. A task that fails, or whose node dies or leaves, becomes error rows for
the rows it did not return, with the reason; tasks are never retried (``max_retries=0``), so a
dead node's rows are not measured on another machine.

Resource names are ``hal:`` plus the device string (``hal:cpu:0@ort``, ``hal:fpga:0@emu``);
Ray accepts ``:`` and ``@`` in custom resource names, so no encoding is needed.

Each row's ``host`` is its node's hostname; where two nodes of the run share a hostname (several
Ray nodes on one machine) it is ``hostname/`` plus the first 8 hex digits of the Ray node id.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from hal import registry
from hal.comparison.policy import left_out as slow_reason
from hal.comparison.rounds import device_order
from hal.comparison.row import Row, failure
from hal.device import DeviceInfo, DeviceSpec
from hal.errors import BackendError, HalError, OptionError

PREFIX = "hal:"
#: the share of a device's resource a task holds: enough to pin it to a node advertising it
TASK_SHARE = 0.001
MEM_SCOPE = "ray: a worker process on the node"
MEM_SCOPE_ISOLATED = "ray: one worker process per device"
PROBE_TIMEOUT_S = 180.0
CONNECT_TIMEOUT_S = 10.0
START_HINT = ("start a cluster with `ray start --head --resources \"$(hal devices "
              "--ray-resources)\"` on one machine and `ray start --address HEAD_IP:6379 "
              "--resources \"$(hal devices --ray-resources)\"` on each of the others, then pass "
              "--cluster HEAD_IP:6379 (or set RAY_ADDRESS and pass --cluster ray)")


# -- what a node advertises ------------------------------------------------------------------
def resource_name(device: str) -> str:
    """The Ray custom resource that advertises ``device`` (a full device string)."""
    return PREFIX + device


def device_of(resource: str) -> str | None:
    """The device string a resource advertises, or None for Ray's own resources."""
    return resource[len(PREFIX):] if resource.startswith(PREFIX) else None


def node_resources() -> dict[str, float]:
    """``{"hal:cpu:0@ort": 1.0, ...}``: every usable device of this process's registry (aliases
    left out: they are the same hardware), restricted to the backends named in
    ``HAL_BACKENDS`` when it is set (only those are probed)."""
    return {resource_name(d.string): 1.0 for d in usable_devices() if not d.alias_of}


def usable_devices() -> list[DeviceInfo]:
    """The usable devices of this process, only from the ``HAL_BACKENDS`` backends if set."""
    env = os.environ.get("HAL_BACKENDS", "").strip()
    if not env:
        return registry.REGISTRY.usable()
    wanted = list(dict.fromkeys(n.strip() for n in env.split(",") if n.strip()))
    records = {r.name: r for r in registry.REGISTRY.records()}
    unknown = [n for n in wanted if n not in records]
    if unknown:
        raise OptionError(f"HAL_BACKENDS names unknown backends {unknown}; known: "
                          f"{sorted(records)}. Fix or unset HAL_BACKENDS.")
    out: list[DeviceInfo] = []
    for name in wanted:
        rec = records[name]
        if rec.broken:
            raise BackendError(f"backend {name!r} named in HAL_BACKENDS is broken: {rec.error}")
        b = rec.backend
        if b.missing_requirements():
            continue  # its devices are not usable here; `hal devices` says why
        try:
            found = list(b.probe())
        except Exception as exc:
            raise BackendError(f"backend {name!r} named in HAL_BACKENDS failed to probe: "
                               f"{type(exc).__name__}: {exc}") from None
        for d in found:
            if d.backend not in b.variants:
                d.backend = b.name
            if d.usable:
                out.append(d)
    return out


# -- connecting ------------------------------------------------------------------------------
def address_of(cluster: str) -> str:
    """The address ``ray.init`` gets: "ray" is ``RAY_ADDRESS`` or else "auto" (the cluster
    started on this machine with ``ray start``); a new local Ray is never started, its node
    would advertise no device."""
    if not isinstance(cluster, str) or not cluster.strip():
        raise OptionError(f"cluster must be 'ray', 'ray://HOST:PORT' or 'HOST:PORT', got "
                          f"{cluster!r}")
    cluster = cluster.strip()
    if cluster == "ray":
        return os.environ.get("RAY_ADDRESS", "").strip() or "auto"
    if cluster == "auto" or re.fullmatch(r"(ray://)?[^\s:/]+:\d+", cluster):
        return cluster
    raise OptionError(f"cluster {cluster!r} is not 'ray', 'ray://HOST:PORT' or 'HOST:PORT'; "
                      f"e.g. --cluster 10.0.0.5:6379")


def _reachable(address: str, cluster: str) -> None:
    m = re.fullmatch(r"(?:ray://)?([^\s:/]+):(\d+)", address)
    if not m:
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise BackendError(f"no Ray cluster answers at {address!r} (cluster={cluster!r}): "
                           f"{exc}; {START_HINT}") from None


@dataclass
class Node:
    """One alive Ray node that advertises HAL devices."""

    node_id: str
    hostname: str
    ip: str
    advertised: list[str]
    host: str = ""
    devices: dict = field(default_factory=dict)  # device -> what the node's registry says
    order: list = field(default_factory=list)  # the node's HAL_BACKENDS, if set
    error: str | None = None  # the node could not list its devices


@dataclass
class Entry:
    """One (node, device) pair of the run."""

    device: str
    precision: str = "fp32"  # the device's default precision
    error: str | None = None


class Fleet:
    """A connection to a Ray cluster and the plan of which node runs which device."""

    def __init__(self, cluster: str, isolate: bool = False):
        self.cluster = cluster
        self.isolate = bool(isolate)
        address = address_of(cluster)
        try:
            import ray
        except ImportError:
            raise OptionError("cluster= needs Ray: pip install 'hal-accel[ray]'") from None
        self.ray = ray
        self.started = False
        self.nodes: list[Node] = []
        self.entries: dict[str, list[Entry]] = {}
        self.left_out: dict[str, str] = {}
        self.workers: dict[str, dict] = {}
        if ray.is_initialized():
            return  # the caller's own connection
        _reachable(address, cluster)
        try:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        except Exception as exc:  # ConnectionError, RuntimeError: Ray's words say why
            raise BackendError(f"cannot connect to the Ray cluster at {address!r} "
                               f"(cluster={cluster!r}): {type(exc).__name__}: {exc}; "
                               f"{START_HINT}") from None
        self.started = True

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    # -- which node runs what ------------------------------------------------------------
    def plan(self, wanted: list[str] | None) -> None:
        """Find the nodes, ask each for its devices, select on each what ``wanted`` names
        (None: every advertised device but slow simulations)."""
        specs = [(w, DeviceSpec.parse(w)) for w in wanted] if wanted is not None else None
        if specs == []:
            raise OptionError("devices is empty; leave it out to use every advertised device")
        self.nodes = self._nodes()
        self._probe()
        chosen_any: dict[str, bool] = {w: False for w, _ in specs or []}
        for node in self.nodes:
            picked: dict[str, Entry] = {}
            if specs is None:
                for dev in node.advertised:
                    why = node.devices.get(dev, {}).get("slow")
                    if why and not node.error:
                        self.left_out[f"{node.host}: {dev}"] = why
                    else:
                        picked.setdefault(dev, self._entry(node, dev))
            else:
                for text, spec in specs:
                    dev = self._select(node, spec)
                    if dev is None and node.error and not spec.backend:
                        dev = text  # the node could not say which one it is
                    if dev is not None:
                        chosen_any[text] = True
                        picked.setdefault(dev, self._entry(node, dev))
            if picked:
                self.entries[node.node_id] = list(picked.values())
        missing = [w for w, ok in chosen_any.items() if not ok]
        if missing:
            raise OptionError(f"no node of the cluster advertises {missing}; the cluster "
                              f"advertises {self.advertised()}. Start a node with the device "
                              f"and --resources \"$(hal devices --ray-resources)\", or name "
                              f"one of these")

    def advertised(self) -> str:
        return "; ".join(f"{n.host}: {', '.join(n.advertised)}" for n in self.nodes)

    def _nodes(self) -> list[Node]:
        nodes = []
        for n in self.ray.nodes():
            if not n.get("Alive"):
                continue
            devs = [d for d in map(device_of, n.get("Resources", {})) if d]
            if devs:
                nodes.append(Node(n["NodeID"], n.get("NodeManagerHostname") or "",
                                  n.get("NodeManagerAddress") or "", sorted(devs)))
        if not nodes:
            raise BackendError(f"no alive node of the Ray cluster {self.cluster!r} advertises "
                               f"a HAL device (a resource named hal:DEVICE); {START_HINT}")
        names = [n.hostname or n.ip for n in nodes]
        for n, name in zip(nodes, names):
            n.host = name if names.count(name) == 1 else f"{name}/{n.node_id[:8]}"
        return nodes

    def _probe(self) -> None:
        """Each node's own registry on its advertised devices (names, simulated, slow, default
        precision, backend priority), in one task per node, all at once."""
        fn = self.ray.remote(num_cpus=0, max_retries=0)(node_devices)
        refs = {n.node_id: fn.options(scheduling_strategy=self._pin(n.node_id)).remote(
            n.advertised) for n in self.nodes}
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        for n in self.nodes:
            try:
                info = self.ray.get(refs[n.node_id],
                                    timeout=max(1.0, deadline - time.monotonic()))
                n.devices, n.order = info["devices"], info["order"]
            except Exception as exc:
                n.error = (f"the node {n.host} could not list its devices: "
                           f"{type(exc).__name__}: {str(exc)[:500]}")
                try:
                    self.ray.cancel(refs[n.node_id], force=True)
                except Exception:  # noqa: BLE001 - it ended meanwhile, or its node is gone
                    pass

    def _select(self, node: Node, spec: DeviceSpec) -> str | None:
        index = spec.index or 0
        if spec.backend:
            dev = f"{spec.kind}:{index}@{spec.backend}"
            return dev if dev in node.advertised else None
        # a bare kind: the node's best usable backend of the kind, as its registry resolves one
        # (HAL_BACKENDS order, else backend priority), simulated devices never chosen
        cands = []
        for dev in node.advertised:
            s = DeviceSpec.parse(dev)
            info = node.devices.get(dev, {})
            if s.kind != spec.kind or s.index != index or "error" in info or info.get("simulated"):
                continue
            rank = (node.order.index(s.backend) if s.backend in node.order else len(node.order),
                    -info.get("priority", 0))
            cands.append((rank, dev))
        return min(cands)[1] if cands else None

    def _entry(self, node: Node, dev: str) -> Entry:
        info = node.devices.get(dev, {})
        return Entry(dev, info.get("default_precision", "fp32"), node.error or info.get("error"))

    def _pin(self, node_id: str):
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return NodeAffinitySchedulingStrategy(node_id, soft=False)

    # -- running -------------------------------------------------------------------------
    def run(self, job_for: Callable[[str, str], Any], models: dict, refs: dict, tick,
            round_index: int = 0) -> list[Row]:
        """Every (node, device) pair's rows: nodes in parallel, one device at a time per node.
        ``job_for(device, default_precision)`` makes the device's ``Job``."""
        ray = self.ray
        fn = ray.remote(max_retries=0, **({"max_calls": 1} if self.isolate else {}))(run_device)
        blobs = {name: (m.to_proto().SerializeToString(), m.name) for name, m in models.items()}
        shared = (ray.put(blobs), ray.put(refs))
        queues: dict[str, deque] = {}
        for node in self.nodes:
            entries = {e.device: e for e in self.entries.get(node.node_id, [])}
            queues[node.node_id] = deque(entries[d] for d in device_order(list(entries),
                                                                           round_index))
        inflight: dict = {}
        rows: list[Row] = []

        def submit(node: Node) -> None:
            while queues[node.node_id]:
                entry = queues[node.node_id].popleft()
                job = job_for(entry.device, entry.precision)
                if entry.error or not self._alive(node):
                    why = entry.error or f"the node {node.host} left the cluster"
                    rows.extend(_missing(job, [], node.host, why, tick, self.isolate))
                    continue
                tick.note(f"{node.host}: {entry.device}")
                ref = fn.options(scheduling_strategy=self._pin(node.node_id),
                                 resources={resource_name(entry.device): TASK_SHARE}).remote(
                    asdict(job), *shared, self.isolate)
                inflight[ref] = (node, job)
                return

        try:
            for node in self.nodes:
                submit(node)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                for ref in ready:
                    node, job = inflight.pop(ref)
                    self._collect(ref, node, job, rows, tick)
                    submit(node)
        except KeyboardInterrupt:
            for ref in inflight:  # the nodes stop measuring what nobody will read
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - finished or gone already
                    pass
            raise RoundInterrupted(rows) from None
        return rows

    def _collect(self, ref, node: Node, job, rows: list[Row], tick) -> None:
        """A finished task's rows into ``rows`` (before progress is told: Ctrl-C in the
        progress callback keeps them), error rows for what it lacks."""
        got: list[Row] = []
        why = None
        try:
            out = self.ray.get(ref)
            got = [Row.from_dict(d) for d in out["rows"]]
            self.workers[f"{node.host}: {job.device}"] = out["environment"]
        except Exception as exc:  # the task failed or its node died or left
            why = failure(exc, f"the Ray task for {job.device} on {node.host}")
            if not self._alive(node):
                why = f"the node {node.host} died or left the cluster: {why}"
        for r in got:
            r.host = node.host
        rows.extend(got)
        for r in got:
            tick.done(r)
        rows.extend(_missing(job, got, node.host, why or "the task returned no row", tick,
                             self.isolate))

    def _alive(self, node: Node) -> bool:
        try:
            return any(n["NodeID"] == node.node_id and n.get("Alive") for n in self.ray.nodes())
        except Exception:  # noqa: BLE001 - the cluster itself is gone: the node with it
            return False

    # -- what the results record ---------------------------------------------------------
    def environment(self) -> dict:
        return {"cluster": self.cluster,
                "nodes": {n.host: {"node_id": n.node_id, "hostname": n.hostname, "ip": n.ip,
                                   "advertised": n.advertised,
                                   "devices": n.devices, "error": n.error,
                                   "ran": [e.device for e in self.entries.get(n.node_id, [])]}
                          for n in self.nodes},
                "workers": self.workers}

    def host_order(self) -> list[str]:
        return [n.host for n in self.nodes]

    def device_order(self) -> list[str]:
        seen: dict[str, None] = {}
        for n in self.nodes:
            for e in self.entries.get(n.node_id, []):
                seen.setdefault(e.device)
        return list(seen)


class RoundInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``Fleet.run``: ``rows`` are those of the round finished before it."""

    def __init__(self, rows: list[Row]):
        super().__init__()
        self.rows = rows


def _missing(job, got: list[Row], host: str, why: str, tick, isolate: bool) -> list[Row]:
    """Error rows for the combinations of ``job`` that ``got`` lacks."""
    from hal.comparison.scenarios import MLPERF_NAMES

    seen = {(r.model, r.precision, r.batch) for r in got}
    out = []
    for m in job.models:
        for p in job.precision:
            for b in job.batch:
                if (m, p, b) in seen:
                    continue
                row = Row(model=m, device=job.device, batch=b, precision=p, host=host,
                          scenario=MLPERF_NAMES[job.scenario] if job.scenario else None,
                          task=job.task, mem_scope=MEM_SCOPE_ISOLATED if isolate else MEM_SCOPE,
                          error=why)
                tick.done(row)
                out.append(row)
    return out


# -- what runs on a node ---------------------------------------------------------------------
def node_devices(advertised: list[str]) -> dict:
    """On a node: what its registry says of each advertised device, and its HAL_BACKENDS."""
    devices: dict[str, dict] = {}
    for dev in advertised:
        try:
            d = registry.device(dev)
            info = d.info
            devices[dev] = {"name": info.name, "simulated": info.simulated,
                            "slow": slow_reason(info) or "",
                            "default_precision": d.backend.default_precision,
                            "priority": d.backend.priority}
        except HalError as exc:
            devices[dev] = {"error": f"{type(exc).__name__}: {exc}"}
    env = os.environ.get("HAL_BACKENDS", "")
    return {"hostname": socket.gethostname(), "devices": devices,
            "order": [n.strip() for n in env.split(",") if n.strip()]}


def run_device(job: dict, models: dict, refs: dict, isolate: bool = False) -> dict:
    """On a node: one device's rows as plain dicts (the work of ``--isolate``'s worker)."""
    from hal.comparison.environment import frameworks
    from hal.comparison.harness import Job, run_job
    from hal.ir.model import load

    t0 = time.perf_counter()
    job = Job(**job)
    # the first compile in a process probes every backend (importing their frameworks); a
    # local run has done so before its first row, so do it here before any row's clock starts
    registry.devices()
    loaded = {name: load(blob, n) for name, (blob, n) in models.items()}
    scope = MEM_SCOPE_ISOLATED if isolate else MEM_SCOPE
    rows = [r.to_dict() for r in run_job(job, loaded, refs, None, mem_scope=scope)]
    return {"rows": rows, "environment": {"frameworks": frameworks(), "pid": os.getpid(),
                                          "hostname": socket.gethostname(),
                                          "task_s": round(time.perf_counter() - t0, 2)}}
