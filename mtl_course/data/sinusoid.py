"""The sinusoid regression task distribution of the MAML paper (Finn et al., 2017).

Each task is ``y = A sin(x - φ)`` with amplitude ``A ~ U[0.1, 5]`` and phase
``φ ~ U[0, π]``; inputs are drawn from ``U[-5, 5]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

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
    kind: ClassVar[str] = "sine"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.sin(x - self.phase)


class RegressionTasks:
    """A distribution p(T) over one-dimensional regression tasks, with its own seeded generator.

    A subclass says how to draw a task (``sample_task``: a function of ``x``
    with a ``kind``, such as :class:`SineTask`); everything else is common:
    ``sample_inputs(n)`` draws ``n`` inputs of shape ``(n, 1)``,
    ``sample_episode(k_shot, q_queries)`` a task with ``K`` support and ``Q``
    query points (``episode.info`` holds the task and its kind), ``batch`` many
    episodes, and ``pooled`` the points of many tasks with the task identity
    dropped: the data of an ordinary, jointly trained regression model (the
    pre-training baseline of Chapters 4 and 7).
    """

    def __init__(self, seed: int = 0, input_range: tuple[float, float] = INPUT_RANGE,
                 dtype: torch.dtype = torch.float32) -> None:
        if not input_range[0] <= input_range[1]:
            raise ValueError(f"input_range must be (low, high) with low <= high, got {input_range}")
        self.input_range, self.dtype = input_range, dtype
        self.rng = runtime.rng(seed)

    def sample_task(self, **options: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError("a task distribution says how to draw a task: define sample_task")

    def sample_inputs(self, n: int) -> torch.Tensor:
        return torch.as_tensor(self.rng.uniform(*self.input_range, size=(n, 1)), dtype=self.dtype)

    def sample_episode(self, k_shot: int = 10, q_queries: int = 10, task: Any = None, **options: Any) -> Episode:
        if k_shot < 1 or q_queries < 0:
            raise ValueError(f"need k_shot >= 1 and q_queries >= 0, got {k_shot}, {q_queries}")
        task = self.sample_task(**options) if task is None else task
        xs, xq = self.sample_inputs(k_shot), self.sample_inputs(q_queries)
        return Episode(xs, task(xs), xq, task(xq), classes=[], info={"task": task, "kind": task.kind})

    def batch(self, num_tasks: int, k_shot: int = 10, q_queries: int = 10, **options: Any) -> list[Episode]:
        """``num_tasks`` episodes, each of a new task."""
        return [self.sample_episode(k_shot, q_queries, **options) for _ in range(num_tasks)]

    def pooled(self, num_tasks: int, points_per_task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, y)`` from ``num_tasks`` random tasks, ``points_per_task`` points each, the task identity dropped.

        >>> X, y = SinusoidTasks(seed=0).pooled(num_tasks=3, points_per_task=4)
        >>> tuple(X.shape), tuple(y.shape)
        ((12, 1), (12, 1))
        """
        if num_tasks < 1 or points_per_task < 1:
            raise ValueError(f"need num_tasks >= 1 and points_per_task >= 1, got {num_tasks}, {points_per_task}")
        xs, ys = [], []
        for _ in range(num_tasks):
            task, x = self.sample_task(), self.sample_inputs(points_per_task)
            xs.append(x)
            ys.append(task(x))
        return torch.cat(xs), torch.cat(ys)


class SinusoidTasks(RegressionTasks):
    """The task distribution p(T) over sinusoids (:class:`RegressionTasks` with sine tasks).

    ``amplitude_range``/``phase_range`` can be changed to build a shifted task
    distribution for out-of-distribution experiments.
    """

    def __init__(
        self,
        seed: int = 0,
        amplitude_range: tuple[float, float] = AMPLITUDE_RANGE,
        phase_range: tuple[float, float] = PHASE_RANGE,
        input_range: tuple[float, float] = INPUT_RANGE,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        for name, (lo, hi) in (("amplitude_range", amplitude_range), ("phase_range", phase_range)):
            if not lo <= hi:
                raise ValueError(f"{name} must be (low, high) with low <= high, got {(lo, hi)}")
        super().__init__(seed, input_range, dtype)
        self.amplitude_range, self.phase_range = amplitude_range, phase_range

    def sample_task(self) -> SineTask:
        return SineTask(float(self.rng.uniform(*self.amplitude_range)), float(self.rng.uniform(*self.phase_range)))
