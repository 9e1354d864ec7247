"""Metrics the book reports: accuracy, confidence intervals, transfer and forgetting."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows whose arg-max matches the label."""
    if logits.shape[0] != y.shape[0]:
        raise ValueError(f"{logits.shape[0]} predictions but {y.shape[0]} labels")
    return (logits.argmax(dim=-1) == y).float().mean().item()


def mean_absolute_error(output: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error, the metric of regression and dense tasks (lower is better)."""
    if output.shape != target.shape:
        raise ValueError(f"output shape {tuple(output.shape)} does not match target shape {tuple(target.shape)}")
    return (output - target).abs().mean().item()


def mean_confidence_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its Student-t confidence interval.

    The half-width is ``t * std / sqrt(n)``, with ``t`` the ``(1 + confidence) / 2``
    quantile of Student's t distribution with ``n - 1`` degrees of freedom. Over
    600 test episodes ``t`` is 1.964, the normal value few-shot papers use; over 3
    seeds it is 4.30, and a normal 1.96 would understate the interval twofold.

    >>> mean, half = mean_confidence_interval([1.0, 2.0, 3.0])
    >>> mean, round(half, 3)
    (2.0, 2.484)
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise ValueError("need at least two values for a confidence interval")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    from scipy.stats import t

    quantile = float(t.ppf(0.5 + confidence / 2, df=x.size - 1))
    return float(x.mean()), float(quantile * x.std(ddof=1) / math.sqrt(x.size))


def interval_text(mean: float, half: float | None = None, percent: bool = False) -> str:
    """A mean and its 95 % half-width as the book prints them: ``0.900 ± 0.248``, or in percent ``90.0 ± 24.8``.

    >>> interval_text(0.9, 0.248), interval_text(0.9, 0.248, percent=True), interval_text(0.9, percent=True)
    ('0.900 ± 0.248', '90.0 ± 24.8', '90.0')
    """
    scale, digits = (100, 1) if percent else (1, 3)
    text = f"{scale * mean:.{digits}f}"
    return text if half is None else f"{text} ± {scale * half:.{digits}f}"


@dataclass
class EpisodeScores:
    """Per-episode (or per-seed) scores with their mean and 95 % confidence half-width.

    >>> scores = EpisodeScores.from_values([0.8, 0.9, 1.0])
    >>> print(scores)
    0.900 ± 0.248
    """

    values: np.ndarray
    mean: float
    ci95: float

    @classmethod
    def from_values(cls, values: Sequence[float] | np.ndarray) -> "EpisodeScores":
        """The scores of a list of episodes, with their mean and 95 % interval (:func:`mean_confidence_interval`)."""
        values = np.asarray(values, dtype=float)
        mean, half = mean_confidence_interval(values)
        return cls(values, mean, half)

    def __str__(self) -> str:
        return interval_text(self.mean, self.ci95)


Scores = Union[Sequence[float], np.ndarray, EpisodeScores]


def _values(scores: Scores) -> np.ndarray:
    return np.asarray(scores.values if isinstance(scores, EpisodeScores) else scores, dtype=float)


def average_scores(scores: Sequence[EpisodeScores]) -> EpisodeScores:
    """Per-episode average of several runs scored on the same episodes, with its 95 % interval over episodes.

    E.g. transfer from each of several source tasks, averaged task by task:
    the expected result of transfer from *a* source task drawn at random.

    >>> print(average_scores([EpisodeScores.from_values([1.0, 0.0]), EpisodeScores.from_values([0.0, 0.0])]))
    0.250 ± 3.177
    """
    if not scores:
        raise ValueError("give at least one set of scores")
    if len({len(s.values) for s in scores}) > 1:
        raise ValueError("all scores must come from the same episodes")
    return EpisodeScores.from_values(np.mean([_values(s) for s in scores], axis=0))


def paired_difference(a: Scores, b: Scores, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and Student-t half-width of ``a − b``, pair by pair.

    For two methods scored on the same episodes (or seeds), in the same order:
    the differences cancel what the pairs share, so the interval is far
    narrower than the two intervals of ``a`` and ``b`` suggest. "A beats B" is
    supported when the whole interval lies above zero. ``a`` and ``b`` are
    sequences of scores or :class:`EpisodeScores`.

    >>> mean, half = paired_difference([0.9, 0.8, 0.7], [0.8, 0.7, 0.5])
    >>> round(mean, 3), round(half, 3)
    (0.133, 0.143)
    """
    a, b = _values(a), _values(b)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same episodes in the same order, got {a.shape} and {b.shape}")
    return mean_confidence_interval(a - b, confidence)


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
