"""Transfer learning: re-use a source model to learn a target task.

A source model with parameters :math:`\\theta` was trained on a source task
:math:`\\mathcal{T}_a`; its data :math:`\\mathcal{D}_a` are not used again.
Fine-tuning starts the target model from those parameters and updates them on
the target data :math:`\\mathcal{D}^{tr}` (Chapter 2, Eq. 2.1):

.. math:: \\phi \\leftarrow \\theta - \\alpha \\nabla_\\theta \\mathcal{L}(\\theta, \\mathcal{D}^{tr}).

The functions below are the practical variants of that update, for any
backbone whose body is cut into **blocks** (``block1 .. block4`` of
:class:`~mtl_course.models.Conv4`, the layers of an
:class:`~mtl_course.models.MLP` body, the stages of a ResNet wrapped by
:func:`mtl_course.models.resnet18_backbone`) followed by a ``head``:

* :func:`linear_probe` -- feature extraction: frozen body, new head;
* :func:`fine_tune` -- full fine-tuning, optionally with layer-wise
  ("discriminative") learning rates, :func:`discriminative_lrs`;
* :func:`freeze` / :func:`unfreeze` / :func:`train_only` -- freezing by block;
* :func:`reinit_head` -- re-initialising the last layer;
* :func:`gradual_unfreezing` -- ULMFiT's schedule, top block first;
* :func:`lp_ft` -- linear probing, then full fine-tuning from the probed head;
* :func:`surgical_fine_tune` -- tune one chosen block only;
* :func:`wise_ft` -- mix the weights of a model and its fine-tuned copy;
* :func:`add_lora` -- low-rank adaptation: train a low-rank update of each layer.

All of them train with :func:`mtl_course.training.fit`, passing it an optimizer
built from per-block parameter groups (:func:`layerwise_param_groups`).
:func:`linear_cka` measures how far fine-tuning moved the features, and
:func:`source_model` pre-trains (once, then from a cache) the Conv-4 source
model that every experiment of Chapter 2 starts from; :func:`resnet18_lp_ft` runs LP-FT
on torchvision's ImageNet ResNet-18 (``full`` profile, internet needed). The plots and the
explorer of Chapter 2 live in :mod:`mtl_course.viz` and :mod:`mtl_course.widgets`.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from . import models, runtime, store, training
from .models import BlockBackbone, resnet18_backbone
from .data import LabelledSet

HEAD = "head"
"""Name of the output layer in every backbone of the course."""

ULMFIT_FACTOR = 2.6
"""Howard & Ruder (2018): each lower layer's learning rate is the one above divided by 2.6."""

SOURCE_FORMAT = 1
"""Bumped whenever a change would alter the cached source model (it is part of the file name)."""


# ---------------------------------------------------------------------------
# Blocks, freezing and the head
# ---------------------------------------------------------------------------


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def blocks_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The body's blocks, input side first, as ``(name, module)`` pairs (the head excluded).

    ``name`` is the sub-module path, so ``model.get_submodule(name)`` returns the
    block: ``block1 .. blockN`` for Conv-4 and :func:`resnet18_backbone`, and the
    layers with parameters of ``model.body`` for an MLP (``body.1``, ``body.3``).
    """
    numbered = []
    while isinstance(getattr(model, f"block{len(numbered) + 1}", None), nn.Module):
        numbered.append(f"block{len(numbered) + 1}")
    if numbered:
        return [(name, getattr(model, name)) for name in numbered]
    body = getattr(model, "body", None)
    if isinstance(body, nn.Sequential):
        layers = [(f"body.{i}", layer) for i, layer in enumerate(body) if _has_parameters(layer)]
        if layers:
            return layers
    raise ValueError(
        f"cannot find the blocks of a {type(model).__name__}: transfer functions need modules named "
        "block1, block2, ... (Conv4, resnet18_backbone) or an nn.Sequential `body` (MLP)."
    )


def _head(model: nn.Module) -> nn.Module:
    head = getattr(model, HEAD, None)
    if not isinstance(head, nn.Module) or not _has_parameters(head):
        raise ValueError(
            f"the {type(model).__name__} has no `head` with parameters; give it one with "
            "reinit_head(model, num_classes)."
        )
    return head


def layer_names(model: nn.Module) -> list[str]:
    """Names of the blocks and then the head: the units that are frozen, tuned and given learning rates."""
    return [name for name, _ in blocks_of(model)] + [HEAD]


def _check_names(model: nn.Module, names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    names, known = list(names), layer_names(model)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown block(s) {unknown}; this model's blocks are {known}")
    return names


def _set_requires_grad(model: nn.Module, names: Iterable[str], flag: bool) -> nn.Module:
    for name in _check_names(model, names):
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(flag)
    return model


def freeze(model: nn.Module, names: Iterable[str] | None = None) -> nn.Module:
    """Stop gradient updates of the named blocks (all parameters if ``names`` is ``None``)."""
    if names is None:
        model.requires_grad_(False)
        return model
    return _set_requires_grad(model, names, False)


def unfreeze(model: nn.Module, names: Iterable[str] | None = None) -> nn.Module:
    """Let the named blocks (all parameters if ``names`` is ``None``) be trained again."""
    if names is None:
        model.requires_grad_(True)
        return model
    return _set_requires_grad(model, names, True)


def train_only(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Freeze everything, then unfreeze exactly the named blocks (e.g. ``["head"]`` or ``["block1"]``)."""
    names = _check_names(model, names)
    return unfreeze(freeze(model), names)


