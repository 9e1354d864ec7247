"""Training and scoring multi-task models.

* :func:`fit_multitask` — the one multi-task training loop, parameterised by
  the method: a loss weighting (``"equal"``, ``"uncertainty"``, ``"dwa"``,
  ``"gradnorm"``) or a gradient combination (``"pcgrad"``, ``"mgda"``,
  ``"cagrad"``, ``"imtl_g"``, ``"nash_mtl"``, ``"aligned_mtl"``, ``"upgrad"``,
  ``"rlw"``; :mod:`~mtl_course.multitask.gradients`) applied to the shared parameters;
* :func:`fit_single_task` — a single-task baseline, trained with the package's
  ordinary loop :func:`mtl_course.training.fit`;
* :func:`evaluate_multitask` and :func:`delta_p` — per-task metrics and the
  average relative gain over the single-task baselines.

Model selection uses validation data only: the epoch with the best validation
``delta_p`` against the single-task baselines' *validation* metrics is kept.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
from torch import nn

from .. import runtime, training
from .data import MultiTaskSet
from .gradients import (aligned_mtl, cagrad, gradient_cosine, imtl_g, mgda, mgda_l2, nash_mtl, pcgrad, rlw,
                        task_gradient_matrix, upgrad, write_gradient)
from .weighting import FAMO, GradNorm, UncertaintyWeighting, dwa_weights, equal_weights

WEIGHTINGS = ("equal", "uncertainty", "dwa", "gradnorm", "famo")
GRADIENT_METHODS = ("pcgrad", "mgda", "mgda_l2", "cagrad", "imtl_g", "nash_mtl", "aligned_mtl", "upgrad", "rlw")
METHODS = WEIGHTINGS + GRADIENT_METHODS


class TaskView(nn.Module):
    """One task's output of a multi-task model, so that single-task tools (``training.fit``) apply to it."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[self.task]


def delta_p(metrics: Mapping[str, float], baseline: Mapping[str, float], higher_is_better: Mapping[str, bool]) -> float:
    """The multi-task gain Δp in percent (Maninis et al., 2019; Vandenhende et al., 2021).

    ``Δp = (1/T) sum_t (-1)^{l_t} (M_t - M_STL,t) / M_STL,t * 100``, where
    ``l_t = 1`` if lower is better for task ``t``: positive when the multi-task
    model beats the single-task baselines on average.
    """
    names = list(baseline)
    if set(metrics) != set(names) or set(higher_is_better) != set(names):
        raise ValueError(f"metrics {sorted(metrics)}, baseline {sorted(names)} and higher_is_better "
                         f"{sorted(higher_is_better)} must name the same tasks")
    terms = []
    for t in names:
        if baseline[t] == 0:
            raise ValueError(f"the baseline metric of task {t!r} is 0: Δp is relative and needs a nonzero baseline")
        sign = 1.0 if higher_is_better[t] else -1.0
        terms.append(sign * (metrics[t] - baseline[t]) / baseline[t])
    return float(100.0 * np.mean(terms))


@torch.no_grad()
def evaluate_multitask(model: nn.Module, data: MultiTaskSet, batch_size: int = 512) -> dict[str, float]:
    """Each task's metric (accuracy, or mean absolute error) on its labelled examples of ``data``.

    One forward pass in evaluation mode serves all tasks.
    """
    device = next(model.parameters()).device
    model.eval()
    chunks = [model(data.X[i : i + batch_size].to(device)) for i in range(0, len(data), batch_size)]
    if not chunks:
        raise ValueError("cannot evaluate on an empty data set")
    return {name: spec.metric(torch.cat([c[name] for c in chunks]).cpu(), data.targets[name])
            for name, spec in data.tasks.items()}


def fit_single_task(model: nn.Module, train: MultiTaskSet, val: MultiTaskSet | None, task: str,
                    **fit_kwargs) -> training.History:
    """Train ``model`` (whose outputs include ``task``) on that task alone with :func:`mtl_course.training.fit`.

    The loss, metric and direction of improvement come from the task's
    :class:`~mtl_course.multitask.data.TaskSpec`; ``fit_kwargs`` go to ``fit``
    (``num_epochs``, ``lr``, ``batch_size``, ``patience``, ``seed``, ...).
    """
    spec = train.tasks[task]
    return training.fit(TaskView(model, task), train.for_task(task), None if val is None else val.for_task(task),
                        loss_fn=spec.loss, metric=spec.metric, higher_is_better=spec.higher_is_better,
                        desc=fit_kwargs.pop("desc", f"single task: {task}"), **fit_kwargs)


