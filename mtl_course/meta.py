"""Meta-learning on ``torch.func``: one inner loop, two backends, six methods.

Notation of Chapter 4: ``θ`` are the meta-parameters shared by all tasks (an
initialisation, plus learned inner learning rates for Meta-SGD) and ``φ_i`` the
parameters adapted to task ``i``. Meta-training solves the bi-level problem of
the review's Eqs. (5)-(6) (Upadhyay et al., 2021):

* inner loop (Eq. 6, approximated by a few gradient steps on the support set)::

      φ_i = θ - α ∇_θ L(θ, D_i^support)         (repeated ``inner_steps`` times)

* outer loop (Eq. 5, the meta-objective on the query sets)::

      min_θ  (1/T) Σ_i L(φ_i(θ), D_i^query)

Parameters are ``{name: tensor}`` dicts run through the model with
:func:`mtl_course.models.functional_forward` (``torch.func.functional_call``);
nothing is cloned. :func:`adapt` is the one inner loop; :func:`meta_objective`
runs it over a meta-batch either with a Python loop over tasks
(``backend="loop"``) or with ``torch.func.vmap`` over the stacked tasks
(``backend="vmap"``), with the same results. :func:`meta_train` is the one
meta-training loop for every method in :data:`METHODS`; :func:`evaluate_episodes`
reports mean ± 95 % confidence interval over test episodes. The inner loop's
settings (step size, ``inner_steps``, first-order, which parameters adapt,
learned rates) are one :class:`InnerLoop`, made once and passed down from
:func:`meta_train` to :func:`meta_objective` and :func:`adapt`; the outer
loop's step count is ``outer_steps``.

Methods: MAML and its first-order version (Finn et al., 2017), ANIL (Raghu et
al., 2020), Meta-SGD (Li et al., 2017), Reptile (Nichol et al., 2018) and
Prototypical Networks (Snell et al., 2017).
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from . import runtime, training
from .data import Episode, stack_episodes
from .metrics import EpisodeScores, accuracy  # EpisodeScores lives in metrics; meta.EpisodeScores stays
from .models import functional_forward, params_of

Params = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], float]
Batch = Episode | Sequence[Episode]

METHODS = ("maml", "fomaml", "anil", "metasgd", "reptile", "protonet")
"""Meta-learning methods that :func:`meta_train` and :func:`evaluate_episodes` know."""
BACKENDS = ("loop", "vmap", "auto")
"""How a meta-batch is processed: a Python loop over tasks, ``torch.func.vmap``, or the faster of the two
for the model and device (:func:`auto_backend`)."""


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------

def head_keys(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model.head``: what ANIL adapts in its inner loop.

    >>> from mtl_course import models
    >>> head_keys(models.Conv4(1, 8, 5, image_size=16))
    ['head.weight', 'head.bias']
    """
    names = [name for name, _ in model.named_parameters() if name.startswith("head.")]
    if not names:
        raise ValueError("the model has no parameters under `head`; ANIL needs a model with a linear `head`")
    return names


def init_per_param_lr(params: Params, value: float, keys: Iterable[str] | None = None) -> Params:
    """Meta-SGD's learnable inner learning rates: one tensor like each parameter, filled with ``value``.

    The returned tensors are leaves that require gradients; optimise them together
    with the model's parameters (:func:`meta_train` does this for ``method="metasgd"``).

    >>> rates = init_per_param_lr({"w": torch.zeros(2, 3), "b": torch.zeros(2)}, 0.1, keys=["w"])
    >>> list(rates), tuple(rates["w"].shape), round(rates["w"][0, 0].item(), 6), rates["w"].requires_grad
    (['w'], (2, 3), 0.1, True)
    """
    if value <= 0:
        raise ValueError(f"the initial inner learning rate must be positive, got {value}")
    keys = list(params) if keys is None else list(keys)
    return {k: torch.full_like(params[k].detach(), float(value)).requires_grad_(True) for k in keys}


def zero_head_(model: nn.Module) -> nn.Module:
    """Set the weights and bias of ``model.head`` to zero, in place (the "zero trick").

    Episode labels are a random permutation of ``0..N-1``, so a non-zero initial
    head prefers arbitrary labels in every task; a zero head starts each task at
    the uniform prediction, which speeds up meta-training of MAML-type methods
    (Kao et al., 2022).
    """
    with torch.no_grad():
        for name in head_keys(model):
            model.get_parameter(name).zero_()
    return model


def _check_keys(params: Params, keys: Sequence[str], what: str) -> None:
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"{what} names parameters that do not exist: {missing[:3]}; "
                         f"valid names are e.g. {list(params)[:3]}")


# --------------------------------------------------------------------------------------
# The inner loop (Eq. 6)
# --------------------------------------------------------------------------------------

def sgd_step(params: Params, grads: Params, inner_lr: float, per_param_lr: Params | None = None) -> Params:
    """One inner gradient step ``φ ← φ − α ∇L(φ)``.

    With ``per_param_lr`` (Meta-SGD, Li et al., 2017, Eq. 2) the step is
    ``φ ← φ − α ⊙ ∇L(φ)`` with a learned rate for every scalar parameter.

    >>> params, grads = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([1.0, -1.0])}
    >>> sgd_step(params, grads, inner_lr=0.5)
    {'w': tensor([0.5000, 2.5000])}
    >>> sgd_step(params, grads, 0.5, per_param_lr={"w": torch.tensor([0.0, 1.0])})
    {'w': tensor([1., 3.])}
    """
    if per_param_lr is None:
        return {k: params[k] - inner_lr * grads[k] for k in params}
    return {k: params[k] - per_param_lr[k] * grads[k] for k in params}


