"""Combining task gradients: PCGrad, MGDA, CAGrad, IMTL-G, Nash-MTL, Aligned-MTL, UPGrad and RLW as small pure functions.

Every method here looks at the **task-gradient matrix** ``G`` (shape ``tasks x
params``: row ``i`` is the gradient of task ``i``'s loss with respect to the
shared parameters) and returns one update direction ``d``. As in torchjd, each
method is split in two:

* a **weighting** ``w = f(G G^T)`` that only needs the ``T x T`` Gram matrix of
  the task gradients (their inner products), and
* the aggregation ``d = w^T G``, a combination of the task gradients.

All directions are on the scale of the mean gradient ``G.mean(0)`` (the
weights of plain averaging are ``1/T``): multiply by ``T`` to compare with the
gradient of the *sum* of the task losses.

The two-task closed forms accept NumPy arrays as well as torch tensors and
broadcast over leading dimensions (``gram`` of shape ``(..., 2, 2)``), which is
what lets :mod:`mtl_course.multitask.toy` run 100,000 steps of twelve
trajectories at once.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor]
TINY = 1e-12


def array_module(a: Array):
    """The array module of ``a``: ``torch`` for tensors, ``numpy`` otherwise."""
    return torch if isinstance(a, torch.Tensor) else np


def _at_least(a: Array, low: float) -> Array:
    return a.clamp(min=low) if isinstance(a, torch.Tensor) else np.maximum(a, low)


def _between(a: Array, low: float, high: float) -> Array:
    return a.clamp(low, high) if isinstance(a, torch.Tensor) else np.minimum(np.maximum(a, low), high)


def _stack_last(parts: Sequence[Array]) -> Array:
    """Stack same-shaped arrays along a new last axis (``np.stack`` is slow on tiny arrays)."""
    if isinstance(parts[0], torch.Tensor):
        return torch.stack(list(parts), -1)
    out = np.empty(np.shape(parts[0]) + (len(parts),), dtype=np.result_type(*parts))
    for k, part in enumerate(parts):
        out[..., k] = part
    return out


def _check_gram(gram: Array) -> None:
    if gram.ndim < 2 or gram.shape[-1] != gram.shape[-2]:
        raise ValueError(f"a Gram matrix must have shape (..., T, T), got {tuple(gram.shape)}")
    if gram.shape[-1] < 1:
        raise ValueError("need at least one task")


def _check_G(G: torch.Tensor) -> None:
    if not isinstance(G, torch.Tensor) or G.dim() != 2:
        shape = tuple(G.shape) if hasattr(G, "shape") else type(G).__name__
        raise ValueError(f"G must be a 2-D tensor of shape (tasks, params), got {shape}")
    if G.shape[0] < 1:
        raise ValueError("G must hold at least one task gradient")


def gram_matrix(G: Array) -> Array:
    """The Gram matrix ``G G^T`` of task gradients: entry ``(i, j)`` is ``g_i . g_j``.

    >>> gram_matrix(torch.tensor([[1.0, 0.0], [1.0, 2.0]]))
    tensor([[1., 1.],
            [1., 5.]])
    """
    return G @ G.swapaxes(-1, -2)


def gradient_cosine(G: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every pair of task gradients (a ``T x T`` matrix).

    A negative entry ``(i, j)`` means that a step that lowers task ``i``'s loss
    raises task ``j``'s to first order: the tasks' gradients **conflict**
    (Yu et al., 2020). Zero gradients get a cosine of 0.
    """
    _check_G(G)
    norms = G.norm(dim=1)
    return gram_matrix(G) / (norms[:, None] * norms[None, :]).clamp_min(TINY)