@dataclass
class MultiTaskHistory:
    """Per-epoch record of :func:`fit_multitask`."""

    train_loss: list[list[float]] = field(default_factory=list)  # [epoch][task] mean training loss
    val_metrics: list[dict[str, float]] = field(default_factory=list)
    val_score: list[float] = field(default_factory=list)  # validation Δp (vs the baseline, or vs epoch 1)
    weights: list[list[float]] = field(default_factory=list)  # [epoch][task] loss weights (weightings only)
    cosine: list[np.ndarray] = field(default_factory=list)  # [epoch] mean task-gradient cosine matrix
    conflict: list[np.ndarray] = field(default_factory=list)  # [epoch] fraction of steps with cosine < 0
    log_vars: list[list[float]] = field(default_factory=list)  # [epoch][task] s_i of uncertainty weighting
    best_epoch: int | None = None
    stopped_early: bool = False


def _last_shared_weight(shared: list[nn.Parameter]) -> list[nn.Parameter]:
    """GradNorm's ``W``: the last shared weight matrix (or tensor with >= 2 dimensions)."""
    for p in reversed(shared):
        if p.dim() >= 2:
            return [p]
    raise ValueError("GradNorm needs a shared layer with a weight matrix; this model shares none")


def _write_combined_gradient(direction: torch.Tensor, losses: torch.Tensor, penalty: torch.Tensor | None,
                             shared: list[nn.Parameter], specific: list[nn.Parameter]) -> None:
    """Shared parameters get ``direction`` (plus the penalty's gradient); the others get that of ``sum_i L_i``."""
    total = losses.sum()
    if penalty is not None:
        total = total + penalty
        extra = torch.autograd.grad(penalty, shared, retain_graph=True, allow_unused=True)
        direction = direction + torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                           for g, p in zip(extra, shared)])
    if specific:
        total.backward(inputs=specific)
    write_gradient(shared, direction)


def _check_method(method: str, model: nn.Module) -> list[nn.Parameter]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    shared = list(model.shared_parameters()) if hasattr(model, "shared_parameters") else []
    if (method in GRADIENT_METHODS or method == "gradnorm") and not shared:
        raise ValueError(f"{method!r} acts on shared parameters, and this model has none "
                         "(soft sharing shares nothing): use a weighting such as 'equal'")
    return shared


