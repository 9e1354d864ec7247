"""Pairwise fusions of transfer, multi-task and meta-learning (Chapter 7).

Small helpers that put the modules of the earlier chapters together; each is
named after what the chapter does with it:

* multi-task transfer learning by feature extraction: :func:`encode_inputs`
  runs a frozen pre-trained encoder once and returns the same multi-task set
  with its features in place of the inputs, and :func:`task_heads` gives every
  task its head (the review's pharmacokinetics example: one pre-trained
  representation, several related predictions);
* multi-task meta-learning: :func:`kind_view` and :func:`multitask_meta_objective`
  meta-learn one shared body and one head initialisation per *kind* of task
  over a task distribution that mixes kinds; :func:`multitask_meta_train` is
  its outer loop;
* multi-task learning proper on fixed regression tasks, the setting that
  "multi-task" meta-training is often confused with: :func:`function_tasks_set`
  turns a list of functions into a multi-task set with one task per function;
* serving a task that a multi-task model was not trained on:
  :func:`existing_head_scores` (borrow the best existing head, no training) and
  :func:`new_head_scores` (train a new head on the frozen shared trunk);
* :data:`ROLES` and :func:`plot_roles`: which part of the network is
  pre-trained, shared, meta-learned or task-specific in each paradigm and fusion.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import meta
from .data import Episode
from .data.function_families import FunctionFamilies, FunctionTask
from .multitask import MultiTaskSet, TaskSpec, TaskView, make_head


def task_heads(tasks: Mapping[str, TaskSpec], in_features: int, hidden: int | None = None) -> dict[str, nn.Module]:
    """One head per task, of the task's kind (:func:`~mtl_course.multitask.make_head`), on ``in_features`` features."""
    if not tasks:
        raise ValueError("task_heads needs at least one task")
    return {name: make_head(spec.kind, in_features, spec.out, hidden) for name, spec in tasks.items()}


@torch.no_grad()
def encode_inputs(encoder: nn.Module, data: MultiTaskSet, batch_size: int = 512) -> MultiTaskSet:
    """The same multi-task set with ``encoder(X)`` (a frozen pre-trained encoder's features) in place of ``X``.

    Feature extraction for multi-task transfer learning: the encoder runs once,
    in evaluation mode; every task's target, the class and drawing indices stay
    as they were, so :meth:`~mtl_course.multitask.MultiTaskSet.split` and the
    multi-task training loop work unchanged on the features.
    """
    if len(data) == 0:
        raise ValueError("cannot encode an empty multi-task set")
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    try:
        features = torch.cat([encoder(data.X[i : i + batch_size].to(device)).flatten(1).cpu()
                              for i in range(0, len(data), batch_size)])
    finally:
        encoder.train(was_training)
    return MultiTaskSet(features, dict(data.targets), dict(data.tasks), data.groups, data.drawings, dict(data.info))


def function_tasks_set(tasks: Sequence[FunctionTask], families: FunctionFamilies, points_per_task: int) -> MultiTaskSet:
    """Multi-task learning proper on fixed regression tasks: task ``f{i}`` is to predict ``tasks[i](x)``.

    Each task gets ``points_per_task`` inputs drawn by ``families``; an input is
    labelled for its own task only (NaN for the others), so a shared trunk sees
    every task's points and each head only its own. ``groups`` holds the task
    index of every row.
    """
    if not tasks or points_per_task < 1:
        raise ValueError(f"need at least one task and points_per_task >= 1, got {len(tasks)} and {points_per_task}")
    inputs = [families.sample_inputs(points_per_task) for _ in tasks]
    X = torch.cat(inputs)
    owner = torch.arange(len(tasks)).repeat_interleave(points_per_task)
    targets = {}
    for i, (task, x) in enumerate(zip(tasks, inputs)):
        y = torch.full((len(X),), float("nan"), dtype=X.dtype)
        y[owner == i] = task(x).squeeze(1)
        targets[f"f{i}"] = y
    specs = {name: TaskSpec(name, "regression", 1) for name in targets}
    drawings = torch.arange(points_per_task).repeat(len(tasks))
    return MultiTaskSet(X, targets, specs, groups=owner, drawings=drawings,
                        info={"tasks": list(tasks), "kinds": [t.kind for t in tasks]})


def kind_view(model: nn.Module, kind: str) -> tuple[TaskView, list[str]]:
    """One kind's view of a multi-head model, and the names of the parameters its tasks adapt.

    ``model`` maps inputs to ``{kind: output}`` with a shared ``trunk`` and one
    head per kind (a :class:`~mtl_course.multitask.HardSharing` network). The
    view outputs that kind's head only; a task of this kind adapts the shared
    trunk and its kind's head, never the other heads.
    """
    heads = getattr(model, "heads", None)
    if heads is None or kind not in heads or not hasattr(model, "trunk"):
        raise ValueError(f"kind_view needs a model with a `trunk` and a head named {kind!r} in `heads`")
    view = TaskView(model, kind)
    keys = [name for name, p in view.named_parameters()
            if p.requires_grad and (name.startswith("model.trunk.") or name.startswith(f"model.heads.{kind}."))]
    return view, keys