def aggregate(G: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The update direction ``d = sum_i w_i g_i`` for weights of shape ``(T,)``.

    >>> aggregate(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0.5, 0.25]))
    tensor([0.5000, 0.5000])
    """
    _check_G(G)
    if weights.shape != (G.shape[0],):
        raise ValueError(f"need one weight per task ({G.shape[0]}), got shape {tuple(weights.shape)}")
    return weights.to(G) @ G


# ---------------------------------------------------------------------------
# Weightings: from the Gram matrix to the coefficients of the task gradients
# ---------------------------------------------------------------------------


def mean_weights(gram: Array) -> Array:
    """Equal weighting: ``w_i = 1/T``, so ``d`` is the mean task gradient.

    >>> mean_weights(torch.eye(4))
    tensor([0.2500, 0.2500, 0.2500, 0.2500])
    """
    _check_gram(gram)
    T = gram.shape[-1]
    return gram[..., 0, :] * 0 + 1.0 / T


def pcgrad_weights(gram: Array, generator: torch.Generator | None = None) -> Array:
    """PCGrad (Yu et al., 2020, Algorithm 1) as weights on the original task gradients.

    Each task gradient ``g_i`` is visited against the other tasks ``j`` in a
    random order; whenever the (already projected) ``g_i^PC`` conflicts with the
    original ``g_j`` (``g_i^PC . g_j < 0``), its component along ``g_j`` is
    removed::

        g_i^PC <- g_i^PC - (g_i^PC . g_j / ||g_j||^2) g_j.

    The direction is the mean of the projected gradients. Every ``g_i^PC`` is a
    combination of the original gradients, so the weights follow from the Gram
    matrix alone. With two tasks the order does not matter and the weights are
    ``((1 - g12/g11) / 2, (1 - g12/g22) / 2)`` when ``g12 < 0`` (else ``1/2`` each).
    ``generator`` fixes the random orders for more than two tasks.

    Two conflicting gradients, ``g1 = (1, 0)`` and ``g2 = (-1, 1)``: each loses
    its part along the other, and the direction helps both tasks.

    >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    >>> w = pcgrad_weights(gram_matrix(G))
    >>> w
    tensor([1.0000, 0.7500], dtype=torch.float64)
    >>> G @ aggregate(G, w)  # g_i . d: no task is made worse
    tensor([0.2500, 0.5000], dtype=torch.float64)
    """
    _check_gram(gram)
    xp, T = array_module(gram), gram.shape[-1]
    if T == 1:
        return mean_weights(gram)
    if T == 2:
        g11, g12, g22 = gram[..., 0, 0], gram[..., 0, 1], gram[..., 1, 1]
        conflict = xp.where(g12 < 0, g12, 0.0)
        return _stack_last([0.5 * (1 - conflict / _at_least(g11, TINY)), 0.5 * (1 - conflict / _at_least(g22, TINY))])
    rows = []
    for i in range(T):
        coef = [gram[..., 0, 0] * 0 + (1.0 if k == i else 0.0) for k in range(T)]
        others = [j for j in range(T) if j != i]
        others = [others[k] for k in torch.randperm(len(others), generator=generator).tolist()]
        for j in others:
            dot = sum(coef[k] * gram[..., k, j] for k in range(T))  # g_i^PC . g_j
            coef[j] = coef[j] - xp.where(dot < 0, dot / _at_least(gram[..., j, j], TINY), 0.0)
        rows.append(_stack_last(coef))
    return sum(rows) / T


def mgda_two_task_weight(g11: Array, g12: Array, g22: Array) -> Array:
    """Weight ``a`` on ``g1`` of the min-norm point ``a g1 + (1 - a) g2`` (Sener & Koltun, 2018, Alg. 1).

    ``a = clip((g22 - g12) / ||g1 - g2||^2, 0, 1)``: the foot of the
    perpendicular from the origin to the segment between the two gradients.

    >>> mgda_two_task_weight(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(1.0))  # orthogonal, equal
    tensor(0.5000)
    >>> mgda_two_task_weight(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(4.0))  # g2 = 2 g1: all on g1
    tensor(1.)
    """
    return _between((g22 - g12) / _at_least(g11 + g22 - 2 * g12, TINY), 0.0, 1.0)


def _to_numpy(gram: Array) -> np.ndarray:
    if isinstance(gram, torch.Tensor):
        return gram.detach().double().cpu().numpy()
    return np.asarray(gram, dtype=np.float64)


def _like(w: np.ndarray, gram: Array) -> Array:
    """``w`` as the same kind of array as ``gram`` (tensor on its device, or NumPy)."""
    if isinstance(gram, torch.Tensor):
        return torch.as_tensor(w, dtype=gram.dtype, device=gram.device)
    return w


def frank_wolfe_min_norm(gram: Array, max_iter: int = 250, tol: float = 1e-10) -> Array:
    """Weights of the min-norm point of the convex hull of ``T`` gradients (Sener & Koltun, 2018, Alg. 2).

    Frank-Wolfe on ``min_{w in simplex} w^T M w`` with ``M = G G^T``, starting
    from equal weights. Each step moves weight towards the task ``t`` whose
    gradient has the smallest inner product with the current point ``d``; we
    take it from the active task ``s`` with the largest one (the *pairwise*
    variant of Lacoste-Julien & Jaggi, 2015, which converges linearly where the
    plain step zig-zags), with an exact line search. It stops when the duality
    gap ``d . d - g_t . d`` falls below ``tol`` times the largest squared
    gradient norm. Runs in NumPy on the small ``T x T`` matrix.
    """
    _check_gram(gram)
    if gram.ndim != 2:
        raise ValueError("the Frank-Wolfe solver takes one (T, T) Gram matrix")
    M = _to_numpy(gram)
    T = M.shape[0]
    w = np.full(T, 1.0 / T)
    scale = max(float(np.max(np.diag(M))), TINY)
    for _ in range(max_iter):
        Mw = M @ w
        t = int(np.argmin(Mw))
        if w @ Mw - Mw[t] <= tol * scale:
            break
        active = np.flatnonzero(w > 0)
        s = int(active[np.argmax(Mw[active])])
        curvature = M[t, t] + M[s, s] - 2 * M[t, s]  # ||g_t - g_s||^2
        step = min(w[s], (Mw[s] - Mw[t]) / max(curvature, TINY))
        w[t] += step
        w[s] -= step
    return _like(w, gram)


def mgda_weights(gram: Array, max_iter: int = 250) -> Array:
    """MGDA-UB (Sener & Koltun, 2018): weights of the min-norm convex combination of task gradients.

    The min-norm point ``d`` of the convex hull of the task gradients is a
    common descent direction (``d . g_i >= ||d||^2`` for every ``i``) unless it
    is zero, in which case the point is Pareto-stationary. Two tasks use the
    closed form (batched, NumPy or torch); more use Frank-Wolfe.
    """
    _check_gram(gram)
    T = gram.shape[-1]
    if T == 1:
        return mean_weights(gram)
    if T == 2:
        a = mgda_two_task_weight(gram[..., 0, 0], gram[..., 0, 1], gram[..., 1, 1])
        return _stack_last([a, 1 - a])
    return frank_wolfe_min_norm(gram, max_iter=max_iter)


def mgda_l2_weights(gram: Array, max_iter: int = 250) -> Array:
    """MGDA with l2-normalised gradients, as Sener & Koltun (2018) train it.

    The min-norm weights are solved for the unit gradients ``g_i / ||g_i||``
    (Gram matrix ``gram_ij / (||g_i|| ||g_j||)``) and applied to the raw ones, as
    in the authors' code: a task with a small gradient no longer takes all the
    weight. A zero gradient counts as a unit one (it then adds nothing).
    """
    _check_gram(gram)
    xp = array_module(gram)
    diagonal = xp.diagonal(gram, axis1=-2, axis2=-1) if xp is np else torch.diagonal(gram, dim1=-2, dim2=-1)
    norms = _at_least(diagonal, 1e-30) ** 0.5
    return mgda_weights(gram / (norms[..., :, None] * norms[..., None, :]), max_iter=max_iter)


def cagrad_two_task_weight(g11: Array, g12: Array, g22: Array, c: float) -> Array:
    """CAGrad's dual weight ``x`` on ``g1`` for two tasks, in closed form.

    CAGrad's dual problem (Liu et al., 2021, Eq. 5) is
    ``min_{x in [0, 1]} g_x . g_0 + c ||g_0|| ||g_x||`` with
    ``g_x = x g1 + (1 - x) g2`` and ``g_0 = (g1 + g2) / 2``. It is convex in
    ``x``. Writing ``u = g1 - g2``, ``s = g2 . u + x ||u||^2`` and
    ``D = ||g2||^2 ||u||^2 - (g2 . u)^2``, its derivative is
    ``u . g_0 + c ||g_0|| ||u|| s / sqrt(s^2 + D)``, which vanishes at
    ``s = m sqrt(D / (1 - m^2))`` with ``m = -u . g_0 / (c ||g_0|| ||u||)``
    when ``|m| < 1``; otherwise the minimum is at an end of ``[0, 1]``.
    """
    xp = array_module(g11)
    q = g11 + g22 - 2 * g12  # ||u||^2
    p = g12 - g22  # g2 . u
    D = _at_least(g22 * q - p * p, 0.0)
    a = 0.5 * (g11 - g22)  # u . g0
    k = c * xp.sqrt(_at_least(0.25 * (g11 + g22 + 2 * g12), 0.0))  # c ||g0||
    q_safe = _at_least(q, TINY)
    m = -a / _at_least(k * xp.sqrt(q_safe), TINY)
    inside = xp.abs(m) < 1
    m_in = xp.where(inside, m, 0.0)
    s = m_in * xp.sqrt(D / _at_least(1 - m_in * m_in, TINY))
    x = xp.where(inside, (s - p) / q_safe, xp.where(m >= 1, 1.0, 0.0))
    return xp.where(q > TINY, _between(x, 0.0, 1.0), 0.5)


def _cagrad_dual_slsqp(M: np.ndarray, c: float) -> np.ndarray:
    """Solve CAGrad's dual ``min_{w in simplex} w^T M b + c ||g_0|| sqrt(w^T M w)`` with SLSQP (as the authors do)."""
    from scipy.optimize import minimize

    T = M.shape[0]
    b = np.full(T, 1.0 / T)
    Mb = M @ b
    k = c * np.sqrt(max(b @ Mb, 0.0))

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        Mw = M @ w
        norm = np.sqrt(max(w @ Mw, 0.0) + 1e-12)
        return float(w @ Mb + k * norm), Mb + k * Mw / norm

    result = minimize(objective, b, jac=True, bounds=[(0.0, 1.0)] * T, method="SLSQP",
                      constraints=({"type": "eq", "fun": lambda w: 1.0 - w.sum(), "jac": lambda w: -np.ones(T)},),
                      options={"ftol": 1e-12, "maxiter": 200})
    w = np.clip(result.x, 0.0, None)
    return w / w.sum()


