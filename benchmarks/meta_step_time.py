"""Time of one MAML outer step: mtl_course.meta (loop and vmap backends) against a peer.

The peer is ``higher`` (Grefenstette et al., 2019), the library most MAML code of
the last years used for differentiable inner loops: ``pip install -r
benchmarks/requirements.txt``. Without it, the peer is a plain-autograd MAML loop
(``torch.autograd.grad(create_graph=True)`` task by task, the style of learn2learn).

One outer step = the meta-objective over a meta-batch (second-order MAML, one or
more inner SGD steps per task) and its backward pass into ``.grad``; the
optimiser update, identical for everyone, is left out. Workloads: the MAML
paper's sinusoid network (1-40-40-1, K=10) with 25 and 100 tasks per
meta-batch, and a 64-channel Conv-4 on 5-way 1-shot 28x28 episodes. Before
timing, every implementation's meta-gradient is checked against ours in
float64. Reported: the median over repeats of each (the implementations take turns),
and ratios measured side by side in this one run, with the machine.

    .venv/bin/python benchmarks/meta_step_time.py [--repeats 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mtl_course import meta, models
from mtl_course.data import Episode, SinusoidTasks

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # higher 0.2.1 has an `is 1` comparison
        import higher
except ImportError:  # pragma: no cover - depends on the environment
    higher = None

PEER = "higher" if higher is not None else "plain autograd"


# --------------------------------------------------------------------------------------
# The peer
# --------------------------------------------------------------------------------------

def peer_outer_step(model: nn.Module, batch: list[Episode], loss_fn, inner_lr: float, inner_steps: int) -> None:
    """Second-order MAML meta-gradient into ``.grad``, one task at a time, with the peer."""
    if higher is not None:
        inner_opt = torch.optim.SGD(model.parameters(), lr=inner_lr)
        for ep in batch:
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(inner_steps):
                    diffopt.step(loss_fn(fmodel(ep.support_X), ep.support_y))
                (loss_fn(fmodel(ep.query_X), ep.query_y) / len(batch)).backward()
        return
    names = [n for n, _ in model.named_parameters()]
    for ep in batch:
        fast = list(model.parameters())
        for _ in range(inner_steps):
            loss = loss_fn(functional_call(model, dict(zip(names, fast)), (ep.support_X,)), ep.support_y)
            grads = torch.autograd.grad(loss, fast, create_graph=True)
            fast = [p - inner_lr * g for p, g in zip(fast, grads)]
        query = loss_fn(functional_call(model, dict(zip(names, fast)), (ep.query_X,)), ep.query_y)
        (query / len(batch)).backward()


def ours_outer_step(backend: str) -> Callable:
    def step(model: nn.Module, batch: list[Episode], loss_fn, inner_lr: float, inner_steps: int) -> None:
        meta.meta_objective(model, batch, inner=meta.InnerLoop(inner_lr, inner_steps), loss_fn=loss_fn,
                            backend=backend).loss.backward()
    return step


IMPLEMENTATIONS = {"ours (loop)": ours_outer_step("loop"), "ours (vmap)": ours_outer_step("vmap"),
                   PEER: peer_outer_step}


def query_pass_alone(model: nn.Module, batch: list[Episode], loss_fn, inner_lr: float, inner_steps: int) -> None:
    """The part of an outer step no implementation can skip: each task's query forward and backward pass.

    It is the query pass of first-order MAML with a free inner loop. Every
    second-order implementation runs it with the same kernels and more on top
    (the inner steps and their second derivatives), so its time bounds what any
    implementation could reach: peer / bound is the largest possible speed-up
    over the peer on this machine without faster kernels.
    """
    for ep in batch:
        (loss_fn(model(ep.query_X), ep.query_y) / len(batch)).backward()


BOUND = "query pass (bound)"


# --------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------

def sinusoid_workload(num_tasks: int, dtype=torch.float32):
    torch.manual_seed(0)
    model = models.MLP(1, (40, 40), 1).to(dtype)
    batch = SinusoidTasks(seed=0, dtype=dtype).batch(num_tasks, 10, 10)
    return model, batch, F.mse_loss, 0.01, 1


def conv4_workload(num_tasks: int = 8, dtype=torch.float32):
    torch.manual_seed(0)
    model = models.Conv4(1, 64, out_features=5).to(dtype)  # GroupNorm, the course default
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(5)
    batch = [Episode(torch.rand(5, 1, 28, 28, generator=g, dtype=dtype), labels,
                     torch.rand(75, 1, 28, 28, generator=g, dtype=dtype), labels.repeat_interleave(15), list(range(5)))
             for _ in range(num_tasks)]
    return model, batch, F.cross_entropy, 0.4, 1


WORKLOADS = {
    "sinusoid MLP, 25 tasks": lambda dtype=torch.float32: sinusoid_workload(25, dtype),
    "sinusoid MLP, 100 tasks": lambda dtype=torch.float32: sinusoid_workload(100, dtype),
    "Conv-4 (64 ch), 5-way 1-shot, 8 tasks": lambda dtype=torch.float32: conv4_workload(8, dtype),
}


def meta_gradient(step: Callable, model: nn.Module, batch, loss_fn, inner_lr: float, inner_steps: int) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    step(model, batch, loss_fn, inner_lr, inner_steps)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def check_same_meta_gradient(name: str, make: Callable, inner_steps: int = 2) -> float:
    """Largest relative difference to our loop backend's float64 meta-gradient (2 inner steps)."""
    model, batch, loss_fn, inner_lr, _ = make(torch.float64)
    reference = meta_gradient(IMPLEMENTATIONS["ours (loop)"], model, batch, loss_fn, inner_lr, inner_steps)
    worst = 0.0
    for impl, step in IMPLEMENTATIONS.items():
        g = meta_gradient(step, model, batch, loss_fn, inner_lr, inner_steps)
        worst = max(worst, ((g - reference).norm() / reference.norm()).item())
    if worst > 1e-9:
        raise AssertionError(f"{name}: the implementations' meta-gradients differ (relative {worst:.2e})")
    return worst


