"""The practitioner's single-task baseline for M3TL's new tasks (question Q1 of Chapter 8).

Faced with one new task and a few labelled examples, a practitioner who owns a
pre-trained encoder does not train a network from scratch: they put a new head
on the encoder's features and train it on the support set, with the encoder
frozen (a linear probe) or fine-tuned at a small step size. Modalities without
a pre-trained encoder go into the head as they are. :class:`PretrainedSingleTask`
is that model for multi-modal rows (``MultiModalSet.packed``): each modality
through its encoder (or unchanged), concatenated, standardised with statistics
fixed on reference data, then one head of the task's kind, initialised at zero.
:func:`cache_lower_blocks` runs the lower blocks of an encoder once, so that
fine-tuning its top block costs little more than a linear probe.
:func:`single_task_test` adapts it to every episode, as :func:`~mtl_course.m3tl.meta_test`
adapts M3TL, so both are scored on the same episodes.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Mapping, Sequence

import torch
from torch import nn

from .. import meta, transfer
from ..data import Episode
from ..data.multimodal import MultiModalSet
from ..multitask.data import TaskSpec
from .network import make_task_head
from .train import task_loss, task_metric


class PretrainedSingleTask(nn.Module):
    """Encoders (pre-trained, or none), concatenation, fixed standardisation, a zero-initialised head.

    ``shapes`` gives each modality's example shape, in the order of the packed
    rows; ``encoders[m]`` is a model with a ``features`` method (its parameters
    are adapted with :func:`single_task_test` only if they require gradients)
    or ``None`` for the modality's values as they are (raw, or features cached
    beforehand). ``reference`` (packed rows, e.g. the meta-training set) fixes
    the mean and standard deviation used to standardise the concatenated
    features, so that no modality dominates the head by its scale alone.
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]], encoders: Mapping[str, nn.Module | None],
                 spec: TaskSpec, reference: torch.Tensor) -> None:
        super().__init__()
        self.shapes = {m: tuple(int(s) for s in shape) for m, shape in shapes.items()}
        unknown = [m for m in encoders if m not in self.shapes]
        if unknown:
            raise ValueError(f"encoders given for unknown modality {unknown}; the rows hold {list(self.shapes)}")
        for m, encoder in encoders.items():
            if encoder is not None and not callable(getattr(encoder, "features", None)):
                raise ValueError(f"the encoder of {m!r} needs a `features` method (models.Conv4, models.MLP, ...)")
        self.encoders = nn.ModuleDict({m: e for m, e in encoders.items() if e is not None})
        self.spec = spec
        with torch.no_grad():
            z = self._concat(reference)
        self.register_buffer("mean", z.mean(0))
        self.register_buffer("std", z.std(0).clamp_min(1e-6))
        self.head = make_task_head(spec, z.shape[1])
        meta.zero_head_(self)  # every episode starts from the uniform (or zero) prediction

    @property
    def input_dim(self) -> int:
        return sum(math.prod(s) for s in self.shapes.values())

    def _concat(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected packed rows of shape (N, {self.input_dim}) for modalities "
                             f"{list(self.shapes)}, got {tuple(x.shape)}")
        codes, start = [], 0
        for m, shape in self.shapes.items():
            size = math.prod(shape)
            part = x[:, start : start + size]
            start += size
            if m in self.encoders:
                part = self.encoders[m].features(part.reshape(len(x), *shape)).flatten(1)
            codes.append(part)
        return torch.cat(codes, dim=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The standardised concatenation of every modality's encoding (the head's input)."""
        return (self._concat(x) - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def single_task_test(model: PretrainedSingleTask, episodes: Sequence[Episode], *, inner_lr: float,
                     inner_steps: int, encoder_lr_factor: float = 0.0,
                     chunk_size: int = 100) -> meta.EpisodeScores:
    """Train a fresh copy of the head on each episode's support set, score its query set; mean ± 95 % CI.

    ``encoder_lr_factor = 0``: a linear probe, only the head learns (step size
    ``inner_lr``). ``encoder_lr_factor > 0``: the encoders' parameters that
    require gradients are fine-tuned too, at ``encoder_lr_factor * inner_lr``;
    the head starts at zero, so the encoders move only once the head has
    learned something, as in LP-FT. Plain gradient steps on the whole support
    set, through :func:`mtl_course.meta.evaluate_episodes`; the score is the
    task kind's metric (accuracy, or mean absolute error).
    """
    if not encoder_lr_factor >= 0:
        raise ValueError(f"encoder_lr_factor must be >= 0, got {encoder_lr_factor!r}")
    keys = meta.head_keys(model)
    tuned = [f"encoders.{n}" for n, p in model.encoders.named_parameters() if p.requires_grad]
    if encoder_lr_factor > 0 and not tuned:
        raise ValueError("encoder_lr_factor > 0 fine-tunes the encoders, but none has parameters that require "
                         "gradients: pass an encoder with requires_grad_(True), or use encoder_lr_factor=0")
    inner = meta.InnerLoop(inner_lr, inner_steps, adapt_keys=keys)
    if encoder_lr_factor > 0:
        params = dict(model.named_parameters())
        rates = {k: torch.full_like(params[k].detach(), inner_lr * (1.0 if k in keys else encoder_lr_factor))
                 for k in keys + tuned}
        inner = meta.InnerLoop(inner_lr, inner_steps, adapt_keys=keys + tuned, per_param_lr=rates)
    kind = model.spec.kind
    return meta.evaluate_episodes(model, episodes, inner=inner, loss_fn=task_loss(kind), metric=task_metric(kind),
                                  chunk_size=chunk_size)


class TopBlocks(nn.Module):
    """The top blocks of a pre-trained encoder as an encoder of their own: ``features`` reads the output
    of the blocks below (see :func:`cache_lower_blocks`) and returns the encoder's features."""

    def __init__(self, blocks: Sequence[nn.Module], feature_dim: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = int(feature_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x).flatten(1)

    forward = features


def cache_lower_blocks(encoder: nn.Module, data: MultiModalSet, modality: str,
                       top: int = 1) -> tuple[TopBlocks, MultiModalSet]:
    """Split ``encoder`` below its ``top`` blocks: the lower ones run once, the top ones stay to be tuned.

    Returns a copy of the top blocks (:class:`TopBlocks`, trainable) and
    ``data`` with ``modality`` replaced by the lower blocks' output (in eval
    mode, without gradients), so that ``top_blocks.features(cached)`` equals
    ``encoder.features(images)``. The encoder's blocks are those of
    :func:`mtl_course.transfer.blocks_of` (``block1 .. block4`` of a Conv-4).
    """
    if modality not in data.inputs:
        raise ValueError(f"the data have no modality {modality!r}; they have {list(data.inputs)}")
    blocks = [block for _, block in transfer.blocks_of(encoder)]
    if not 1 <= top <= len(blocks):
        raise ValueError(f"top must be between 1 and the encoder's {len(blocks)} blocks, got {top!r}")
    lower = nn.Sequential(*blocks[: len(blocks) - top])
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    with torch.no_grad():
        x = data.inputs[modality]
        cached = torch.cat([lower(x[i : i + 512].to(device)).cpu() for i in range(0, len(x), 512)])
    encoder.train(was_training)
    upper = TopBlocks([copy.deepcopy(b) for b in blocks[len(blocks) - top :]], getattr(encoder, "feature_dim", 0))
    upper.requires_grad_(True)
    return upper, dataclasses.replace(data, inputs={**data.inputs, modality: cached})
