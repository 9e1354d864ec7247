"""Training and scoring multi-task models.

* :func:`fit_multitask` — the one multi-task training loop; the method plugs
  into it as a small :class:`LossWeighting` object (:func:`method_step`): a loss weighting (``"equal"``, ``"uncertainty"``, ``"dwa"``,
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

    Accuracy up from 0.80 to 0.84 (+5 %) and an error up from 0.50 to 0.55
    (10 % worse) average to −2.5 %:

    >>> gain = delta_p({"digit": 0.84, "angle": 0.55}, {"digit": 0.80, "angle": 0.50},
    ...                {"digit": True, "angle": False})
    >>> round(gain, 6)
    -2.5
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
    step_loss: list[float] = field(default_factory=list)  # [step] sum of the task losses on the batch
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


class LossWeighting:
    """A multi-task method's part of each training step: descend ``sum_i w_i L_i`` with weights ``w``.

    :func:`fit_multitask` runs one loop for every method and calls these hooks:
    :meth:`start_epoch`, then per batch :meth:`backward` (which writes the
    gradients) and, after the optimizer's step, :meth:`after_step` when
    ``needs_losses_after`` is set; :meth:`weights` is what the history records.
    This base class is equal weighting; each method below changes one hook.
    """

    needs_gradients = False  # does backward need the task-gradient matrix G of the shared parameters?
    needs_losses_after = False  # does after_step need the batch's losses after the step?

    def __init__(self, num_tasks: int, device: torch.device) -> None:
        self.current = equal_weights(num_tasks).to(device)

    def parameters(self) -> list[nn.Parameter]:
        return []  # learned alongside the model (uncertainty weighting's s_i)

    def start_epoch(self, history: MultiTaskHistory) -> None:
        pass

    def loss(self, losses: torch.Tensor) -> torch.Tensor:
        return (self.current * losses).sum()

    def backward(self, losses: torch.Tensor, penalty: torch.Tensor | None, G: torch.Tensor | None) -> None:
        total = self.loss(losses)
        (total if penalty is None else total + penalty).backward()

    def after_step(self, losses: torch.Tensor, losses_after: torch.Tensor) -> None:
        pass

    def weights(self) -> torch.Tensor:
        return self.current

    def end_epoch(self, history: MultiTaskHistory) -> None:
        pass


class DynamicWeightAverage(LossWeighting):
    """DWA: each epoch's weights from the ratio of the last two epoch-average losses (``temperature``)."""

    def __init__(self, num_tasks: int, device: torch.device, temperature: float) -> None:
        super().__init__(num_tasks, device)
        self.device, self.temperature = device, temperature

    def start_epoch(self, history: MultiTaskHistory) -> None:
        if history.train_loss:
            self.current = dwa_weights(history.train_loss, self.temperature).to(self.device)


class GradNormWeighting(LossWeighting):
    """GradNorm: the weights move after each step towards balanced gradient norms on ``W`` (``alpha``)."""

    def __init__(self, num_tasks: int, device: torch.device, shared: list[nn.Parameter], alpha: float) -> None:
        super().__init__(num_tasks, device)
        self.device, self.gradnorm, self.W = device, GradNorm(num_tasks, alpha=alpha), _last_shared_weight(shared)

    def backward(self, losses, penalty, G) -> None:
        norms = torch.stack([torch.autograd.grad(loss, self.W, retain_graph=True)[0].norm() for loss in losses])
        self.current = self.gradnorm.weights.detach().to(self.device)
        super().backward(losses, penalty, G)
        self.gradnorm.update(losses, norms)


class FAMOWeighting(LossWeighting):
    """FAMO: weights from learned logits that move by how much each task's log-loss fell in the step."""

    needs_losses_after = True

    def __init__(self, num_tasks: int, device: torch.device) -> None:
        super().__init__(num_tasks, device)
        self.famo = FAMO(num_tasks)

    def backward(self, losses, penalty, G) -> None:
        self.current = self.famo.weights(losses)
        super().backward(losses, penalty, G)

    def after_step(self, losses: torch.Tensor, losses_after: torch.Tensor) -> None:
        self.famo.update(losses, losses_after)


class LearnedUncertainty(LossWeighting):
    """Uncertainty weighting: descends ``sum_i exp(-s_i) L_i + s_i``, the ``s_i`` learned with the model."""

    def __init__(self, num_tasks: int, device: torch.device) -> None:
        super().__init__(num_tasks, device)
        self.uncertainty = UncertaintyWeighting(num_tasks).to(device)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.uncertainty.parameters())

    def loss(self, losses: torch.Tensor) -> torch.Tensor:
        return self.uncertainty(losses)

    def weights(self) -> torch.Tensor:
        return torch.exp(-self.uncertainty.log_vars.detach())

    def end_epoch(self, history: MultiTaskHistory) -> None:
        history.log_vars.append(self.uncertainty.log_vars.detach().cpu().tolist())


class GradientCombination(LossWeighting):
    """A gradient method: the shared parameters get ``T`` times ``combine(G)``, the others ``grad sum_i L_i``."""

    needs_gradients = True

    def __init__(self, num_tasks: int, device: torch.device, combine, shared: list[nn.Parameter],
                 specific: list[nn.Parameter]) -> None:
        super().__init__(num_tasks, device)
        self.T, self.combine, self.shared, self.specific = num_tasks, combine, shared, specific

    def backward(self, losses, penalty, G) -> None:
        _write_combined_gradient(self.T * self.combine(G), losses, penalty, self.shared, self.specific)


