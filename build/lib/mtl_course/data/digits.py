"""scikit-learn's handwritten digits: 1,797 real 8×8 images that ship with the library."""
from __future__ import annotations

import torch

from .. import runtime
from .episodes import LabelledSet


def load_digits(as_images: bool = False) -> LabelledSet:
    """The digits as a :class:`LabelledSet`, pixel values scaled to ``[0, 1]``.

    Rows are flat 64-vectors, or ``(1, 8, 8)`` images with ``as_images=True``.
    Each class is also given a group, ``"even"`` or ``"odd"``.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    raw = sklearn_digits()
    X = torch.tensor(raw.data, dtype=torch.float32) / 16.0
    if as_images:
        X = X.reshape(-1, 1, 8, 8)
    names = [str(d) for d in range(10)]
    return LabelledSet(X, torch.tensor(raw.target), names, ["even" if d % 2 == 0 else "odd" for d in range(10)])


def permute_pixels(X: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The same images with their pixels shuffled by one fixed permutation: a new domain, same labels."""
    flat = X.reshape(len(X), -1)
    perm = torch.randperm(flat.shape[1], generator=runtime.generator(seed))
    return flat[:, perm].reshape(X.shape)