def cagrad_weights(gram: Array, c: float = 0.5) -> Array:
    """CAGrad (Liu et al., 2021): weights of the conflict-averse direction.

    CAGrad looks for the direction ``d`` that maximises the *worst* task's
    improvement ``min_i g_i . d`` within a ball around the mean gradient,
    ``||d - g_0|| <= c ||g_0||``. Its dual gives weights ``w`` on the simplex
    (:func:`cagrad_two_task_weight` for two tasks, SLSQP for more), and

    ``d = (g_0 + c ||g_0|| / ||g_w|| * g_w) / (1 + c)``,  ``g_w = sum_i w_i g_i``,

    the division by ``1 + c`` being the authors' rescaling. ``c = 0`` gives the
    mean gradient; larger ``c`` moves towards MGDA's min-norm direction.
    """
    _check_gram(gram)
    if c < 0:
        raise ValueError(f"CAGrad's c must be >= 0, got {c}")
    xp, T = array_module(gram), gram.shape[-1]
    if T == 1:
        return mean_weights(gram)
    if T == 2:
        g11, g12, g22 = gram[..., 0, 0], gram[..., 0, 1], gram[..., 1, 1]
        x = cagrad_two_task_weight(g11, g12, g22, c)
        g0_norm = xp.sqrt(_at_least(0.25 * (g11 + g22 + 2 * g12), 0.0))
        gw_norm = xp.sqrt(_at_least(x * x * g11 + 2 * x * (1 - x) * g12 + (1 - x) * (1 - x) * g22, 0.0))
        lam = c * g0_norm / _at_least(gw_norm, TINY)
        return _stack_last([(0.5 + lam * x) / (1 + c), (0.5 + lam * (1 - x)) / (1 + c)])
    if gram.ndim != 2:
        raise ValueError("CAGrad for more than two tasks takes one (T, T) Gram matrix")
    M = _to_numpy(gram)
    w = _cagrad_dual_slsqp(M, c)
    b = np.full(T, 1.0 / T)
    lam = c * np.sqrt(max(b @ M @ b, 0.0)) / max(np.sqrt(max(w @ M @ w, 0.0)), TINY)
    return _like((b + lam * w) / (1 + c), gram)


