"""The course's networks, plus the functional helpers that meta-learning uses.

Conv-4 and the MLP (every chapter), ResNet-12 (Chapter 5's backbone) and
torchvision's ImageNet ResNet-18 cut into the same blocks (Chapter 2, ``full``
profile). Every backbone ends in a module named ``head`` (``nn.Identity`` when it only
produces features), so transfer and meta-learning code can address "the body"
and "the head" by name in any backbone.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
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


class ResBlock(nn.Module):
    """One ResNet-12 block: three 3×3 convolutions with a 1×1 shortcut, then 2×2 max-pooling."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "group") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm3 = make_norm(norm, out_channels)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                      make_norm(norm, out_channels))
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(self.conv1(x)))
        out = self.act(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return self.pool(self.act(out + self.shortcut(x)))


class ResNet12(nn.Module):
    """The ResNet-12 of few-shot learning (four residual blocks), narrow enough for a CPU if asked.

    ``channels=(64, 160, 320, 640)`` is the backbone of Sun et al. (2019); the
    course's quick profile uses ``(16, 32, 64, 128)`` on 28×28 glyphs. Blocks are
    ``block1 .. block4``; features are globally average-pooled, so
    ``feature_dim = channels[-1]`` for any image size ≥ 16. ``out_features`` adds a
    linear ``head``; ``None`` makes it a feature extractor.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (64, 160, 320, 640),
                 out_features: int | None = None, norm: str = "group") -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) != 4 or min(channels) < 1:
            raise ValueError(f"ResNet12 needs four positive channel widths, got {channels}")
        widths = [in_channels, *channels]
        for i in range(4):
            self.add_module(f"block{i + 1}", ResBlock(widths[i], widths[i + 1], norm))
        self.in_channels, self.feature_dim = in_channels, channels[-1]
        self.head = nn.Linear(self.feature_dim, out_features) if out_features else nn.Identity()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ResNet12 expects images of shape (batch, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        if min(x.shape[-2:]) < 16:
            raise ValueError("ResNet12 pools four times by 2: images must be at least 16×16, "
                             f"got {tuple(x.shape[-2:])}")
        for i in range(4):
            x = getattr(self, f"block{i + 1}")(x)
        return x.mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------------
# ImageNet-pretrained ResNet-18 in the same block/head shape (full profile, needs internet)
# ---------------------------------------------------------------------------


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetInput(nn.Module):
    """Turn ``(n, c, h, w)`` images in ``[0, 1]`` into what an ImageNet network expects.

    Grey images are repeated to three channels, resized to ``size`` x ``size`` and
    normalised with the ImageNet channel statistics. No parameters.
    """

    def __init__(self, size: int = 112) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images of shape (batch, 1 or 3, H, W), got {tuple(x.shape)}")
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class BlockBackbone(nn.Module):
    """A backbone cut into ``block1 .. blockN`` and a linear ``head``, like Conv-4.

    ``prep`` adapts the input (no parameters); features are the globally averaged
    output of the last block.
    """

    def __init__(self, prep: nn.Module, blocks: Sequence[nn.Module], feature_dim: int, out_features: int) -> None:
        super().__init__()
        self.prep = prep
        for i, block in enumerate(blocks):
            self.add_module(f"block{i + 1}", block)
        self.num_blocks = len(blocks)
        self.feature_dim = feature_dim
        self.head = nn.Linear(feature_dim, out_features)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prep(x)
        for i in range(self.num_blocks):
            x = getattr(self, f"block{i + 1}")(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class WeightsUnavailableError(RuntimeError):
    """Pre-trained weights could not be downloaded (no internet): run that part where there is internet."""


def resnet18_backbone(num_classes: int, pretrained: bool = True, image_size: int = 112) -> BlockBackbone:
    """torchvision's ResNet-18 as a :class:`BlockBackbone`: four residual stages as blocks, a new head.

    ``pretrained=True`` loads the ImageNet weights, which torchvision downloads
    on first use (internet needed: run it in the ``full`` profile, e.g. on
    Colab). ``block1`` holds the stem and the first stage. Every function of
    this module then works on it unchanged.
    """
    try:
        from torchvision.models import ResNet18_Weights, resnet18
    except ImportError as error:  # pragma: no cover - torchvision ships with the course environment
        raise ImportError("resnet18_backbone needs torchvision: pip install torchvision") from error
    weights = ResNet18_Weights.IMAGENET1K_V1 if pretrained else None
    try:
        net = resnet18(weights=weights)
    except (OSError, RuntimeError) as error:
        raise WeightsUnavailableError(
            "could not download the ImageNet weights of ResNet-18 (no internet?). Run this part in the "
            "'full' profile on a machine with internet, e.g. Colab, or pass pretrained=False."
        ) from error
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
    return BlockBackbone(ImageNetInput(image_size), [stem, net.layer2, net.layer3, net.layer4],
                         net.fc.in_features, num_classes)