def task_losses(outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], names: list[str],
                specs: list) -> torch.Tensor:
    """The vector of every task's loss on a batch, ``[L_1, ..., L_T]``, each from its :class:`TaskSpec`.

    >>> from mtl_course.multitask import TaskSpec
    >>> specs = [TaskSpec("digit", "classification", 2), TaskSpec("angle", "regression", 1)]
    >>> outputs = {"digit": torch.zeros(1, 2), "angle": torch.tensor([[1.0]])}
    >>> targets = {"digit": torch.tensor([0]), "angle": torch.tensor([[3.0]])}
    >>> [round(loss, 4) for loss in task_losses(outputs, targets, ["digit", "angle"], specs).tolist()]
    [0.6931, 4.0]
    """
    return torch.stack([spec.loss(outputs[n], targets[n]) for n, spec in zip(names, specs)])


def method_step(method: str, num_tasks: int, device: torch.device, shared: list[nn.Parameter],
                specific: list[nn.Parameter], *, c: float, alpha: float, temperature: float,
                order: torch.Generator) -> LossWeighting:
    """The :class:`LossWeighting` that makes ``method`` (one of :data:`METHODS`) in :func:`fit_multitask`."""
    combine = {"pcgrad": lambda G: pcgrad(G, generator=order), "mgda": mgda, "mgda_l2": mgda_l2,
               "cagrad": lambda G: cagrad(G, c=c), "imtl_g": imtl_g, "nash_mtl": nash_mtl,
               "aligned_mtl": aligned_mtl, "upgrad": upgrad, "rlw": lambda G: rlw(G, generator=order)}
    if method in combine:
        return GradientCombination(num_tasks, device, combine[method], shared, specific)
    weightings = {"equal": lambda: LossWeighting(num_tasks, device),
                  "uncertainty": lambda: LearnedUncertainty(num_tasks, device),
                  "dwa": lambda: DynamicWeightAverage(num_tasks, device, temperature),
                  "gradnorm": lambda: GradNormWeighting(num_tasks, device, shared, alpha),
                  "famo": lambda: FAMOWeighting(num_tasks, device)}
    return weightings[method]()


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
    max_steps: int | None = None,
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
    first epoch) is restored at the end; ``patience`` stops early, and
    ``max_steps`` stops after that many optimizer steps (``step_loss`` records
    ``sum_i L_i`` of every step's batch).
    ``record_cosine`` stores, per epoch, the mean cosine similarity of the task
    gradients on the shared parameters and how often each pair conflicted.
    """
    shared = _check_method(method, model)
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 (or None for whole epochs), got {max_steps}")
    device = device or next(model.parameters()).device
    names, specs = train.task_names, list(train.tasks.values())
    T = len(names)
    params = [p for p in model.parameters() if p.requires_grad]
    shared_ids = {id(p) for p in shared}
    specific = [p for p in params if id(p) not in shared_ids]
    step = method_step(method, T, device, shared, specific, c=c, alpha=alpha, temperature=temperature,
                       order=runtime.generator(seed))  # the generator draws PCGrad's orders and RLW's weights
    optimizer = torch.optim.Adam(params + step.parameters(), lr=lr, foreach=True)
    regularizer = getattr(model, "regularizer", None)
    loader = training.make_loader((train.X, torch.arange(len(train))), batch_size=batch_size, shuffle=True, seed=seed)
    history, best = MultiTaskHistory(), training.BestOnValidation()

    for epoch in runtime.progress(range(num_epochs), desc=desc or f"multi-task ({method})"):
        model.train()
        step.start_epoch(history)
        sums, count, weight_sum = torch.zeros(T), 0, torch.zeros(T)
        cosines = []
        for X, idx in loader:
            X = X.to(device)
            targets = {n: train.targets[n][idx].to(device) for n in names}
            losses = task_losses(model(X), targets, names, specs)
            penalty = regularizer() if regularizer is not None else None
            optimizer.zero_grad(set_to_none=True)
            G = task_gradient_matrix(losses, shared) if step.needs_gradients or (record_cosine and shared) else None
            step.backward(losses, penalty, G)
            optimizer.step()
            if step.needs_losses_after:
                with torch.no_grad():  # the same batch's losses after the step
                    after = task_losses(model(X), targets, names, specs)
                step.after_step(losses, after)
            history.step_loss.append(float(losses.detach().sum()))
            n = len(X)
            sums += losses.detach().cpu() * n
            count += n
            weight_sum += step.weights().cpu() * n
            if G is not None and record_cosine:
                cosines.append(gradient_cosine(G.detach()).cpu())
            if max_steps is not None and len(history.step_loss) >= max_steps:
                break
        history.train_loss.append((sums / count).tolist())
        history.weights.append((weight_sum / count).tolist())
        step.end_epoch(history)
        if cosines:
            history.cosine.append(torch.stack(cosines).mean(0).numpy())
            history.conflict.append((torch.stack(cosines) < 0).double().mean(0).numpy())
        done = max_steps is not None and len(history.step_loss) >= max_steps
        if val is None:
            if done:
                break
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
        if done:
            break
    best.restore(model.load_state_dict)
    return history