def median_seconds(steps: dict[str, Callable], model, batch, loss_fn, inner_lr, inner_steps,
                   repeats: int) -> dict[str, float]:
    """Median time of one outer step for each implementation, timed in turns (A, B, C, A, B, C, ...).

    Taking turns spreads any change in the machine's load evenly over the
    implementations, so the ratios stay fair on a shared machine.
    """
    for step in steps.values():  # warm-up
        for _ in range(2):
            meta_gradient(step, model, batch, loss_fn, inner_lr, inner_steps)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            step(model, batch, loss_fn, inner_lr, inner_steps)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_memory_mb(impl: str, workload: str) -> float:
    """Peak resident memory that one outer step adds, in MB, measured in a fresh process (Linux)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, __file__, "--peak-memory-child", impl, workload],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _peak_memory_child(impl: str, workload: str) -> None:
    """Build the workload and warm up on its first task, then sample the resident set every half
    millisecond during one outer step (memory freed by the warm-up may be reused, so this is a floor)."""
    import threading

    page = os.sysconf("SC_PAGE_SIZE")

    def resident() -> int:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * page

    torch.set_num_threads(1)
    model, batch, loss_fn, inner_lr, inner_steps = WORKLOADS[workload]()
    IMPLEMENTATIONS[impl](model, batch[:1], loss_fn, inner_lr, inner_steps)  # libraries and kernels loaded
    model.zero_grad(set_to_none=True)
    base, peak, done = resident(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    IMPLEMENTATIONS[impl](model, batch, loss_fn, inner_lr, inner_steps)
    done.set()
    sampler.join()
    print(max(0, peak[0] - base) / 2**20)


def main() -> None:
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "--peak-memory-child":
        return _peak_memory_child(sys.argv[2], sys.argv[3])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed outer steps per implementation")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's intra-op threads (default: torch's own choice); 1 is fastest for these small "
                             "networks on a shared CPU")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), device cpu, load average {os.getloadavg()[0]:.1f}; peer: {PEER}"
          + (f" {higher.__version__}" if higher is not None and hasattr(higher, "__version__") else ""))
    print(f"one outer step = second-order MAML meta-gradient, 1 inner step; median of {args.repeats} runs\n")
    header = f"{'workload':40s}" + "".join(f"{impl:>16s}" for impl in IMPLEMENTATIONS) + f"{BOUND:>20s}"
    header += f"{'loop/peer':>11s}{'vmap/peer':>11s}{'vmap/loop':>11s}{'peer/bound':>12s}{'auto picks':>12s}"
    header += f"{'max rel. diff':>15s}"
    print(header)
    memory = {}
    for name, make in WORKLOADS.items():
        difference = check_same_meta_gradient(name, make)
        model, batch, loss_fn, inner_lr, inner_steps = make()
        seconds = median_seconds({**IMPLEMENTATIONS, BOUND: query_pass_alone}, model, batch, loss_fn, inner_lr,
                                 inner_steps, args.repeats)
        faster = "loop" if seconds["ours (loop)"] < seconds["ours (vmap)"] else "vmap"
        picked = meta.auto_backend(model)
        row = f"{name:40s}" + "".join(f"{1000 * seconds[impl]:13.1f} ms" for impl in IMPLEMENTATIONS)
        row += f"{1000 * seconds[BOUND]:17.1f} ms"
        row += f"{seconds['ours (loop)'] / seconds[PEER]:11.2f}{seconds['ours (vmap)'] / seconds[PEER]:11.2f}"
        row += f"{seconds['ours (vmap)'] / seconds['ours (loop)']:11.2f}{seconds[PEER] / seconds[BOUND]:12.2f}"
        row += f"{picked + ('' if picked == faster else ' (!)'):>12s}{difference:15.1e}"
        print(row, flush=True)
        memory[name] = {impl: peak_memory_mb(impl, name) for impl in IMPLEMENTATIONS}
    print("\nratios < 1: the numerator is faster. 'auto picks': meta.auto_backend's choice, marked (!) where the "
          "other backend was faster in this run. 'peer/bound': the peer's time over the query pass alone, the "
          "largest speed-up over the peer that any implementation using these kernels could reach. 'max rel. diff': largest relative difference between each "
          "implementation's float64 meta-gradient (2 inner steps) and ours (loop); the script stops if it exceeds 1e-9.")
    print("\npeak memory that one outer step adds (resident set sampled every 0.5 ms, MB, each in a fresh "
          "process, one thread):")
    print(f"{'workload':40s}" + "".join(f"{impl:>16s}" for impl in IMPLEMENTATIONS))
    for name, row in memory.items():
        print(f"{name:40s}" + "".join(f"{mb:13.1f} MB" for mb in row.values()))


if __name__ == "__main__":
    main()