def multitask_meta_objective(model: nn.Module, batches: Mapping[str, Sequence[Episode]], *,
                             inner: meta.InnerLoop = meta.InnerLoop(), **meta_kwargs) -> torch.Tensor:
    """The multi-task meta-objective: the mean over kinds ``k`` of MAML's outer objective on ``batches[k]``.

    .. math:: \\min_{\\theta_{sh}, \\{\\theta_k\\}} \\frac{1}{|K|} \\sum_k \\frac{1}{T}\\sum_{i=1}^{T}
              \\mathcal{L}\\big(\\phi_i(\\theta_{sh}, \\theta_k), D_i^{query}\\big),

    where each task ``i`` of kind ``k`` adapts the shared body ``θ_sh`` and its
    kind's head ``θ_k`` on its support set (:func:`mtl_course.meta.meta_objective`
    on :func:`kind_view`, through :func:`mtl_course.meta.multitask_meta_objective`, which
    Chapter 8's M3TL shares). Every kind runs the inner loop ``inner`` on its
    own parameters (``adapt_keys`` of its view); ``meta_kwargs`` go to
    ``meta_objective`` (``loss_fn``, ``backend``).
    """
    return _kinds_objective(model, batches, inner, **meta_kwargs)[0]


def _kinds_objective(model: nn.Module, batches: Mapping[str, Sequence[Episode]],
                     inner: meta.InnerLoop = meta.InnerLoop(), **meta_kwargs) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`multitask_meta_objective` and each kind's mean query loss."""
    views = {kind: kind_view(model, kind) for kind in batches}
    return meta.multitask_meta_objective(
        {kind: (view, batches[kind], {"inner": replace(inner, adapt_keys=keys), **meta_kwargs})
         for kind, (view, keys) in views.items()},
        reduction="mean")


def multitask_meta_train(model: nn.Module, sample_batches: Callable[[], Mapping[str, Sequence[Episode]]], *,
                         outer_steps: int, meta_lr: float = 1e-3, desc: str = "multi-task meta-training",
                         **meta_kwargs) -> list[float]:
    """Adam on :func:`multitask_meta_objective` for ``outer_steps`` outer steps; returns the meta-loss of each step.

    ``sample_batches()`` returns ``{kind: meta-batch}`` (e.g. a few episodes of
    every kind); ``meta_kwargs`` (``inner``, ``loss_fn``, ...) go to
    :func:`multitask_meta_objective`. The loop is :func:`mtl_course.meta.meta_train`'s.
    """
    def objective(batches: Mapping[str, Sequence[Episode]]) -> tuple[torch.Tensor, dict[str, float]]:
        return _kinds_objective(model, batches, **meta_kwargs)

    return meta.meta_train(model, sample_batches, objective=objective, outer_steps=outer_steps, meta_lr=meta_lr,
                           desc=desc).loss


@torch.no_grad()
def existing_head_scores(model: nn.Module, episodes: Sequence[Episode]) -> meta.EpisodeScores:
    """Query MSE on unseen regression tasks when a multi-task model may only **reuse** its heads.

    ``model`` maps inputs to ``{task: output}`` (e.g. a
    :class:`~mtl_course.multitask.HardSharing` network). For each episode the
    head with the lowest support MSE is picked, with no training, and scored on
    the query set: mean ± 95 % CI over episodes.
    """
    if len(episodes) < 2:
        raise ValueError("existing_head_scores needs at least two episodes for a confidence interval")
    device = next(model.parameters()).device
    model.eval()
    values = []
    for e in episodes:
        support = model(e.support_X.to(device))
        target = e.support_y.reshape(-1).to(device)
        best = min(support, key=lambda name: F.mse_loss(support[name].reshape(-1), target).item())
        query = model(e.query_X.to(device))[best].reshape(-1)
        values.append(F.mse_loss(query, e.query_y.reshape(-1).to(device)).item())
    return meta.EpisodeScores.from_values(values)


@torch.no_grad()
def feature_episodes(trunk: nn.Module, episodes: Sequence[Episode]) -> list[Episode]:
    """The episodes with ``trunk(X)`` in place of the support and query inputs (the trunk stays frozen)."""
    device = next(trunk.parameters()).device
    trunk.eval()
    return [Episode(trunk(e.support_X.to(device)).flatten(1), e.support_y.to(device),
                    trunk(e.query_X.to(device)).flatten(1), e.query_y.to(device), list(e.classes), dict(e.info))
            for e in episodes]


