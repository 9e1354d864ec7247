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


# --- Chapter 4: meta-learning ------------------------------------------------


def plot_sinusoid_adaptation(
    ax,
    models_: Mapping[str, torch.nn.Module],
    task,
    support_X: torch.Tensor,
    support_y: torch.Tensor,
    steps: int | Sequence[int],
    inner_lr: float | Mapping[str, float],
    x_range: tuple[float, float] = (-5.0, 5.0),
    title: str | None = None,
):
    """A sinusoid task, its K support points, and each model's curve after each number of inner ``steps``.

    The one drawing behind Chapter 4's static figure and its interactive explorer
    (:func:`mtl_course.widgets.sinusoid_explorer`), so the two always agree. The
    curves come from :func:`mtl_course.meta.adapted_predictions`; ``inner_lr``
    may give one step size per model name. Colours mark the number of steps,
    line styles the model.
    """
    from .meta import adapted_predictions  # viz sits at the edge: it may use the core, not the reverse

    steps = [steps] if isinstance(steps, int) else sorted(set(int(s) for s in steps))
    if not models_:
        raise ValueError("plot_sinusoid_adaptation needs at least one model")
    x = torch.linspace(*x_range, 200).unsqueeze(1)
    ax.plot(x.squeeze(1), task(x).squeeze(1), color="black", linewidth=2, label="true task")
    ax.scatter(support_X.detach().cpu().squeeze(1), support_y.detach().cpu().squeeze(1), color="black", zorder=3,
               label=f"K={len(support_X)} support points")
    styles = ["--", ":", "-.", (0, (5, 1))]
    for i, (name, net) in enumerate(models_.items()):
        lr = inner_lr[name] if isinstance(inner_lr, Mapping) else inner_lr
        curves = adapted_predictions(net, support_X, support_y, x, steps, lr)
        for j, n in enumerate(steps):
            ax.plot(x.squeeze(1), curves[n], color=f"C{j}", linestyle=styles[i % len(styles)], linewidth=1.6,
                    label=f"{name}, {n} step{'s' if n != 1 else ''}")
    default = f"task A = {task.amplitude:.2f}, phase = {task.phase:.2f}"
    ax.set(xlabel="x", ylabel="y", title=title or default)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return ax


# --- Chapter 2: transfer learning --------------------------------------------

StrategyCurves = Mapping[int, Mapping[str, Sequence[float]]]
"""``curves[k][strategy]``: validation accuracy after each epoch, with ``k`` target examples per class."""


def _plural(k: int, noun: str) -> str:
    return f"{k} {noun}" if k == 1 else f"{k} {noun}s"


def plot_strategy_curves(
    curves: StrategyCurves,
    k: int,
    ax=None,
    ylim: tuple[float, float] = (0.0, 1.0),
    phase_starts: Mapping[int, Mapping[str, int]] | None = None,
    legend: bool = True,
):
    """Validation accuracy per epoch of each transfer strategy trained with ``k`` target examples per class.

    The one drawing behind Chapter 2's static figure (:func:`plot_strategy_grid`)
    and its explorer (:func:`mtl_course.widgets.explore_strategies`). Each
    strategy has its own colour and line style, and earlier strategies are drawn
    on top, so a curve that another one repeats (LP-FT starts with exactly the
    linear probe's curve) stays visible. ``phase_starts[k][strategy]`` marks, with
    a vertical line, the epoch after which a two-phase strategy starts its second
    phase (e.g. LP-FT's fine-tuning).
    """
    from matplotlib.ticker import MaxNLocator

    if k not in curves:
        raise ValueError(f"no curves for {k} examples per class; choose one of {sorted(curves)}")
    strategies = list(curves[k].items())
    if not strategies:
        raise ValueError(f"curves[{k}] holds no strategy")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    styles = ("-", "--", "-.", ":")
    for i, (name, values) in enumerate(strategies):
        ax.plot(np.arange(1, len(values) + 1), values, color=f"C{i}", linestyle=styles[i % len(styles)], marker="o",
                markersize=2.5, label=name, zorder=2 + len(strategies) - i)
    starts = (phase_starts or {}).get(k, {})
    for i, (name, _) in enumerate(strategies):
        if name in starts:
            ax.axvline(starts[name] + 0.5, color=f"C{i}", linestyle=":", linewidth=1.2,
                       label=f"{name}: second phase starts")
    ax.set(xlabel="epoch", ylabel="validation accuracy", ylim=ylim,
           title=f"k = {_plural(k, 'target example')} per class")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_strategy_grid(
    curves: StrategyCurves,
    ncols: int = 2,
    phase_starts: Mapping[int, Mapping[str, int]] | None = None,
    title: str | None = None,
):
    """All target sizes, two panels a row so that labels stay readable at the book's width (the static
    version of the Chapter 2 explorer); one legend below."""
    sizes = sorted(curves)
    if not sizes:
        raise ValueError("plot_strategy_grid needs curves for at least one target size")
    ncols = min(ncols, len(sizes))
    nrows = int(np.ceil(len(sizes) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows + 0.5), squeeze=False, sharey=True)
    for ax, k in zip(axes.flat, sizes):
        plot_strategy_curves(curves, k, ax=ax, phase_starts=phase_starts, legend=False)
        ax.label_outer()
    for ax in list(axes.flat)[len(sizes) :]:
        ax.axis("off")
    handles: dict = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=min(len(handles), 5), fontsize=9,
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_stored_training(entry: Mapping, ax=None):
    """The training curve of a model from the trained-model store (its manifest ``entry``).

    The title says how long ``make models`` took to train it and on what, so a
    reader sees what the chapter loads instead of training.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.2))
    curve = entry["curve"]
    ax.plot(np.asarray(curve["step"]) + 1, curve["loss"], label="training loss (per step, subsampled)")
    machine = entry["machine"]
    title = (f"{entry['name']}: {curve['steps']:,} steps in {entry['seconds']:.0f} s "
             f"on {machine['threads']} CPU thread(s)")
    return _finish_axes(ax, "optimizer step", "training loss", title)


def plot_representation_comparison(ax, rows: Sequence[dict], delta: float):
    """One panel of Chapter 6's figure: excess risk against target size ``n`` for each method, at one ``δ``."""
    for method, style in (("alone", "o-"), ("frozen", "s-"), ("fine-tuned", "^-")):
        points = sorted((r["n"], r["risk"]) for r in rows if r["method"] == method and r["delta"] == delta)
        ax.plot(*zip(*points), style, label=method)
    ax.set(xscale="log", yscale="log", xlabel="target examples n", ylabel="excess risk ‖β̂ − β‖²",
           title=f"δ = {delta}")
    ax.legend()
    return ax