def trainable_layers(model: nn.Module) -> list[str]:
    """The blocks (and head) that have at least one parameter with ``requires_grad``."""
    return [n for n in layer_names(model) if any(p.requires_grad for p in model.get_submodule(n).parameters())]


def reinit_head(model: nn.Module, num_classes: int | None = None) -> nn.Module:
    """Re-initialise the last layer: a fresh head with ``num_classes`` outputs (same size if ``None``)."""
    if num_classes is None:
        _head(model).reset_parameters()
        return model
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return models.replace_head(model, num_classes)


# ---------------------------------------------------------------------------
# Layer-wise learning rates and the optimizer
# ---------------------------------------------------------------------------


def discriminative_lrs(model: nn.Module, lr: float, factor: float = ULMFIT_FACTOR) -> dict[str, float]:
    """Layer-wise ("discriminative") learning rates of ULMFiT (Howard & Ruder, 2018; Section 2.5 of the book).

    The head gets ``lr``; each block below gets the rate of the one above divided
    by ``factor``: :math:`\\eta^{l-1} = \\eta^{l} / 2.6`. ``factor=1`` gives every
    layer the same rate. Returned input side first.
    """
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1 (lower layers learn no faster than upper ones), got {factor!r}")
    names = layer_names(model)
    top = len(names) - 1
    return {name: lr / factor ** (top - depth) for depth, name in enumerate(names)}


