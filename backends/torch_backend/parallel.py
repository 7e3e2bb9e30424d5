"""Data-parallel training on torch: one process per worker, DistributedDataParallel between them.

``TorchBackend.launch_training`` says how to run a ``hal.trainer.Parallel``: strategy "data"
runs one process per worker (gloo on CPU, nccl on CUDA, one GPU per process: ``cuda:LOCAL_RANK``).
A process that torchrun or HAL's launcher started (``RANK`` set and ``WORLD_SIZE`` equal to
``workers``) hosts its part here; otherwise HAL's launcher starts ``workers`` processes.

In each process the trainer (``TorchTrainer``) joins the process group and wraps its training
module in ``torch.nn.parallel.DistributedDataParallel`` (``DataParallelRun`` below): every rank
steps on its shard of each global micro-batch with the weights HAL's loop gives it
(``n_local * world / N_global``), so DDP's gradient average over the ranks is the gradient of
the global batch, and every rank makes the same update.
"""

from __future__ import annotations

import atexit
import datetime
import gc
import inspect
import os
import weakref
from collections.abc import Sequence

import torch
import torch.distributed as dist

from hal.errors import BackendError, InputError, OptionError
from hal.trainer import Launch, Parallel

#: how long a collective (the rendezvous included) waits for the other ranks before failing
TIMEOUT_S = 600

#: the process-group backend of each device kind
ENGINES = {"cpu": "gloo", "cuda": "nccl"}

_owned = False  # this module initialized the default process group (close() destroys it)
#: the DDP runs of this process, closed or not: close() releases their wrappers first
_runs: weakref.WeakSet = weakref.WeakSet()


def unused_parameters(module: torch.fx.GraphModule, loss_index: int) -> list[str]:
    """The parameters of ``module`` that its output ``loss_index`` does not depend on."""
    out = next(n for n in module.graph.nodes if n.op == "output")
    results = out.args[0]
    seen, todo = set(), [results[loss_index] if isinstance(results, (tuple, list)) else results]
    while todo:
        node = todo.pop()
        if isinstance(node, torch.fx.Node) and node not in seen:
            seen.add(node)
            todo.extend(node.all_input_nodes)
    used = {n.target for n in seen if n.op == "get_attr"}
    return [name for name, _ in module.named_parameters() if name not in used]


def launch(kind: str, parallel: Parallel) -> Launch:
    """``TorchBackend.launch_training`` for a device of ``kind`` ("cpu", "cuda", "mps")."""
    if parallel.strategy not in Parallel.STRATEGIES:
        raise OptionError(f"strategy {parallel.strategy!r} is not one of "
                          f"{list(Parallel.STRATEGIES)}")
    if parallel.strategy == "tensor":
        raise OptionError("torch does not run strategy='tensor' (weights sharded over a device "
                          "mesh); train on a jax device (e.g. device='cpu@jax') for it, or use "
                          "strategy='data' on torch")
    pipeline = parallel.strategy == "pipeline"
    workers = parallel.stages if pipeline else parallel.workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise OptionError(f"{'stages' if pipeline else 'workers'} must be a positive int, got "
                          f"{workers!r}")
    if pipeline and (workers < 2 or parallel.workers not in (1, workers)):
        raise OptionError(f"strategy='pipeline' runs one process per stage: stages >= 2, and "
                          f"workers left at 1 or equal to stages; got stages={workers}, "
                          f"workers={parallel.workers}")
    if workers == 1:
        return Launch(processes=1, here=True, why="one process")
    engine = ENGINES.get(kind)
    if engine is None:
        raise OptionError(f"torch runs DistributedDataParallel on cpu (gloo) and cuda (nccl), "
                          f"not on {kind}; train with workers=1 on {kind}, or on a cpu or cuda "
                          f"device")
    if kind == "cuda":
        count = torch.cuda.device_count()
        if workers > count:
            raise OptionError(f"workers={workers} needs one CUDA device per worker process; "
                              f"torch sees {count}; use workers <= {count}")
    why = (f"a GPipe pipeline (torch.distributed.pipelining) of {workers} stages, one process "
           f"each, {engine}" if pipeline else
           f"DistributedDataParallel over {workers} processes, {engine}")
    world, rank = os.environ.get("WORLD_SIZE"), os.environ.get("RANK")
    if world is not None and rank is not None:
        if world != str(workers):
            raise OptionError(f"this process is rank {rank} of WORLD_SIZE={world} (set by "
                              f"torchrun or HAL's launcher), but the run asks for "
                              f"workers={workers}; start it with --nproc-per-node {workers} "
                              f"or pass workers={world}")
        return Launch(processes=workers, env={}, here=True, why=why)
    return Launch(processes=workers, env={}, here=False, why=why)


