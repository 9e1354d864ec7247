"""Transfer, multi-task and meta-learning side by side, on the same source tasks (Chapter 9).

The three paradigms can be given exactly the same data, a fixed pool of ``M``
source tasks drawn from one task distribution ``p(T)`` (a :class:`TaskPool`),
and still learn different things from it:

* **transfer learning** trains on **one** source task (all of its data) and
  fine-tunes the result on the new task (:meth:`TaskPool.task_data`);
* **multi-task learning** trains one network on **all** source tasks jointly,
  a shared body with one output (head) per task, minimising the sum of the
  task losses: a single-level problem, the review's Eq. 2
  (:func:`multitask_network`, :meth:`TaskPool.joint_data`,
  :func:`multitask_mse`); a new task gets a new head
  (:func:`new_task_network`);
* **meta-learning** treats the source tasks as training examples and
  optimises how well a network does *after* adapting to a task, a bi-level
  problem (Eqs. 5-6), with :mod:`mtl_course.meta` on episodes drawn from the
  pool (:meth:`TaskPool.sample_batch`).

The hyper-parameter view of meta-learning compares a learned inner step size
(Meta-SGD) with the usual practice of choosing it by hand on validation tasks,
:func:`select_inner_lr`. :func:`paired_difference` and :func:`average_scores` (from :mod:`metrics`)
compare methods scored on the same test episodes, :func:`adapted_curve` draws
a network's prediction after adapting to one task, and :func:`draw_flowchart`
draws the chapter's decision guide.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import meta, models
from .data import Episode, SineTask, SinusoidTasks
from .metrics import average_scores, paired_difference  # noqa: F401  (the chapter's names for them)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TaskPool:
    """A fixed set of ``M`` regression tasks from ``p(T)``, each with ``n`` labelled points.

    ``X[i]`` and ``Y[i]`` (shape ``(n, 1)`` each) are task ``i``'s inputs and
    targets; ``tasks[i]`` is the task itself (for plots).
    """

    X: torch.Tensor
    Y: torch.Tensor
    tasks: list[SineTask]

    def __post_init__(self) -> None:
        if self.X.dim() != 3 or self.X.shape != self.Y.shape:
            raise ValueError(f"X and Y must both have shape (num_tasks, num_points, 1), got "
                             f"{tuple(self.X.shape)} and {tuple(self.Y.shape)}")
        if len(self.tasks) != self.X.shape[0]:
            raise ValueError(f"{len(self.tasks)} tasks for {self.X.shape[0]} rows of data")

    @classmethod
    def from_distribution(cls, distribution: SinusoidTasks, num_tasks: int, num_points: int) -> "TaskPool":
        """Draw ``num_tasks`` tasks from ``distribution`` and ``num_points`` labelled inputs for each."""
        if num_tasks < 1 or num_points < 2:
            raise ValueError(f"need num_tasks >= 1 and num_points >= 2, got {num_tasks} and {num_points}")
        tasks = [distribution.sample_task() for _ in range(num_tasks)]
        X = torch.stack([distribution.sample_inputs(num_points) for _ in tasks])
        Y = torch.stack([task(x) for task, x in zip(tasks, X)])
        return cls(X, Y, tasks)

    def __len__(self) -> int:
        return self.X.shape[0]

    @property
    def num_points(self) -> int:
        return self.X.shape[1]

    def _check_task(self, i: int) -> None:
        if not 0 <= i < len(self):
            raise IndexError(f"task index {i} is out of range for a pool of {len(self)} tasks")

    def task_data(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, y)`` of task ``i`` alone: the data of a single source task, for transfer learning."""
        self._check_task(i)
        return self.X[i], self.Y[i]

    def pooled_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All tasks' examples as one data set, the task identity dropped: pre-training on the pooled tasks.

        Returns inputs and targets of shape ``(M n, 1)``, task by task. A network
        fitted to them learns the curve that is best on average over the pool,
        the practitioner's "pre-train on everything, then fine-tune".

        >>> pool = TaskPool.from_distribution(SinusoidTasks(seed=0), 3, 4)
        >>> X, y = pool.pooled_data()
        >>> tuple(X.shape), tuple(y.shape), bool(torch.equal(y[4:8], pool.Y[1]))
        ((12, 1), (12, 1), True)
        """
        M, n = len(self), self.num_points
        return self.X.reshape(M * n, 1), self.Y.reshape(M * n, 1)

    def joint_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All tasks' examples for joint (multi-task) training with :func:`mtl_course.training.fit`.

        Returns inputs ``(M n, 1)`` and targets ``(M n, 2)`` whose first column is
        the task index of the example and whose second is its label; use
        :func:`multitask_mse` as the loss.
        """
        M, n = len(self), self.num_points
        task_ids = torch.arange(M, dtype=self.Y.dtype).repeat_interleave(n).unsqueeze(1)
        return self.X.reshape(M * n, 1), torch.cat([task_ids, self.Y.reshape(M * n, 1)], dim=1)

    def episode(self, i: int, k_shot: int, q_queries: int, rng: np.random.Generator) -> Episode:
        """Task ``i`` as an episode: ``k_shot`` support and ``q_queries`` query points, disjoint, at random."""
        self._check_task(i)
        if k_shot < 1 or q_queries < 1 or k_shot + q_queries > self.num_points:
            raise ValueError(f"need 1 <= k_shot, 1 <= q_queries and k_shot + q_queries <= {self.num_points} "
                             f"(the points per task), got {k_shot} and {q_queries}")
        order = torch.as_tensor(rng.permutation(self.num_points))
        s, q = order[:k_shot], order[k_shot : k_shot + q_queries]
        return Episode(self.X[i, s], self.Y[i, s], self.X[i, q], self.Y[i, q], classes=[],
                       info={"task": self.tasks[i]})

    def sample_batch(self, num_tasks: int, k_shot: int, q_queries: int, rng: np.random.Generator) -> list[Episode]:
        """A meta-batch: ``num_tasks`` tasks of the pool (without repetition), each as an episode."""
        if not 1 <= num_tasks <= len(self):
            raise ValueError(f"num_tasks must be between 1 and the pool size {len(self)}, got {num_tasks}")
        return [self.episode(int(i), k_shot, q_queries, rng) for i in rng.choice(len(self), num_tasks, replace=False)]


