"""Small backbones and heads, plus the functional helpers that meta-learning uses.

Every backbone ends in a module named ``head`` (``nn.Identity`` when it only
produces features), so transfer and meta-learning code can address "the body"
and "the head" by name in any backbone.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn
from torch.func import functional_call

NORMS = ("group", "layer", "batch", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """A normalisation layer for ``channels`` feature maps.

    ``"group"`` (the default in this course) and ``"layer"`` normalise each
    example on its own, so they behave the same batched or under ``vmap``;
    ``"batch"`` uses batch statistics only (no running averages), as in MAML.
    """
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class MLP(nn.Module):
    """A multilayer perceptron ``in_features -> hidden_sizes... -> out_features``.

    ``MLP(1, (40, 40), 1)`` is the sinusoid network of the MAML paper. The layers
    before the last are ``body``; the last linear layer is ``head``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Iterable[int] = (40, 40),
        out_features: int | None = 1,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        sizes = [in_features, *hidden_sizes]
        if any(int(s) < 1 for s in sizes):
            raise ValueError(f"layer sizes must be positive, got {sizes}")
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), activation()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = sizes[-1]
        self.head = nn.Linear(sizes[-1], out_features) if out_features else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def conv_block(in_channels: int, out_channels: int, norm: str = "group") -> nn.Sequential:
    """3×3 convolution → normalisation → ReLU → 2×2 max-pool (one Conv-4 block)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        make_norm(norm, out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """The four-block convolutional backbone of few-shot learning (Vinyals et al., 2016).

    Blocks are ``block1 .. block4``; features are flattened after the last one.
    On 28×28 inputs a 64-channel Conv-4 gives 64 features; on 84×84, 1600.
    ``out_features`` adds a linear ``head``; ``None`` makes it a feature extractor.
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: int = 64,
        out_features: int | None = None,
        norm: str = "group",
        image_size: int = 28,
    ) -> None:
        super().__init__()
        channels = [in_channels, hidden, hidden, hidden, hidden]
        for i in range(4):
            self.add_module(f"block{i + 1}", conv_block(channels[i], channels[i + 1], norm))
        side = image_size
        for _ in range(4):
            side //= 2
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for four 2×2 poolings; use at least 16")
        self.in_channels, self.image_size = in_channels, image_size
        self.feature_dim = hidden * side * side
        self.head = nn.Linear(self.feature_dim, out_features) if out_features else nn.Identity()

    @property
    def blocks(self) -> list[nn.Module]:
        return [self.block1, self.block2, self.block3, self.block4]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"Conv4 expects images of shape (batch, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def replace_head(model: nn.Module, out_features: int) -> nn.Module:
    """Give ``model`` a freshly initialised linear ``head`` with ``out_features`` outputs."""
    dim = getattr(model, "feature_dim", None)
    if dim is None:
        raise ValueError("replace_head needs a model with a `feature_dim` attribute (MLP, Conv4, ...)")
    device = next(model.parameters()).device
    model.head = nn.Linear(dim, out_features).to(device)
    return model


def params_of(model: nn.Module, trainable_only: bool = True) -> dict[str, torch.Tensor]:
    """The model's parameters as a ``{name: tensor}`` dict (the ``torch.func`` convention)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad or not trainable_only}


def functional_forward(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    buffers: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run ``model`` on ``x`` with the given parameters instead of its own (no cloning).

    Parameters missing from ``params`` are taken from the model, so one can pass
    only the head's parameters, as ANIL does.
    """
    merged = {**dict(model.named_parameters()), **params}
    if buffers:
        merged.update(buffers)
    return functional_call(model, merged, (x,))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (only those with ``requires_grad`` if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