def rank_device(tdev: torch.device, parallel: Parallel) -> torch.device:
    """The torch device of this rank: the CPU for every rank, ``cuda:LOCAL_RANK`` on CUDA."""
    if tdev.type not in ENGINES:
        raise OptionError(f"torch runs DistributedDataParallel on cpu (gloo) and cuda (nccl), "
                          f"not on {tdev.type}; train with workers=1 there")
    if tdev.type != "cuda":
        return tdev
    local = int(os.environ.get("LOCAL_RANK", parallel.rank))
    count = torch.cuda.device_count()
    if not 0 <= local < count:
        raise OptionError(f"rank {parallel.rank} would run on cuda:{local} (LOCAL_RANK), but "
                          f"torch sees {count} CUDA device(s); start at most {count} processes "
                          f"per machine")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def join(parallel: Parallel, tdev: torch.device) -> None:
    """Join the default process group of ``parallel`` (once per process): rendezvous at
    ``parallel.address`` ("host:port") or, without one, at MASTER_ADDR/MASTER_PORT. An address
    that is MASTER_ADDR:MASTER_PORT joins through env:// too: under torchrun the agent already
    serves the rendezvous store on that port (a tcp:// rendezvous would try to open a second
    one there and wait)."""
    global _owned
    if not 0 <= parallel.rank < parallel.world:
        raise OptionError(f"rank {parallel.rank} is not in [0, world={parallel.world})")
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (parallel.rank, parallel.world):
            raise OptionError(f"this process already belongs to a torch process group as rank "
                              f"{dist.get_rank()} of {dist.get_world_size()}, not rank "
                              f"{parallel.rank} of {parallel.world}")
        return
    env = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    if parallel.address and parallel.address != env:
        host, _, port = parallel.address.rpartition(":")
        if not host or not port.isdigit():
            raise OptionError(f"parallel address {parallel.address!r} is not 'host:port'")
        init = f"tcp://{parallel.address}"
    else:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise OptionError(f"a run of {parallel.world} processes needs a rendezvous address: "
                              f"Parallel(address='host:port') or {missing} in the environment")
        init = "env://"
    try:
        dist.init_process_group(ENGINES[tdev.type], init_method=init, rank=parallel.rank,
                                world_size=parallel.world,
                                timeout=datetime.timedelta(seconds=TIMEOUT_S))
    except (RuntimeError, ValueError) as exc:
        raise BackendError(f"rank {parallel.rank} of {parallel.world} could not join the torch "
                           f"process group at {init}: {exc}") from exc
    _owned = True


def close() -> None:
    """Leave (destroy) the process group this module joined; nothing when it joined none.

    Every DDP wrapper of this process is released first, those of trainers never closed
    included: each holds the process group, which would otherwise outlive its destruction and
    be freed during interpreter shutdown, where gloo's threads ended in std::terminate (an
    abort at exit, about one run in five on a loaded machine)."""
    global _owned
    if _owned and dist.is_initialized():
        for run in list(_runs):
            run.release()
        gc.collect()  # DDP's wrapper sits in reference cycles
        dist.destroy_process_group()
    _owned = False


