"""Metrics the book reports: accuracy, confidence intervals, transfer and forgetting."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose arg-max matches the label."""
    if logits.shape[0] != y.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions but {y.shape[0]} labels")
    return (logits.argmax(dim=-1) == y).float().mean().item()


def mean_confidence_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its normal-approximation confidence interval.

    The half-width is ``z * std / sqrt(n)`` with ``z = 1.96`` for 95 %: what
    few-shot papers report as "mean ± CI" over test episodes.
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise ValueError("need at least two values for a confidence interval")
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    return float(x.mean()), float(z * x.std(ddof=1) / math.sqrt(x.size))


def transfer_gain(score_with_transfer: float, score_without: float) -> float:
    """How much transfer helped: positive transfer > 0, negative transfer < 0."""
    return float(score_with_transfer - score_without)


def backward_transfer(R: np.ndarray) -> float:
    """Backward transfer (Lopez-Paz & Ranzato, 2017) of an accuracy matrix.

    ``R[i, j]`` is the accuracy on task ``j`` after training on tasks ``0..i`` in
    order. ``BWT = mean_{j < T-1} (R[T-1, j] - R[j, j])``: negative values
    measure catastrophic forgetting.
    """
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] < 2:
        raise ValueError(f"R must be a square matrix of at least 2 tasks, got shape {R.shape}")
    T = R.shape[0]
    return float(np.mean([R[T - 1, j] - R[j, j] for j in range(T - 1)]))
