"""Training M3TL by composing the earlier chapters' loops.

* :func:`fit_joint` -- single-level multi-task training of all heads at once
  (:func:`mtl_course.multitask.fit_multitask`): the MTL reduction, Fig. 8a;
* :func:`meta_train` -- bi-level meta-training over source tasks of several
  kinds (review Eqs. 5-6): for each kind, :func:`mtl_course.meta.meta_objective`
  adapts on the support sets and scores the query sets; the kinds' meta-losses
  are summed into one outer step;
* :func:`meta_test` -- adapt a (new) head, and optionally more, to each test
  episode (Eq. 7) with :func:`mtl_course.meta.evaluate_episodes`;
* :func:`fit_task` and :func:`transfer_to_target` -- single-level training of
  one task with :mod:`mtl_course.transfer` (the transfer reduction, Fig. 8c,
  and the two cases of Fig. 7);
* :func:`adaptation_updates` and :func:`pairwise_cosine` -- what adaptation
  changes, part by part (question Q3).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import meta, runtime, transfer
from ..data import Episode
from ..data.multimodal import MultiModalSet
from ..metrics import mean_absolute_error  # noqa: F401  (still importable as m3tl.mean_absolute_error)
from ..models import params_of
from ..multitask import MultiTaskSet, fit_multitask
from ..multitask.data import KIND_LOSS, KIND_METRIC, TaskSpec
from ..training import History
from .network import M3TLNet, TaskNet

Sampler = Callable[[], Sequence[Episode]]


def task_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The episode loss of a head kind (:data:`~mtl_course.multitask.data.KIND_LOSS`): cross-entropy or MSE."""
    if kind not in KIND_LOSS:
        raise ValueError(f"unknown task kind {kind!r}")
    return KIND_LOSS[kind]


def task_metric(kind: str) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """Accuracy for classification, mean absolute error otherwise (:data:`~mtl_course.multitask.data.KIND_METRIC`)."""
    task_loss(kind)
    return KIND_METRIC[kind]


@contextmanager
def _kept_requires_grad(net: nn.Module) -> Iterator[None]:
    """Restore every parameter's ``requires_grad`` afterwards (transfer functions freeze and unfreeze)."""
    flags = [(p, p.requires_grad) for p in net.parameters()]
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------
# Single-level training: MTL (Fig. 8a) and transfer (Fig. 8c, Fig. 7)
# ---------------------------------------------------------------------------


def multitask_set(net: M3TLNet, data: MultiModalSet, tasks: Sequence[str] | None = None) -> MultiTaskSet:
    """``data`` as a :class:`~mtl_course.multitask.MultiTaskSet` for the network's modalities and heads."""
    names = net.task_names if tasks is None else list(tasks)
    missing = [t for t in names if t not in data.targets]
    if missing:
        raise ValueError(f"the data have no targets for task(s) {missing}; they have {list(data.targets)}")
    return MultiTaskSet(data.packed(net.modalities), {t: data.targets[t] for t in names},
                        {t: net.specs[t] for t in names}, groups=data.classes, drawings=data.drawings)


def fit_joint(net: M3TLNet, train: MultiModalSet, val: MultiModalSet | None = None, **fit_kwargs):
    """Train all heads together, single-level (the MTL reduction, Fig. 8a), with :func:`multitask.fit_multitask`.

    ``fit_kwargs`` go to ``fit_multitask`` (``method``, ``num_epochs``, ``lr``, ``batch_size``, ``seed``, ...).
    """
    if net.config.meta:
        raise ValueError(f"this configuration (reduction {net.config.reduction!r}) meta-trains; fit_joint is the "
                         "single-level training of the MTL reduction: use meta_train, or reduce(config, 'mtl')")
    return fit_multitask(net, multitask_set(net, train), None if val is None else multitask_set(net, val), **fit_kwargs)


def _xy(view: TaskNet, data) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, MultiModalSet):
        return data.packed(view.net.modalities), data.targets[view.task]
    return data