def init_step_lrs(params: Params, value: float, inner_steps: int, keys: Iterable[str] | None = None) -> Params:
    """MAML++'s learned inner rates: one per parameter tensor (per layer) and per inner step, all ``value``.

    Antoniou et al. (2019) call this LSLR. Step ``j`` of :func:`adapt` uses the
    scalar ``step_lrs[k][j]`` for parameter ``k``; the tensors are leaves that
    require gradients, meta-learned together with the initialisation.

    >>> rates = init_step_lrs({"w": torch.zeros(2, 3), "b": torch.zeros(2)}, 0.1, inner_steps=5)
    >>> {k: tuple(v.shape) for k, v in rates.items()}
    {'w': (5,), 'b': (5,)}
    """
    if value <= 0 or inner_steps < 1:
        raise ValueError(f"need a positive rate and at least one step, got {value} and {inner_steps}")
    keys = list(params) if keys is None else list(keys)
    return {k: torch.full((inner_steps,), float(value), dtype=params[k].dtype, device=params[k].device)
            .requires_grad_(True)
            for k in keys}


@dataclass(frozen=True, eq=False)
class InnerLoop:
    """How a learner adapts to one task (Eq. 6): the inner loop's settings, made once and passed down.

    ``steps`` gradient steps of size ``lr`` on the support loss. The options:
    ``first_order`` detaches the inner gradients (first-order MAML, Reptile);
    ``adapt_keys`` adapts only those parameters (ANIL: the head), the others
    stay fixed; ``per_param_lr`` replaces ``lr`` by a learned rate for every
    scalar parameter (Meta-SGD, :func:`init_per_param_lr`); ``step_lrs`` by a
    learned rate per parameter tensor and per step (MAML++,
    :func:`init_step_lrs`). The learned rates are tensors that the outer loop
    updates in place; the settings themselves never change (make a variant with
    ``dataclasses.replace`` or :meth:`with_steps`).

    ``embed_once`` is a shortcut, not a different method: when only the head
    adapts (``adapt_keys`` under ``head.``, as in ANIL or the meta-transfer
    learner of Chapter 5) the body is a fixed function during the inner loop,
    so :func:`meta_objective` embeds the support and query sets once through
    ``model.features`` and runs the inner loop on ``model.head`` alone. It
    needs a model whose forward pass is ``head(features(x))`` (every model of
    :mod:`mtl_course.models`); values and meta-gradients are those of the
    whole model (tested), at the cost of one forward pass of the body instead
    of one per inner step.

    >>> InnerLoop(lr=0.1, steps=5)
    InnerLoop(lr=0.1, steps=5)
    >>> InnerLoop(lr=0.1, steps=5).with_steps(10).steps
    10
    """

    lr: float = 0.4
    steps: int = 1
    first_order: bool = False
    adapt_keys: tuple[str, ...] | None = None
    per_param_lr: Params | None = None
    step_lrs: Params | None = None
    embed_once: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.steps, (int, np.integer)) or isinstance(self.steps, bool) or self.steps < 0:
            raise ValueError(f"InnerLoop.steps (inner steps) must be an integer >= 0, got {self.steps!r}")
        if not float(self.lr) >= 0:
            raise ValueError(f"InnerLoop.lr (the inner step size) must be >= 0, got {self.lr!r}")
        if self.per_param_lr is not None and self.step_lrs is not None:
            raise ValueError("give per_param_lr (Meta-SGD) or step_lrs (MAML++), not both")
        short = [] if self.step_lrs is None else [k for k, v in self.step_lrs.items() if v.shape[0] < self.steps]
        if short:
            raise ValueError(f"step_lrs has fewer rates than the {self.steps} inner steps for {short[:3]}; "
                             "make them with meta.init_step_lrs(params, value, inner_steps)")
        if self.adapt_keys is not None:
            object.__setattr__(self, "adapt_keys", tuple(self.adapt_keys))
        outside = [k for k in self.adapt_keys or () if not k.startswith("head.")]
        if self.embed_once and outside:
            raise ValueError("embed_once=True needs an inner loop that adapts the head alone "
                             f"(adapt_keys=meta.head_keys(model), or method='anil'); got {outside[:3]}")

    def __repr__(self) -> str:
        shown = [f"lr={self.lr:g}", f"steps={self.steps}"]
        shown += ["first_order=True"] * self.first_order
        shown += [] if self.adapt_keys is None else [f"adapt_keys=<{len(self.adapt_keys)} names>"]
        shown += [f"{name}=<learned>" for name in ("per_param_lr", "step_lrs") if getattr(self, name) is not None]
        shown += ["embed_once=True"] * self.embed_once
        return f"InnerLoop({', '.join(shown)})"

    @property
    def learned_rates(self) -> Params | None:
        """Meta-SGD's or MAML++'s learned rates (meta-parameters of the outer loop), if any."""
        return self.per_param_lr if self.per_param_lr is not None else self.step_lrs

    def with_steps(self, steps: int) -> InnerLoop:
        """The same inner loop with another number of steps (several steps at test time are usual)."""
        return replace(self, steps=steps)

    def for_method(self, method: str, model: nn.Module) -> InnerLoop:
        """The inner loop that ``method`` runs: first-order for ``fomaml`` and ``reptile``, the head for ``anil``.

        Refuses options that the method cannot use, with what works instead.
        """
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if method == "metasgd" and self.per_param_lr is None:
            raise ValueError("method='metasgd' needs learned rates: "
                             "InnerLoop(per_param_lr=meta.init_per_param_lr(...))")
        if self.per_param_lr is not None and method in ("reptile", "protonet"):
            raise ValueError(f"per_param_lr (per-parameter inner learning rates) works with maml, fomaml, anil "
                             f"or metasgd, not {method!r}")
        if self.step_lrs is not None and method not in ("maml", "fomaml", "anil"):
            raise ValueError(f"step_lrs (MAML++'s learned rates) work with maml, fomaml or anil, not {method!r}")
        keys = tuple(head_keys(model)) if method == "anil" and self.adapt_keys is None else self.adapt_keys
        first_order = self.first_order or method in ("fomaml", "reptile")
        if first_order == self.first_order and keys == self.adapt_keys:
            return self  # already the method's inner loop: passed on as it is
        return replace(self, first_order=first_order, adapt_keys=keys)