# ---------------------------------------------------------------------------
# Weightings of recent codebases: IMTL-G, Nash-MTL, Aligned-MTL, UPGrad, RLW
# ---------------------------------------------------------------------------


def _one_gram(gram: Array, name: str) -> np.ndarray:
    _check_gram(gram)
    if gram.ndim != 2:
        raise ValueError(f"{name} takes one (T, T) Gram matrix")
    return _to_numpy(gram)


def _square_root_factor(M: np.ndarray) -> np.ndarray:
    """A matrix ``A`` with ``A^T A = M`` (from the eigendecomposition; ``M`` may be singular)."""
    values, vectors = np.linalg.eigh(M)
    return np.sqrt(np.clip(values, 0.0, None))[:, None] * vectors.T


def imtl_g_weights(gram: Array) -> Array:
    """IMTL-G (Liu et al., 2021): the combination that projects equally onto every task's direction.

    IMTL-G asks for ``d = sum_i w_i g_i`` with ``sum_i w_i = 1`` whose
    projections ``d . g_i / ||g_i||`` on the unit task gradients are all equal,
    so no task is favoured for the size of its gradient. Since ``d . g_i =
    (M w)_i`` with ``M = G G^T``, that is ``M w = c n`` with ``n_i = ||g_i||``:
    ``w = M^+ n / (1^T M^+ n)`` (pseudo-inverse for dependent gradients).

    >>> imtl_g_weights(torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64))  # orthogonal
    tensor([0.6667, 0.3333], dtype=torch.float64)
    """
    M = _one_gram(gram, "IMTL-G")
    v = np.linalg.pinv(M) @ np.sqrt(np.clip(np.diag(M), 0.0, None))
    total = v.sum()
    if abs(total) < TINY:
        return mean_weights(gram)
    return _like(v / total, gram)


