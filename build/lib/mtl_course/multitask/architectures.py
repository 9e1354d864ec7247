"""Multi-task architectures: hard parameter sharing, soft parameter sharing and cross-stitch networks.

Every model here maps a batch of inputs to a dict ``{task name: output}`` and
says which of its parameters are **generic** (shared by all tasks, trained on
every task's data) through ``shared_parameters()``; the rest are
**task-specific**. Gradient-combination methods (PCGrad, MGDA, CAGrad) act on
the shared parameters only.
"""
from __future__ import annotations

import copy
import math
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

HEAD_KINDS = ("classification", "regression", "dense")


def make_head(kind: str, in_features: int, out: int | Sequence[int], hidden: int | None = None) -> nn.Module:
    """A task-specific head on top of ``in_features`` shared features.

    * ``"classification"``: ``out`` class scores (logits);
    * ``"regression"``: one number per example (shape ``(N,)``); ``out`` must be 1;
    * ``"dense"``: an output of shape ``out`` (e.g. an image ``(1, 28, 28)``)
      with values in ``[0, 1]``.

    With ``hidden`` the head has a task-specific hidden layer of that width
    (linear -> ReLU -> linear); without it, classification and regression
    heads are linear and dense heads get a hidden layer of 256.
    """
    if in_features < 1:
        raise ValueError(f"in_features must be >= 1, got {in_features}")
    if hidden is not None and hidden < 1:
        raise ValueError(f"hidden must be >= 1 (or None), got {hidden}")

    def mlp(width: int | None, size: int) -> list[nn.Module]:
        if width is None:
            return [nn.Linear(in_features, size)]
        return [nn.Linear(in_features, width), nn.ReLU(), nn.Linear(width, size)]

    if kind == "classification":
        if not isinstance(out, int) or out < 2:
            raise ValueError(f"a classification head needs out >= 2 classes, got {out!r}")
        return nn.Sequential(*mlp(hidden, out))
    if kind == "regression":
        if out != 1:
            raise ValueError(f"a regression head predicts one number (out=1), got {out!r}")
        return nn.Sequential(*mlp(hidden, 1), nn.Flatten(0))
    if kind == "dense":
        shape = (out,) if isinstance(out, int) else tuple(out)
        return nn.Sequential(*mlp(hidden or 256, math.prod(shape)), nn.Sigmoid(), nn.Unflatten(1, shape))
    raise ValueError(f"kind must be one of {HEAD_KINDS}, got {kind!r}")


def lenet_trunk(out_features: int = 128, in_channels: int = 1) -> nn.Sequential:
    """A LeNet-style encoder for 28x28 images: two 5x5 convolutions with max-pooling, then a linear layer.

    Small enough to train many times on a CPU; a trunk of this kind is what
    Sener & Koltun (2018) share between the two tasks of MultiMNIST.
    """
    if out_features < 1:
        raise ValueError(f"out_features must be >= 1, got {out_features}")
    return nn.Sequential(
        nn.Conv2d(in_channels, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(320, out_features), nn.ReLU(),
    )


class HardSharing(nn.Module):
    """Hard parameter sharing: one shared trunk, one head per task (Caruana, 1997).

    ``outputs[t] = heads[t](trunk(x))``. Every trunk weight is moved by every
    task's loss. With a single head this is an ordinary single-task network,
    which is how the book builds its single-task baselines.
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("HardSharing needs at least one head")
        self.trunk = trunk
        self.heads = nn.ModuleDict(dict(heads))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {name: head(features) for name, head in self.heads.items()}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.trunk.parameters()


class SoftSharing(nn.Module):
    """Soft parameter sharing: one tower per task, pulled together by an L2 penalty.

    Each task gets its own copy of ``trunk`` (all copies start from the same
    weights) and its own head; nothing is shared, but :meth:`regularizer` adds

    ``strength * sum_{i<j} sum_l ||theta_i^l - theta_j^l||^2``

    over corresponding trunk weights to the training loss, so the towers stay
    similar where the tasks allow it. ``strength = 0`` gives independent
    single-task networks trained side by side.
    """

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module], strength: float = 1e-3) -> None:
        super().__init__()
        if not heads:
            raise ValueError("SoftSharing needs at least one head")
        if strength < 0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.strength = strength
        self.trunks = nn.ModuleDict({name: copy.deepcopy(trunk) for name in heads})
        self.heads = nn.ModuleDict(dict(heads))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(self.trunks[name](x)) for name, head in self.heads.items()}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())

    def regularizer(self) -> torch.Tensor:
        towers = [list(t.parameters()) for t in self.trunks.values()]
        total = towers[0][0].new_zeros(())
        for i in range(len(towers)):
            for j in range(i + 1, len(towers)):
                total = total + sum(((a - b) ** 2).sum() for a, b in zip(towers[i], towers[j]))
        return self.strength * total


class CrossStitchUnit(nn.Module):
    """A cross-stitch unit (Misra et al., 2016): ``x_i <- sum_j alpha_ij x_j`` across the task columns.

    ``alpha`` is a learnable ``T x T`` matrix initialised to ``same`` on the
    diagonal and ``other`` elsewhere; ``(1, 0)`` makes the columns independent.
    """

    def __init__(self, num_tasks: int, same: float = 0.9, other: float = 0.1) -> None:
        super().__init__()
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
        eye = torch.eye(num_tasks)
        self.alpha = nn.Parameter(same * eye + other * (1 - eye))

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(xs) != self.alpha.shape[0]:
            raise ValueError(f"expected {self.alpha.shape[0]} task activations, got {len(xs)}")
        stacked = torch.stack(list(xs))  # (T, batch, ...)
        mixed = torch.einsum("ij,j...->i...", self.alpha, stacked)
        return list(mixed.unbind(0))


class CrossStitch(nn.Module):
    """A cross-stitch network: one column of ``blocks`` per task, mixed by a unit after each block.

    Every task's column starts as a copy of ``blocks``; after block ``l`` the
    activations of all columns go through :class:`CrossStitchUnit` ``l``, so
    the network *learns* how much to share at each depth. With
    ``init=(1.0, 0.0)`` it computes exactly the separate towers.
    """

    def __init__(self, blocks: Sequence[nn.Module], heads: Mapping[str, nn.Module],
                 init: tuple[float, float] = (0.9, 0.1)) -> None:
        super().__init__()
        if not heads or not blocks:
            raise ValueError("CrossStitch needs at least one block and one head")
        self.heads = nn.ModuleDict(dict(heads))
        self.columns = nn.ModuleDict({name: nn.ModuleList(copy.deepcopy(list(blocks))) for name in heads})
        self.units = nn.ModuleList(CrossStitchUnit(len(heads), *init) for _ in blocks)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        names = list(self.heads)
        xs = [x] * len(names)
        for depth, unit in enumerate(self.units):
            xs = unit([self.columns[name][depth](h) for name, h in zip(names, xs)])
        return {name: self.heads[name](h) for name, h in zip(names, xs)}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.units.parameters()