def _check_inner_loop(where: str, inner: Any, old: tuple, old_keywords: Mapping[str, Any]) -> None:
    """A clear error for the inner loop's settings given one by one (``lr, steps, first_order=...``)."""
    if isinstance(inner, InnerLoop) and not old and not old_keywords:
        return
    raise TypeError(f"{where}() takes the inner loop's settings as one object: "
                    f"{where}(model, params, support_X, support_y, loss_fn, meta.InnerLoop(lr, steps, ...)); "
                    f"got {type(inner).__name__} {inner!r} with {len(old)} more argument(s) and "
                    f"keyword(s) {sorted(old_keywords)}")


def adapt_path(
    model: nn.Module,
    params: Params,
    support_X: torch.Tensor,
    support_y: torch.Tensor,
    loss_fn: LossFn,
    inner: InnerLoop,
    *old: Any,
    **old_keywords: Any,
) -> list[Params]:
    """The inner loop: ``inner.steps`` gradient steps on the support loss, starting from ``params``.

    Returns the parameters after each step, ``[φ_1, ..., φ_S]`` (new dicts;
    ``params`` is untouched); :func:`adapt` returns the last. The gradients come
    from ``torch.func.grad``, so every ``φ_j`` stays a differentiable function of
    ``params`` (and of the learned rates): the outer loop back-propagates
    through the inner loop, which is MAML's second-order meta-gradient. The
    options of :class:`InnerLoop` choose first-order gradients, which
    parameters adapt, and learned step sizes. Works unchanged inside
    ``torch.func.vmap``.
    """
    _check_inner_loop("adapt_path", inner, old, old_keywords)
    keys = list(params) if inner.adapt_keys is None else list(inner.adapt_keys)
    _check_keys(params, keys, "adapt_keys")
    rates = inner.learned_rates
    missing_rates = [] if rates is None else [k for k in keys if k not in rates]
    if missing_rates:
        raise ValueError(f"the learned rates (per_param_lr or step_lrs) need a learning rate for every adapted "
                         f"parameter; missing {missing_rates[:3]}")
    fixed = {k: v for k, v in params.items() if k not in keys}
    fast = {k: params[k] for k in keys}

    def support_loss(fast_params: Params) -> torch.Tensor:
        return loss_fn(functional_forward(model, {**fixed, **fast_params}, support_X), support_y)

    support_grad = grad(support_loss)
    path = []
    for step in range(inner.steps):
        grads = support_grad(fast)
        if inner.first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        step_rates = inner.per_param_lr if inner.step_lrs is None else {k: inner.step_lrs[k][step] for k in keys}
        fast = sgd_step(fast, grads, inner.lr, step_rates)
        path.append({**fixed, **fast})
    return path


def adapt(model: nn.Module, params: Params, support_X: torch.Tensor, support_y: torch.Tensor, loss_fn: LossFn,
          inner: InnerLoop, *old: Any, **old_keywords: Any) -> Params:
    """The adapted parameters ``φ`` after the inner loop ``inner``: the end of :func:`adapt_path`.

    With ``inner.steps == 0`` it is ``params`` itself (as a new dict).

    A one-weight model ``y = w x`` from ``w = 0``, on one support point
    ``(1, 2)`` with the squared error: each step of size 0.25 moves ``w`` half
    way to 2.

    >>> model = nn.Linear(1, 1, bias=False)
    >>> params = {"weight": torch.zeros(1, 1)}
    >>> x, y = torch.ones(1, 1), torch.full((1, 1), 2.0)
    >>> [round(adapt(model, params, x, y, F.mse_loss, InnerLoop(0.25, s))["weight"].item(), 3)
    ...  for s in (0, 1, 2)]
    [0.0, 1.0, 1.5]
    """
    _check_inner_loop("adapt", inner, old, old_keywords)
    path = adapt_path(model, params, support_X, support_y, loss_fn, inner)
    return path[-1] if path else dict(params)


def multi_step_weights(inner_steps: int, progress: float) -> torch.Tensor:
    """MAML++'s multi-step loss weights: the importance of the query loss after each inner step.

    At ``progress = 0`` (start of training) every step counts ``1/S``; the weights
    of steps before the last shrink linearly to ``0.03/S`` as ``progress`` reaches
    1, and the last step takes what they give up (Antoniou et al., 2019, section
    4, "multi-step loss optimisation"). The weights always sum to one.

    >>> multi_step_weights(5, 0.0)
    tensor([0.2000, 0.2000, 0.2000, 0.2000, 0.2000])
    >>> [round(w, 3) for w in multi_step_weights(5, 1.0).tolist()]
    [0.006, 0.006, 0.006, 0.006, 0.976]
    """
    if inner_steps < 1:
        raise ValueError(f"inner_steps must be >= 1, got {inner_steps}")
    progress = min(max(float(progress), 0.0), 1.0)
    uniform, floor = 1.0 / inner_steps, 0.03 / inner_steps
    earlier = uniform - progress * (uniform - floor)
    weights = torch.full((inner_steps,), earlier)
    weights[-1] = 1.0 - earlier * (inner_steps - 1)
    return weights


# --------------------------------------------------------------------------------------
# Prototypical networks
# --------------------------------------------------------------------------------------

def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Class prototypes ``c_k = mean of the support embeddings of class k`` (Snell et al., 2017, Eq. 1).

    Written with a one-hot matrix product so that it also runs inside ``vmap``.

    >>> prototypes(torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 0, 1]), n_way=2)
    tensor([[1., 0.],
            [0., 4.]])
    """
    onehot = F.one_hot(labels, n_way).to(embeddings.dtype)  # (n, n_way)
    return (onehot.T @ embeddings) / onehot.sum(0).unsqueeze(1)


def prototype_logits(query_embeddings: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """Logits ``−‖f(x) − c_k‖²``: the negative squared Euclidean distance to each prototype (Snell Eq. 2).

    >>> prototype_logits(torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0], [0.0, 4.0]]))
    tensor([[ -1., -10.]])
    """
    return -((query_embeddings.unsqueeze(1) - protos.unsqueeze(0)) ** 2).sum(-1)


def _protonet_outputs(model: nn.Module, params: Params, support_X, support_y, query_X, n_way: int):
    protos = prototypes(functional_forward(model, params, support_X), support_y, n_way)
    return prototype_logits(functional_forward(model, params, query_X), protos)


# --------------------------------------------------------------------------------------
# Meta-batches and the two backends
# --------------------------------------------------------------------------------------

class _Features(nn.Module):
    """``model.features`` as a module of its own, so that ``functional_call`` can run it with given parameters."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def _head_only(name: str) -> str:
    return name.removeprefix("head.")


