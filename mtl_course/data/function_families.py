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

from .episodes import Episode
from .sinusoid import AMPLITUDE_RANGE, INPUT_RANGE, PHASE_RANGE, RegressionTasks

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


class FunctionFamilies(RegressionTasks):
    """A task distribution p(T) over functions of several ``kinds`` (:class:`RegressionTasks`).

    ``sample_task(kind)`` draws a task (of a random kind if ``kind`` is
    ``None``; kinds are equally likely); ``sample_episode`` and ``batch`` take
    the same ``kind``; ``batch_from`` draws episodes of tasks from a fixed list.
    """

    def __init__(self, kinds: Sequence[str] = KINDS, seed: int = 0,
                 input_range: tuple[float, float] = INPUT_RANGE, dtype: torch.dtype = torch.float32) -> None:
        kinds = list(kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if not kinds or unknown:
            raise ValueError(f"kinds must be a non-empty selection of {KINDS}, got {kinds}")
        super().__init__(seed, input_range, dtype)
        self.kinds = kinds

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

    def batch_from(self, tasks: Sequence[FunctionTask], num_tasks: int, k_shot: int = 10,
                   q_queries: int = 10) -> list[Episode]:
        """``num_tasks`` episodes of tasks picked at random from the fixed list ``tasks`` (fresh points each time)."""
        if not tasks:
            raise ValueError("batch_from needs at least one task to pick from")
        picks = self.rng.integers(len(tasks), size=num_tasks)
        return [self.sample_episode(k_shot, q_queries, task=tasks[int(i)]) for i in picks]