def nash_mtl_weights(gram: Array, max_iter: int = 100, tol: float = 1e-12) -> Array:
    """Nash-MTL (Navon et al., 2022): the Nash bargaining solution of the tasks, ``(M w)_i = 1 / w_i``.

    The tasks bargain over a direction ``d = sum_i w_i g_i`` in a ball; the
    bargaining solution maximises ``sum_i log(d . g_i)``, and its optimality
    condition is ``w_i (d . g_i) = 1`` for every task: a task with a small
    gradient gets a large weight, and scaling one task's gradient by ``s``
    scales its weight by ``1 / s``, leaving ``d`` unchanged. The condition is
    the gradient of the convex ``f(w) = w^T M w / 2 - sum_i log w_i``, which we
    minimise with Newton's method (the original solves a sequence of convex
    programs with cvxpy; the fixed point is the same).

    >>> nash_mtl_weights(torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64))  # 1 / ||g_i||
    tensor([1.0000, 0.5000], dtype=torch.float64)
    """
    M = _one_gram(gram, "Nash-MTL")
    norms = np.sqrt(np.clip(np.diag(M), TINY, None))
    w = 1.0 / (norms * np.sqrt(M.shape[0]))

    def f(v: np.ndarray) -> float:
        return 0.5 * v @ M @ v - np.log(v).sum()

    for _ in range(max_iter):
        grad = M @ w - 1.0 / w
        if np.max(np.abs(grad * w)) < tol:  # relative: w_i (M w)_i = 1
            break
        step = np.linalg.solve(M + np.diag(1.0 / w**2), grad)
        t = 1.0
        while np.any(w - t * step <= 0) or f(w - t * step) > f(w) - 0.25 * t * grad @ step:
            t /= 2
            if t < 1e-12:
                break
        w = w - t * step
    return _like(w, gram)