def multitask_network(num_tasks: int, hidden_sizes: Sequence[int] = (40, 40)) -> models.MLP:
    """Hard parameter sharing for ``num_tasks`` scalar regression tasks.

    One shared body (``models.MLP``'s ``body``) and one linear output per task:
    output ``t`` of the ``head`` layer is task ``t``'s task-specific head.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    return models.MLP(1, tuple(hidden_sizes), num_tasks)


def multitask_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The multi-task loss of :meth:`TaskPool.joint_data`: each example scored by its own task's head.

    ``outputs`` is ``(B, M)`` (one column per task), ``targets`` is ``(B, 2)``
    (task index, label). The mean over examples is the sum of the task losses
    of the review's Eq. 2 divided by the number of examples (equal weights
    when every task has the same number of examples).
    """
    if targets.dim() != 2 or targets.shape[1] != 2 or outputs.shape[0] != targets.shape[0]:
        raise ValueError(f"targets must be (batch, 2) = (task index, label) for (batch, tasks) outputs, "
                         f"got {tuple(targets.shape)} for {tuple(outputs.shape)}")
    task = targets[:, 0].long()
    if int(task.min()) < 0 or int(task.max()) >= outputs.shape[1]:
        raise ValueError(f"task indices must lie in 0..{outputs.shape[1] - 1}")
    prediction = outputs.gather(1, task.unsqueeze(1)).squeeze(1)
    return F.mse_loss(prediction, targets[:, 1])


def new_task_network(multitask_model: models.MLP) -> models.MLP:
    """A single-output network for a new task: the shared body, and the *average* of the task heads.

    The new task's head starts as the mean of the learned heads (the head of
    "an average source task"); everything is copied, so fine-tuning the result
    leaves ``multitask_model`` untouched.
    """
    if not isinstance(multitask_model, models.MLP) or not isinstance(multitask_model.head, nn.Linear):
        raise TypeError("new_task_network expects the models.MLP built by multitask_network")
    in_features = multitask_model.body[1].in_features
    hidden = tuple(layer.out_features for layer in multitask_model.body if isinstance(layer, nn.Linear))
    net = models.MLP(in_features, hidden, 1).to(multitask_model.head.weight.device)
    net.body.load_state_dict(multitask_model.body.state_dict())
    with torch.no_grad():
        net.head.weight.copy_(multitask_model.head.weight.mean(0, keepdim=True))
        net.head.bias.copy_(multitask_model.head.bias.mean(0, keepdim=True))
    return net


def scaled_rates(per_param_lr: meta.Params, factor: float) -> meta.Params:
    """Meta-SGD's learned step sizes, every one multiplied by ``factor`` (detached: nothing is trained).

    >>> rates = {"w": torch.tensor([0.0, 0.5], requires_grad=True)}
    >>> scaled_rates(rates, 0.5)["w"].tolist()
    [0.0, 0.25]
    """
    if not factor > 0:
        raise ValueError(f"the factor must be positive, got {factor}")
    return {k: factor * v.detach() for k, v in per_param_lr.items()}


