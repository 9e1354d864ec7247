"""Regression tasks of several kinds: sinusoids, lines and quadratics (Chapter 7).

A task distribution whose tasks are not all alike, for multi-task
meta-learning: every task is a one-dimensional function of one of three kinds,

* ``"sine"`` — ``y = A sin(x - φ)``, ``A ~ U[0.1, 5]``, ``φ ~ U[0, π]`` (the MAML paper's tasks);
* ``"line"`` — ``y = a x + b``, ``a ~ U[-1, 1]``, ``b ~ U[-3, 3]``;
* ``"quadratic"`` — ``y = a (x - c)² + b``, ``a ~ U[-0.15, 0.15]``, ``c ~ U[-2, 2]``, ``b ~ U[-3, 3]``;

with inputs ``x ~ U[-5, 5]``. The ranges keep the outputs of the three kinds
on a similar scale (a few units). A mixture of function kinds of this sort is
the usual test bed for meta-learning over heterogeneous tasks (Vuorio et al.,
2019). Everything is drawn from one seeded generator, so the same seed gives
the same tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .. import runtime
from .episodes import Episode
from .sinusoid import AMPLITUDE_RANGE, INPUT_RANGE, PHASE_RANGE

KINDS = ("sine", "line", "quadratic")
"""The kinds of function :class:`FunctionFamilies` can draw."""

PARAMETER_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "sine": {"amplitude": AMPLITUDE_RANGE, "phase": PHASE_RANGE},
    "line": {"slope": (-1.0, 1.0), "intercept": (-3.0, 3.0)},
    "quadratic": {"curvature": (-0.15, 0.15), "centre": (-2.0, 2.0), "offset": (-3.0, 3.0)},
}
"""For each kind, its parameters and the uniform range each is drawn from."""


@dataclass(frozen=True)
class FunctionTask:
    """One regression task: a function of a given ``kind`` with parameters ``params`` (see :data:`PARAMETER_RANGES`)."""

    kind: str
    params: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if len(self.params) != len(PARAMETER_RANGES[self.kind]):
            raise ValueError(f"a {self.kind} task has parameters {list(PARAMETER_RANGES[self.kind])}, "
                             f"got {len(self.params)} values")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "sine":
            amplitude, phase = self.params
            return amplitude * torch.sin(x - phase)
        if self.kind == "line":
            slope, intercept = self.params
            return slope * x + intercept
        curvature, centre, offset = self.params
        return curvature * (x - centre) ** 2 + offset


class FunctionFamilies:
    """A task distribution p(T) over functions of several ``kinds``, with its own seeded generator.

    ``sample_task(kind)`` draws a task (of a random kind if ``kind`` is
    ``None``; kinds are equally likely); ``sample_episode(k_shot, q_queries)``
    draws a task and ``K`` support and ``Q`` query points from it (inputs of
    shape ``(n, 1)``; ``episode.info`` holds the task and its kind);
    ``pooled`` gives the points of many tasks with the task identity dropped,
    the data of an ordinary jointly trained regression model.
    """

    def __init__(self, kinds: Sequence[str] = KINDS, seed: int = 0,
                 input_range: tuple[float, float] = INPUT_RANGE, dtype: torch.dtype = torch.float32) -> None:
        kinds = list(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if not kinds or unknown:
            raise ValueError(f"kinds must be a non-empty selection of {KINDS}, got {kinds}")
        if not input_range[0] <= input_range[1]:
            raise ValueError(f"input_range must be (low, high) with low <= high, got {input_range}")
        self.kinds, self.input_range, self.dtype = kinds, input_range, dtype
        self.rng = runtime.rng(seed)

    def _kind(self, kind: str | None) -> str:
        if kind is None:
            return self.kinds[int(self.rng.integers(len(self.kinds)))]
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} (or None for a random one), got {kind!r}")
        return kind

    def sample_task(self, kind: str | None = None) -> FunctionTask:
        kind = self._kind(kind)
        params = tuple(float(self.rng.uniform(lo, hi)) for lo, hi in PARAMETER_RANGES[kind].values())
        return FunctionTask(kind, params)

    def sample_inputs(self, n: int) -> torch.Tensor:
        return torch.as_tensor(self.rng.uniform(*self.input_range, size=(n, 1)), dtype=self.dtype)

    def sample_episode(self, k_shot: int = 10, q_queries: int = 10, task: FunctionTask | None = None,
                       kind: str | None = None) -> Episode:
        if k_shot < 1 or q_queries < 0:
            raise ValueError(f"need k_shot >= 1 and q_queries >= 0, got {k_shot}, {q_queries}")
        task = self.sample_task(kind) if task is None else task
        xs, xq = self.sample_inputs(k_shot), self.sample_inputs(q_queries)
        return Episode(xs, task(xs), xq, task(xq), classes=[], info={"task": task, "kind": task.kind})

    def batch(self, num_tasks: int, k_shot: int = 10, q_queries: int = 10, kind: str | None = None) -> list[Episode]:
        """``num_tasks`` episodes, each of a new task (of ``kind``, or of random kinds)."""
        return [self.sample_episode(k_shot, q_queries, kind=kind) for _ in range(num_tasks)]

    def batch_from(self, tasks: Sequence[FunctionTask], num_tasks: int, k_shot: int = 10,
                   q_queries: int = 10) -> list[Episode]:
        """``num_tasks`` episodes of tasks picked at random from the fixed list ``tasks`` (fresh points each time)."""
        if not tasks:
            raise ValueError("batch_from needs at least one task to pick from")
        picks = self.rng.integers(len(tasks), size=num_tasks)
        return [self.sample_episode(k_shot, q_queries, task=tasks[int(i)]) for i in picks]

    def pooled(self, num_tasks: int, points_per_task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, y)`` from ``num_tasks`` random tasks, ``points_per_task`` points each, the task identity dropped."""
        if num_tasks < 1 or points_per_task < 1:
            raise ValueError(f"need num_tasks >= 1 and points_per_task >= 1, got {num_tasks}, {points_per_task}")
        xs, ys = [], []
        for _ in range(num_tasks):
            task, x = self.sample_task(), self.sample_inputs(points_per_task)
            xs.append(x)
            ys.append(task(x))
        return torch.cat(xs), torch.cat(ys)