def layerwise_param_groups(model: nn.Module, lr: float, factor: float = 1.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one per block and one for the head, with :func:`discriminative_lrs`.

    Only parameters that require gradients are included, and blocks without any
    are left out, so the groups follow whatever is frozen. Each group carries its
    block's ``name``.
    """
    rates = discriminative_lrs(model, lr, factor)
    groups = []
    for name, rate in rates.items():
        params = [p for p in model.get_submodule(name).parameters() if p.requires_grad]
        if params:
            groups.append({"name": name, "params": params, "lr": rate})
    covered = {id(p) for g in groups for p in g["params"]}
    stray = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if stray:
        raise ValueError(f"trainable parameters {stray[:3]} lie outside the blocks {list(rates)}; freeze them first")
    if not groups:
        raise ValueError("the model has no trainable parameters: unfreeze some blocks first")
    return groups


def fit_layerwise(model: nn.Module, train, val=None, *, lr: float = 1e-3, factor: float = 1.0,
                  **fit_kwargs: Any) -> training.History:
    """Train the model's trainable blocks with :func:`training.fit` and Adam over layer-wise groups.

    ``fit_kwargs`` go to :func:`training.fit` (``num_epochs``, ``batch_size``,
    ``patience``, ``seed``, ``desc``, ...).
    """
    optimizer = torch.optim.Adam(layerwise_param_groups(model, lr, factor))
    return training.fit(model, train, val, optimizer=optimizer, **fit_kwargs)


# ---------------------------------------------------------------------------
# The strategies
# ---------------------------------------------------------------------------


@torch.no_grad()
def extract_features(model: nn.Module, X: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The body's output (the input of the head) for every row of ``X``, in eval mode, on the CPU."""
    if not callable(getattr(model, "features", None)):
        raise ValueError(f"a {type(model).__name__} has no `features` method; use MLP, Conv4 or resnet18_backbone")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.cat([model.features(X[i : i + batch_size].to(device)).cpu() for i in range(0, len(X), batch_size)])
    model.train(was_training)
    return out


def _on_features(model: nn.Module, data) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(features, y)`` of ``data`` through the frozen body (``None`` stays ``None``)."""
    if data is None:
        return None
    try:
        X, y = training.as_tensors(data)
    except TypeError as error:
        raise ValueError(
            "linear_probe stores features only for (X, y) tuples, LabelledSets or Tasks; "
            "pass cache_features=False to train through the frozen body instead"
        ) from error
    return extract_features(model, X), y


def linear_probe(model: nn.Module, train, val=None, *, num_classes: int | None = None, lr: float = 1e-2,
                 cache_features: bool = True, **fit_kwargs: Any) -> training.History:
    """Feature extraction: freeze the body and train only the (new) head.

    With ``num_classes`` the head is first replaced by a fresh one. With
    ``cache_features`` (the default) the frozen body runs once and the head is
    fitted on the stored features, which gives the same result as training the
    whole model with a frozen body, many times faster. Pass
    ``cache_features=False`` for data loaders, or when the body must stay in
    training mode (batch statistics).
    """
    if num_classes is not None:
        reinit_head(model, num_classes)
    train_only(model, [HEAD])
    if not cache_features:
        return fit_layerwise(model, train, val, lr=lr, **fit_kwargs)
    head = _head(model)
    optimizer = torch.optim.Adam(layerwise_param_groups(model, lr))
    return training.fit(head, _on_features(model, train), _on_features(model, val), optimizer=optimizer, **fit_kwargs)


def fine_tune(model: nn.Module, train, val=None, *, lr: float = 1e-3, factor: float = 1.0,
              **fit_kwargs: Any) -> training.History:
    """Full fine-tuning, :math:`\\phi \\leftarrow \\theta - \\alpha \\nabla \\mathcal{L}`: every block is trained.

    ``factor > 1`` gives lower blocks smaller learning rates (:func:`discriminative_lrs`;
    ULMFiT uses 2.6).
    """
    unfreeze(model)
    return fit_layerwise(model, train, val, lr=lr, factor=factor, **fit_kwargs)


def surgical_fine_tune(model: nn.Module, train, val=None, *, block: str, lr: float = 1e-3,
                       **fit_kwargs: Any) -> training.History:
    """Surgical fine-tuning (Lee et al., 2023): train the one named block, everything else frozen.

    Tuning an early block suits input-level shifts (corrupted pixels); tuning the
    head suits output-level shifts (a changed label mapping).
    """
    train_only(model, [block])
    return fit_layerwise(model, train, val, lr=lr, **fit_kwargs)


def unfreezing_schedule(model: nn.Module) -> list[list[str]]:
    """The stages of gradual unfreezing: the head alone, then one more block per stage, top down."""
    names = layer_names(model)
    return [names[len(names) - 1 - s :] for s in range(len(names))]


@dataclass
class Stage:
    """One stage of :func:`gradual_unfreezing`: which blocks were trainable, and the run's history."""

    trainable: list[str]
    history: training.History


def gradual_unfreezing(model: nn.Module, train, val=None, *, lr: float = 1e-3, factor: float = 1.0,
                       epochs_per_stage: int = 1, final_epochs: int | None = None,
                       **fit_kwargs: Any) -> list[Stage]:
    """Gradual unfreezing (Howard & Ruder, 2018): train the head, then unfreeze one block per stage.

    Stage ``s`` trains the head and the top ``s`` blocks (:func:`unfreezing_schedule`)
    for ``epochs_per_stage`` epochs with a fresh optimizer; the last stage, with
    everything unfrozen, runs ``final_epochs`` (default ``epochs_per_stage``).
    Each stage is one call of :func:`training.fit`.
    """
    if "num_epochs" in fit_kwargs:
        raise ValueError("gradual_unfreezing takes epochs_per_stage and final_epochs, not num_epochs")
    schedule = unfreezing_schedule(model)
    final_epochs = epochs_per_stage if final_epochs is None else final_epochs
    desc = fit_kwargs.pop("desc", "gradual unfreezing")
    stages = []
    for s, names in enumerate(schedule):
        train_only(model, names)
        epochs = final_epochs if s == len(schedule) - 1 else epochs_per_stage
        history = fit_layerwise(model, train, val, lr=lr, factor=factor, num_epochs=epochs,
                                desc=f"{desc} ({len(names)} layers)", **fit_kwargs)
        stages.append(Stage(list(names), history))
    return stages


def lp_ft(model: nn.Module, train, val=None, *, num_classes: int | None = None, lp_lr: float = 1e-2,
          ft_lr: float = 1e-3, lp_epochs: int = 10, ft_epochs: int = 10, factor: float = 1.0,
          **fit_kwargs: Any) -> tuple[training.History, training.History]:
    """LP-FT (Kumar et al., 2022): a linear probe, then full fine-tuning that starts from the probed head.

    Starting the second phase from a head that already fits the target keeps the
    early gradients small, so the pre-trained features are distorted less than by
    fine-tuning from a random head. Returns the histories of both phases.
    """
    desc = fit_kwargs.pop("desc", "LP-FT")
    probe = linear_probe(model, train, val, num_classes=num_classes, lr=lp_lr, num_epochs=lp_epochs,
                         desc=f"{desc}: probe", **fit_kwargs)
    tune = fine_tune(model, train, val, lr=ft_lr, factor=factor, num_epochs=ft_epochs,
                     desc=f"{desc}: fine-tune", **fit_kwargs)
    return probe, tune


# ---------------------------------------------------------------------------
# Weight-space ensembles (WiSE-FT) and low-rank adaptation (LoRA)
# ---------------------------------------------------------------------------


def wise_ft(start: nn.Module, tuned: nn.Module, alpha: float) -> nn.Module:
    """WiSE-FT (Wortsman et al., 2022): the model whose weights mix two models of one architecture.

    Eq. 2.3 of the book, :math:`\\theta(\\alpha) = (1 - \\alpha)\\,\\theta_{start} + \\alpha\\,\\theta_{tuned}`,
    for every parameter and floating-point buffer; ``alpha = 0`` gives ``start``
    and ``alpha = 1`` gives ``tuned``. The mix is meaningful when ``tuned`` was
    fine-tuned from ``start`` (LP-FT from its linear probe), so that both share
    the head. Returns a new model; neither input changes.

    >>> a, b = nn.Linear(2, 1), nn.Linear(2, 1)
    >>> mixed = wise_ft(a, b, 0.25)
    >>> torch.allclose(mixed.weight, 0.75 * a.weight + 0.25 * b.weight)
    True
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"wise_ft mixes two models with 0 <= alpha <= 1, got {alpha!r}")
    a, b = start.state_dict(), tuned.state_dict()
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError("wise_ft needs two models of the same architecture (the same state_dict keys and "
                         "shapes); fine-tune a copy of the start model and mix the two")
    mixed = copy.deepcopy(tuned)
    mixed.load_state_dict({k: torch.lerp(a[k], b[k], alpha) if a[k].is_floating_point() else b[k]
                           for k in a})
    return mixed


class LoRA(nn.Module):
    """A frozen linear or convolutional layer plus a trainable low-rank update (Hu et al., 2021).

    The layer's weight :math:`W` (``out`` x ``fan_in`` once flattened) becomes
    :math:`W + \\frac{\\alpha}{r} B A` with :math:`A \\in \\mathbb{R}^{r \\times fan_{in}}`
    drawn at random and :math:`B \\in \\mathbb{R}^{out \\times r}` starting at zero, so
    the wrapped layer starts out computing exactly what the pre-trained one did.
    Only :math:`A` and :math:`B` are trained: :math:`r (out + fan_{in})` numbers
    instead of :math:`out \\cdot fan_{in}`.
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, rank: int, alpha: float | None = None) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise ValueError(f"LoRA wraps nn.Conv2d or nn.Linear layers, got a {type(layer).__name__}")
        out, fan_in = layer.weight.shape[0], layer.weight[0].numel()
        if not isinstance(rank, int) or not 1 <= rank <= min(out, fan_in):
            raise ValueError(f"LoRA's rank must be an int from 1 to {min(out, fan_in)} for this layer, "
                             f"got {rank!r}")
        self.layer = layer.requires_grad_(False)
        weight = layer.weight
        self.A = nn.Parameter(torch.randn(rank, fan_in, dtype=weight.dtype, device=weight.device)
                              / fan_in ** 0.5)
        self.B = nn.Parameter(torch.zeros(out, rank, dtype=weight.dtype, device=weight.device))
        self.scale = (rank if alpha is None else alpha) / rank

    def delta(self) -> torch.Tensor:
        """The low-rank update :math:`\\frac{\\alpha}{r} B A`, in the shape of the layer's weight."""
        return (self.scale * self.B @ self.A).view_as(self.layer.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.layer.weight + self.delta()
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, weight, self.layer.bias)
        return nn.functional.linear(x, weight, self.layer.bias)

    def merged(self) -> nn.Module:
        """A plain layer with the update folded into its weight: no cost at inference."""
        layer = copy.deepcopy(self.layer)
        with torch.no_grad():
            layer.weight += self.delta()
        return layer