def select_inner_lr(
    model: nn.Module,
    episodes: Sequence[Episode],
    candidates: Sequence[float],
    inner_steps: int,
    loss_fn: LossFn = F.mse_loss,
    per_param_lr: meta.Params | None = None,
) -> tuple[float, dict[float, float]]:
    """Choose the adaptation step size by hand, as a practitioner does: a grid search on validation tasks.

    For every candidate, ``inner_steps`` gradient steps of that size on each
    validation episode's support set, then the mean query loss. Returns the
    best candidate and every candidate's validation loss (``inf`` if it
    diverged). Use validation tasks, never the test tasks.

    With ``per_param_lr`` (Meta-SGD's learned step sizes) a candidate is a
    factor that scales all of them: rates learned for one inner step may
    overshoot when they are taken several times, and the factor is chosen the
    same way as everyone else's step size.
    """
    if not candidates:
        raise ValueError("give at least one candidate step size")
    losses = {}
    for lr in candidates:
        if lr <= 0:
            raise ValueError(f"step sizes must be positive, got {lr}")
        rates = None if per_param_lr is None else scaled_rates(per_param_lr, lr)
        with np.errstate(over="ignore", invalid="ignore"):  # too large a step diverges: that is a result
            value = meta.evaluate_episodes(model, episodes, inner=meta.InnerLoop(lr, inner_steps, per_param_lr=rates),
                                           loss_fn=loss_fn, metric=None, chunk_size=len(episodes)).mean
        losses[float(lr)] = value if math.isfinite(value) else math.inf
    best = min(losses, key=losses.get)
    return best, losses


def adapted_curve(
    model: nn.Module,
    support_X: torch.Tensor,
    support_y: torch.Tensor,
    x: torch.Tensor,
    inner_steps: int,
    inner_lr: float = 0.01,
    per_param_lr: meta.Params | None = None,
    loss_fn: LossFn = F.mse_loss,
) -> torch.Tensor:
    """The model's predictions on ``x`` after ``inner_steps`` gradient steps on one support set.

    The same inner loop as at meta-test (:func:`mtl_course.meta.adapt`), with one
    step size ``inner_lr`` or Meta-SGD's learned ``per_param_lr``; ``model`` is
    not changed. Returns a 1-d tensor on the CPU.
    """
    device = next(model.parameters()).device
    with torch.no_grad():
        phi = meta.adapt(model, models.params_of(model), support_X.to(device), support_y.to(device), loss_fn,
                         meta.InnerLoop(inner_lr, inner_steps, first_order=True, per_param_lr=per_param_lr))
        return models.functional_forward(model, phi, x.to(device)).reshape(-1).cpu()


# --------------------------------------------------------------------------------------
# The decision guide as a flow chart
# --------------------------------------------------------------------------------------

NODE_STYLES = {
    "question": {"boxstyle": "round,pad=0.4", "facecolor": "#dbe9f6", "edgecolor": "#2b6ca3"},
    "answer": {"boxstyle": "round,pad=0.4", "facecolor": "#e3f2d9", "edgecolor": "#3d7a26"},
}
"""How :func:`draw_flowchart` draws the two kinds of node: questions and recommendations."""


def draw_flowchart(ax, nodes: Mapping[str, tuple[float, float, str, str]],
                   edges: Sequence[tuple[str, str, str]], fontsize: float = 8.5):
    """Draw a flow chart: boxed ``nodes`` joined by labelled arrows.

    ``nodes[name] = (x, y, text, kind)`` with ``(x, y)`` the box centre in axes
    coordinates (0..1) and ``kind`` one of :data:`NODE_STYLES`; ``edges`` are
    ``(from, to, label)``. An arrow leaves the bottom of its source box and
    enters the top of its target box when the target is lower, and goes side to
    side otherwise. Returns the text artists of the boxes, by name.
    """
    unknown = [k for _, _, _, k in nodes.values() if k not in NODE_STYLES]
    if unknown:
        raise ValueError(f"node kinds must be one of {sorted(NODE_STYLES)}, got {unknown[0]!r}")
    missing = [n for a, b, _ in edges for n in (a, b) if n not in nodes]
    if missing:
        raise ValueError(f"edges name nodes that do not exist: {sorted(set(missing))}")
    boxes = {}
    for name, (x, y, text, kind) in nodes.items():
        boxes[name] = ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, transform=ax.transAxes,
                              bbox=NODE_STYLES[kind], zorder=3)
    for a, b, label in edges:
        (xa, ya), (xb, yb) = nodes[a][:2], nodes[b][:2]
        if yb < ya - 0.05:  # downwards: bottom centre to top centre
            start, end = (0.5, 0.0), (0.5, 1.0)
        else:  # sideways
            start, end = ((1.0, 0.5), (0.0, 0.5)) if xb > xa else ((0.0, 0.5), (1.0, 0.5))
        ax.annotate("", xy=end, xycoords=boxes[b], xytext=start, textcoords=boxes[a],
                    arrowprops={"arrowstyle": "-|>", "color": "0.3", "shrinkA": 2, "shrinkB": 2}, zorder=2)
        if label:
            ax.text((xa + xb) / 2, (ya + yb) / 2, label, ha="center", va="center", fontsize=fontsize - 0.5,
                    style="italic", transform=ax.transAxes, zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"})
    ax.set_axis_off()
    return boxes