def aligned_mtl_weights(gram: Array, rtol: float = 1e-10) -> Array:
    """Aligned-MTL (Senushkin et al., 2023): weights that give the task gradients one condition number.

    With ``M = G G^T = V diag(sigma^2) V^T``, Aligned-MTL replaces the
    gradient system by its best-conditioned version: every singular value set
    to the smallest, ``sigma_min``. On the task gradients this is
    ``B = sigma_min V diag(1 / sigma) V^T`` (directions with ``sigma`` below
    ``rtol`` times the largest are dropped), and the weights are ``B`` applied
    to the equal preference ``1/T``. Orthogonal gradients are all rescaled to
    the norm of the smallest.

    >>> aligned_mtl_weights(torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64))
    tensor([0.5000, 0.2500], dtype=torch.float64)
    """
    M = _one_gram(gram, "Aligned-MTL")
    values, vectors = np.linalg.eigh(M)
    keep = values > rtol * max(values.max(), TINY)
    if not keep.any():
        return mean_weights(gram)
    sigma, V = np.sqrt(values[keep]), vectors[:, keep]
    B = sigma.min() * (V / sigma) @ V.T
    return _like(B @ np.full(M.shape[0], 1.0 / M.shape[0]), gram)


def upgrad_weights(gram: Array) -> Array:
    """UPGrad (Quinton & Rey, 2024): the mean of the task gradients, each projected onto the dual cone.

    The dual cone ``{d : g_j . d >= 0 for all j}`` holds the directions that
    harm no task. Projecting ``g_i`` onto it gives ``G^T v`` with
    ``v = argmin_{v >= e_i} v^T M v`` (the dual of the projection, a
    non-negative least-squares problem with ``A^T A = M``), and UPGrad's
    weights are the mean of those ``v``. The direction therefore harms no
    task, and equals the mean gradient when no two gradients conflict.

    >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    >>> w = upgrad_weights(gram_matrix(G))
    >>> w
    tensor([1.0000, 0.7500], dtype=torch.float64)
    >>> G @ aggregate(G, w)
    tensor([0.2500, 0.5000], dtype=torch.float64)
    """
    from scipy.optimize import nnls

    M = _one_gram(gram, "UPGrad")
    A, T = _square_root_factor(M), M.shape[0]
    rows = []
    for i in range(T):
        e = np.eye(T)[i]
        u, _ = nnls(A, -A @ e)
        rows.append(e + u)
    return _like(np.mean(rows, axis=0), gram)


def rlw_weights(gram: Array, generator: torch.Generator | None = None) -> Array:
    """RLW (Lin et al., 2022): random loss weights, a softmax of standard normal draws, new at every call.

    The weights sum to one, as the mean's do; ``generator`` fixes the draws.

    >>> rlw_weights(torch.eye(3), torch.Generator().manual_seed(0)).sum()
    tensor(1.)
    """
    _check_gram(gram)
    z = torch.randn(gram.shape[-1], generator=generator, dtype=torch.float64)
    w = torch.softmax(z, 0)
    return w.to(gram) if isinstance(gram, torch.Tensor) else w.numpy()


# ---------------------------------------------------------------------------
# Aggregators: the update direction from the task-gradient matrix G
# ---------------------------------------------------------------------------


def _direction(G: torch.Tensor, weighting, **options) -> torch.Tensor:
    """``d = w^T G`` with the weights ``weighting(G G^T, **options)``, computed in float64."""
    _check_G(G)
    return aggregate(G, weighting(gram_matrix(G).double(), **options))


def mean_gradient(G: torch.Tensor) -> torch.Tensor:
    """Equal weighting of the task gradients: ``d = G.mean(0)``.

    >>> mean_gradient(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]))
    tensor([0.0000, 0.5000])
    """
    _check_G(G)
    return G.mean(0)


