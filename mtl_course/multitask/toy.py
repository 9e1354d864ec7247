"""The two-task toy problem of the CAGrad paper (Liu et al., 2021, Fig. 1), its optimiser runs and plots.

The parameter is a point ``x = (x1, x2)``; the two losses are

    f1 = log(max(|0.5(-x1 - 7) - tanh(-x2)|, 5e-6)) + 6
    f2 = log(max(|0.5(-x1 + 3) + tanh(-x2) + 2|, 5e-6)) + 6
    c1 = max(tanh(x2 / 2), 0),   c2 = max(tanh(-x2 / 2), 0)
    f1_sq = ((-x1 + 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
    f2_sq = ((-x1 - 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
    L1 = f1 c1 + f1_sq c2,        L2 = f2 c1 + f2_sq c2.

Every method runs Adam (learning rate 1e-3) on its combined direction for
100,000 steps from (-8.5, 7.5), (-8.5, -5) and (9, 9), as in the authors'
script. Twelve trajectories (4 methods x 3 starts) run at once in NumPy, with
the gradients in closed form and the two-task weightings of
:mod:`mtl_course.multitask.gradients`; Adam is element-wise, so one Adam state
over all points is exactly one Adam per trajectory.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .gradients import Array, array_module, cagrad_weights, mean_weights, mgda_weights, pcgrad_weights

LOWER = 5e-6
TOY_STARTS = ((-8.5, 7.5), (-8.5, -5.0), (9.0, 9.0))
TOY_LR = 1e-3
TOY_STEPS = 100_000
TOY_C = 0.5
TOY_METHODS = ("equal", "mgda", "pcgrad", "cagrad")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def toy_losses(x: Array) -> Array:
    """``(L1, L2)`` at points ``x`` of shape ``(..., 2)`` (NumPy or torch; torch keeps autograd)."""
    xp = array_module(x)
    x1, x2 = x[..., 0], x[..., 1]
    f1 = xp.log(xp.clip(xp.abs(0.5 * (-x1 - 7) - xp.tanh(-x2)), LOWER, None)) + 6
    f2 = xp.log(xp.clip(xp.abs(0.5 * (-x1 + 3) + xp.tanh(-x2) + 2), LOWER, None)) + 6
    c1 = xp.clip(xp.tanh(x2 / 2), 0, None)
    c2 = xp.clip(xp.tanh(-x2 / 2), 0, None)
    f1_sq = ((-x1 + 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    f2_sq = ((-x1 - 7) ** 2 + 0.1 * (-x2 - 8) ** 2) / 10 - 20
    return xp.stack([f1 * c1 + f1_sq * c2, f2 * c1 + f2_sq * c2], -1)


def toy_gradients(x: np.ndarray) -> np.ndarray:
    """The task-gradient matrices ``G`` (shape ``(..., 2 tasks, 2 coordinates)``) of the toy, in closed form.

    Derived by hand from :func:`toy_losses` (the tests check it against
    autograd); where ``max(., 5e-6)`` or ``max(tanh, 0)`` is at its floor the
    derivative is 0, as autograd's.
    """
    x1, x2 = x[..., 0], x[..., 1]
    t = np.tanh(-x2)
    sech2 = 1 - t * t  # d tanh(-x2) / d(-x2)
    a1 = 0.5 * (-x1 - 7) - t
    a2 = 0.5 * (-x1 + 3) + t + 2
    f1 = np.log(np.maximum(np.abs(a1), LOWER)) + 6
    f2 = np.log(np.maximum(np.abs(a2), LOWER)) + 6
    inv1 = np.where(np.abs(a1) > LOWER, 1 / a1, 0.0)  # d log|a| / da, 0 on the floor
    inv2 = np.where(np.abs(a2) > LOWER, 1 / a2, 0.0)
    h = np.tanh(x2 / 2)
    c1, c2 = np.maximum(h, 0), np.maximum(-h, 0)
    dh = 0.5 * (1 - h * h)
    dc1, dc2 = np.where(h > 0, dh, 0.0), np.where(h < 0, -dh, 0.0)
    sq = 0.01 * (x2 + 8) ** 2 - 20  # the part of f1_sq and f2_sq that does not depend on x1
    f1_sq, f2_sq = 0.1 * (x1 - 7) ** 2 + sq, 0.1 * (x1 + 7) ** 2 + sq
    common = 0.02 * (x2 + 8) * c2  # d sq / d x2, times c2
    G = np.empty(np.shape(x1) + (2, 2))
    G[..., 0, 0] = -0.5 * inv1 * c1 + 0.2 * (x1 - 7) * c2
    G[..., 0, 1] = sech2 * inv1 * c1 + f1 * dc1 + common + f1_sq * dc2
    G[..., 1, 0] = -0.5 * inv2 * c1 + 0.2 * (x1 + 7) * c2
    G[..., 1, 1] = -sech2 * inv2 * c1 + f2 * dc1 + common + f2_sq * dc2
    return G


def toy_weighting(method: str, c: float = TOY_C) -> Callable[[Array], Array]:
    """The Gram-matrix weighting of a method (``equal``, ``mgda``, ``pcgrad``, ``cagrad``)."""
    table = {"equal": mean_weights, "mgda": mgda_weights, "pcgrad": pcgrad_weights,
             "cagrad": lambda gram: cagrad_weights(gram, c)}
    if method not in table:
        raise ValueError(f"method must be one of {tuple(table)}, got {method!r}")
    return table[method]


def run_toy(
    methods: Sequence[str] = TOY_METHODS,
    starts: Sequence[Sequence[float]] = TOY_STARTS,
    num_steps: int = TOY_STEPS,
    lr: float = TOY_LR,
    c: float = TOY_C,
    record_every: int = 100,
) -> dict[str, np.ndarray]:
    """Optimise the toy with each method from each start; returns ``{method: path}``, path ``(starts, records, 2)``.

    Every step: task gradients ``G`` in closed form, the method's weights from
    ``G G^T``, direction ``d = w^T G``, and an Adam step (``betas=(0.9, 0.999)``,
    ``eps=1e-8``, PyTorch's update rule). Points are recorded every
    ``record_every`` steps, plus the final point.
    """
    if num_steps < 1 or record_every < 1:
        raise ValueError(f"num_steps and record_every must be >= 1, got {num_steps} and {record_every}")
    starts = np.asarray(starts, dtype=np.float64).reshape(-1, 2)
    weightings = [toy_weighting(m, c) for m in methods]
    S = len(starts)
    x = np.tile(starts, (len(methods), 1))
    m, v, w = np.zeros_like(x), np.zeros_like(x), np.empty_like(x)
    (b1, b2), records = ADAM_BETAS, [x.copy()]
    for step in range(1, num_steps + 1):
        G = toy_gradients(x)
        gram = G @ G.swapaxes(-1, -2)
        for k, weighting in enumerate(weightings):
            w[k * S:(k + 1) * S] = weighting(gram[k * S:(k + 1) * S])
        d = w[:, 0, None] * G[:, 0] + w[:, 1, None] * G[:, 1]
        m = b1 * m + (1 - b1) * d
        v = b2 * v + (1 - b2) * (d * d)
        x = x - (lr / (1 - b1**step)) * m / (np.sqrt(v / (1 - b2**step)) + ADAM_EPS)
        if step % record_every == 0 or step == num_steps:
            records.append(x.copy())
    paths = np.stack(records, 1)  # (methods * starts, records, 2)
    return {name: paths[k * S:(k + 1) * S] for k, name in enumerate(methods)}


def toy_landscape(extent: float = 10.0, n: int = 201) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid coordinates ``(X1, X2)`` over ``[-extent, extent]^2`` and the losses there, shape ``(n, n, 2)``."""
    grid = np.linspace(-extent, extent, n)
    X1, X2 = np.meshgrid(grid, grid)
    return X1, X2, toy_losses(np.stack([X1, X2], -1))


METHOD_LABELS = {"equal": "equal weighting (Adam)", "mgda": "MGDA", "pcgrad": "PCGrad", "cagrad": "CAGrad"}


def plot_toy(paths: dict[str, np.ndarray], axes=None, extent: float = 10.0, optimum: Sequence[float] | None = None):
    """One panel per method: the average loss ``(L1 + L2) / 2`` as contours, the paths coloured by time.

    Two panels to a row, so that the labels stay readable at the book's width.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        ncols = min(2, len(paths))
        nrows = -(-len(paths) // ncols)
        _, grid = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 3.5 * nrows), squeeze=False)
        for ax in grid.flat[len(paths):]:
            ax.axis("off")
        axes = grid.flat[: len(paths)]
    X1, X2, L = toy_landscape(extent)
    for ax, (name, path) in zip(axes, paths.items()):
        ax.contour(X1, X2, L.mean(-1), levels=20, cmap="viridis", linewidths=0.8)
        for p in path:
            ax.scatter(p[:, 0], p[:, 1], c=np.linspace(0, 1, len(p)), cmap="autumn", s=3, zorder=3)
            ax.plot(*p[0], "ko", markersize=5, zorder=4)
        if optimum is not None:
            ax.plot(*optimum, "k*", markersize=11, zorder=5)
        ax.set(xlim=(-extent, extent), ylim=(-extent, extent), xlabel="$x_1$", ylabel="$x_2$",
               title=METHOD_LABELS.get(name, name), aspect="equal")
    return axes
