"""The M3TL network of Fig. 6: encoders -> fusion -> shared backbone -> heterogeneous task heads.

:class:`M3TLNet` is a multi-task model in the sense of :mod:`mtl_course.multitask`
(its forward returns ``{task: output}`` and it names its ``shared_parameters``),
so :func:`~mtl_course.multitask.fit_multitask` trains it as is. Its
:meth:`~M3TLNet.task_net` view shows one task's path as a single-output model
with blocks ``block1 .. blockN`` and a ``head``, the shape that
:mod:`mtl_course.transfer` (freeze, linear probe, fine-tune) and
:mod:`mtl_course.meta` (``adapt``, ``meta_objective``, ``evaluate_episodes``
through ``torch.func``) expect. The view shares the network's modules, so
training either trains both.
"""
from __future__ import annotations

import copy
import math
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from .. import models, runtime, transfer
from ..data.multimodal import MultiModalSet
from ..multitask.architectures import make_head
from ..multitask.data import TaskSpec
from .config import EncoderSpec, M3TLConfig

PARTS = ("encoders", "fusion", "backbone", "head")
"""The parts of one task's path, input side first; ``"encoder:<modality>"`` names one encoder."""


class FeatureInput(nn.Module):
    """Stands in for a frozen encoder whose features were computed once (:func:`cache_frozen_features`)."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    forward = features


def make_encoder(spec: EncoderSpec, shape: Sequence[int]) -> nn.Module:
    """The encoder of one modality of example shape ``shape`` (a model with ``features`` and ``feature_dim``)."""
    shape = tuple(shape)
    if spec.is_pretrained:
        encoder = copy.deepcopy(spec.pretrained)
        if hasattr(encoder, "head"):
            encoder.head = nn.Identity()
        expected = getattr(encoder, "in_channels", None)
        if expected is not None and (len(shape) != 3 or shape[0] != expected):
            raise ValueError(f"the pretrained encoder reads images with {expected} channel(s), but the modality's "
                             f"examples have shape {shape}")
        encoder.requires_grad_(spec.mode == "finetune")
        return encoder
    if spec.arch == "conv4":
        if len(shape) != 3:
            raise ValueError(f"a conv4 encoder needs image-shaped examples (C, H, W), got shape {shape}")
        hidden = spec.hidden if isinstance(spec.hidden, int) else spec.hidden[0]
        return models.Conv4(shape[0], hidden, None, image_size=shape[-1])
    hidden = (spec.hidden,) if isinstance(spec.hidden, int) else tuple(spec.hidden)
    return models.MLP(math.prod(shape), hidden, None)


class M3TLNet(nn.Module):
    """The generic network of the review's Fig. 6 (build it with :func:`build`).

    ``forward(x)`` takes packed multi-modal rows (``MultiModalSet.packed``),
    splits them into the modalities, encodes each, fuses the encodings,
    runs the shared backbone and returns every head's output as a dict.
    """

    def __init__(self, config: M3TLConfig, encoders: nn.ModuleDict, fusion: nn.Module, backbone: nn.Module,
                 heads: nn.ModuleDict, shapes: dict[str, tuple[int, ...]], embed_dim: int,
                 specs: dict[str, TaskSpec]) -> None:
        super().__init__()
        self.config = config
        self.encoders, self.fusion, self.backbone, self.heads = encoders, fusion, backbone, heads
        self.shapes = dict(shapes)
        self.embed_dim = embed_dim
        self.specs = specs

    # ---- inputs ----------------------------------------------------------------
    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    @property
    def input_dim(self) -> int:
        return sum(math.prod(self.shapes[m]) for m in self.modalities)

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Packed rows ``(N, D)`` back to one tensor per modality, each of its example shape."""
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"expected packed inputs of shape (N, {self.input_dim}) for modalities {self.modalities} "
                             f"(MultiModalSet.packed({self.modalities})), got {tuple(x.shape)}")
        out, start = {}, 0
        for m in self.modalities:
            size = math.prod(self.shapes[m])
            out[m] = x[:, start : start + size].reshape(len(x), *self.shapes[m])
            start += size
        return out

    # ---- the forward pass ------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each modality's encoding (the outputs of Fig. 6's encoders)."""
        return {m: self.encoders[m].features(v) for m, v in self.split(x).items()}

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The shared representation: fusion of the encodings, then the backbone (input of every head)."""
        codes = list(self.encode(x).values())
        fused = self.fusion(codes[0] if len(codes) == 1 else torch.cat(codes, dim=1))
        return self.backbone(fused)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.embed(x)
        return {name: head(z) for name, head in self.heads.items()}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The generic (shared) parameters: encoders, fusion and backbone, those that learn."""
        for module in (self.encoders, self.fusion, self.backbone):
            yield from (p for p in module.parameters() if p.requires_grad)

    # ---- tasks -------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return list(self.heads)

    def task_net(self, task: str) -> "TaskNet":
        """One task's path as a single-output model with ``block1 .. blockN`` and a ``head`` (shares the modules)."""
        if task not in self.heads:
            raise ValueError(f"no head for task {task!r}; this network has {self.task_names} (add_task adds one)")
        return TaskNet(self, task)

    def add_task(self, spec: TaskSpec, seed: int | None = None) -> "TaskNet":
        """A new task at meta-test (Fig. 6's Task-4, Task-5): a new head of the task's kind; returns its view.

        ``seed`` fixes the new head's initialisation. Refused when the
        configuration tests no unseen tasks (the MTL reduction, Fig. 8a).
        """
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"add_task needs a multitask.TaskSpec, got {type(spec).__name__}")
        if not self.config.unseen_tasks:
            raise ValueError(f"this network's configuration (reduction {self.config.reduction!r}) adds no unseen tasks "
                             "(review Fig. 8a); use reduction 'm3tl', 'meta' or 'transfer'")
        if spec.name in self.heads:
            raise ValueError(f"task {spec.name!r} already has a head; give the new task another name")
        if seed is not None:
            torch.manual_seed(runtime.shift_seed(seed))
        device = next(self.parameters()).device
        self.heads[spec.name] = make_task_head(spec, self.embed_dim, self.config.head_hidden).to(device)
        self.specs[spec.name] = spec
        return self.task_net(spec.name)


