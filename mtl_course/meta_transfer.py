"""Meta-transfer learning (Sun et al., 2019), the method of Chapter 5.

**Chapter 5 -- meta-transfer learning (MTL).** A deep backbone is first trained
on all meta-training classes as one ordinary classification problem (phase 1,
:func:`pretrain_backbone`); its classifier is discarded and its weights
``Θ = {W, b}`` are frozen. Meta-training (phase 2, :func:`meta_transfer_train`)
then learns, across few-shot tasks, only light-weight **scaling and shifting**
(SS) parameters of every convolution (Sun et al., 2019, Eq. 7)::

    SS(X; W, b; Φ_S1, Φ_S2) = (W ⊙ Φ_S1) X + (b + Φ_S2),

with ``Φ_S1`` initialised to ones and ``Φ_S2`` to zeros, together with the
initialisation of a linear classifier ``θ``. The inner loop adapts only ``θ``
on the support set (gradient steps, as in ANIL); the outer loop updates SS and
the classifier's initialisation on the query set. At meta-test (phase 3,
:func:`meta_test`) SS is fixed and only the classifier adapts.

Two SS variants (:data:`SS_MODES`): ``"channel"`` scales each output filter as
a whole (one ``Φ_S1`` per output channel, the paper's description), ``"pair"``
scales each 2-D kernel ``W[o, i]`` (one ``Φ_S1`` per (output, input) channel
pair, the shape used in the authors' released code). Both have one shift per
output channel.

The **hard-task (HT) meta-batch** is reconstructed here, because the authors'
code never shipped it; see :func:`failure_classes`, :func:`hard_task_batch` and
:func:`meta_transfer_train` for exactly what we do.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import meta, runtime, store, training
from .data import Episode, EpisodeSampler, LabelledSet, split_examples
from .models import ResNet12
from .transfer import extract_features

SS_MODES = ("channel", "pair")
"""Granularity of the SS scale: per output channel (paper) or per (output, input) channel pair (code)."""
BACKBONE_MODES = ("ss", "ss-pair", "fine-tune", "frozen")
"""How :func:`mtl_model` treats the pre-trained backbone during meta-training."""

# --------------------------------------------------------------------------------------
# Scaling and shifting (Sun et al., 2019, Eq. 7)
# --------------------------------------------------------------------------------------


def ss_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor,
              shift: torch.Tensor, stride=1, padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """``SS(X; W, b; Φ_S1, Φ_S2) = (W ⊙ Φ_S1) X + (b + Φ_S2)`` (Sun et al., 2019, Eq. 7).

    ``scale`` (``Φ_S1``) broadcasts against ``weight`` (shape ``(out, in, kh, kw)``):
    ``(out, 1, 1, 1)`` scales whole filters, ``(out, in, 1, 1)`` each 2-D kernel.
    ``shift`` (``Φ_S2``) has one entry per output channel; a missing ``bias`` counts as zero.
    """
    if shift.shape != (weight.shape[0],):
        raise ValueError(f"shift needs one value per output channel, shape ({weight.shape[0]},); "
                         f"got {tuple(shift.shape)}")
    if scale.dim() != 4 or scale.shape[0] != weight.shape[0] or scale.shape[2:] != (1, 1) or \
            scale.shape[1] not in (1, weight.shape[1]):
        raise ValueError(f"scale must have shape ({weight.shape[0]}, 1, 1, 1) or "
                         f"({weight.shape[0]}, {weight.shape[1]}, 1, 1); got {tuple(scale.shape)}")
    b = shift if bias is None else bias + shift
    return F.conv2d(x, weight * scale, b, stride, padding, dilation, groups)


class SSConv2d(nn.Module):
    """A frozen ``nn.Conv2d`` modulated by learnable scaling ``Φ_S1`` (init 1) and shifting ``Φ_S2`` (init 0).

    ``per="channel"``: one scale per output channel (the paper's description);
    ``per="pair"``: one scale per (output, input) channel pair (the authors' code).
    The wrapped convolution's ``weight`` and ``bias`` never receive gradients.
    """

    def __init__(self, conv: nn.Conv2d, per: str = "channel") -> None:
        super().__init__()
        if per not in SS_MODES:
            raise ValueError(f"per must be one of {SS_MODES}, got {per!r}")
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"SSConv2d wraps an nn.Conv2d, got {type(conv).__name__}")
        self.conv = conv.requires_grad_(False)
        out_c, in_c = conv.weight.shape[:2]
        shape = (out_c, 1, 1, 1) if per == "channel" else (out_c, in_c, 1, 1)
        self.per = per
        self.scale = nn.Parameter(torch.ones(shape, device=conv.weight.device))
        self.shift = nn.Parameter(torch.zeros(out_c, device=conv.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return ss_conv2d(x, c.weight, c.bias, self.scale, self.shift, c.stride, c.padding, c.dilation, c.groups)


def _convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def wrap_with_ss(backbone: nn.Module, per: str = "channel") -> nn.Module:
    """A copy of ``backbone`` with every ``nn.Conv2d`` wrapped in :class:`SSConv2d` and all else frozen.

    Every pre-trained parameter (convolutions, normalisation, head) gets
    ``requires_grad=False``; only the SS scales and shifts are trainable. The
    input ``backbone`` is not modified.
    """
    if per not in SS_MODES:
        raise ValueError(f"per must be one of {SS_MODES}, got {per!r}")
    model = copy.deepcopy(backbone).requires_grad_(False)
    convs = _convs(model)
    if not convs:
        raise ValueError("the backbone has no nn.Conv2d to wrap with scaling and shifting")
    for name, conv in convs:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, SSConv2d(conv, per))
    return model


def ss_parameter_names(model: nn.Module) -> list[str]:
    """Names of the SS parameters (scales and shifts) of a model made by :func:`wrap_with_ss`."""
    wrapped = [name for name, m in model.named_modules() if isinstance(m, SSConv2d)]
    return [f"{name}.{p}" for name in wrapped for p in ("scale", "shift")]


def touched_parameters(backbone: nn.Module) -> dict[str, int]:
    """Parameters each method changes in the backbone's convolutions (the chapter's counting table).

    ``"fine-tuning"``: every weight and bias, ``out·in·kh·kw (+ out)`` per layer;
    ``"SS (channel)"``: ``2·out`` per layer; ``"SS (pair)"``: ``out·in + out`` per layer.
    Normalisation layers and the classifier are not counted (both methods treat them alike).
    """
    convs = [m for _, m in _convs(backbone)]  # also finds the convolutions inside SSConv2d wrappers
    if not convs:
        raise ValueError("the backbone has no convolutions to count")
    counts = {"fine-tuning": 0, "SS (channel)": 0, "SS (pair)": 0}
    for c in convs:
        out_c, in_c = c.weight.shape[:2]
        counts["fine-tuning"] += c.weight.numel() + (c.bias.numel() if c.bias is not None else 0)
        counts["SS (channel)"] += 2 * out_c
        counts["SS (pair)"] += out_c * in_c + out_c
    return counts


# --------------------------------------------------------------------------------------
# Phase 1: large-scale training; phase 2 model
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of phase 1; all of them name the cache file. Defaults: the quick profile (narrow ResNet-12)."""

    channels: tuple[int, ...] = (8, 16, 32, 64)
    norm: str = "group"
    num_epochs: int = 3
    lr: float = 2e-3
    batch_size: int = 64
    val_fraction: float = 0.1
    seed: int = 0

    def file_stem(self) -> str:
        widths = "-".join(str(c) for c in self.channels)
        return (f"mtl-resnet12-{widths}-{self.norm}-e{self.num_epochs}-lr{self.lr:g}-b{self.batch_size}"
                f"-v{self.val_fraction:g}-s{self.seed}")


def pretrain_backbone(data: LabelledSet, classes: Sequence[int], config: PretrainConfig = PretrainConfig(),
                      device: torch.device | None = None) -> ResNet12:
    """Phase 1: train a ResNet-12 to classify all meta-training ``classes`` at once, then discard its classifier.

    A ``val_fraction`` of each class's examples selects the best epoch
    (:func:`mtl_course.training.fit`). The returned backbone has
    ``head = nn.Identity()`` and outputs ``feature_dim`` features.
    """
    return _pretrain(data, classes, config, device)[0]


def _pretrain(data: LabelledSet, classes: Sequence[int], config: PretrainConfig,
              device: torch.device | None = None, max_steps: int | None = None,
              checkpoint: runtime.Checkpoint | None = None) -> tuple[ResNet12, training.History]:
    device = device or runtime.get_device()
    train, val, _ = split_examples(data.subset(classes), (1 - config.val_fraction, config.val_fraction, 0.0),
                                   seed=config.seed)
    runtime.seed_everything(config.seed)
    model = ResNet12(data.X.shape[1], config.channels, out_features=len(classes), norm=config.norm).to(device)
    record = training.fit(model, (train.X, train.y), (val.X, val.y), num_epochs=config.num_epochs, lr=config.lr,
                          batch_size=config.batch_size, seed=config.seed, max_steps=max_steps,
                          desc="phase 1: large-scale training", checkpoint=checkpoint)
    model.head = nn.Identity()
    return model.eval(), record


# The quick profile's phase-1 network lives in the trained-model store (`make models`).
BACKBONE_MODEL_NAME = "glyphs-mtl-resnet12"


def _glyphs_meta_training_classes() -> tuple[LabelledSet, list[int]]:
    """Chapter 5's quick-profile data: Glyphs and its meta-training alphabets' classes."""
    from .data import load_glyphs, split_classes

    data = load_glyphs()
    return data, [int(c) for c in split_classes(data, by="group", seed=0).train]


def train_backbone_recipe(config: dict, seed: int, max_steps: int | None = None,
                          device: torch.device | None = None,
                          checkpoint: runtime.Checkpoint | None = None) -> store.Trained:
    """The store's recipe for Chapter 5's phase 1: :func:`pretrain_backbone` on the Glyphs meta-training classes."""
    settings = PretrainConfig(**{**config, "channels": tuple(config["channels"])}, seed=seed)
    data, classes = _glyphs_meta_training_classes()
    model, history = _pretrain(data, classes, settings, device, max_steps, checkpoint)
    return store.Trained(model, {"val_acc": history.best_val_metric}, history.step_loss,
                         {"classes": classes, "epoch_train_loss": history.train_loss,
                          "epoch_val_acc": history.val_metric})


def build_backbone(config: dict) -> ResNet12:
    """The untrained phase-1 backbone of a stored model (its classifier already dropped)."""
    model = ResNet12(1, tuple(config["channels"]), norm=config["norm"])
    return model


BACKBONE_RECIPE = store.register(store.Recipe(
    name=BACKBONE_MODEL_NAME, chapter=5, train=train_backbone_recipe, build=build_backbone,
    config={k: v for k, v in asdict(PretrainConfig()).items() if k != "seed"}, seed=PretrainConfig().seed,
    version=1, description="ResNet-12 trained to classify every character of the Glyphs meta-training alphabets"))


def pretrained_backbone(data: LabelledSet, classes: Sequence[int], config: PretrainConfig = PretrainConfig(),
                        device: torch.device | None = None) -> ResNet12:
    """:func:`pretrain_backbone`: from the trained-model store, or trained once and cached.

    The default settings on Glyphs (the quick profile) are the store's model
    :data:`BACKBONE_MODEL_NAME`, trained by ``make models`` and never retrained
    here (a missing or stale file raises :class:`mtl_course.store.StoreError`).
    Other settings are trained on first use and cached
    (:func:`mtl_course.store.cached`, at :func:`mtl_course.store.cache_path`: named after every setting,
    a fingerprint of the images and classes, and what changes the last bits of trained weights).
    """
    device = device or runtime.get_device()
    if config == PretrainConfig() and data.X.shape[1] == 1:
        stored = store.load(BACKBONE_MODEL_NAME, device)
        if stored.entry["extra"]["classes"] != [int(c) for c in classes]:
            raise store.StoreError(f"the stored {BACKBONE_MODEL_NAME!r} was trained on other classes than the "
                                   f"ones asked for; run `make models MODEL={BACKBONE_MODEL_NAME}`, or pass "
                                   "another PretrainConfig to train one for these classes")
        return stored.model
    classes = [int(c) for c in classes]
    path = store.cache_path(config.file_stem(), data.X, torch.tensor(classes, dtype=torch.int64), device=device)

    def train_once() -> dict:
        trained = pretrain_backbone(data, classes, config, device)
        return {"state_dict": {k: v.detach().cpu() for k, v in trained.state_dict().items()}}

    checkpoint, _ = store.cached(path, train_once, valid=lambda c: "state_dict" in c)
    model = ResNet12(data.X.shape[1], config.channels, norm=config.norm)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


def mtl_model(backbone: nn.Module, n_way: int, mode: str = "ss") -> nn.Module:
    """The phase-2 network: a copy of the pre-trained ``backbone`` and a new zero-initialised classifier ``head``.

    ``mode`` (:data:`BACKBONE_MODES`): ``"ss"``/``"ss-pair"`` wrap the frozen
    backbone with SS per channel / per channel pair; ``"fine-tune"`` leaves every
    backbone weight trainable (meta-learned like MAML's outer loop, but with
    the same head-only inner loop); ``"frozen"`` trains nothing but the head.
    """
    if mode not in BACKBONE_MODES:
        raise ValueError(f"mode must be one of {BACKBONE_MODES}, got {mode!r}")
    dim = getattr(backbone, "feature_dim", None)
    if dim is None:
        raise ValueError("mtl_model needs a backbone with a `feature_dim` attribute (e.g. ResNet12)")
    if mode in ("ss", "ss-pair"):
        model = wrap_with_ss(backbone, "channel" if mode == "ss" else "pair")
    else:
        model = copy.deepcopy(backbone).requires_grad_(mode == "fine-tune")
    device = next(backbone.parameters()).device
    model.head = nn.Linear(dim, n_way).to(device)
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    return model


# --------------------------------------------------------------------------------------
# The hard-task meta-batch (our reconstruction)
# --------------------------------------------------------------------------------------


def class_accuracies(logits: torch.Tensor, y: torch.Tensor, n_way: int) -> torch.Tensor:
    """Accuracy on the query examples of each class ``0 .. n_way-1`` of one task."""
    correct = (logits.argmax(-1) == y).float()
    counts = torch.bincount(y, minlength=n_way).clamp(min=1)
    return torch.bincount(y, weights=correct, minlength=n_way) / counts


def failure_classes(query_outputs: torch.Tensor, query_y: torch.Tensor, classes: Sequence[Sequence[int]]) -> list[int]:
    """Each task's **failure class**: the class with the lowest query accuracy (Sun et al., 2019, Sec. 4.2).

    ``query_outputs`` and ``query_y`` have a leading task dimension; ``classes[i]``
    maps task ``i``'s labels to original class ids. Ties in accuracy go to the
    class whose query examples get the lower mean probability of their true label.
    """
    found = []
    for out, y, ids in zip(query_outputs.detach(), query_y, classes):
        n_way = len(ids)
        acc = class_accuracies(out, y, n_way)
        p_true = out.softmax(-1).gather(1, y[:, None]).squeeze(1)
        counts = torch.bincount(y, minlength=n_way).clamp(min=1)
        confidence = torch.bincount(y, weights=p_true, minlength=n_way) / counts
        order = sorted(range(n_way), key=lambda c: (acc[c].item(), confidence[c].item()))
        found.append(int(ids[order[0]]))
    return found


def hard_task_batch(data: LabelledSet, failures: Sequence[int], pool: Sequence[int], num_tasks: int, n_way: int,
                    k_shot: int, q_queries: int, rng: np.random.Generator) -> list[Episode]:
    """Re-sample ``num_tasks`` harder tasks around the failure classes (our HT reconstruction).

    Each hard task takes ``min(n_way, #distinct failures)`` distinct classes
    drawn from ``failures``, fills the remaining ways with other classes of the
    meta-training ``pool``, and draws *fresh* support and query examples of
    those classes (so the model does not see the same drawings again).
    """
    distinct = sorted(set(int(c) for c in failures))
    if not distinct:
        raise ValueError("hard_task_batch needs at least one failure class")
    outside = [c for c in pool if c not in distinct]
    if len(outside) < n_way:
        raise ValueError(f"the class pool is too small to fill {n_way}-way hard tasks")
    episodes = []
    for _ in range(num_tasks):
        hard = list(rng.choice(distinct, size=min(n_way, len(distinct)), replace=False))
        rest = list(rng.choice(outside, size=n_way - len(hard), replace=False))
        sampler = EpisodeSampler(data, hard + rest, n_way, k_shot, q_queries, seed=int(rng.integers(2**31)))
        episode = sampler.sample()
        episode.info["hard_classes"] = [int(c) for c in hard]
        episodes.append(episode)
    return episodes


# --------------------------------------------------------------------------------------
# Phase 2: meta-training SS and the classifier; phase 3: meta-test
# --------------------------------------------------------------------------------------


class HardTaskSampler:
    """Phase 2's meta-batches: ``tasks_per_batch`` random tasks, and with HT a batch of hard tasks now and then.

    **HT meta-batch (our reconstruction; the official code has none).** With
    ``hard_tasks=True``, after every ``every`` regular meta-batches the next
    one is made of hard tasks (:func:`hard_task_batch`) re-sampled around the
    failure class of each task of those regular batches (:func:`failure_classes`:
    lowest class-level query accuracy after adaptation). Call the sampler for
    the next meta-batch and :meth:`observe` with each batch and its
    :class:`mtl_course.meta.MetaOutput`; :func:`mtl_course.meta.meta_train`
    does both (``sample_batch`` and ``on_step``). Hard batches take the place
    of regular ones, so HT and random sampling see the same number of tasks.
    """

    def __init__(self, sampler: EpisodeSampler, tasks_per_batch: int, hard_tasks: bool = False, every: int = 2,
                 seed: int = 0) -> None:
        if tasks_per_batch < 1 or every < 1:
            raise ValueError(f"tasks_per_batch and every must be >= 1, got {tasks_per_batch} and {every}")
        self.sampler, self.tasks_per_batch, self.hard_tasks, self.every = sampler, tasks_per_batch, hard_tasks, every
        self.rng = runtime.rng(seed)
        self.hard_batches, self.failures = 0, []  # what the HT batches were built from
        self._recent: list[int] = []
        self._regular_since_hard, self._last_was_hard = 0, False

    def __call__(self) -> list[Episode]:
        self._last_was_hard = self.hard_tasks and self._regular_since_hard >= self.every
        if not self._last_was_hard:
            return self.sampler.batch(self.tasks_per_batch)
        s = self.sampler
        batch = hard_task_batch(s.data, self._recent, s.classes, self.tasks_per_batch, s.n_way, s.k_shot,
                                s.q_queries, self.rng)
        self.hard_batches += 1
        self.failures += self._recent
        self._recent, self._regular_since_hard = [], 0
        return batch

    def observe(self, batch: Sequence[Episode], out: meta.MetaOutput) -> None:
        """Record the failure class of every task of a regular batch (with HT; otherwise nothing to do)."""
        if self.hard_tasks and not self._last_was_hard:
            self._recent += failure_classes(out.query_outputs, out.query_y, [e.classes for e in batch])
            self._regular_since_hard += 1


@dataclass
class MetaTransferHistory(meta.MetaHistory):
    """What :func:`meta_transfer_train` recorded: :class:`mtl_course.meta.MetaHistory` and the HT batches."""

    tasks_per_batch: int = 1
    hard_batches: int = 0
    failures: list[int] = field(default_factory=list)

    @property
    def tasks(self) -> list[int]:
        """Meta-training tasks seen at each validation round (0: before the first step)."""
        return [step * self.tasks_per_batch for step in self.val_step]


def inner_loop(inner_lr: float, inner_steps: int) -> meta.InnerLoop:
    """The base learner (Sun et al., 2019, Eq. 3): ``inner_steps`` steps ``θ' = θ − α ∇_θ L(support)`` on the head.

    SS is fixed within a task, so the backbone is a fixed function there: the
    support and query images are embedded once (``embed_once``) and only the
    classifier ``head`` adapts; the query loss stays differentiable in SS and
    in the classifier's initialisation (second order through the inner loop).
    """
    return meta.InnerLoop(inner_lr, inner_steps, adapt_keys=("head.weight", "head.bias"), embed_once=True)


def meta_transfer_train(model: nn.Module, sampler: EpisodeSampler, *, outer_steps: int = 100,
                        tasks_per_batch: int = 4, meta_lr: float = 1e-3, inner_lr: float = 1.0,
                        inner_steps: int = 10, hard_tasks: bool = False, ht_every: int = 2,
                        val: tuple[LabelledSet, Sequence[int]] | None = None, num_val_episodes: int = 200,
                        val_queries: int = 15, eval_every: int = 10, seed: int = 0) -> MetaTransferHistory:
    """Phase 2: meta-train every trainable parameter of ``model`` (SS and the classifier's initialisation).

    Each outer step takes a meta-batch of ``tasks_per_batch`` tasks
    (:class:`HardTaskSampler`, with the HT meta-batch if ``hard_tasks``), adapts
    the ``head`` alone on each support set (:func:`inner_loop`, the base
    learner) and updates the trainable parameters with Adam on the mean query
    loss (the meta learner, Sun et al., 2019, Eqs. 4-5): the one meta-training
    loop of the course, :func:`mtl_course.meta.meta_train`. Frozen weights never
    change. With ``val=(data, classes)``, the model is scored by
    :func:`meta_test` on ``num_val_episodes`` fixed validation episodes
    (``val_queries`` queries per class) before the first step and every
    ``eval_every`` outer steps, and the best state is restored at the end (model
    selection on validation classes only; "no meta-training" can win).
    """
    if outer_steps < 1:
        raise ValueError(f"outer_steps must be >= 1, got {outer_steps}")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has nothing to meta-train: build it with mtl_model(..., mode='ss')")
    batches = HardTaskSampler(sampler, tasks_per_batch, hard_tasks, ht_every, seed=seed)

    def validate(m: nn.Module) -> float:
        return meta_test(m, *val, num_episodes=num_val_episodes, n_way=sampler.n_way, k_shot=sampler.k_shot,
                         q_queries=val_queries, inner_lr=inner_lr, inner_steps=inner_steps, seed=seed).mean

    history = meta.meta_train(model, batches, method="anil", outer_steps=outer_steps, meta_lr=meta_lr,
                              inner=inner_loop(inner_lr, inner_steps), backend="auto",
                              validate=None if val is None else validate, validate_first=val is not None,
                              eval_every=eval_every, on_step=batches.observe, desc="phase 2: meta-training")
    return MetaTransferHistory(**asdict(history), tasks_per_batch=tasks_per_batch,
                               hard_batches=batches.hard_batches, failures=batches.failures)


def meta_test(model: nn.Module, data: LabelledSet, classes: Sequence[int], *, num_episodes: int = 600,
              n_way: int = 5, k_shot: int = 1, q_queries: int = 15, inner_lr: float = 1.0, inner_steps: int = 10,
              seed: int = 0) -> meta.EpisodeScores:
    """Phase 3: SS fixed, only the classifier adapts; query accuracy mean ± 95 % CI over ``num_episodes``.

    With SS fixed the backbone is a fixed function, so the images of
    ``classes`` are embedded once (:func:`mtl_course.transfer.extract_features`)
    and each episode adapts a copy of the meta-learned ``head`` on its support
    features (:func:`mtl_course.meta.evaluate_episodes`), exactly as the full
    model would, at a fraction of the cost.
    """
    subset = data.subset(classes)
    features = LabelledSet(extract_features(model, subset.X), subset.y, subset.class_names)
    episodes = EpisodeSampler(features, None, n_way, k_shot, q_queries, seed=seed).batch(num_episodes)
    head = copy.deepcopy(model.head).requires_grad_(True)
    return meta.evaluate_episodes(head, episodes, method="maml", inner=meta.InnerLoop(inner_lr, inner_steps))


# --------------------------------------------------------------------------------------
# Phase 2 at scale, over seeds: the stored study of Chapter 5
# --------------------------------------------------------------------------------------

STUDY_MODEL_NAME = "glyphs-mtl-phase2-study"
STUDY_VARIANTS: dict[str, tuple[str, bool]] = {
    "SS": ("ss", False), "SS + HT": ("ss", True), "fine-tune + meta": ("fine-tune", False)}
"""The meta-trained variants of the study: the :func:`mtl_model` mode and whether the HT meta-batch is on."""


@dataclass(frozen=True)
class Phase2Study:
    """Phase 2 at scale: every variant of :data:`STUDY_VARIANTS`, once per seed, from the stored backbone.

    Each run meta-trains on ``outer_steps × tasks_per_batch`` tasks (2,000 by
    default) with :func:`meta_transfer_train` and keeps its best state on
    validation episodes of the first ``val_classes`` validation classes. Each
    variant's meta learning rate is chosen on validation, the same way for
    all: the first seed is trained with every rate of ``meta_lrs``, the rate
    whose run reaches the best validation accuracy is kept, and the other
    seeds are trained with it.
    """

    n_way: int = 20
    k_shot: int = 1
    q_queries: int = 5
    outer_steps: int = 500
    tasks_per_batch: int = 4
    meta_lrs: tuple[float, ...] = (1e-3, 1e-4)
    inner_lr: float = 0.5
    inner_steps: int = 10
    ht_every: int = 2
    seeds: int = 5
    eval_every: int = 50
    val_classes: int | None = 60  # None: every validation class
    val_episodes: int = 100

    def __post_init__(self) -> None:  # a config read back from JSON gives the rates as a list
        object.__setattr__(self, "meta_lrs", tuple(self.meta_lrs))


def study_run_key(variant: str, seed: int) -> str:
    """The name of one run of the study, e.g. ``"SS + HT 3"``."""
    if variant not in STUDY_VARIANTS:
        raise ValueError(f"variant must be one of {list(STUDY_VARIANTS)}, got {variant!r}")
    return f"{variant} {seed}"


def _meta_learned(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p for k, p in model.named_parameters() if p.requires_grad}


class StudyWeights(nn.Module):
    """What every run of the study meta-learned (SS and the classifier, or every weight), by run key.

    The frozen backbone is not repeated: it is the store's
    :data:`BACKBONE_MODEL_NAME`, and :func:`study_model` puts a run's tensors
    back on a copy of it.
    """

    def __init__(self, shapes: dict[str, dict[str, tuple[int, ...]]]) -> None:
        super().__init__()
        self.names = {run: list(tensors) for run, tensors in shapes.items()}
        self.runs = nn.ModuleDict({store.slug(run): nn.ParameterDict(
            {store.slug(k): nn.Parameter(torch.zeros(shape), requires_grad=False) for k, shape in tensors.items()})
            for run, tensors in shapes.items()})

    def tensors(self, run: str) -> dict[str, torch.Tensor]:
        """The meta-learned tensors of ``run`` (a :func:`study_run_key`), keyed like the model's parameters."""
        if run not in self.names:
            raise KeyError(f"no run {run!r} in the study; it has {list(self.names)}")
        stored = self.runs[store.slug(run)]
        return {k: stored[store.slug(k)] for k in self.names[run]}


def study_shapes(c: Phase2Study, backbone: nn.Module, seed: int) -> dict[str, dict[str, tuple[int, ...]]]:
    """The shape of every meta-learned tensor of every run (what :class:`StudyWeights` holds)."""
    shapes = {variant: {k: tuple(p.shape) for k, p in _meta_learned(mtl_model(backbone, c.n_way, mode)).items()}
              for variant, (mode, _) in STUDY_VARIANTS.items()}
    return {study_run_key(v, s): shapes[v] for s in range(seed, seed + c.seeds) for v in STUDY_VARIANTS}


def study_model(weights: StudyWeights, backbone: nn.Module, n_way: int, run: str) -> nn.Module:
    """The phase-2 network of one stored run: :func:`mtl_model` on ``backbone`` with the run's tensors put in."""
    model = mtl_model(backbone, n_way, STUDY_VARIANTS[run.rsplit(" ", 1)[0]][0])
    with torch.no_grad():
        for key, value in weights.tensors(run).items():
            model.get_parameter(key).copy_(value)
    return model.eval()


def study_run(c: Phase2Study, backbone: nn.Module, data: LabelledSet, split, variant: str, seed: int,
              meta_lr: float, max_steps: int | None = None) -> tuple[nn.Module, MetaTransferHistory]:
    """One run of the study: :func:`meta_transfer_train` of ``variant``, its episodes and HT draws from ``seed``."""
    mode, hard_tasks = STUDY_VARIANTS[variant]
    model = mtl_model(backbone, c.n_way, mode)
    sampler = EpisodeSampler(data, split.train, c.n_way, c.k_shot, c.q_queries, seed=seed)
    history = meta_transfer_train(
        model, sampler, outer_steps=c.outer_steps if max_steps is None else min(max_steps, c.outer_steps),
        tasks_per_batch=c.tasks_per_batch, meta_lr=meta_lr, inner_lr=c.inner_lr, inner_steps=c.inner_steps,
        hard_tasks=hard_tasks, ht_every=c.ht_every,
        val=None if max_steps is not None else (data, split.val[:c.val_classes]),
        num_val_episodes=c.val_episodes, eval_every=c.eval_every, seed=seed)
    return model, history


def study_record(history: MetaTransferHistory) -> dict:
    """What the study keeps of a run's history: its validation curve, best step and HT record."""
    return {"val_step": history.val_step, "val_acc": history.val_metric, "best_step": history.best_step,
            "hard_batches": history.hard_batches, "failure_classes": len(set(history.failures))}


def _glyphs_and_split():
    from .data import load_glyphs, split_classes

    data = load_glyphs()
    return data, split_classes(data, by="group", seed=0)


def train_study(c: Phase2Study, backbone: nn.Module, data: LabelledSet, split, seed: int = 0,
                device: torch.device | None = None, checkpoint: runtime.Checkpoint | None = None,
                reverse: bool = False) -> store.Trained:
    """Every run of the study: :func:`study_run` for every variant of :data:`STUDY_VARIANTS` and every seed.

    First every variant's meta learning rate is chosen (:class:`Phase2Study`),
    then the other seeds are trained. The result holds what each run
    meta-learned (:class:`StudyWeights`, for :func:`study_model`); its extras
    hold every run's validation curve, time and HT record (``runs``) and the
    choice of rates; its curve is the first run's (SS, the first rate). A
    stopped training resumes after the last run it finished, and a second
    process with ``reverse=True`` trains the runs from the other end
    (:func:`mtl_course.store.cached_runs`).
    """
    device = device or runtime.get_device()

    def train_run(variant: str, s: int, lr: float) -> dict:
        started = time.perf_counter()
        model, history = study_run(c, backbone, data, split, variant, s, lr)
        return {"tensors": {k: v.detach().cpu() for k, v in _meta_learned(model).items()},
                "record": {**study_record(history), "loss": history.loss, "meta_lr": lr,
                           "seconds": time.perf_counter() - started}}

    def runs_of(jobs: list[tuple[str, int, float]]) -> dict[tuple[str, int, float], dict]:
        keys = {f"{study_run_key(v, s)} lr {lr:g}": (v, s, lr) for v, s, lr in jobs}
        done = store.cached_runs(list(keys), lambda key: train_run(*keys[key]), checkpoint, reverse)
        return {keys[key]: result for key, result in done.items()}

    tried = {(v, lr): r for (v, _, lr), r in runs_of([(v, seed, lr) for v in STUDY_VARIANTS
                                                       for lr in c.meta_lrs]).items()}
    choice = {v: max(c.meta_lrs, key=lambda lr: max(tried[v, lr]["record"]["val_acc"])) for v in STUDY_VARIANTS}
    done = {(v, seed): tried[v, choice[v]] for v in STUDY_VARIANTS}
    rest = [(v, s, choice[v]) for s in range(seed + 1, seed + c.seeds) for v in STUDY_VARIANTS]
    done.update({(v, s): r for (v, s, _), r in runs_of(rest).items()})
    weights = StudyWeights(study_shapes(c, backbone, seed)).to(device)
    runs = {}
    with torch.no_grad():
        for run in weights.names:
            variant, s = run.rsplit(" ", 1)
            result = done[variant, int(s)]
            for key, value in weights.tensors(run).items():
                value.copy_(result["tensors"][key])
            runs[run] = {k: v for k, v in result["record"].items() if k != "loss"}
    metrics = {f"val_acc_{store.slug(v)}": float(np.mean([max(runs[study_run_key(v, s)]["val_acc"])
                                                     for s in range(seed, seed + c.seeds)]))
               for v in STUDY_VARIANTS}
    extra = {"runs": runs, "meta_lr": choice,
             "meta_lr_choice": {v: {f"{lr:g}": max(tried[v, lr]["record"]["val_acc"]) for lr in c.meta_lrs}
                                for v in STUDY_VARIANTS},
             "run_seconds": sum(r["record"]["seconds"] for r in tried.values())
             + sum(r["record"]["seconds"] for (_, s), r in done.items() if s != seed)}
    first_run = tried["SS", c.meta_lrs[0]]  # the run that the recipe's max_steps call starts again
    return store.Trained(weights.eval(), metrics, first_run["record"]["loss"], extra)


def train_study_recipe(config: dict, seed: int, max_steps: int | None = None, device: torch.device | None = None,
                       checkpoint: runtime.Checkpoint | None = None, reverse: bool = False) -> store.Trained:
    """The store's recipe for Chapter 5's study: :func:`train_study` on Glyphs from the stored backbone.

    With ``max_steps`` it trains only the first ``max_steps`` outer steps of
    the study's first run (the provenance check of the store's tests).
    """
    c = Phase2Study(**config)
    device = device or runtime.get_device()
    data, split = _glyphs_and_split()
    backbone = pretrained_backbone(data, split.train, PretrainConfig(), device)
    with runtime.num_threads_at_most(1):  # small convolutions: one thread is fastest
        if max_steps is not None:
            model, history = study_run(c, backbone, data, split, "SS", seed, c.meta_lrs[0], max_steps)
            return store.Trained(model, {}, history.loss)
        return train_study(c, backbone, data, split, seed, device, checkpoint, reverse)


STUDY_RECIPE_SEED = 0


def build_study_weights(config: dict) -> StudyWeights:
    """The empty :class:`StudyWeights` of the stored study, for :func:`mtl_course.store.load` to fill in."""
    backbone = build_backbone(BACKBONE_RECIPE.config)
    return StudyWeights(study_shapes(Phase2Study(**config), backbone, STUDY_RECIPE_SEED))


STUDY_RECIPE = store.register(store.Recipe(
    name=STUDY_MODEL_NAME, chapter=5, train=train_study_recipe, build=build_study_weights,
    config=asdict(Phase2Study()), seed=STUDY_RECIPE_SEED, version=1,
    description="phase 2 on Glyphs 20-way 1-shot tasks: SS, SS + HT and meta-learning every weight, five seeds"))