def _on_the_head(model: nn.Module, params: Params, inner: InnerLoop):
    """For ``inner.embed_once``: the embedding function, the head's parameters and the head's inner loop."""
    if inner.adapt_keys is None or not callable(getattr(model, "features", None)) or not isinstance(
            getattr(model, "head", None), nn.Module):
        raise ValueError("embed_once=True needs a model with `features` and a `head` (forward = head(features(x))) "
                         "and an inner loop on the head: method='anil' or adapt_keys=meta.head_keys(model)")
    body = _Features(model)
    body_params = {f"model.{k}": v for k, v in params.items() if not k.startswith("head.")}

    def embed(x: torch.Tensor) -> torch.Tensor:
        return functional_forward(body, body_params, x)

    def strip(rates: Params | None) -> Params | None:
        return None if rates is None else {_head_only(k): v for k, v in rates.items() if k.startswith("head.")}

    head_params = {_head_only(k): v for k, v in params.items() if k.startswith("head.")}
    head_inner = replace(inner, adapt_keys=tuple(_head_only(k) for k in inner.adapt_keys), embed_once=False,
                         per_param_lr=strip(inner.per_param_lr), step_lrs=strip(inner.step_lrs))
    return embed, head_params, head_inner


def _stacked(batch: Batch, device: torch.device) -> Episode:
    if isinstance(batch, Episode):
        if batch.support_X.dim() < 2 or batch.support_X.shape[0] != batch.query_X.shape[0]:
            raise ValueError("a single Episode passed as a meta-batch must be stacked (stack_episodes): "
                             "a leading task dimension on support and query")
        return batch.to(device)
    episodes = list(batch)
    if not episodes:
        raise ValueError("the meta-batch is empty: give at least one episode")
    shapes = {(tuple(e.support_X.shape), tuple(e.query_X.shape)) for e in episodes}
    if len(shapes) > 1:
        raise ValueError(f"all episodes of a meta-batch must have the same shapes, found {sorted(shapes)[:2]}")
    return stack_episodes(episodes).to(device)


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def has_batchnorm(model: nn.Module) -> bool:
    """True if ``model`` contains a BatchNorm layer (whose statistics mix the examples of a batch)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def has_convolution(model: nn.Module) -> bool:
    """True if ``model`` contains a convolution layer."""
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def auto_backend(model: nn.Module, device: torch.device | str | None = None) -> str:
    """The faster backend for ``model`` on ``device`` (default: the model's), as measured in ``benchmarks/``.

    On a CPU, ``vmap`` turns the tasks' convolutions into one grouped
    convolution, which is slower than the loop's ordinary ones (Conv-4: 2.2×
    slower), while for networks without convolutions it batches the tasks' small
    matrix products (sinusoid MLP: 8× faster at 25 tasks, 20× at 100). So:
    the loop for convolutional networks on a CPU, ``vmap`` everywhere else.

    >>> from mtl_course import models
    >>> auto_backend(models.MLP(1, (40, 40), 1)), auto_backend(models.Conv4(1, 8, 5), "cpu")
    ('vmap', 'loop')
    """
    device = torch.device(device) if device is not None else _device(model)
    return "loop" if device.type == "cpu" and has_convolution(model) else "vmap"


def _choose_backend(model: nn.Module, backend: str, second_order: bool) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = auto_backend(model)
    if backend == "vmap" and second_order and has_batchnorm(model):
        warnings.warn(
            "the vmap backend gives a wrong second-order meta-gradient through BatchNorm in current "
            "PyTorch (it disagrees with finite differences); using the loop backend instead. "
            "Use GroupNorm (models.Conv4(norm='group')) to keep vmap.",
            RuntimeWarning,
            stacklevel=3,
        )
        return "loop"
    return backend


def _over_tasks(task_fn: Callable, tasks: tuple[torch.Tensor, ...], backend: str, randomness: str):
    """Apply ``task_fn`` to every task (leading dimension of ``tasks``); stack the results."""
    if backend == "vmap":
        return vmap(task_fn, randomness=randomness)(*tasks)
    results = [task_fn(*(t[i] for t in tasks)) for i in range(tasks[0].shape[0])]
    if isinstance(results[0], dict):
        return {k: torch.stack([r[k] for r in results]) for k in results[0]}
    return tuple(torch.stack(parts) for parts in zip(*results))


@dataclass
class MetaOutput:
    """The meta-objective of a meta-batch: mean query loss, per-task losses and query outputs."""

    loss: torch.Tensor
    task_losses: torch.Tensor
    query_outputs: torch.Tensor
    query_y: torch.Tensor

    def task_metrics(self, metric: Metric) -> list[float]:
        """``metric(outputs, targets)`` for every task of the batch."""
        return [metric(o.detach(), y) for o, y in zip(self.query_outputs, self.query_y)]


def meta_objective(
    model: nn.Module,
    batch: Batch,
    *,
    inner: InnerLoop = InnerLoop(),
    loss_fn: LossFn = F.cross_entropy,
    protonet: bool = False,
    params: Params | None = None,
    backend: str = "vmap",
    randomness: str = "different",
    step_weights: torch.Tensor | Sequence[float] | None = None,
    **old: Any,
) -> MetaOutput:
    """The outer objective (review Eq. 5): mean query loss after adapting to each task of ``batch``.

    For each task, :func:`adapt` runs the inner loop ``inner`` on the support set
    from ``params`` (default: the model's own parameters) and the adapted
    parameters are scored on the query set. ``protonet=True`` replaces the inner loop by
    prototypes (Snell et al., 2017). ``backend="loop"`` processes the tasks one
    by one, ``backend="vmap"`` all at once with ``torch.func.vmap`` (dropout
    masks differ per task with ``randomness="different"``); both give the same
    values and gradients. A second-order objective on a model with BatchNorm
    falls back to the loop with a warning, because ``vmap`` gets its
    meta-gradient wrong. MAML++ (Antoniou et al., 2019): ``inner.step_lrs`` are
    the learned per-layer, per-step rates (:func:`init_step_lrs`), and
    ``step_weights`` (one per inner step, :func:`multi_step_weights`) make each
    task's loss the weighted sum of its query losses after every inner step,
    the multi-step loss. Call ``.loss.backward()`` for the meta-gradient.

    The one-weight model ``y = w x`` of :func:`adapt`, on a task with support
    point ``(1, 2)`` and query point ``(2, 4)``. One step of size 0.25 gives
    ``φ = w/2 + 1``, so the query loss is ``(2φ − 4)² = (w − 2)²``: 4 at ``w = 0``,
    with meta-gradient ``2(w − 2) = −4``. First-order MAML keeps only the
    query gradient at ``φ``, ``4(2φ − 4) = −8``: the Hessian term is missing.

    >>> model = nn.Linear(1, 1, bias=False)
    >>> task = Episode(torch.ones(1, 1), torch.full((1, 1), 2.0), torch.full((1, 1), 2.0), torch.full((1, 1), 4.0))
    >>> w = torch.zeros(1, 1, requires_grad=True)
    >>> for first_order in (False, True):
    ...     out = meta_objective(model, [task], inner=InnerLoop(0.25, 1, first_order), loss_fn=F.mse_loss,
    ...                          params={"weight": w})
    ...     print(out.loss.item(), torch.autograd.grad(out.loss, w)[0].item())
    4.0 -4.0
    4.0 -8.0
    """
    _refuse_old_keywords("meta_objective", old)
    params = params_of(model) if params is None else params
    b = _stacked(batch, _device(model))
    second_order = not inner.first_order and not protonet
    backend = _choose_backend(model, backend, second_order)
    n_way = int(b.support_y.max()) + 1 if protonet else 0

    if step_weights is not None:
        step_weights = torch.as_tensor(step_weights, dtype=torch.float32)
        if protonet or step_weights.shape != (inner.steps,):
            raise ValueError(f"step_weights needs one weight per inner step ({inner.steps}), got "
                             f"{tuple(step_weights.shape)}" + (" (ProtoNet has no inner steps)" if protonet else ""))

    net, start, task_inner, embed = model, params, inner, None
    if inner.embed_once and not protonet:
        embed, start, task_inner = _on_the_head(model, params, inner)
        net = model.head

    def task_fn(sx, sy, qx, qy):
        if protonet:
            out = _protonet_outputs(model, params, sx, sy, qx, n_way)
            return loss_fn(out, qy), out
        if embed is not None:  # the body is fixed in the inner loop: its features, once
            sx, qx = embed(sx), embed(qx)
        path = adapt_path(net, start, sx, sy, loss_fn, task_inner) or [start]
        out = functional_forward(net, path[-1], qx)
        if step_weights is None:
            return loss_fn(out, qy), out
        earlier = [loss_fn(functional_forward(net, phi, qx), qy) for phi in path[:-1]]
        losses = torch.stack([*earlier, loss_fn(out, qy)])
        return (step_weights.to(losses.device) * losses).sum(), out

    losses, outputs = _over_tasks(task_fn, (b.support_X, b.support_y, b.query_X, b.query_y), backend, randomness)
    return MetaOutput(losses.mean(), losses, outputs, b.query_y)


def graph_memory_bytes(output: torch.Tensor) -> int:
    """Bytes of the tensors that the autograd graph of ``output`` keeps for the backward pass.

    A deterministic measure of what an outer step must hold in memory: for MAML
    it grows with the number of inner steps (the inner loop is part of the
    graph), for first-order MAML it does not. Each storage is counted once.
    """
    seen_nodes, seen_storages, total = set(), set(), 0
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            try:
                value = getattr(node, attr)
            except RuntimeError:  # already freed by a backward pass
                continue
            for t in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(t, torch.Tensor):
                    storage = t.untyped_storage()
                    key = (storage.data_ptr(), storage.nbytes())
                    if key not in seen_storages:
                        seen_storages.add(key)
                        total += storage.nbytes()
        stack += [n for n, _ in node.next_functions]
    return total


def reptile_direction(
    model: nn.Module,
    batch: Batch,
    *,
    inner: InnerLoop = InnerLoop(steps=5),
    loss_fn: LossFn = F.cross_entropy,
    params: Params | None = None,
    backend: str = "vmap",
    randomness: str = "different",
) -> tuple[Params, torch.Tensor]:
    """Reptile's update direction ``θ − mean_i φ_i`` (Nichol et al., 2018, Alg. 2).

    Each ``φ_i`` is :func:`adapt` run with ``inner`` on all of task ``i``'s
    examples (support and query together; first-order: no second-order term). Used as
    a gradient, an SGD step of size ``ε`` gives ``θ ← θ + ε (mean_i φ_i − θ)``.
    Returns the direction and the tasks' losses after adaptation.

    With the one-weight model of :func:`adapt` and a task whose two points both
    say ``w = 2``, one step of size 0.25 from ``w = 0`` reaches ``φ = 1``: the
    direction is ``θ − φ = −1``.

    >>> model = nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.zero_()
    >>> task = Episode(torch.ones(1, 1), torch.full((1, 1), 2.0), torch.ones(1, 1), torch.full((1, 1), 2.0))
    >>> direction, losses = reptile_direction(model, [task], inner=InnerLoop(0.25, 1), loss_fn=F.mse_loss)
    >>> direction["weight"].item(), losses.tolist()
    (-1.0, [1.0])
    """
    params = params_of(model) if params is None else params
    b = _stacked(batch, _device(model))
    backend = _choose_backend(model, backend, second_order=False)
    first_order = replace(inner, first_order=True)

    def task_fn(sx, sy, qx, qy):
        X, y = torch.cat([sx, qx]), torch.cat([sy, qy])
        phi = adapt(model, params, X, y, loss_fn, first_order)
        return {"__loss__": loss_fn(functional_forward(model, phi, X), y), **phi}

    with torch.no_grad():
        out = _over_tasks(task_fn, (b.support_X, b.support_y, b.query_X, b.query_y), backend, randomness)
        losses = out.pop("__loss__")
        direction = {k: params[k].detach() - out[k].mean(0) for k in params}
    return direction, losses


# --------------------------------------------------------------------------------------
# Evaluation over test episodes
# --------------------------------------------------------------------------------------

_OLD_KEYWORDS = ("inner_lr", "inner_steps", "first_order", "per_param_lr", "adapt_keys", "step_lrs", "num_steps")


def _refuse_old_keywords(where: str, given: Mapping[str, Any]) -> None:
    """A clear error for keywords this function does not take (the inner loop's settings come as one object)."""
    if not given:
        return
    hint = ""
    if any(k in _OLD_KEYWORDS for k in given):
        hint = ("; the inner loop's settings come as one object, inner=meta.InnerLoop(lr=..., steps=..., "
                "first_order=..., adapt_keys=..., per_param_lr=..., step_lrs=...)")
        if "num_steps" in given:
            hint += ", and meta_train's number of outer steps is outer_steps"
    raise TypeError(f"{where}() got unexpected keyword argument(s) {sorted(given)}{hint}")


def evaluate_episodes(
    model: nn.Module,
    episodes: Iterable[Episode],
    *,
    method: str = "maml",
    inner: InnerLoop = InnerLoop(),
    loss_fn: LossFn = F.cross_entropy,
    metric: Metric | None = accuracy,
    backend: str = "vmap",
    chunk_size: int = 20,
    **old: Any,
) -> EpisodeScores:
    """Meta-test: adapt to each episode's support set, score its query set; mean ± 95 % CI.

    ``method`` picks the adaptation (as in :func:`meta_train`) and ``inner`` the
    inner loop, whose steps may differ from training (several steps at test
    time are usual). The score is ``metric`` (default accuracy) or, with
    ``metric=None``, the query loss (e.g. mean squared error for regression).
    Adaptation at test time needs no meta-gradient, so it runs first-order
    without building a graph, ``chunk_size`` episodes at a time. Report over at
    least 600 episodes, as few-shot papers do.

    The task of :func:`meta_objective` twice (the query loss is 4 after one
    step) and once with a query point the adapted model fits (loss 0):

    >>> model = nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.zero_()
    >>> x, two = torch.ones(1, 1), torch.full((1, 1), 2.0)
    >>> tasks = [Episode(x, two, 2 * x, 2 * two), Episode(x, two, 2 * x, 2 * two), Episode(x, two, x, x)]
    >>> scores = evaluate_episodes(model, tasks, inner=InnerLoop(0.25, 1), loss_fn=F.mse_loss, metric=None)
    >>> scores.values.tolist(), round(scores.mean, 3)
    ([4.0, 4.0, 0.0], 2.667)
    """
    _refuse_old_keywords("evaluate_episodes", old)
    inner = replace(inner.for_method(method, model), first_order=True)  # no meta-gradient at test time
    values: list[float] = []
    episodes = list(episodes)
    if len(episodes) < 2:
        raise ValueError("evaluate_episodes needs at least two episodes for a confidence interval")
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(episodes), chunk_size):
            chunk = episodes[start : start + chunk_size]
            with torch.no_grad():
                out = meta_objective(model, chunk, inner=inner, loss_fn=loss_fn, protonet=method == "protonet",
                                     backend=backend)
            values += out.task_metrics(metric) if metric is not None else out.task_losses.tolist()
    finally:
        model.train(was_training)
    return EpisodeScores.from_values(values)


def multitask_meta_objective(tasks: Mapping[str, tuple[nn.Module, Batch, Mapping[str, Any]]],
                             reduction: str = "mean") -> tuple[torch.Tensor, dict[str, float]]:
    """The multi-task meta-objective: every task's outer objective on its own view of one network.

    .. math:: \\frac{1}{|K|} \\sum_k \\frac{1}{T}\\sum_{i=1}^{T}
              \\mathcal{L}\\big(\\phi_i(\\theta_{sh}, \\theta_k), D_i^{query}\\big)

    ``tasks[k] = (view, batch, settings)``: the network as task ``k`` sees it (the
    shared body ``θ_sh`` and its head ``θ_k``), a meta-batch of its episodes, and the
    keywords of :func:`meta_objective` for it (its ``inner`` loop, ``loss_fn``,
    ...). Chapter 7's multi-task meta-learning averages over the kinds
    (``reduction="mean"``); Chapter 8's M3TL adds its source tasks (``"sum"``).
    Returns the objective and each task's mean query loss.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if not tasks:
        raise ValueError("the multi-task meta-objective needs a meta-batch for at least one task")
    total, losses = 0.0, {}
    for name, (view, batch, settings) in tasks.items():
        loss = meta_objective(view, batch, **settings).loss
        total, losses[name] = total + loss, loss.item()
    return (total / len(tasks) if reduction == "mean" else total), losses


# --------------------------------------------------------------------------------------
# The meta-training loop
# --------------------------------------------------------------------------------------

@dataclass
class MetaHistory:
    """What :func:`meta_train` recorded: per outer step, and per validation round."""

    loss: list[float] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_metric: list[float] = field(default_factory=list)
    best_step: int | None = None


def meta_gradient_step(
    model: nn.Module,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    *,
    method: str = "maml",
    inner: InnerLoop = InnerLoop(),
    loss_fn: LossFn = F.cross_entropy,
    backend: str = "vmap",
    randomness: str = "different",
    step_weights: torch.Tensor | Sequence[float] | None = None,
    **old: Any,
) -> MetaOutput | torch.Tensor:
    """One outer step of ``method`` on one meta-batch: meta-gradient, then ``optimizer.step()``.

    Returns the :class:`MetaOutput` of the batch (for Reptile, the tasks' losses after adaptation).
    """
    _refuse_old_keywords("meta_gradient_step", old)
    inner = inner.for_method(method, model)
    optimizer.zero_grad(set_to_none=True)
    if method == "reptile":
        direction, losses = reptile_direction(model, batch, inner=inner, loss_fn=loss_fn, backend=backend,
                                              randomness=randomness)
        for name, p in model.named_parameters():
            if name in direction:
                p.grad = direction[name].clone()
        optimizer.step()
        return losses
    out = meta_objective(model, batch, inner=inner, loss_fn=loss_fn, protonet=method == "protonet",
                         backend=backend, randomness=randomness, step_weights=step_weights)
    out.loss.backward()
    optimizer.step()
    if inner.learned_rates is not None:
        with torch.no_grad():  # a negative learning rate would make the inner loop ascend
            for rate in inner.learned_rates.values():
                rate.clamp_(min=0.0)
    return out


def objective_step(objective: Callable[[Any], tuple[torch.Tensor, Mapping[str, float]]], batch: Any,
                   optimizer: torch.optim.Optimizer) -> tuple[torch.Tensor, Mapping[str, float]]:
    """One outer step on a meta-objective of its own: ``objective(batch)``, its gradient, ``optimizer.step()``."""
    optimizer.zero_grad(set_to_none=True)
    loss, losses = objective(batch)
    loss.backward()
    optimizer.step()
    return loss, losses


def _record_step(history: MetaHistory, out: Any, metric: Metric | None) -> None:
    """The step's meta-loss, and its metric (:class:`MetaOutput`) or its tasks' losses (an ``objective``'s)."""
    if isinstance(out, MetaOutput):
        history.loss.append(out.loss.item())
        if metric is not None:
            history.metric.append(float(np.mean(out.task_metrics(metric))))
    elif isinstance(out, tuple):
        history.loss.append(float(out[0].item()))
        history.metric.append(list(out[1].values()))
    else:  # Reptile: the tasks' losses after adaptation
        history.loss.append(out.mean().item())


def meta_train(
    model: nn.Module,
    sample_batch: Callable[[], Batch],
    *,
    method: str = "maml",
    outer_steps: int = 1000,
    meta_lr: float = 1e-3,
    inner: InnerLoop = InnerLoop(),
    loss_fn: LossFn = F.cross_entropy,
    metric: Metric | None = accuracy,
    backend: str = "vmap",
    optimizer: torch.optim.Optimizer | None = None,
    val_episodes: Sequence[Episode] | None = None,
    eval_every: int = 100,
    eval_inner_steps: int | None = None,
    validate: Callable[[nn.Module], float] | None = None,
    validate_first: bool = False,
    on_step: Callable[[Batch, Any], None] | None = None,
    objective: Callable[[Any], tuple[torch.Tensor, Mapping[str, float]]] | None = None,
    signature: Mapping[str, Any] | None = None,
    randomness: str = "different",
    desc: str = "meta-training",
    multi_step_loss: int = 0,
    checkpoint: runtime.Checkpoint | None = None,
    **old: Any,
) -> MetaHistory:
    """Meta-train ``model`` with ``method`` for ``outer_steps`` outer steps; the one loop for all methods.

    ``sample_batch()`` returns a meta-batch (a list of episodes, e.g.
    ``lambda: sampler.batch(32)``), and ``inner`` is the inner loop
    (:class:`InnerLoop`), made once. Each outer step computes the method's
    meta-gradient (MAML: through the inner loop; first-order MAML: without its
    second-order term; ANIL: inner loop on the head only; Meta-SGD: also for
    the learned rates ``inner.per_param_lr``; Reptile: the direction ``θ − φ``;
    ProtoNet: through the prototype classifier) and lets ``optimizer`` (default
    Adam, ``meta_lr``) update the meta-parameters. With ``val_episodes`` the
    model is scored on them every ``eval_every`` outer steps (with
    ``eval_inner_steps`` inner steps, default ``inner.steps``) and the best state
    (model and learned rates) is restored at the end: model selection on
    validation tasks, never on test tasks. A learner with a faster test of its
    own gives it as ``validate(model) -> score`` instead of ``val_episodes``
    (higher is better, or lower with ``metric=None``; Chapter 5 embeds the
    validation images once); ``validate_first=True`` also scores the model
    before the first step, so that "no meta-training" can win. ``on_step(batch,
    output)`` is called after every outer step with the meta-batch and what
    :func:`meta_gradient_step` returned (Chapter 5's hard-task sampler reads
    each task's failure class from it).

    A learner whose meta-objective is none of :data:`METHODS` gives it as
    ``objective(batch) -> (loss, losses)``: ``sample_batch()`` then returns
    whatever ``objective`` takes, each outer step minimises ``loss`` with
    ``optimizer``, and ``history.metric`` records ``losses`` (one value per task,
    in order). This is how multi-task meta-learning trains, in Chapter 7
    (:func:`mtl_course.fusions.multitask_meta_train`) and Chapter 8
    (:func:`mtl_course.m3tl.meta_train`): ``objective`` is
    :func:`multitask_meta_objective` over ``{task: meta-batch}``, and
    ``signature`` adds its settings to what a checkpoint must match.

    MAML++ (Antoniou et al., 2019) adds two options: ``inner.step_lrs``, learned
    rates per layer and per inner step (:func:`init_step_lrs`, meta-learned and
    restored like Meta-SGD's), and ``multi_step_loss=N``, the multi-step loss
    whose weights (:func:`multi_step_weights`) move from all inner steps to the
    last one over the first ``N`` outer steps (0: the last step only, as in MAML).

    With ``checkpoint`` (a :class:`mtl_course.runtime.Checkpoint`) the loop saves
    its state every few minutes, and a run started again with the same
    checkpoint continues where the last one stopped: it restores the model,
    rates, optimizer, history, best state and random generators, and calls
    ``sample_batch()`` once for every step already done, so that a sampler with
    its own generator draws the same next batches. The resumed run ends with the
    same parameters as one that was never stopped.

    Meta-training the one-weight model of :func:`meta_objective` on its task:
    the meta-gradient there is ``2(w − 2)``, so plain SGD with step 0.25 halves
    the distance to ``w = 2`` at every outer step.

    >>> model = nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = model.weight.zero_()
    >>> task = Episode(torch.ones(1, 1), torch.full((1, 1), 2.0), torch.full((1, 1), 2.0), torch.full((1, 1), 4.0))
    >>> history = meta_train(model, lambda: [task], outer_steps=3, inner=InnerLoop(0.25, 1), loss_fn=F.mse_loss,
    ...                      metric=None, optimizer=torch.optim.SGD(model.parameters(), lr=0.25), desc="doctest")
    >>> history.loss, model.weight.item()
    ([4.0, 1.0, 0.25], 1.75)
    """
    _refuse_old_keywords("meta_train", old)
    if outer_steps < 1:
        raise ValueError(f"outer_steps must be >= 1, got {outer_steps}")
    if val_episodes is not None and validate is not None:
        raise ValueError("give val_episodes or validate (a function that scores the model), not both")
    if validate_first and val_episodes is None and validate is None:
        raise ValueError("validate_first=True needs val_episodes or validate")
    if objective is not None and (multi_step_loss or val_episodes is not None):
        raise ValueError("a meta_train with its own objective takes no multi_step_loss or val_episodes: "
                         "score the model with validate=...")
    if multi_step_loss < 0 or (multi_step_loss and method not in ("maml", "fomaml", "anil", "metasgd")):
        raise ValueError(f"multi_step_loss must be >= 0 and works with maml, fomaml, anil or metasgd, "
                         f"got {multi_step_loss} with {method!r}")
    inner = inner.for_method(method, model)
    rates = inner.learned_rates
    if optimizer is None:
        meta_params = [p for p in model.parameters() if p.requires_grad]
        if rates is not None:
            meta_params += list(rates.values())
        optimizer = torch.optim.Adam(meta_params, lr=meta_lr)
    history, best = MetaHistory(), training.BestOnValidation()
    higher_is_better = metric is not None
    eval_inner = inner if eval_inner_steps is None else inner.with_steps(eval_inner_steps)

    def current_rates():
        return None if rates is None else {k: v.detach().clone() for k, v in rates.items()}

    def set_rates(values) -> None:
        if rates is not None:
            with torch.no_grad():
                for k, v in values.items():
                    rates[k].copy_(v)

    def snapshot():
        return copy.deepcopy(model.state_dict()), current_rates()

    def restore(state) -> None:
        model.load_state_dict(state[0])
        set_rates(state[1])

    signature = {"loop": "meta_train", "method": method if objective is None else "objective",
                 "outer_steps": outer_steps, "inner_lr": inner.lr, "inner_steps": inner.steps, **(signature or {})}
    run = runtime.Resumable(checkpoint, signature, model, optimizer)

    def state() -> dict:
        return {"step": done, "rates": current_rates(), "history": asdict(history), "best": asdict(best)}

    done = 0
    saved = run.restore()
    if saved is not None:
        for _ in range(saved["step"]):
            sample_batch()  # the sampler's own generator moves on as in the stopped run
        runtime.set_random_state(saved["random"])  # then every generator is where it stopped
        set_rates(saved["rates"])
        history, best = MetaHistory(**saved["history"]), training.BestOnValidation(**saved["best"])
        done = saved["step"]

    def score() -> float:
        if validate is not None:
            return float(validate(model))
        return evaluate_episodes(model, val_episodes, method=method, inner=eval_inner, loss_fn=loss_fn,
                                 metric=metric, backend=backend).mean

    def validation_round(step: int) -> None:
        value = score()
        history.val_step.append(step)
        history.val_metric.append(value)
        if best.update(value if higher_is_better else -value, step, snapshot):
            history.best_step = step
        model.train()

    if validate_first and done == 0:
        validation_round(0)
    model.train()
    for step in runtime.progress(range(done + 1, outer_steps + 1), desc=desc, initial=done, total=outer_steps):
        weights = multi_step_weights(inner.steps, (step - 1) / multi_step_loss) if multi_step_loss else None
        batch = sample_batch()
        if objective is not None:
            out = objective_step(objective, batch, optimizer)
        else:
            out = meta_gradient_step(model, batch, optimizer, method=method, inner=inner, loss_fn=loss_fn,
                                     backend=backend, randomness=randomness, step_weights=weights)
        if on_step is not None:
            on_step(batch, out)
        _record_step(history, out, metric)
        if (val_episodes is not None or validate is not None) and (step % eval_every == 0 or step == outer_steps):
            validation_round(step)
        done = step
        if step < outer_steps:
            run.save_if_due(state)
    run.finish(state)
    best.restore(restore)
    return history


# --------------------------------------------------------------------------------------
# Adapted curves (drawn by viz.plot_sinusoid_adaptation and widgets.sinusoid_explorer)
# --------------------------------------------------------------------------------------

def adapted_predictions(
    model: nn.Module,
    support_X: torch.Tensor,
    support_y: torch.Tensor,
    x: torch.Tensor,
    steps: Sequence[int],
    inner_lr: float,
    loss_fn: LossFn = F.mse_loss,
) -> dict[int, torch.Tensor]:
    """Predictions on ``x`` after each number of inner steps in ``steps`` (for adapted-curve plots)."""
    device = _device(model)
    params = params_of(model)
    support_X, support_y, x = support_X.to(device), support_y.to(device), x.to(device)
    curves = {}
    with torch.no_grad():
        for n in sorted(set(int(s) for s in steps)):
            phi = adapt(model, params, support_X, support_y, loss_fn, InnerLoop(inner_lr, n, first_order=True))
            curves[n] = functional_forward(model, phi, x).squeeze(-1).cpu()
    return curves
