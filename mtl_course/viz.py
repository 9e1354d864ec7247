"""The plots that the chapters share (matplotlib only)."""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .data import Episode


def _image(x: torch.Tensor) -> np.ndarray:
    x = x.detach().cpu()
    if x.dim() == 3 and x.shape[0] in (1, 3):
        x = x.permute(1, 2, 0)
    x = x.squeeze(-1) if x.dim() == 3 and x.shape[-1] == 1 else x
    return x.numpy()


def show_images(
    images: torch.Tensor | Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    ncols: int = 10,
    size: float = 1.1,
    suptitle: str | None = None,
    cmap: str = "gray",
):
    """A grid of images (``(C, H, W)`` or ``(H, W)``), with optional titles; returns the figure."""
    n = len(images)
    if n == 0:
        raise ValueError("show_images needs at least one image")
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(_image(images[i]), cmap=cmap)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def show_episode(episode: Episode, class_names: Sequence[str] | None = None, max_query: int = 3):
    """An N-way K-shot episode: one row per class, support images then a few query images."""
    n, k = episode.n_way, int((episode.support_y == 0).sum())
    q = min(max_query, int((episode.query_y == 0).sum()))
    fig, axes = plt.subplots(n, k + q, figsize=(1.2 * (k + q) + 1.5, 1.2 * n), squeeze=False)
    for label in range(n):
        row = list(episode.support_X[episode.support_y == label][:k]) + list(
            episode.query_X[episode.query_y == label][:q])
        for j, (ax, img) in enumerate(zip(axes[label], row)):
            ax.imshow(_image(img), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if label == 0:
                ax.set_title("support" if j < k else "query", fontsize=9, color="C0" if j < k else "C1")
        name = class_names[episode.classes[label]] if class_names is not None else str(episode.classes[label])
        axes[label, 0].set_ylabel(f"label {label}\n{name}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{n}-way {k}-shot episode ({q} of the queries per class shown)")
    fig.tight_layout()
    return fig


def _finish_axes(ax, xlabel: str, ylabel: str, title: str | None):
    """Axis labels, title, light grid and legend: the common dress of every line plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_curves(
    curves: Mapping[str, Sequence[float]],
    xlabel: str = "epoch",
    ylabel: str = "accuracy",
    title: str | None = None,
    x: Sequence[float] | None = None,
    ax=None,
):
    """Several learning curves on one axis, one line per named curve."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for name, ys in curves.items():
        xs = x if x is not None else np.arange(1, len(ys) + 1)
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    return _finish_axes(ax, xlabel, ylabel, title)


def plot_with_ci(
    x: Sequence[float],
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    ax=None,
):
    """Lines with shaded confidence bands: ``series[name] = (means, half_widths)``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for name, (mean, half) in series.items():
        mean, half = np.asarray(mean), np.asarray(half)
        ax.plot(x, mean, marker="o", markersize=3, label=name)
        ax.fill_between(x, mean - half, mean + half, alpha=0.2)
    return _finish_axes(ax, xlabel, ylabel, title)