def fit_task(net: M3TLNet, task: str, train, val=None, *, lr: float = 1e-3, factor: float = 1.0,
             **fit_kwargs) -> History:
    """Single-level training of one task through :mod:`mtl_course.transfer` (the transfer reduction, Fig. 8c).

    Everything that learns (every part but frozen encoders) is trained: with a
    linear probe (:func:`transfer.linear_probe`, features cached) when only the
    head learns, full fine-tuning (:func:`transfer.fine_tune`) when every block
    learns, and :func:`transfer.fit_layerwise` otherwise. Loss and metric come
    from the task's kind. ``train``/``val`` are ``MultiModalSet`` or ``(X, y)``.
    """
    view = net.task_net(task)
    kind = view.spec.kind
    fit_kwargs.setdefault("loss_fn", task_loss(kind))
    fit_kwargs.setdefault("metric", task_metric(kind))
    fit_kwargs.setdefault("higher_is_better", kind == "classification")
    train, val = _xy(view, train), None if val is None else _xy(view, val)
    learning = [name for name in transfer.layer_names(view)
                if any(p.requires_grad for p in view.get_submodule(name).parameters())]
    if "head" not in learning:
        raise ValueError(f"the head of task {task!r} is frozen; nothing would learn it")
    with _kept_requires_grad(net):
        if learning == ["head"]:
            return transfer.linear_probe(view, train, val, lr=lr, **fit_kwargs)
        if learning == transfer.layer_names(view):
            return transfer.fine_tune(view, train, val, lr=lr, factor=factor, **fit_kwargs)
        transfer.train_only(view, learning)
        return transfer.fit_layerwise(view, train, val, lr=lr, factor=factor, **fit_kwargs)


def transfer_to_target(net: M3TLNet, spec: TaskSpec, train, val=None, *, case: int, seed: int = 0,
                       **fit_kwargs) -> tuple[TaskNet, History]:
    """The single-input variant of Fig. 7 on a target task: a new head, then case 1 or case 2.

    * ``case=1``: the trained network is a **frozen feature extractor**; only
      the new head learns (:func:`transfer.linear_probe`);
    * ``case=2``: the network is **fine-tuned** for the target, starting from
      its trained weights (:func:`transfer.fine_tune`; frozen encoders stay frozen).

    The network's own flags are restored afterwards. ``fit_kwargs`` go to
    :func:`fit_task` (``lr``, ``num_epochs``, ``batch_size``, ``seed``, ...).
    """
    if case not in (1, 2):
        raise ValueError(f"Fig. 7 has case 1 (feature extractor) and case 2 (fine-tuning), got case={case!r}")
    view = net.add_task(spec, seed=seed)
    with _kept_requires_grad(net):
        if case == 1:
            transfer.train_only(view, ["head"])
        history = fit_task(net, spec.name, train, val, seed=seed, **fit_kwargs)
    return view, history


# ---------------------------------------------------------------------------
# Bi-level meta-training and meta-testing (Eqs. 5-7)
# ---------------------------------------------------------------------------


def _per_task(value: meta.InnerLoop | Mapping[str, meta.InnerLoop], tasks: Sequence[str],
              what: str) -> dict[str, meta.InnerLoop]:
    if isinstance(value, Mapping):
        missing = [t for t in tasks if t not in value]
        if missing:
            raise ValueError(f"{what} gives no value for task(s) {missing}")
        return {t: value[t] for t in tasks}
    return {t: value for t in tasks}


