"""One MAML outer step on one process against the same step split over two (torch.distributed, gloo).

Second-order MAML on Conv-4 (64 channels, 28 x 28 glyph-sized inputs), 5-way
1-shot, 5 queries, a meta-batch of 8 tasks, the loop backend, meta-gradient into
``.grad`` and one Adam step. "1 process" adapts all 8 tasks with ``--threads``
intra-op threads; "2 processes" adapt 4 tasks each with ``--threads / 2`` threads
and average their gradients (``mtl_course.distributed``). Before timing, the script
checks in float64 that the two give the same meta-gradient. The two run in turn
within each repeat; the table gives medians and their ratio, and the bytes each
process sends per step in the all-reduce (ring: 2 (W - 1) / W times the gradient).
"""
from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtl_course import distributed, meta, models
from mtl_course.data import Episode

META_BATCH = 8


def learner(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.Conv4(1, 64, 5, image_size=28).to(dtype)


def meta_batch(seed: int, dtype: torch.dtype) -> list[Episode]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(5)
    return [Episode(torch.rand(5, 1, 28, 28, generator=g, dtype=dtype), labels,
                    torch.rand(25, 1, 28, 28, generator=g, dtype=dtype), labels.repeat_interleave(5),
                    classes=list(range(5)))
            for _ in range(META_BATCH)]


def outer_step(model, optimizer, batch) -> None:
    meta.meta_gradient_step(model, distributed.shard(batch), optimizer, method="maml",
                            inner=meta.InnerLoop(lr=0.4, steps=1), backend="loop")


def gradient(dtype: torch.dtype) -> torch.Tensor:
    model = learner(dtype)
    optimizer = distributed.AveragedOptimizer(torch.optim.SGD(model.parameters(), lr=0.0))
    outer_step(model, optimizer, meta_batch(0, dtype))
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def step_times(repeats: int) -> list[float]:
    model = learner(torch.float32)
    optimizer = distributed.AveragedOptimizer(torch.optim.Adam(model.parameters(), lr=1e-3))
    outer_step(model, optimizer, meta_batch(0, torch.float32))  # warm-up
    times = []
    for seed in range(1, repeats + 1):
        batch = meta_batch(seed, torch.float32)
        if dist.is_initialized():
            dist.barrier()
        start = time.perf_counter()
        outer_step(model, optimizer, batch)
        times.append(time.perf_counter() - start)
    return times


def worker(rank: int, world_size: int, port: int, threads: int, repeats: int, folder: str) -> None:
    torch.set_num_threads(threads)
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = {"gradient": gradient(torch.float64), "times": step_times(repeats)}
        if rank == 0:
            torch.save(result, Path(folder) / f"world{world_size}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(world_size: int, threads: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        mp.spawn(worker, args=(world_size, free_port(), threads, repeats, folder), nprocs=world_size, join=True)
        return torch.load(Path(folder) / f"world{world_size}.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed outer steps per setting and round")
    parser.add_argument("--rounds", type=int, default=3, help="times the two settings take turns")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="threads in all")
    args = parser.parse_args()
    times: dict[int, list[float]] = {1: [], 2: []}
    gradients = {}
    for _ in range(args.rounds):
        for world_size in (1, 2):
            result = run(world_size, max(1, args.threads // world_size), args.repeats)
            times[world_size] += result["times"]
            gradients[world_size] = result["gradient"]
    diff = ((gradients[2] - gradients[1]).abs().max() / gradients[1].abs().max()).item()
    assert diff < 1e-10, f"the two settings disagree: max relative difference {diff:.1e}"
    one, two = statistics.median(times[1]), statistics.median(times[2])
    parameters = gradients[1].numel()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads in all, medians of {len(times[1])} outer steps")
    print(f"{'workload':44}{'1 process':>12}{'2 processes':>14}{'1/2':>8}{'sent per step':>16}{'max rel. diff':>15}")
    sent = 4 * parameters * 2 * (2 - 1) / 2 / 1e6
    print(f"{'Conv-4 (64 ch), 5-way 1-shot, 8 tasks':44}{one * 1e3:>9.1f} ms{two * 1e3:>11.1f} ms"
          f"{one / two:>8.2f}{sent:>13.2f} MB{diff:>15.1e}")


if __name__ == "__main__":
    main()