def make_task_head(spec: TaskSpec, in_features: int, hidden: int | None = None) -> nn.Module:
    """A head of the task's kind (:func:`mtl_course.multitask.make_head`) on the shared representation."""
    return make_head(spec.kind, in_features, spec.out, hidden)


def _feature_dim(encoder: nn.Module) -> int:
    dim = getattr(encoder, "feature_dim", None)
    if dim is None:
        raise ValueError(f"an encoder needs a `feature_dim`, {type(encoder).__name__} has none")
    return int(dim)


def build(config: M3TLConfig, seed: int | None = None) -> M3TLNet:
    """The network of ``config``: encoders, fusion, backbone and source heads, created in that order.

    ``seed`` seeds PyTorch first, so the same configuration and seed give the
    same initial weights (and the same weights as the standalone models of
    the earlier chapters built in the same order).
    """
    if not isinstance(config, M3TLConfig):
        raise TypeError(f"build needs an M3TLConfig, got {type(config).__name__}")
    if seed is not None:
        torch.manual_seed(runtime.shift_seed(seed))
    encoders = nn.ModuleDict({m: make_encoder(spec, config.shapes[m]) for m, spec in config.encoders.items()})
    width = sum(_feature_dim(e) for e in encoders.values())
    fusion: nn.Module = nn.Identity()
    if config.fusion:
        fusion = nn.Sequential(nn.Linear(width, config.embed_dim), nn.ReLU())
        width = config.embed_dim
    backbone: nn.Module = nn.Identity()
    if config.backbone:
        backbone = models.MLP(width, config.backbone_sizes, None).body
        width = config.backbone_sizes[-1]
    heads = nn.ModuleDict({t.name: make_task_head(t, width, config.head_hidden) for t in config.tasks})
    shapes = {m: config.shapes[m] for m in config.encoders}
    return M3TLNet(config, encoders, fusion, backbone, heads, shapes, width, {t.name: t for t in config.tasks})


def _blocks(module: nn.Module) -> list[nn.Module]:
    """The parameterised blocks of an encoder, fusion layer or backbone (empty if it has no parameters)."""
    if not any(True for _ in module.parameters()):
        return []
    if isinstance(module, nn.Sequential) and not hasattr(module, "features"):
        return [layer for layer in module if any(True for _ in layer.parameters())]
    return [block for _, block in transfer.blocks_of(module)]