def meta_train(
    net: M3TLNet,
    samplers: Mapping[str, Sampler],
    *,
    outer_steps: int = 300,
    meta_lr: float = 1e-3,
    inner: meta.InnerLoop | Mapping[str, meta.InnerLoop] = meta.InnerLoop(),
    inner_parts: str | Sequence[str] = "all",
    backend: str = "vmap",
    val_episodes: Mapping[str, Sequence[Episode]] | None = None,
    eval_every: int = 50,
    desc: str = "meta-training M3TL",
    checkpoint: runtime.Checkpoint | None = None,
) -> meta.MetaHistory:
    """Bi-level meta-training over source tasks of different kinds (review Eqs. 5-6).

    ``samplers[task]()`` returns a meta-batch of that task's episodes. In each
    outer step, for every task, :func:`mtl_course.meta.meta_objective` adapts
    ``inner_parts`` of the task's path (``"all"``, ``"head"``, ...) on each
    support set with the inner loop ``inner`` (a :class:`mtl_course.meta.InnerLoop`,
    or one per task) and scores the query set; the tasks' meta-losses are summed and one
    Adam step (``meta_lr``) updates everything that learns -- encoders that are
    not frozen, fusion, backbone and every head. With ``val_episodes`` the
    state with the lowest summed validation query loss is kept (checked every
    ``eval_every`` steps). With a single source task this is exactly
    :func:`mtl_course.meta.meta_train` (MAML on that task's path). With
    ``checkpoint`` a stopped run resumes where it stopped, as
    :func:`mtl_course.meta.meta_train`'s does (every sampler replayed).
    """
    if not net.config.meta:
        raise ValueError(f"this configuration (reduction {net.config.reduction!r}) has no meta-optimisation "
                         "(review Fig. 8); train it with fit_joint or fit_task")
    if outer_steps < 1:
        raise ValueError(f"outer_steps must be >= 1, got {outer_steps}")
    if not samplers:
        raise ValueError("meta_train needs at least one source task sampler")
    views = {t: net.task_net(t) for t in samplers}
    inner_of = {t: replace(loop, adapt_keys=views[t].keys(inner_parts))
                for t, loop in _per_task(inner, list(views), "inner").items()}

    def objective(batches: Mapping[str, Sequence[Episode]]) -> tuple[torch.Tensor, dict[str, float]]:
        return meta.multitask_meta_objective(
            {t: (view, batches[t], {"loss_fn": task_loss(view.spec.kind), "inner": inner_of[t], "backend": backend})
             for t, view in views.items()}, reduction="sum")

    def validate(model: M3TLNet) -> float:  # the summed validation query loss: lower is better
        return sum(meta_test(model, t, val_episodes[t], parts=inner_parts, inner_lr=inner_of[t].lr,
                             inner_steps=inner_of[t].steps, metric=None).mean for t in views)

    signature = {"loop": "m3tl.meta_train", "tasks": list(samplers),
                 "inner_steps": {t: i.steps for t, i in inner_of.items()},
                 "inner_lr": {t: i.lr for t, i in inner_of.items()}}
    # history.metric holds each step's per-task query losses, in the order of `samplers`
    return meta.meta_train(net, lambda: {t: sample() for t, sample in samplers.items()}, objective=objective,
                           outer_steps=outer_steps, meta_lr=meta_lr, metric=None,
                           validate=None if val_episodes is None else validate, eval_every=eval_every,
                           desc=desc, checkpoint=checkpoint, signature=signature)


def part_rates(view: TaskNet, keys: Sequence[str], inner_lr: float, shared_lr_factor: float) -> dict[str, torch.Tensor]:
    """Per-parameter inner learning rates: ``inner_lr`` for the head, ``shared_lr_factor * inner_lr`` for shared parts.

    Layer-wise rates as in discriminative fine-tuning (Chapter 2): a new head
    must move far, the meta-learned shared layers only a little.
    """
    if not shared_lr_factor >= 0:
        raise ValueError(f"shared_lr_factor must be >= 0, got {shared_lr_factor!r}")
    params = dict(view.named_parameters())
    return {k: torch.full_like(params[k].detach(), inner_lr * (1.0 if view.part_of(k) == "head" else shared_lr_factor))
            for k in keys}


def meta_test(net: M3TLNet, task: str, episodes: Sequence[Episode], *, parts: str | Sequence[str] = "head",
              inner_lr: float = 0.4, inner_steps: int = 10, shared_lr_factor: float = 1.0,
              metric: str | None | Callable = "default", backend: str = "vmap",
              chunk_size: int = 100) -> meta.EpisodeScores:
    """Meta-test (review Eq. 7): adapt ``parts`` of the task's path to each episode's support set, score its query set.

    ``parts`` is ``"head"`` (only the head), ``["backbone", "head"]``,
    ``"all"``, ... (see :meth:`TaskNet.keys`); shared parts take steps of
    ``shared_lr_factor * inner_lr``. The score is the task kind's metric
    (accuracy, or mean absolute error), or with ``metric=None`` the query
    loss; mean ± 95 % CI over the episodes (:func:`mtl_course.meta.evaluate_episodes`).
    """
    view = net.task_net(task)
    kind = view.spec.kind
    metric = task_metric(kind) if metric == "default" else metric
    keys = view.keys(parts)
    if not keys:
        raise ValueError(f"parts {parts!r} of task {task!r} have no trainable parameters to adapt")
    rates = part_rates(view, keys, inner_lr, shared_lr_factor) if shared_lr_factor != 1.0 else None
    head_only = rates is None and all(k.startswith("head.") for k in keys)  # then each episode is embedded once
    inner = meta.InnerLoop(inner_lr, inner_steps, adapt_keys=keys, per_param_lr=rates, embed_once=head_only)
    return meta.evaluate_episodes(view, episodes, inner=inner, loss_fn=task_loss(kind), metric=metric,
                                  backend=backend, chunk_size=chunk_size)