def pcgrad(G: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """PCGrad's update direction (Yu et al., 2020): the mean of the conflict-projected gradients.

    >>> pcgrad(torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64))
    tensor([0.2500, 0.7500], dtype=torch.float64)
    """
    return _direction(G, pcgrad_weights, generator=generator)


def mgda(G: torch.Tensor, max_iter: int = 250) -> torch.Tensor:
    """MGDA's update direction (Sener & Koltun, 2018): the min-norm point of the gradients' convex hull.

    Every task improves at least by ``||d||^2``: ``g_i . d >= ||d||^2``.

    >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    >>> d = mgda(G)
    >>> d
    tensor([0.2000, 0.4000], dtype=torch.float64)
    >>> G @ d, d @ d
    (tensor([0.2000, 0.2000], dtype=torch.float64), tensor(0.2000, dtype=torch.float64))
    """
    return _direction(G, mgda_weights, max_iter=max_iter)


def mgda_l2(G: torch.Tensor, max_iter: int = 250) -> torch.Tensor:
    """MGDA on l2-normalised gradients (:func:`mgda_l2_weights`), the weights applied to the raw gradients.

    >>> G = torch.tensor([[0.01, 0.0], [0.0, 1.0]], dtype=torch.float64)
    >>> mgda(G)  # nearly all the weight on the small gradient
    tensor([9.9990e-03, 9.9990e-05], dtype=torch.float64)
    >>> mgda_l2(G)  # equal weights on the unit gradients
    tensor([0.0050, 0.5000], dtype=torch.float64)
    """
    return _direction(G, mgda_l2_weights, max_iter=max_iter)


def cagrad(G: torch.Tensor, c: float = 0.5) -> torch.Tensor:
    """CAGrad's update direction (Liu et al., 2021) with conflict-aversion radius ``c``.

    ``c = 0`` is the mean gradient; a larger ``c`` moves towards MGDA's direction.

    >>> G = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    >>> cagrad(G, c=0.0)
    tensor([0.0000, 0.5000], dtype=torch.float64)
    >>> torch.allclose(cagrad(G, c=100.0), mgda(G) / mgda(G).norm() * mean_gradient(G).norm(), atol=1e-2)
    True
    """
    return _direction(G, cagrad_weights, c=c)


def imtl_g(G: torch.Tensor) -> torch.Tensor:
    """IMTL-G's update direction (Liu et al., 2021): equal projections on every unit task gradient."""
    return _direction(G, imtl_g_weights)


def nash_mtl(G: torch.Tensor) -> torch.Tensor:
    """Nash-MTL's update direction (Navon et al., 2022): the tasks' bargaining solution."""
    return _direction(G, nash_mtl_weights)


def aligned_mtl(G: torch.Tensor) -> torch.Tensor:
    """Aligned-MTL's update direction (Senushkin et al., 2023): the gradient system with one condition number."""
    return _direction(G, aligned_mtl_weights)


def upgrad(G: torch.Tensor) -> torch.Tensor:
    """UPGrad's update direction (Quinton & Rey, 2024): the mean of the gradients projected onto the dual cone."""
    return _direction(G, upgrad_weights)


def rlw(G: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """RLW's update direction (Lin et al., 2022): the gradients under random weights that sum to one."""
    return _direction(G, rlw_weights, generator=generator)


# ---------------------------------------------------------------------------
# From a model's losses to G, and back
# ---------------------------------------------------------------------------


def task_gradient_matrix(losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The matrix ``G`` (tasks x params) of each task loss's gradient w.r.t. ``params``, flattened.

    The graph is kept (``retain_graph=True``) so that the caller can still
    differentiate the losses with respect to other parameters. Parameters a
    loss does not depend on contribute zeros.
    """
    params = list(params)
    if not params:
        raise ValueError("no shared parameters: gradient methods need a model with shared parameters")
    if len(losses) < 1:
        raise ValueError("need at least one task loss")
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)]))
    return torch.stack(rows)


def write_gradient(params: Sequence[torch.Tensor], direction: torch.Tensor) -> None:
    """Write a flat update ``direction`` into the ``.grad`` of ``params`` (replacing what was there)."""
    params = list(params)
    total = sum(p.numel() for p in params)
    if direction.dim() != 1 or direction.numel() != total:
        raise ValueError(f"direction has shape {tuple(direction.shape)} but the parameters hold {total} numbers")
    offset = 0
    for p in params:
        p.grad = direction[offset : offset + p.numel()].view_as(p).to(p.dtype).clone()
        offset += p.numel()
