"""The sinusoid regression task distribution of the MAML paper (Finn et al., 2017).

Each task is ``y = A sin(x - φ)`` with amplitude ``A ~ U[0.1, 5]`` and phase
``φ ~ U[0, π]``; inputs are drawn from ``U[-5, 5]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import runtime
from .episodes import Episode

AMPLITUDE_RANGE = (0.1, 5.0)
PHASE_RANGE = (0.0, math.pi)
INPUT_RANGE = (-5.0, 5.0)


@dataclass(frozen=True)
class SineTask:
    """One regression task ``y = amplitude * sin(x - phase)``."""

    amplitude: float
    phase: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.sin(x - self.phase)


class SinusoidTasks:
    """The task distribution p(T) over sinusoids, with its own seeded generator.

    ``sample_task()`` draws a task; ``sample_episode(k_shot, q_queries)`` draws a
    task and ``K`` support and ``Q`` query points from it (inputs of shape
    ``(n, 1)``). ``amplitude_range``/``phase_range`` can be changed to build a
    shifted task distribution for out-of-distribution experiments.
    """

    def __init__(
        self,
        seed: int = 0,
        amplitude_range: tuple[float, float] = AMPLITUDE_RANGE,
        phase_range: tuple[float, float] = PHASE_RANGE,
        input_range: tuple[float, float] = INPUT_RANGE,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, (lo, hi) in (("amplitude_range", amplitude_range), ("phase_range", phase_range),
                               ("input_range", input_range)):
            if not lo <= hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        self.amplitude_range, self.phase_range, self.input_range = amplitude_range, phase_range, input_range
        self.dtype = dtype
        self.rng = runtime.rng(seed)

    def sample_task(self) -> SineTask:
        return SineTask(float(self.rng.uniform(*self.amplitude_range)), float(self.rng.uniform(*self.phase_range)))

    def sample_inputs(self, n: int) -> torch.Tensor:
        return torch.as_tensor(self.rng.uniform(*self.input_range, size=(n, 1)), dtype=self.dtype)

    def sample_episode(self, k_shot: int = 10, q_queries: int = 10, task: SineTask | None = None) -> Episode:
        if k_shot < 1 or q_queries < 0:
            raise ValueError(f"need k_shot >= 1 and q_queries >= 0, got {k_shot}, {q_queries}")
        task = self.sample_task() if task is None else task
        xs, xq = self.sample_inputs(k_shot), self.sample_inputs(q_queries)
        return Episode(xs, task(xs), xq, task(xq), classes=[], info={"task": task})

    def batch(self, num_tasks: int, k_shot: int = 10, q_queries: int = 10) -> list[Episode]:
        return [self.sample_episode(k_shot, q_queries) for _ in range(num_tasks)]