atexit.register(close)


class DataParallelRun:
    """One rank's side of a data-parallel step: the DDP wrapper of the training module, the
    global losses, and the running statistics made the same on every rank.

    BatchNorm running statistics: each rank updates them from its own shard (no SyncBatchNorm:
    the batch statistics that normalize a shard are the shard's own), and after each update
    every rank takes rank 0's, so all ranks hold, evaluate with and save the same values: rank
    0's.
    """

    def __init__(self, module: torch.fx.GraphModule, stats: Sequence[torch.Tensor],
                 parallel: Parallel, tdev: torch.device, loss_index: int):
        self.rank, self.world = parallel.rank, parallel.world
        self.stats = list(stats)
        self.tdev = tdev
        ids = [tdev.index] if tdev.type == "cuda" else None
        ddp = torch.nn.parallel.DistributedDataParallel
        # no buffer broadcast at each forward (share_stats does it once per update); newer
        # torch names that option forward_sync_buffers and deprecates broadcast_buffers
        sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                inspect.signature(ddp.__init__).parameters else "broadcast_buffers")
        try:
            # broadcasts rank 0's parameters and buffers, so every rank starts from the same
            # a parameter the loss does not reach (another output's head) gets no gradient:
            # DDP must then look for unused parameters at each step
            self.ddp = ddp(module, device_ids=ids, output_device=ids[0] if ids else None,
                           find_unused_parameters=bool(unused_parameters(module, loss_index)),
                           **{sync: False})
        except RuntimeError as exc:
            raise BackendError(f"rank {self.rank} of {self.world}: DistributedDataParallel "
                               f"could not wrap the training module: {exc}") from exc
        _runs.add(self)

    def release(self) -> None:
        """Drop the DDP wrapper (and its hold on the process group); no step after it."""
        self.ddp = None

    def sync(self, last: bool):
        """The context of one micro-batch's forward and backward: gradients are all-reduced
        (averaged) only in the last micro-batch of a step."""
        return torch.enable_grad() if last else self.ddp.no_sync()

    def check_micro_batches(self, count: int) -> None:
        """Every rank must step with the same number of micro-batches (DDP pairs their
        gradient all-reduces); checked before any of the step's collectives, on every rank."""
        both = torch.tensor([count, -count], dtype=torch.int64, device=self.tdev)
        self._collective(dist.all_reduce, both, op=dist.ReduceOp.MAX)
        most, least = int(both[0]), -int(both[1])
        if most != least:
            raise InputError(f"rank {self.rank} of {self.world} got {count} micro-batches for "
                             f"this step, but the ranks got between {least} and {most}; every "
                             f"rank takes its shard of each of the step's micro-batches")

    def global_losses(self, losses: Sequence[torch.Tensor],
                      counts: Sequence[int]) -> torch.Tensor:
        """Each micro-batch's loss over the global micro-batch: the sum over ranks of
        ``loss * n_local`` over the sum of ``n_local``."""
        local = torch.stack([torch.stack([loss.detach().double() * n,
                                          torch.tensor(float(n), dtype=torch.float64,
                                                       device=loss.device)])
                             for loss, n in zip(losses, counts)])
        self._collective(dist.all_reduce, local)
        return local[:, 0] / local[:, 1]

    def share_stats(self) -> None:
        """Every rank takes rank 0's running statistics (one broadcast for all of them)."""
        if not self.stats:
            return
        with torch.no_grad():
            flat = torch.cat([t.reshape(-1) for t in self.stats])
            self._collective(dist.broadcast, flat, src=0)
            offset = 0
            for t in self.stats:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()

    def _collective(self, collective, *args, **kw) -> None:
        try:
            collective(*args, **kw)
        except RuntimeError as exc:
            raise BackendError(f"rank {self.rank} of {self.world}: {collective.__name__} "
                               f"failed (another rank stopped, or timed out after {TIMEOUT_S} "
                               f"s?): {exc}") from exc
