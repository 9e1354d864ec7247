"""Meta-training on several processes with ``torch.distributed`` (data parallelism over tasks).

A meta-batch is a list of tasks, and its meta-gradient is the mean of the tasks'
meta-gradients. With ``W`` processes, each one adapts its share of the tasks
(:func:`shard`), computes the mean meta-gradient of its share as usual, and the
processes average their gradients (one ``all_reduce`` of a flat buffer) before
every optimizer step (:class:`AveragedOptimizer`). Every process then takes the
same step, so their parameters stay equal and the run matches one process that
adapts the whole meta-batch. Nothing in :mod:`mtl_course.meta` changes: the
training loop gets a sharded ``sample_batch`` and a wrapped optimizer::

    sampler = EpisodeSampler(data, split.train, 5, 1, 5, seed=1)  # same seed on every rank
    optimizer = AveragedOptimizer(torch.optim.Adam(net.parameters(), lr=1e-3))
    meta.meta_train(net, lambda: shard(sampler.batch(32)), optimizer=optimizer, ...)

Launch with ``torchrun --nproc-per-node=N script.py`` (one process per GPU, NCCL; or
processes on CPU cores, gloo); :func:`init` reads the variables torchrun sets.
Only rank 0 should write files (:func:`is_writer`).

Communication per outer step: one all-reduce of every meta-parameter's gradient,
``4 × P`` bytes in float32 for ``P`` parameters (Conv-4 with 64 channels: about
113 k parameters, 0.45 MB), of which a ring all-reduce sends ``2 (W − 1) / W`` times
that from each process.
"""
from __future__ import annotations

import os
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 without ``torch.distributed``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_writer() -> bool:
    """True on the one process that writes files, logs and checkpoints (rank 0)."""
    return world()[0] == 0


def init(backend: str | None = None) -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment; returns (rank, world size).

    ``backend`` defaults to NCCL when CUDA is available and gloo otherwise. Without
    torchrun's variables (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``)
    this does nothing and returns ``(0, 1)``: the same script runs on one process.
    """
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return world()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return world()


def shard(batch: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """This process's share of a meta-batch: tasks ``rank, rank + W, rank + 2W, ...``.

    Every process must hold the same meta-batch (sample it with the same seed), and
    its size must be a multiple of the number of processes, so that each share has
    as many tasks and the average of the shares' means is the mean of the batch.

    >>> shard(["a", "b", "c", "d"], rank=1, world_size=2)
    ['b', 'd']
    """
    if rank is None or world_size is None:
        rank, world_size = world()
    if len(batch) % world_size:
        raise ValueError(f"a meta-batch of {len(batch)} tasks cannot be split evenly over {world_size} "
                         f"processes: use a meta-batch size that is a multiple of {world_size}")
    return list(batch[rank::world_size])


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replace each gradient by its mean over all processes (one all-reduce of a flat buffer).

    Parameters whose gradient is ``None`` are skipped; the model and method are the
    same on every process, so they are the same parameters everywhere.
    """
    _, world_size = world()
    grads = [p.grad for p in params if p.grad is not None]
    if world_size == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


class AveragedOptimizer:
    """An optimizer that averages its parameters' gradients over all processes before each step.

    It wraps any ``torch.optim`` optimizer and behaves like it (``zero_grad``,
    ``step``, ``param_groups``, ``state_dict``), so :func:`mtl_course.meta.meta_train`
    and :func:`mtl_course.meta.meta_gradient_step` take it as they are. On one
    process it is the wrapped optimizer.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        average_gradients([p for group in self.param_groups for p in group["params"]])
        self.optimizer.step()

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)