def new_head_scores(trunk: nn.Module, episodes: Sequence[Episode], inner_lr: float, inner_steps: int,
                    out_features: int = 1) -> meta.EpisodeScores:
    """Query MSE on unseen regression tasks when each gets a **new** linear head on the frozen shared ``trunk``.

    The head starts at zero and takes ``inner_steps`` gradient steps of size
    ``inner_lr`` on the support MSE (:func:`mtl_course.meta.adapt` on the
    trunk's features, without meta-learning); mean ± 95 % CI over episodes.
    """
    features = feature_episodes(trunk, episodes)
    dim = features[0].support_X.shape[1]
    head = nn.Linear(dim, out_features).to(features[0].support_X.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return meta.evaluate_episodes(head, features, method="maml", inner=meta.InnerLoop(inner_lr, inner_steps),
                                  loss_fn=F.mse_loss, metric=None)


PARTS = ("encoder", "shared body", "task heads")
"""The parts of a network that :data:`ROLES` describes, from input to output."""

ROLE_COLOURS = {
    "pre-trained on a source task": "#6baed6",
    "pre-trained, modulated by meta-learned SS": "#c6dbef",
    "shared by the training tasks": "#74c476",
    "meta-learned initialisation, adapted per new task": "#fd8d3c",
    "one meta-learned initialisation per kind of task": "#fdd0a2",
    "one per task, trained with the tasks": "#bcbddc",
    "trained on the target task": "#d9d9d9",
    "absent": "#ffffff",
}
"""The roles a part can play, and the colour :func:`plot_roles` gives each."""

ROLES: dict[str, dict[str, str]] = {
    "transfer learning (Ch. 2)": {
        "encoder": "pre-trained on a source task", "shared body": "absent",
        "task heads": "trained on the target task"},
    "multi-task learning (Ch. 3)": {
        "encoder": "shared by the training tasks", "shared body": "shared by the training tasks",
        "task heads": "one per task, trained with the tasks"},
    "meta-learning (Ch. 4)": {
        "encoder": "meta-learned initialisation, adapted per new task",
        "shared body": "meta-learned initialisation, adapted per new task",
        "task heads": "meta-learned initialisation, adapted per new task"},
    "multi-task meta-learning (7.1)": {
        "encoder": "meta-learned initialisation, adapted per new task",
        "shared body": "meta-learned initialisation, adapted per new task",
        "task heads": "one meta-learned initialisation per kind of task"},
    "multi-task transfer learning (7.2)": {
        "encoder": "pre-trained on a source task", "shared body": "shared by the training tasks",
        "task heads": "one per task, trained with the tasks"},
    "meta-transfer learning (Ch. 5)": {
        "encoder": "pre-trained, modulated by meta-learned SS", "shared body": "absent",
        "task heads": "meta-learned initialisation, adapted per new task"},
}
"""For each paradigm and pairwise fusion, the role of each part in :data:`PARTS`, as the course builds them.

Multi-task meta-learning differs from meta-learning in its heads: one
meta-learned head initialisation per kind of task (Section 7.1), where MAML
has one for all tasks; a new task adapts the one of its kind.
"""


def plot_roles(ax=None, roles: Mapping[str, Mapping[str, str]] = ROLES):
    """A grid with one row per paradigm or fusion and one column per part, coloured by the part's role."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    unknown = {role for row in roles.values() for role in row.values()} - set(ROLE_COLOURS)
    if unknown:
        raise ValueError(f"unknown role(s) {sorted(unknown)}; use one of {list(ROLE_COLOURS)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 0.55 * len(roles) + 1.5))
    names = list(roles)
    for i, name in enumerate(names):
        for j, part in enumerate(PARTS):
            role = roles[name].get(part, "absent")
            ax.add_patch(Rectangle((j, len(names) - 1 - i), 0.95, 0.9, facecolor=ROLE_COLOURS[role],
                                   edgecolor="black" if role != "absent" else "#bbbbbb",
                                   linestyle="-" if role != "absent" else ":"))
    ax.set_xlim(-0.05, len(PARTS))
    ax.set_ylim(-0.1, len(names))
    ax.set_xticks([j + 0.475 for j in range(len(PARTS))], PARTS)
    ax.xaxis.tick_top()
    ax.set_yticks([len(names) - 1 - i + 0.45 for i in range(len(names))], names)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.legend(handles=[Patch(facecolor=c, edgecolor="black", label=r) for r, c in ROLE_COLOURS.items()],
              loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, fontsize=8, frameon=False)
    return ax
