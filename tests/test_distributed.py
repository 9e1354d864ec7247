"""Meta-training on two processes (gloo, CPU) gives what one process gives on the same meta-batch.

Each process adapts half of every meta-batch and the gradients are averaged before
the optimizer's step (mtl_course.distributed). In float64, one outer step's
meta-gradient and the parameters after a short run must equal a single process's
to 1e-10, for every method of mtl_course.meta.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mtl_course import distributed, meta, models
from mtl_course.data import Episode

DTYPE = torch.float64
METHODS = ("maml", "fomaml", "anil", "metasgd", "reptile", "protonet")
META_BATCH = 4
SHORT_RUN = 3  # outer steps


def tiny_learner(method: str) -> tuple[torch.nn.Module, dict | None]:
    torch.manual_seed(0)
    out = None if method == "protonet" else 3
    model = models.Conv4(1, 4, out_features=out, norm="group", image_size=16).to(DTYPE)
    rates = meta.init_per_param_lr(models.params_of(model), 0.1) if method == "metasgd" else None
    return model, rates


def meta_batch(step: int) -> list[Episode]:
    g = torch.Generator().manual_seed(step)
    labels = torch.arange(3)
    return [Episode(torch.rand(6, 1, 16, 16, generator=g, dtype=DTYPE), labels.repeat_interleave(2),
                    torch.rand(9, 1, 16, 16, generator=g, dtype=DTYPE), labels.repeat_interleave(3),
                    classes=[0, 1, 2])
            for _ in range(META_BATCH)]


def inner_settings(method: str, rates: dict | None) -> dict:
    steps = 2 if method == "reptile" else 1
    return dict(method=method, inner=meta.InnerLoop(lr=0.1, steps=steps, per_param_lr=rates), backend="loop")


def meta_parameters(model: torch.nn.Module, rates: dict | None) -> list[torch.Tensor]:
    return list(model.parameters()) + ([] if rates is None else list(rates.values()))


def one_step_gradient(method: str) -> torch.Tensor:
    """The averaged meta-gradient of one outer step on this process's share of a meta-batch."""
    model, rates = tiny_learner(method)
    params = meta_parameters(model, rates)
    optimizer = distributed.AveragedOptimizer(torch.optim.SGD(params, lr=0.0))
    meta.meta_gradient_step(model, distributed.shard(meta_batch(0)), optimizer, **inner_settings(method, rates))
    return torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])


def short_run(method: str) -> torch.Tensor:
    """The meta-parameters after a few outer steps, each process on its share.

    SGD with momentum, not Adam: some gradients here are exactly zero in exact
    arithmetic (the zero head's bias), and Adam's division by their tiny rounding
    noise turns a 1e-17 difference in summation order into a 1e-11 step.
    """
    model, rates = tiny_learner(method)
    params = meta_parameters(model, rates)
    optimizer = distributed.AveragedOptimizer(torch.optim.SGD(params, lr=0.05, momentum=0.9))
    steps = iter(range(SHORT_RUN))
    meta.meta_train(model, lambda: distributed.shard(meta_batch(next(steps))), outer_steps=SHORT_RUN,
                    optimizer=optimizer, desc="distributed test", **inner_settings(method, rates))
    return torch.cat([p.detach().reshape(-1) for p in params])


def results() -> dict[str, torch.Tensor]:
    out = {}
    for method in METHODS:
        out[f"{method} gradient"] = one_step_gradient(method)
        out[f"{method} run"] = short_run(method)
    return out


def worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.save(results(), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("distributed")
    mp.spawn(worker, args=(2, free_port(), str(folder)), nprocs=2, join=True)
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(2)]


@pytest.fixture(scope="module")
def one_process() -> dict[str, torch.Tensor]:
    assert distributed.world() == (0, 1)
    return results()


@pytest.mark.parametrize("what", ["gradient", "run"])
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_match_one(two_processes, one_process, method: str, what: str) -> None:
    key = f"{method} {what}"
    single, (rank0, rank1) = one_process[key], two_processes
    assert torch.equal(rank0[key], rank1[key]), "the two processes must hold the same values"
    assert rank0[key].shape == single.shape
    assert torch.allclose(rank0[key], single, rtol=0, atol=1e-10), (rank0[key] - single).abs().max()
    if what == "run":
        start = torch.cat([p.detach().reshape(-1) for p in meta_parameters(*tiny_learner(method))])
        assert (single - start).abs().max() > 1e-3, "the short run must move the parameters"


def test_shards_cover_the_batch_once() -> None:
    batch = list(range(6))
    shards = [distributed.shard(batch, rank, 3) for rank in range(3)]
    assert sorted(sum(shards, [])) == batch and all(len(s) == 2 for s in shards)


def test_an_uneven_meta_batch_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 2"):
        distributed.shard(list(range(5)), 0, 2)


def test_one_process_is_the_plain_optimizer() -> None:
    plain, wrapped = tiny_learner("maml")[0], tiny_learner("maml")[0]
    opt_a = torch.optim.SGD(plain.parameters(), lr=0.1)
    opt_b = distributed.AveragedOptimizer(torch.optim.SGD(wrapped.parameters(), lr=0.1))
    for net, opt in ((plain, opt_a), (wrapped, opt_b)):
        meta.meta_gradient_step(net, meta_batch(0), opt, **inner_settings("maml", None))
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), wrapped.parameters()))


def test_without_torchrun_the_script_runs_on_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init() == (0, 1) and distributed.is_writer()


def test_docstring_examples_run() -> None:
    import doctest

    result = doctest.testmod(distributed)
    assert result.attempted > 0 and result.failed == 0