def add_lora(model: nn.Module, rank: int, alpha: float | None = None) -> nn.Module:
    """Wrap every convolution and linear layer of the body in :class:`LoRA` and train only those and the head.

    Works in place on ``model`` (pass a copy to keep the original) and returns it.
    Everything else of the body, normalisation layers included, is frozen.
    """
    blocks = blocks_of(model)
    freeze(model)
    for _, block in blocks:
        for name, layer in list(block.named_modules()):
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                parent, _, leaf = name.rpartition(".")
                setattr(block.get_submodule(parent) if parent else block, leaf, LoRA(layer, rank, alpha))
    unfreeze(model, [HEAD])
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRA` wrapper of ``model`` by its merged layer (in place; returns ``model``)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRA):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, module.merged())
    return model


# ---------------------------------------------------------------------------
# Measuring feature distortion and aligning feature statistics
# ---------------------------------------------------------------------------


def linear_cka(X: torch.Tensor | np.ndarray, Y: torch.Tensor | np.ndarray) -> float:
    """Linear centred kernel alignment of two representations of the same ``n`` examples.

    Kornblith et al. (2019), Eq. 2.2 of the book: with column-centred ``X`` (n x p)
    and ``Y`` (n x q),

    .. math:: \\mathrm{CKA}(X, Y) = \\frac{\\lVert Y^\\top X \\rVert_F^2}
              {\\lVert X^\\top X \\rVert_F \\, \\lVert Y^\\top Y \\rVert_F}.

    It is 1 for identical representations and invariant to orthogonal
    transformations and isotropic scaling of either one. Computed in float64.
    """
    X, Y = (torch.as_tensor(np.asarray(a, dtype=np.float64)) if not isinstance(a, torch.Tensor)
            else a.detach().cpu().double() for a in (X, Y))
    if X.dim() != 2 or Y.dim() != 2:
        raise ValueError(
            f"linear_cka needs two 2-D (examples x features) arrays, got shapes {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    if X.shape[0] != Y.shape[0] or X.shape[0] < 2:
        raise ValueError(f"X and Y must hold the same examples (>= 2 rows), got {X.shape[0]} and {Y.shape[0]} rows")
    X, Y = X - X.mean(dim=0), Y - Y.mean(dim=0)
    cross = torch.linalg.matrix_norm(Y.T @ X) ** 2
    norms = torch.linalg.matrix_norm(X.T @ X) * torch.linalg.matrix_norm(Y.T @ Y)
    if norms == 0:
        raise ValueError("linear_cka is undefined for a constant representation (all rows equal)")
    return float(cross / norms)


def feature_cka(model_a: nn.Module, model_b: nn.Module, X: torch.Tensor) -> float:
    """:func:`linear_cka` between the features two models give the same inputs (1 = unchanged)."""
    return linear_cka(extract_features(model_a, X), extract_features(model_b, X))


def align_features(target: torch.Tensor, source: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give the target features the per-dimension mean and standard deviation of the source features.

    The diagonal form of correlation alignment (CORAL, Sun et al., 2016) and of
    adaptive batch normalisation: a transductive fix for covariate shift that needs
    only *unlabelled* target inputs. ``z' = (z - mu_t) / sigma_t * sigma_s + mu_s``.
    """
    if target.dim() != 2 or source.dim() != 2 or target.shape[1] != source.shape[1]:
        raise ValueError(
            f"align_features needs (n, d) target and (m, d) source features, got {tuple(target.shape)} "
            f"and {tuple(source.shape)}"
        )
    mu_t, sd_t = target.mean(dim=0), target.std(dim=0)
    mu_s, sd_s = source.mean(dim=0), source.std(dim=0)
    return (target - mu_t) / (sd_t + eps) * sd_s + mu_s


# ---------------------------------------------------------------------------
# The source model of Chapter 2: a Conv-4 pre-trained on many Glyphs characters
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceConfig:
    """Settings of the source pre-training; every field is part of the cache file name.

    The defaults are the ``quick`` profile of Chapter 2: a 32-channel Conv-4 trained
    for 3 epochs on 16 drawings of 800 characters (about 20 s on a laptop CPU).
    """

    hidden: int = 32
    norm: str = "group"
    max_classes: int | None = 800  # None: all source classes
    train_drawings: int = 16  # per class, the first drawings; the last `val_drawings` validate
    val_drawings: int = 2
    num_epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 32
    seed: int = 0
    glyph_seed: int = 0
    split_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden", "train_drawings", "val_drawings", "num_epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SourceConfig.{name} must be a positive int, got {value!r}")
        if self.max_classes is not None and self.max_classes < 2:
            raise ValueError(f"SourceConfig.max_classes must be >= 2 or None, got {self.max_classes!r}")
        if not self.lr > 0:
            raise ValueError(f"SourceConfig.lr must be positive, got {self.lr!r}")

    def file_stem(self) -> str:
        classes = "all" if self.max_classes is None else str(self.max_classes)
        return (
            f"source-conv4-v{SOURCE_FORMAT}-h{self.hidden}-{self.norm}-c{classes}-d{self.train_drawings}"
            f"+{self.val_drawings}-e{self.num_epochs}-lr{self.lr:g}-b{self.batch_size}-s{self.seed}"
            f"-glyphs{self.glyph_seed}-split{self.split_seed}"
        )


@dataclass
class SourceModel:
    """A pre-trained source model and what it was trained on."""

    model: nn.Module
    classes: list[int]
    val_accuracy: float
    train_seconds: float
    path: Path
    from_cache: bool


def source_classes(data: LabelledSet, config: SourceConfig) -> list[int]:
    """The source task's classes: the training alphabets of ``split_classes(by="group")``, optionally subsampled."""
    from .data import split_classes

    classes = split_classes(data, by="group", seed=config.split_seed).train
    if config.max_classes is not None and config.max_classes < len(classes):
        rng = np.random.default_rng(config.seed)
        classes = sorted(int(c) for c in rng.choice(classes, size=config.max_classes, replace=False))
    return classes


def _source_split(data: LabelledSet, classes: Sequence[int], config: SourceConfig) -> tuple[LabelledSet, LabelledSet]:
    """First ``train_drawings`` and last ``val_drawings`` of each class, labels ``0 .. len(classes)-1``."""
    rows = data.indices_by_class()
    need = config.train_drawings + config.val_drawings
    short = [c for c in classes if len(rows[c]) < need]
    if short:
        raise ValueError(
            f"class {short[0]} has {len(rows[short[0]])} examples, fewer than the {need} the config asks for"
        )
    train_rows = np.concatenate([rows[c][: config.train_drawings] for c in classes])
    val_rows = np.concatenate([rows[c][len(rows[c]) - config.val_drawings :] for c in classes])
    label = torch.full((data.num_classes,), -1, dtype=torch.long)
    label[torch.as_tensor(list(classes))] = torch.arange(len(classes))
    names = [data.class_names[c] for c in classes]
    part = lambda r: LabelledSet(data.X[torch.from_numpy(r)], label[data.y[torch.from_numpy(r)]], names)  # noqa: E731
    return part(train_rows), part(val_rows)


def source_model_path(config: SourceConfig, train: LabelledSet, device: torch.device | None = None) -> Path:
    """Where the source model for these settings, this training set and this device is cached."""
    return store.cache_path(config.file_stem(), train.X, train.y, device=device)


def pretrain_source_model(train: LabelledSet, val: LabelledSet, config: SourceConfig,
                          device: torch.device | None = None, max_steps: int | None = None,
                          checkpoint: runtime.Checkpoint | None = None,
                          ) -> tuple[nn.Module, float, training.History]:
    """Train a Conv-4 classifier on the source task; returns it, its source validation accuracy and history.

    With ``checkpoint`` a stopped run continues where it stopped (:func:`training.fit`).
    """
    runtime.seed_everything(config.seed)
    model = models.Conv4(train.X.shape[1], config.hidden, train.num_classes, norm=config.norm,
                         image_size=train.X.shape[-1]).to(device or runtime.get_device())
    history = training.fit(model, train, val, num_epochs=config.num_epochs, lr=config.lr,
                           batch_size=config.batch_size, seed=config.seed, max_steps=max_steps,
                           desc="pre-training the source model", checkpoint=checkpoint)
    return model, float(training.evaluate(model, val)[1]), history


# The quick profile's source model lives in the trained-model store (`make models`).
SOURCE_MODEL_NAME = "glyphs-source-conv4"
GLYPHS_IMAGE_SIZE = 28  # load_glyphs' default


def _source_recipe_config(config: SourceConfig) -> dict:
    return {k: v for k, v in asdict(config).items() if k != "seed"}


def train_source_recipe(config: dict, seed: int, max_steps: int | None = None,
                        device: torch.device | None = None,
                        checkpoint: runtime.Checkpoint | None = None) -> store.Trained:
    """The store's recipe for Chapter 2's source model: :func:`pretrain_source_model` on the Glyphs source task."""
    from .data import load_glyphs

    settings = SourceConfig(**config, seed=seed)
    data = load_glyphs(seed=settings.glyph_seed)
    classes = source_classes(data, settings)
    train, val = _source_split(data, classes, settings)
    model, val_accuracy, history = pretrain_source_model(train, val, settings, device, max_steps,
                                                           checkpoint)
    return store.Trained(model, {"source_val_acc": val_accuracy}, history.step_loss,
                         {"classes": classes, "epoch_train_loss": history.train_loss,
                          "epoch_val_acc": history.val_metric, "data_fingerprint": store.fingerprint(train.X, train.y)})


def build_source_model(config: dict) -> nn.Module:
    """The untrained Conv-4 of a stored source model (what :func:`mtl_course.store.load` fills in)."""
    if config["max_classes"] is None:
        raise ValueError("a stored source model needs max_classes set (the class count fixes its head)")
    return models.Conv4(1, config["hidden"], config["max_classes"], norm=config["norm"],
                        image_size=GLYPHS_IMAGE_SIZE)


SOURCE_RECIPE = store.register(store.Recipe(
    name=SOURCE_MODEL_NAME, chapter=2, train=train_source_recipe, build=build_source_model,
    config=_source_recipe_config(SourceConfig()), seed=SourceConfig().seed, version=1,
    description="Conv-4 pre-trained to classify 800 characters of the Glyphs training alphabets"))


def _is_stored(config: SourceConfig, data: LabelledSet | None, classes: Sequence[int] | None) -> bool:
    """True when ``source_model`` is asked for exactly the stored model's settings."""
    return (_source_recipe_config(config) == dict(SOURCE_RECIPE.config) and config.seed == SOURCE_RECIPE.seed
            and classes is None and (data is None or data.X.shape[-1] == GLYPHS_IMAGE_SIZE))


def source_model(config: SourceConfig = SourceConfig(), data: LabelledSet | None = None,
                 classes: Sequence[int] | None = None, device: torch.device | None = None) -> SourceModel:
    """The pre-trained source model: from the trained-model store, or trained once and cached.

    By default the source task classifies the characters of the Glyphs training
    alphabets (:func:`source_classes`). The default settings (the quick profile)
    are the store's model :data:`SOURCE_MODEL_NAME`, trained by ``make models``:
    it is loaded, never retrained here (a missing or stale file raises
    :class:`mtl_course.store.StoreError`). Other settings (the full profile) are
    trained on first use and cached (:func:`mtl_course.store.cached`, at
    :func:`source_model_path`).
    """
    if data is None:
        from .data import load_glyphs

        data = load_glyphs(seed=config.glyph_seed)
    if _is_stored(config, data, classes):
        stored = store.load(SOURCE_MODEL_NAME, device)
        expected = source_classes(data, config)
        if stored.entry["extra"]["classes"] != expected:
            raise store.StoreError(f"the stored {SOURCE_MODEL_NAME!r} was trained on other classes than this "
                                   f"Glyphs set's source classes; run `make models MODEL={SOURCE_MODEL_NAME}`")
        return SourceModel(stored.model, expected, stored.metrics["source_val_acc"], stored.seconds,
                           store.STORE_DIR / stored.entry["file"], from_cache=True)
    classes = source_classes(data, config) if classes is None else [int(c) for c in classes]
    train, val = _source_split(data, classes, config)
    device = torch.device(device) if device is not None else runtime.get_device()
    path = source_model_path(config, train, device)

    def train_once() -> dict:
        started = time.perf_counter()
        trained, val_accuracy, _ = pretrain_source_model(train, val, config, device)
        return {"state_dict": {k: v.detach().cpu() for k, v in trained.state_dict().items()}, "classes": classes,
                "val_accuracy": val_accuracy, "train_seconds": time.perf_counter() - started,
                "config": asdict(config)}

    checkpoint, from_cache = store.cached(path, train_once, valid=lambda c: c.get("classes") == classes)
    model = models.Conv4(train.X.shape[1], config.hidden, len(classes), norm=config.norm, image_size=train.X.shape[-1])
    model.load_state_dict(checkpoint["state_dict"])
    return SourceModel(model.to(device), classes, checkpoint["val_accuracy"], checkpoint["train_seconds"], path,
                       from_cache=from_cache)


# ---------------------------------------------------------------------------
# LP-FT of the ImageNet-pretrained ResNet-18 (full profile, needs internet)
# ---------------------------------------------------------------------------


def resnet18_lp_ft(train, val, num_classes: int, *, pretrained: bool = True, image_size: int = 112,
                   lp_lr: float = 1e-2, ft_lr: float = 1e-4, lp_epochs: int = 5, ft_epochs: int = 5,
                   device: torch.device | str | None = None,
                   **fit_kwargs: Any) -> tuple[BlockBackbone, training.History, training.History]:
    """Chapter 2's ImageNet example: LP-FT (:func:`lp_ft`) of torchvision's ResNet-18 on a target task.

    The network is built by :func:`resnet18_backbone` with a fresh ``num_classes``
    head and moved to ``device`` (default :func:`runtime.get_device`); the data
    stay where they are and :func:`training.fit` moves each batch. With
    ``pretrained=True`` the ImageNet weights are downloaded on first use and
    :class:`mtl_course.models.WeightsUnavailableError` is raised where there is no internet;
    ``pretrained=False`` runs the same steps from random weights (for tests).
    Returns the tuned model and the histories of both phases.
    """
    device = torch.device(device) if device is not None else runtime.get_device()
    model = resnet18_backbone(num_classes, pretrained=pretrained, image_size=image_size).to(device)
    probe, tune = lp_ft(model, train, val, lp_lr=lp_lr, ft_lr=ft_lr, lp_epochs=lp_epochs, ft_epochs=ft_epochs,
                        **fit_kwargs)
    return model, probe, tune


__all__ = [
    "HEAD",
    "LoRA",
    "SourceConfig",
    "SourceModel",
    "Stage",
    "ULMFIT_FACTOR",
    "add_lora",
    "align_features",
    "blocks_of",
    "discriminative_lrs",
    "extract_features",
    "feature_cka",
    "fine_tune",
    "fit_layerwise",
    "freeze",
    "gradual_unfreezing",
    "layer_names",
    "layerwise_param_groups",
    "linear_cka",
    "linear_probe",
    "lp_ft",
    "merge_lora",
    "pretrain_source_model",
    "reinit_head",
    "resnet18_lp_ft",
    "source_classes",
    "source_model",
    "source_model_path",
    "surgical_fine_tune",
    "train_only",
    "trainable_layers",
    "unfreeze",
    "unfreezing_schedule",
    "wise_ft",
]