class TaskNet(nn.Module):
    """One task's path through an :class:`M3TLNet`, as a single-output model.

    Blocks ``block1 .. blockN`` are the encoders' blocks, the fusion layer and
    the backbone's layers (the same module objects as in the network), then the
    task's ``head``. :attr:`parts` maps each block to ``"encoder:<modality>"``,
    ``"fusion"`` or ``"backbone"``; :meth:`keys` lists parameter names by part,
    for ``meta.adapt(adapt_keys=...)``.
    """

    def __init__(self, net: M3TLNet, task: str) -> None:
        super().__init__()
        object.__setattr__(self, "net", net)  # not a sub-module: parameters are registered through the blocks
        self.task = task
        self.spec = net.specs[task]
        self.parts: dict[str, str] = {}
        units = [(f"encoder:{m}", e) for m, e in net.encoders.items()] + [("fusion", net.fusion),
                                                                          ("backbone", net.backbone)]
        for label, module in units:
            for block in _blocks(module):
                name = f"block{len(self.parts) + 1}"
                self.add_module(name, block)
                self.parts[name] = label
        self.head = net.heads[task]
        self.feature_dim = net.embed_dim
        covered = {id(p) for p in self.parameters()}
        expected = [p for module in (net.encoders, net.fusion, net.backbone, self.head) for p in module.parameters()]
        if any(id(p) not in covered for p in expected):
            raise ValueError("some encoder, fusion or backbone parameters lie outside their blocks; give every "
                             "parameterised layer its own block (block1.., or an nn.Sequential body)")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.embed(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def part_of(self, name: str) -> str:
        """The part (``"encoder:image"``, ``"fusion"``, ``"backbone"``, ``"head"``) a parameter belongs to."""
        block = name.split(".", 1)[0]
        return "head" if block == "head" else self.parts[block]

    def keys(self, parts: str | Iterable[str] = "all", trainable_only: bool = True) -> list[str]:
        """Parameter names of the given parts: ``"all"``, ``"head"``, ``"backbone"``, ``"fusion"``,
        ``"encoders"`` (every encoder) or ``"encoder:<modality>"``; frozen ones are left out unless asked."""
        wanted = {parts} if isinstance(parts, str) else set(parts)
        known = {"all", "encoders", *PARTS, *set(self.parts.values())}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(f"unknown part(s) {unknown}; choose from {sorted(known)}")
        names = []
        for name, p in self.named_parameters():
            part = self.part_of(name)
            if trainable_only and not p.requires_grad:
                continue
            if "all" in wanted or part in wanted or ("encoders" in wanted and part.startswith("encoder:")):
                names.append(name)
        return names


def cache_frozen_features(net: M3TLNet, data: MultiModalSet) -> tuple[M3TLNet, MultiModalSet]:
    """Run every frozen encoder once; return a network that reads its features instead, and the data with them.

    The returned network shares the fusion layer, backbone, heads and other
    encoders with ``net`` (training it trains ``net``), and gives the same
    outputs on the cached data as ``net`` on the raw data: a frozen encoder
    with per-example normalisation computes the same features every time.
    This is :func:`mtl_course.transfer.linear_probe`'s feature cache for a
    multi-modal network.
    """
    encoders, shapes, inputs = nn.ModuleDict(), {}, dict(data.inputs)
    for m, encoder in net.encoders.items():
        frozen = net.config.encoders[m].mode == "frozen" and not isinstance(encoder, FeatureInput)
        if frozen:
            inputs[m] = transfer.extract_features(encoder, data.inputs[m])
            encoders[m] = FeatureInput(_feature_dim(encoder))
            shapes[m] = (_feature_dim(encoder),)
        else:
            encoders[m] = encoder
            shapes[m] = net.shapes[m]
    cached = M3TLNet(net.config, encoders, net.fusion, net.backbone, net.heads, shapes, net.embed_dim, net.specs)
    return cached, MultiModalSet(inputs, dict(data.targets), dict(data.kinds), data.classes, data.alphabets,
                                 data.drawings, list(data.class_names), list(data.alphabet_names), dict(data.info))


def cache_representation(net: M3TLNet, data: MultiModalSet, batch_size: int = 512) -> tuple[M3TLNet, MultiModalSet]:
    """Run the shared layers once; return a network of ``net``'s heads that reads their output, and the data.

    For meta-testing with the shared layers fixed (only the heads adapt): the
    returned network shares the heads with ``net`` and gives the same outputs
    on the cached data as ``net`` (in eval mode) on the raw data, at the cost
    of one forward pass of the encoders, fusion and backbone per example
    instead of one per episode and inner step.
    """
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    x = data.packed(net.modalities)
    with torch.no_grad():
        z = torch.cat([net.embed(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    net.train(was_training)
    reads = M3TLNet(net.config, nn.ModuleDict({"representation": FeatureInput(net.embed_dim)}), nn.Identity(),
                    nn.Identity(), net.heads, {"representation": (net.embed_dim,)}, net.embed_dim, net.specs)
    return reads, MultiModalSet({"representation": z}, dict(data.targets), dict(data.kinds), data.classes,
                                data.alphabets, data.drawings, list(data.class_names), list(data.alphabet_names),
                                dict(data.info))
