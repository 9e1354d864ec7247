"""Configuration of the M3TL network: encoders, parts, and the reductions of Fig. 8 as settings.

The review's generic network (Upadhyay et al., 2021, Fig. 6) has five kinds of
parts: per-modality **encoders** (each pre-trained and frozen, pre-trained and
fine-tuned, or trained from scratch), a multimodal embedding (**fusion**)
layer, a shared **backbone**, task-specific **heads**, and **bi-level meta-
optimisation** over source tasks with **unseen tasks** added at meta-test.
Fig. 8 reduces it to each single paradigm by switching parts off; here a
reduction is a value of :attr:`M3TLConfig.reduction` that fixes those
switches, and :func:`reduce` turns a full configuration into a reduced one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from torch import nn

from ..multitask.data import TASK_KINDS, TaskSpec

ENCODER_MODES = ("frozen", "finetune", "scratch")
"""How an encoder starts and learns: pre-trained and fixed, pre-trained and tuned, or randomly initialised."""
ENCODER_ARCHS = ("mlp", "conv4")
"""Architectures of encoders trained from scratch."""
REDUCTIONS = ("m3tl", "mtl", "meta", "transfer")
"""The full network and its three reductions (review Fig. 8a-c)."""
SWITCHES = ("pretrained", "fusion", "backbone", "meta", "unseen_tasks")
"""The parts of Fig. 6 that a reduction can switch off."""

SWITCHED_OFF: dict[str, tuple[str, ...]] = {
    "m3tl": (),
    "mtl": ("pretrained", "meta", "unseen_tasks"),  # Fig. 8a
    "meta": ("pretrained", "fusion", "backbone"),  # Fig. 8b
    "transfer": ("backbone", "meta"),  # Fig. 8c
}
"""For each reduction, the parts that Fig. 8 blacks out."""


@dataclass(frozen=True, eq=False)
class EncoderSpec:
    """One modality's encoder (the left column of Fig. 6).

    * ``mode="scratch"``: a new ``arch`` network (``"mlp"`` with hidden sizes
      ``hidden``, or ``"conv4"`` with ``hidden`` channels), randomly initialised;
    * ``mode="frozen"``: a copy of ``pretrained`` used as a fixed feature
      extractor (Fig. 6's checkered boxes);
    * ``mode="finetune"``: a copy of ``pretrained`` whose weights are the
      starting point and keep learning (Fig. 6's glowing boxes).

    ``pretrained`` is a model with a ``features`` method and a ``feature_dim``
    (e.g. ``transfer.source_model(...).model``); its own head is dropped.
    """

    mode: str = "scratch"
    arch: str = "mlp"
    hidden: int | tuple[int, ...] = (64,)
    pretrained: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.mode not in ENCODER_MODES:
            raise ValueError(f"encoder mode must be one of {ENCODER_MODES}, got {self.mode!r}")
        if self.mode == "scratch" and self.pretrained is not None:
            raise ValueError("a 'scratch' encoder is randomly initialised and takes no pretrained model; "
                             "use mode='frozen' or mode='finetune' to start from one")
        if self.mode != "scratch":
            if self.pretrained is None:
                raise ValueError(f"a {self.mode!r} encoder needs a pretrained model (EncoderSpec(mode={self.mode!r}, "
                                 "pretrained=transfer.source_model().model))")
            if not callable(getattr(self.pretrained, "features", None)) or not hasattr(self.pretrained, "feature_dim"):
                raise ValueError(f"the pretrained {type(self.pretrained).__name__} needs a `features` method and a "
                                 "`feature_dim` (use models.Conv4, models.MLP or models.resnet18_backbone)")
        if self.arch not in ENCODER_ARCHS:
            raise ValueError(f"encoder arch must be one of {ENCODER_ARCHS}, got {self.arch!r}")

    @property
    def is_pretrained(self) -> bool:
        return self.mode != "scratch"


def _as_scratch(spec: EncoderSpec) -> EncoderSpec:
    """The same encoder architecture, randomly initialised (what a reduction without pre-training uses)."""
    if not spec.is_pretrained:
        return spec
    model = spec.pretrained
    if hasattr(model, "block1") and hasattr(model, "in_channels"):
        return EncoderSpec("scratch", "conv4", model.block1[0].out_channels)
    hidden = tuple(layer.out_features for layer in getattr(model, "body", []) if isinstance(layer, nn.Linear))
    if hidden:
        return EncoderSpec("scratch", "mlp", hidden)
    raise ValueError(f"cannot rebuild a pretrained {type(model).__name__} from scratch; give a scratch EncoderSpec")


@dataclass(frozen=True, eq=False)
class M3TLConfig:
    """The whole network of Fig. 6, or one of its reductions (Fig. 8).

    ``shapes`` gives the shape of one example of each modality
    (``MultiModalSet.modality_shapes``); ``encoders`` the encoder of every
    modality the network reads (a subset of ``shapes``, in input order);
    ``tasks`` the source tasks, one head each. ``fusion`` (a linear layer of
    width ``embed_dim`` with ReLU over the concatenated encodings),
    ``backbone`` (an MLP of sizes ``backbone_sizes``), ``meta`` (bi-level
    meta-training) and ``unseen_tasks`` (new heads at meta-test) default to
    what ``reduction`` prescribes; giving a value that contradicts it is an error.
    """

    shapes: Mapping[str, tuple[int, ...]]
    encoders: Mapping[str, EncoderSpec]
    tasks: Sequence[TaskSpec]
    reduction: str = "m3tl"
    fusion: bool | None = None
    backbone: bool | None = None
    meta: bool | None = None
    unseen_tasks: bool | None = None
    embed_dim: int = 64
    backbone_sizes: tuple[int, ...] = (64,)
    head_hidden: int | None = None
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        object.__setattr__(self, "shapes", {m: tuple(int(s) for s in shape) for m, shape in dict(self.shapes).items()})
        object.__setattr__(self, "encoders", dict(self.encoders))
        object.__setattr__(self, "tasks", list(self.tasks))
        object.__setattr__(self, "backbone_sizes", tuple(int(s) for s in self.backbone_sizes))
        self._check_parts()
        off = SWITCHED_OFF[self.reduction]
        for switch in ("fusion", "backbone", "meta", "unseen_tasks"):
            value = getattr(self, switch)
            default = switch not in off
            if switch == "fusion" and self.reduction == "transfer":
                default = len(self.encoders) > 1  # Fig. 8c keeps fusion when there are several modalities
            if value is None:
                object.__setattr__(self, switch, default)
            elif switch in off and value:
                raise ValueError(f"reduction {self.reduction!r} switches off {switch} (review Fig. 8), but "
                                 f"{switch}=True was given; drop the option or use reduction='m3tl'")
            elif self.reduction == "meta" and switch == "meta" and not value:
                raise ValueError("reduction 'meta' is bi-level meta-learning: meta=False contradicts it")
        pretrained = [m for m, spec in self.encoders.items() if spec.is_pretrained]
        if "pretrained" in off and pretrained:
            raise ValueError(f"reduction {self.reduction!r} uses no pre-trained encoders (review Fig. 8), but encoder "
                             f"{pretrained[0]!r} is {self.encoders[pretrained[0]].mode!r}; use EncoderSpec('scratch') "
                             "or m3tl.reduce(config, ...), which does this for you")
        if self.reduction == "transfer" and not pretrained:
            raise ValueError("reduction 'transfer' needs at least one pre-trained encoder (mode 'frozen' or 'finetune')")
        if not self.fusion and len(self.encoders) > 1:
            raise ValueError(f"without a fusion layer the network reads one modality, but {len(self.encoders)} encoders "
                             f"were given ({list(self.encoders)}); keep one (with_modalities) or set fusion=True")

    def _check_parts(self) -> None:
        if not self.encoders:
            raise ValueError("an M3TL network needs at least one modality encoder")
        unknown = [m for m in self.encoders if m not in self.shapes]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r}: the data have modalities {list(self.shapes)}")
        bad = [m for m, spec in self.encoders.items() if not isinstance(spec, EncoderSpec)]
        if bad:
            raise TypeError(f"the encoder of {bad[0]!r} must be an EncoderSpec, got {type(self.encoders[bad[0]]).__name__}")
        if not self.tasks:
            raise ValueError("an M3TL network needs at least one (source) task")
        for task in self.tasks:
            if not isinstance(task, TaskSpec):
                raise TypeError(f"tasks must be multitask.TaskSpec objects, got {type(task).__name__}")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        if self.embed_dim < 1 or not self.backbone_sizes or min(self.backbone_sizes) < 1:
            raise ValueError(f"embed_dim and backbone_sizes must be positive, got {self.embed_dim} and {self.backbone_sizes}")

    @property
    def modalities(self) -> list[str]:
        """The modalities the network reads, in input order."""
        return list(self.encoders)

    def is_on(self, part: str) -> bool:
        """Whether a part of Fig. 6 (one of :data:`SWITCHES`) is used by this configuration."""
        if part == "pretrained":
            return any(spec.is_pretrained for spec in self.encoders.values())
        if part not in SWITCHES:
            raise ValueError(f"part must be one of {SWITCHES}, got {part!r}")
        return bool(getattr(self, part))


def task(name: str, kind: str, out: int | tuple[int, ...] = 1) -> TaskSpec:
    """A task of a head ``kind`` (``classification``: ``out`` classes; ``regression``; ``dense``: output shape)."""
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r}: choose one of {TASK_KINDS}")
    return TaskSpec(name, kind, out)


def with_modalities(config: M3TLConfig, modalities: Sequence[str]) -> M3TLConfig:
    """The same configuration reading only ``modalities`` (a drop-one-modality ablation, question Q5)."""
    names = list(modalities)
    unknown = [m for m in names if m not in config.encoders]
    if unknown or not names:
        raise ValueError(f"unknown modality {unknown or names}; this configuration reads {config.modalities}")
    fusion = config.fusion if len(names) > 1 or config.reduction in ("m3tl", "mtl") else None
    return dataclasses.replace(config, encoders={m: config.encoders[m] for m in names}, fusion=fusion)


def reduce(config: M3TLConfig, to: str) -> M3TLConfig:
    """Switch off the parts of Fig. 8 to turn ``config`` into plain MTL, meta-learning or transfer learning.

    * ``"mtl"`` (Fig. 8a): pre-trained encoders become the same architectures
      trained from scratch; no meta-optimisation; no unseen tasks;
    * ``"meta"`` (Fig. 8b): encoders from scratch; no fusion and no shared
      backbone (so one modality: reduce ``with_modalities`` first);
    * ``"transfer"`` (Fig. 8c): no shared backbone, no meta-optimisation; the
      pre-trained encoders stay.
    """
    if to not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {to!r}")
    encoders = dict(config.encoders)
    if "pretrained" in SWITCHED_OFF[to]:
        encoders = {m: _as_scratch(spec) for m, spec in encoders.items()}
    if to == "meta" and len(encoders) > 1:
        raise ValueError(f"the meta-learning reduction has no fusion layer and reads one modality; choose one of "
                         f"{list(encoders)} first: reduce(with_modalities(config, ['...']), 'meta')")
    return dataclasses.replace(config, reduction=to, encoders=encoders, fusion=None, backbone=None, meta=None,
                               unseen_tasks=None)