def fit_multitask(
    model: nn.Module,
    train: MultiTaskSet,
    val: MultiTaskSet | None = None,
    *,
    method: str = "equal",
    num_epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 64,
    patience: int | None = None,
    baseline: Mapping[str, float] | None = None,
    c: float = 0.5,
    alpha: float = 1.5,
    temperature: float = 2.0,
    record_cosine: bool = False,
    seed: int = 0,
    device: torch.device | None = None,
    desc: str | None = None,
) -> MultiTaskHistory:
    """Train a multi-task ``model`` (outputs a dict per task) on ``train`` with one weighting or gradient method.

    Each step computes every task's loss ``L_i`` on the batch, then

    * ``"equal"``: descends ``sum_i L_i``;
    * ``"uncertainty"``: descends ``sum_i exp(-s_i) L_i + s_i`` with learned
      ``s_i`` (:func:`~mtl_course.multitask.weighting.uncertainty_weighted_loss`);
    * ``"dwa"``: descends ``sum_i w_i L_i`` with Dynamic Weight Average weights
      (``temperature``), recomputed each epoch from the epoch-average losses;
    * ``"gradnorm"``: descends ``sum_i w_i L_i`` and moves ``w`` by GradNorm (``alpha``);
    * ``"famo"``: descends ``sum_i w_i L_i`` with FAMO's weights, whose logits
      move after each step by how much each task's log-loss fell on the batch
      (:class:`~mtl_course.multitask.weighting.FAMO`; one more forward pass a step);
    * ``"pcgrad"``, ``"mgda"``, ``"mgda_l2"``, ``"cagrad"`` (``c``), ``"imtl_g"``,
      ``"nash_mtl"``, ``"aligned_mtl"``, ``"upgrad"``, ``"rlw"``: builds the
      task-gradient matrix ``G`` of the shared parameters, writes ``T`` times
      the combined direction into their gradients (``T`` so that equal
      weighting would give the gradient of ``sum_i L_i``; Nash-MTL's direction
      has a scale of its own), and gives the task-specific parameters the
      gradient of ``sum_i L_i`` (each head only sees its own loss).

    A model's ``regularizer()`` (soft sharing's penalty) is added to the loss.
    Adam with learning rate ``lr`` updates the model (and ``s_i``). With
    ``val``, the epoch with the best validation Δp against ``baseline`` (the
    single-task models' validation metrics; without one, against this run's
    first epoch) is restored at the end; ``patience`` stops early.
    ``record_cosine`` stores, per epoch, the mean cosine similarity of the task
    gradients on the shared parameters and how often each pair conflicted.
    """
    shared = _check_method(method, model)
    device = device or next(model.parameters()).device
    names, specs = train.task_names, list(train.tasks.values())
    T = len(names)
    params = [p for p in model.parameters() if p.requires_grad]
    shared_ids = {id(p) for p in shared}
    specific = [p for p in params if id(p) not in shared_ids]
    uncertainty = UncertaintyWeighting(T).to(device) if method == "uncertainty" else None
    gradnorm = GradNorm(T, alpha=alpha) if method == "gradnorm" else None
    gradnorm_W = _last_shared_weight(shared) if gradnorm else []
    famo = FAMO(T) if method == "famo" else None
    optimizer = torch.optim.Adam(params + (list(uncertainty.parameters()) if uncertainty else []), lr=lr, foreach=True)
    order = runtime.generator(seed)  # PCGrad's random task orders
    combine = {"pcgrad": lambda G: pcgrad(G, generator=order), "mgda": mgda, "mgda_l2": mgda_l2,
               "cagrad": lambda G: cagrad(G, c=c), "imtl_g": imtl_g, "nash_mtl": nash_mtl,
               "aligned_mtl": aligned_mtl, "upgrad": upgrad, "rlw": lambda G: rlw(G, generator=order)}.get(method)
    regularizer = getattr(model, "regularizer", None)
    loader = training.make_loader((train.X, torch.arange(len(train))), batch_size=batch_size, shuffle=True, seed=seed)
    history, best = MultiTaskHistory(), training.BestOnValidation()
    weights = equal_weights(T).to(device)

    for epoch in runtime.progress(range(num_epochs), desc=desc or f"multi-task ({method})"):
        model.train()
        if method == "dwa":
            weights = dwa_weights(history.train_loss, temperature).to(device) if history.train_loss else weights
        sums, count, weight_sum = torch.zeros(T), 0, torch.zeros(T)
        cosines = []
        for X, idx in loader:
            X = X.to(device)
            outputs = model(X)
            targets = {n: train.targets[n][idx].to(device) for n in names}
            losses = torch.stack([spec.loss(outputs[n], targets[n]) for n, spec in zip(names, specs)])
            penalty = regularizer() if regularizer is not None else None
            optimizer.zero_grad(set_to_none=True)
            G = task_gradient_matrix(losses, shared) if (method in GRADIENT_METHODS or (record_cosine and shared)) else None
            if combine is not None:
                _write_combined_gradient(T * combine(G), losses, penalty, shared, specific)
            else:
                if method == "gradnorm":
                    norms = torch.stack([torch.autograd.grad(loss, gradnorm_W, retain_graph=True)[0].norm() for loss in losses])
                    weights = gradnorm.weights.detach().to(device)
                if famo is not None:
                    weights = famo.weights(losses)
                total = uncertainty(losses) if uncertainty is not None else (weights * losses).sum()
                (total if penalty is None else total + penalty).backward()
                if gradnorm is not None:
                    gradnorm.update(losses, norms)
            optimizer.step()
            if famo is not None:
                with torch.no_grad():  # the same batch's losses after the step
                    outputs = model(X)
                    after = torch.stack([spec.loss(outputs[n], targets[n]) for n, spec in zip(names, specs)])
                famo.update(losses, after)
            n = len(X)
            sums += losses.detach().cpu() * n
            count += n
            weight_sum += (torch.exp(-uncertainty.log_vars.detach()) if uncertainty is not None else weights).cpu() * n
            if G is not None and record_cosine:
                cosines.append(gradient_cosine(G.detach()).cpu())
        history.train_loss.append((sums / count).tolist())
        history.weights.append((weight_sum / count).tolist())
        if uncertainty is not None:
            history.log_vars.append(uncertainty.log_vars.detach().cpu().tolist())
        if cosines:
            history.cosine.append(torch.stack(cosines).mean(0).numpy())
            history.conflict.append((torch.stack(cosines) < 0).double().mean(0).numpy())
        if val is None:
            continue
        metrics = evaluate_multitask(model, val)
        history.val_metrics.append(metrics)
        reference = baseline if baseline is not None else history.val_metrics[0]
        score = delta_p(metrics, {n: reference[n] for n in names}, val.higher_is_better)
        history.val_score.append(score)
        if best.update(score, epoch, lambda: copy.deepcopy(model.state_dict())):
            history.best_epoch = epoch
        elif patience is not None and best.since >= patience:
            history.stopped_early = True
            break
    best.restore(model.load_state_dict)
    return history