# ---------------------------------------------------------------------------
# What adaptation changes (question Q3)
# ---------------------------------------------------------------------------


def adaptation_updates(net: M3TLNet, task: str, episodes: Sequence[Episode], *, parts: str | Sequence[str] = "all",
                       inner_lr: float = 0.4, inner_steps: int = 10,
                       shared_lr_factor: float = 1.0) -> dict[str, torch.Tensor]:
    """The change ``phi_i - theta`` that adapting to each episode makes, per part of the network.

    Returns ``{part: (num_episodes, num_parameters_of_part)}`` with parts
    ``"encoder:<modality>"``, ``"fusion"``, ``"backbone"`` and ``"head"``.
    """
    view = net.task_net(task)
    params = params_of(view)
    keys = view.keys(parts)
    loss_fn = task_loss(view.spec.kind)
    device = next(view.parameters()).device
    inner = meta.InnerLoop(inner_lr, inner_steps, first_order=True, adapt_keys=keys,
                           per_param_lr=part_rates(view, keys, inner_lr, shared_lr_factor))
    rows: dict[str, list[torch.Tensor]] = {}
    for episode in episodes:
        e = episode.to(device)
        phi = meta.adapt(view, params, e.support_X, e.support_y, loss_fn, inner)
        by_part: dict[str, list[torch.Tensor]] = {}
        for k in keys:
            by_part.setdefault(view.part_of(k), []).append((phi[k] - params[k]).detach().flatten())
        for part, pieces in by_part.items():
            rows.setdefault(part, []).append(torch.cat(pieces).cpu())
    return {part: torch.stack(r) for part, r in rows.items()}


def pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity between every row of ``a`` and every row of ``b`` (rows: episodes' updates).

    When ``a`` is ``b`` the diagonal (an update with itself) is left out, giving
    the similarity of different episodes of one task.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (episodes, parameters) matrices of equal width, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    an, bn = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
    sims = an @ bn.T
    if a is b:
        n = len(a)
        if n < 2:
            raise ValueError("need at least two episodes to compare a task with itself")
        return float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))
    return float(sims.mean())


def update_norms(updates: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """How far adaptation moves each part: mean over episodes of ``||phi_i - theta||`` of the part."""
    return {part: float(U.norm(dim=1).mean()) for part, U in updates.items()}


def relative_update_size(updates: Mapping[str, torch.Tensor], net: M3TLNet, task: str) -> dict[str, float]:
    """Mean over episodes of ``||phi - theta|| / ||theta||`` per part (NaN for a part initialised at zero)."""
    view = net.task_net(task)
    norms: dict[str, list[torch.Tensor]] = {}
    for name, p in view.named_parameters():
        norms.setdefault(view.part_of(name), []).append(p.detach().flatten().cpu())
    out = {}
    for part, U in updates.items():
        size = torch.cat(norms[part]).norm()
        out[part] = float((U.norm(dim=1) / size).mean()) if size > 0 else math.nan
    return out


def part_names(net: M3TLNet) -> list[str]:
    """The parts of the network, input side first: ``encoder:<m>`` for each modality, ``fusion``, ``backbone``, ``head``."""
    names = [f"encoder:{m}" for m in net.modalities]
    if any(True for _ in net.fusion.parameters()):
        names.append("fusion")
    if any(True for _ in net.backbone.parameters()):
        names.append("backbone")
    return names + ["head"]


def summarise(scores: Mapping[str, meta.EpisodeScores], digits: int = 3) -> dict[str, str]:
    """``{name: "mean ± ci"}`` rounded, for tables."""
    return {k: f"{s.mean:.{digits}f} ± {s.ci95:.{digits}f}" for k, s in scores.items()}

