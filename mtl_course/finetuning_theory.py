"""When fine-tuning the representation pays: the linear theory of Chapter 6 (Chua, Lei & Lee, 2021).

In the linear model of Chua, Lei and Lee (2021) every task ``t`` uses its own slightly perturbed
representation ``B + Δ_t`` (``‖Δ_t‖_F = δ``) and a linear head ``w_t``, so its
regression vector is ``β_t = (B + Δ_t) w_t``. :func:`learn_representation`
estimates the shared subspace from source tasks; on a target task
:func:`fit_alone` ignores it, :func:`fit_frozen` keeps it frozen and fits only
the head, :func:`fit_finetuned` starts from it and lets the representation
move (a penalty on how far it moves). All three are closed forms.
:func:`compare_representations` runs the chapter's experiment and
:func:`mtl_course.viz.plot_representation_comparison` draws it.

The second half meta-trains the representation itself, by autograd through each
task's adaptation, with the paper's two kinds of objective:
:func:`frozen_objective` (fit the head, representation fixed) and
:func:`finetuning_objective` (fit the head, then a few gradient steps on
representation and head). :func:`meta_train_representation` trains with either,
:func:`adapted_coefficients` adapts a representation to new tasks with either
test-time procedure, and :func:`compare_objectives` runs the chapter's
comparison of the two.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from . import runtime


@dataclass
class LinearTask:
    """One regression task ``y = x^T β + ε`` with ``β = (B + Δ) w`` (its representation is ``B + Δ``)."""

    X: np.ndarray
    y: np.ndarray
    beta: np.ndarray


def perturbed_task(B: np.ndarray, delta: float, n: int, noise: float, rng: np.random.Generator) -> LinearTask:
    """A task whose representation is ``B + Δ`` with a random direction ``Δ`` of Frobenius norm ``delta``.

    ``x ~ N(0, I_d)``, head ``w ~ N(0, I_k)``, targets ``y = x^T (B + Δ) w + N(0, noise²)``.
    """
    if delta < 0 or noise < 0 or n < 1:
        raise ValueError("delta and noise must be >= 0 and n >= 1")
    d, k = B.shape
    D = rng.standard_normal((d, k))
    D *= delta / np.linalg.norm(D)
    beta = (B + D) @ rng.standard_normal(k)
    X = rng.standard_normal((n, d))
    return LinearTask(X, X @ beta + noise * rng.standard_normal(n), beta)


def learn_representation(tasks: Sequence[LinearTask], k: int) -> np.ndarray:
    """The shared representation from source tasks: top-``k`` left singular vectors of their least-squares ``β̂_t``.

    Returns an orthonormal ``(d, k)`` basis ``B̂``.
    """
    betas = np.stack([np.linalg.lstsq(t.X, t.y, rcond=None)[0] for t in tasks], axis=1)
    if k > min(betas.shape):
        raise ValueError(f"cannot extract a {k}-dimensional representation from {betas.shape[1]} tasks "
                         f"in {betas.shape[0]} dimensions; use more source tasks or a smaller k")
    return np.linalg.svd(betas, full_matrices=False)[0][:, :k]


def _generalised_ridge(X: np.ndarray, y: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    return np.linalg.solve(X.T @ X + penalty, X.T @ y)


def _loo_error(X: np.ndarray, y: np.ndarray, penalty: np.ndarray) -> float:
    """Leave-one-out squared error of a generalised ridge fit, in closed form."""
    A = np.linalg.solve(X.T @ X + penalty, X.T)
    H = X @ A
    residuals = (y - H @ y) / (1.0 - np.clip(np.diag(H), None, 1 - 1e-9))
    return float(np.mean(residuals ** 2))


LAMBDAS = tuple(10.0 ** np.arange(-1, 4.5, 0.5))
"""Penalty grid searched by leave-one-out cross-validation on the target's own examples."""


def _select(X: np.ndarray, y: np.ndarray, shape: np.ndarray, floor: np.ndarray) -> np.ndarray:
    errors = [_loo_error(X, y, lam * shape + floor) for lam in LAMBDAS]
    return _generalised_ridge(X, y, LAMBDAS[int(np.argmin(errors))] * shape + floor)


def fit_alone(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Learn the target alone: ridge regression in all ``d`` dimensions, ``λ`` by leave-one-out CV."""
    d = X.shape[1]
    return _select(X, y, np.eye(d), np.zeros((d, d)))


def fit_frozen(X: np.ndarray, y: np.ndarray, B: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Frozen representation: fit only the head ``w`` on features ``X B``; returns ``β = B ŵ``."""
    Z = X @ B
    w = np.linalg.solve(Z.T @ Z + ridge * np.eye(B.shape[1]), Z.T @ y)
    return B @ w


def fit_finetuned(X: np.ndarray, y: np.ndarray, B: np.ndarray, lam: float | None = None) -> np.ndarray:
    """Fine-tune the representation: ``β = B w + v`` with penalty ``λ ‖v‖²``, ``v`` the change the representation makes.

    Moving the representation from ``B`` to ``B + Δ`` changes the regression
    vector by ``v = Δ w``; the smallest ``‖Δ‖_F`` that does so is ``‖v‖/‖w‖``, so
    penalising how far fine-tuning moves the representation is a ridge penalty
    on the part of ``β`` outside ``span(B)``: ``β̂ = (XᵀX + λ P_⊥)⁻¹ Xᵀy`` with
    ``P_⊥ = I − B Bᵀ`` (``B`` orthonormal). ``λ → ∞`` gives :func:`fit_frozen`,
    ``λ → 0`` least squares. ``lam=None`` picks ``λ`` by leave-one-out CV.
    """
    d = X.shape[1]
    P = np.eye(d) - B @ B.T
    floor = 1e-6 * np.eye(d)
    if lam is None:
        return _select(X, y, P, floor)
    return _generalised_ridge(X, y, lam * P + floor)


def excess_risk(beta_hat: np.ndarray, beta: np.ndarray) -> float:
    """Excess test error ``E[(xᵀβ̂ − xᵀβ)²] = ‖β̂ − β‖²`` for ``x ~ N(0, I)``."""
    return float(np.sum((beta_hat - beta) ** 2))


def compare_representations(deltas: Sequence[float], ns: Sequence[int], *, d: int = 40, k: int = 4,
                            num_source: int = 100, n_source: int = 200, num_target: int = 30,
                            noise: float = 0.5, seed: int = 0) -> list[dict]:
    """Excess risk of alone / frozen / fine-tuned on target tasks, for each ``δ`` and target size ``n``.

    For each ``δ``: draw a shared orthonormal ``B`` (``d×k``), ``num_source`` source
    tasks of ``n_source`` examples each, learn ``B̂`` (:func:`learn_representation`),
    then ``num_target`` target tasks per ``n``. Returns one row per (δ, n, method)
    with the mean excess risk.
    """
    with threadpool_limits(1):  # tiny matrices: BLAS threads only add overhead
        return _compare(deltas, ns, d, k, num_source, n_source, num_target, noise, seed)


def _compare(deltas, ns, d, k, num_source, n_source, num_target, noise, seed) -> list[dict]:
    rng = runtime.rng(seed)
    rows = []
    for delta in deltas:
        B = np.linalg.qr(rng.standard_normal((d, k)))[0]
        sources = [perturbed_task(B, delta, n_source, noise, rng) for _ in range(num_source)]
        B_hat = learn_representation(sources, k)
        for n in ns:
            risks: dict[str, list[float]] = {"alone": [], "frozen": [], "fine-tuned": []}
            for _ in range(num_target):
                t = perturbed_task(B, delta, n, noise, rng)
                risks["alone"].append(excess_risk(fit_alone(t.X, t.y), t.beta))
                risks["frozen"].append(excess_risk(fit_frozen(t.X, t.y, B_hat), t.beta))
                risks["fine-tuned"].append(excess_risk(fit_finetuned(t.X, t.y, B_hat), t.beta))
            rows += [{"delta": float(delta), "n": int(n), "method": m, "risk": float(np.mean(v))}
                     for m, v in risks.items()]
    return rows


# ---------------------------------------------------------------------------
# Meta-training objectives: a frozen-representation objective against a
# fine-tuning-based one (Chua, Lei & Lee, 2021), in the same linear setting
# ---------------------------------------------------------------------------
#
# Above, one representation (the source tasks' top singular vectors) is adapted
# to the target in three ways. Below, the representation itself is meta-trained
# by gradient descent on source tasks, with one of two objectives, and only the
# objective differs between the two runs:
#
# * the frozen-representation objective (ANIL/ProtoNet-like) fits each task's
#   head in closed form on its support set, the representation fixed, and scores
#   the query loss;
# * the fine-tuning objective (MAML-like) fits the same head, then takes a few
#   gradient steps on the representation *and* the head on the support set, and
#   scores the query loss of the adapted model. With zero steps it is the frozen
#   objective.
#
# Both are differentiated by torch autograd (float64) through the task's
# adaptation; tasks are a batch dimension (batched solves and matrix products).

OBJECTIVES = ("frozen", "fine-tuning")
"""The two meta-training objectives :func:`meta_train_representation` accepts."""

PROCEDURES = ("frozen", "fine-tuned")
"""The two test-time procedures :func:`adapted_coefficients` accepts."""


@dataclass
class TaskBatch:
    """Tasks stacked along the first dimension (float64 tensors).

    ``X_support`` is ``(T, n_support, d)``, ``y_support`` ``(T, n_support)``,
    ``X_query`` and ``y_query`` likewise with ``n_query`` rows (possibly 0),
    ``beta`` the true coefficient vectors, ``(T, d)``.
    """

    X_support: torch.Tensor
    y_support: torch.Tensor
    X_query: torch.Tensor
    y_query: torch.Tensor
    beta: torch.Tensor


def task_batch(B: np.ndarray, delta: float, num_tasks: int, n_support: int, n_query: int,
               noise: float, rng: np.random.Generator) -> TaskBatch:
    """``num_tasks`` tasks of :func:`perturbed_task`, each split into a support and a query set."""
    if num_tasks < 1 or n_support < 1 or n_query < 0:
        raise ValueError("need num_tasks >= 1, n_support >= 1 and n_query >= 0")
    tasks = [perturbed_task(B, delta, n_support + n_query, noise, rng) for _ in range(num_tasks)]
    X = torch.from_numpy(np.stack([t.X for t in tasks]))
    y = torch.from_numpy(np.stack([t.y for t in tasks]))
    beta = torch.from_numpy(np.stack([t.beta for t in tasks]))
    return TaskBatch(X[:, :n_support], y[:, :n_support], X[:, n_support:], y[:, n_support:], beta)


def least_squares_head(X: torch.Tensor, y: torch.Tensor, B: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """The frozen objective's inner solve: per task, ``ŵ = (BᵀXᵀXB + ridge·I)⁻¹ BᵀXᵀy``.

    ``X`` is ``(T, n, d)``, ``y`` ``(T, n)``, ``B`` ``(d, k)``; returns the heads, ``(T, k)``.
    Differentiable in ``B``.
    """
    Z = X @ B
    gram = Z.mT @ Z + ridge * torch.eye(B.shape[1], dtype=B.dtype)
    return torch.linalg.solve(gram, (Z.mT @ y.unsqueeze(-1))).squeeze(-1)


def support_loss_gradients(X: torch.Tensor, y: torch.Tensor, B: torch.Tensor,
                           w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of each task's mean squared error ``‖X B w − y‖²/n`` in ``B`` and in ``w``, batched.

    With residuals ``r = X B w − y``: ``∂/∂B = (2/n) Xᵀ r wᵀ`` and ``∂/∂w = (2/n) Bᵀ Xᵀ r``.
    ``X`` is ``(T, n, d)``, ``y`` ``(T, n)``, ``B`` ``(d, k)`` or ``(T, d, k)``, ``w`` ``(T, k)``.
    """
    residuals = (X @ (B @ w.unsqueeze(-1))).squeeze(-1) - y
    Xr = (2 / X.shape[1]) * (X.mT @ residuals.unsqueeze(-1))  # (T, d, 1)
    return Xr @ w.unsqueeze(-2), (B.mT @ Xr).squeeze(-1)


def finetuned_coefficients(X: torch.Tensor, y: torch.Tensor, B: torch.Tensor, inner_steps: int = 5,
                           step_size: float = 0.5, ridge: float = 1e-6) -> torch.Tensor:
    """Fine-tune representation and head on each task's support set; returns ``β̂ = B_K w_K``, ``(T, d)``.

    Start from ``B`` and the :func:`least_squares_head`, then take ``inner_steps``
    gradient steps on ``(B, w)`` of the mean squared support error. The step
    sizes are normalised by the curvature, ``step_size / (c‖w‖²)`` for ``B`` and
    ``step_size / (c‖B‖_F²)`` for ``w`` with ``c = 2 λ_max(XᵀX)/n``, so that
    ``0 < step_size < 1`` is stable whatever the scale of ``B``. With
    ``inner_steps=0`` this is the frozen fit ``B ŵ``. Differentiable in ``B``.
    """
    if inner_steps < 0 or not 0 < step_size < 2:
        raise ValueError("need inner_steps >= 0 and 0 < step_size < 2 (the normalised steps diverge beyond)")
    w = least_squares_head(X, y, B, ridge)
    curvature = (2 * torch.linalg.matrix_norm(X, ord=2) ** 2 / X.shape[1]).unsqueeze(-1)  # (T, 1)
    B_t = B.expand(X.shape[0], *B.shape)
    for _ in range(inner_steps):
        g_B, g_w = support_loss_gradients(X, y, B_t, w)
        rate_B = step_size / (curvature * (torch.sum(w ** 2, dim=-1, keepdim=True) + 1e-12))
        rate_w = step_size / (curvature * (torch.sum(B_t ** 2, dim=(-2, -1)).unsqueeze(-1) + 1e-12))
        B_t, w = B_t - rate_B.unsqueeze(-1) * g_B, w - rate_w * g_w
    return (B_t @ w.unsqueeze(-1)).squeeze(-1)


def adapted_coefficients(tasks: TaskBatch, B: torch.Tensor, procedure: str, inner_steps: int = 5,
                         step_size: float = 0.5, ridge: float = 1e-6) -> torch.Tensor:
    """Each task's ``β̂`` from its support set: ``"frozen"`` (head only) or ``"fine-tuned"`` (head and representation)."""
    if procedure not in PROCEDURES:
        raise ValueError(f"procedure must be one of {PROCEDURES}, got {procedure!r}")
    X, y = tasks.X_support, tasks.y_support
    if procedure == "frozen":
        return least_squares_head(X, y, B, ridge) @ B.T
    return finetuned_coefficients(X, y, B, inner_steps, step_size, ridge)


def query_loss(tasks: TaskBatch, beta_hat: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the adapted ``β̂`` (``(T, d)``) on the tasks' query sets."""
    if tasks.X_query.shape[1] == 0:
        raise ValueError("these tasks have no query set: build them with n_query >= 1")
    predictions = (tasks.X_query @ beta_hat.unsqueeze(-1)).squeeze(-1)
    return torch.mean((predictions - tasks.y_query) ** 2)


def frozen_objective(B: torch.Tensor, tasks: TaskBatch, ridge: float = 1e-6) -> torch.Tensor:
    """Frozen-representation meta-objective: query loss after fitting only the head on the support set."""
    return query_loss(tasks, adapted_coefficients(tasks, B, "frozen", ridge=ridge))


def finetuning_objective(B: torch.Tensor, tasks: TaskBatch, inner_steps: int = 5, step_size: float = 0.5,
                         ridge: float = 1e-6) -> torch.Tensor:
    """Fine-tuning-based meta-objective: query loss after :func:`finetuned_coefficients` on the support set."""
    return query_loss(tasks, finetuned_coefficients(tasks.X_support, tasks.y_support, B, inner_steps,
                                                    step_size, ridge))


def meta_train_representation(tasks: TaskBatch, objective: str, B_init: np.ndarray | torch.Tensor, *,
                              outer_steps: int = 150, lr: float = 0.05, inner_steps: int = 5,
                              step_size: float = 0.5) -> tuple[torch.Tensor, list[float]]:
    """Meta-train a ``(d, k)`` representation on source ``tasks`` with the ``"frozen"`` or ``"fine-tuning"`` objective.

    Full-batch Adam (learning rate ``lr``) for ``outer_steps`` outer steps from
    ``B_init``; the outer gradient is autograd's through each task's adaptation.
    Returns the representation and the meta-objective before each step.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if outer_steps < 0:
        raise ValueError(f"outer_steps must be >= 0, got {outer_steps}")
    B = torch.as_tensor(B_init, dtype=torch.float64).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([B], lr=lr)
    losses = []
    for _ in range(outer_steps):
        optimizer.zero_grad()
        if objective == "frozen":
            loss = frozen_objective(B, tasks)
        else:
            loss = finetuning_objective(B, tasks, inner_steps, step_size)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return B.detach(), losses


def principal_angle_sines(B: np.ndarray | torch.Tensor, B_hat: np.ndarray | torch.Tensor) -> np.ndarray:
    """Sines of the principal angles between ``span(B)`` and ``span(B_hat)`` (any bases), largest first."""
    Q = np.linalg.qr(np.asarray(B, dtype=float))[0]
    Q_hat = np.linalg.qr(np.asarray(B_hat, dtype=float))[0]
    cosines = np.linalg.svd(Q.T @ Q_hat, compute_uv=False)
    return np.sort(np.sqrt(np.clip(1 - cosines ** 2, 0, None)))[::-1]


def compare_objectives(deltas: Sequence[float], seeds: Sequence[int], *, d: int = 20, k: int = 3,
                       num_source: int = 100, n_support: int = 20, n_query: int = 20,
                       num_target: int = 200, noise: float = 0.5, outer_steps: int = 150, lr: float = 0.05,
                       inner_steps: int = 5, step_size: float = 0.5) -> list[dict]:
    """Meta-train with each objective, then score both test-time procedures on new target tasks.

    For each seed and ``δ``: a shared orthonormal ``B`` (``d×k``), ``num_source``
    source tasks (support and query sets), one random initialisation ``B_init``
    used by both objectives, :func:`meta_train_representation` with each, then
    ``num_target`` target tasks of ``n_support`` examples, the same for every
    combination. Returns one row per (seed, δ, objective, procedure) with the
    mean excess risk ``‖β̂ − β‖²`` over the targets and the largest principal-angle
    sine between ``span(B)`` and the learned representation.
    """
    rows = []
    for seed in seeds:
        for delta in deltas:
            rng = runtime.rng(seed)
            B = np.linalg.qr(rng.standard_normal((d, k)))[0]
            sources = task_batch(B, delta, num_source, n_support, n_query, noise, rng)
            targets = task_batch(B, delta, num_target, n_support, 0, noise, rng)
            B_init = rng.standard_normal((d, k)) / np.sqrt(d)
            for objective in OBJECTIVES:
                B_hat, _ = meta_train_representation(sources, objective, B_init, outer_steps=outer_steps, lr=lr,
                                                     inner_steps=inner_steps, step_size=step_size)
                sine = float(principal_angle_sines(B, B_hat)[0])
                with torch.no_grad():
                    for procedure in PROCEDURES:
                        beta_hat = adapted_coefficients(targets, B_hat, procedure, inner_steps, step_size)
                        risk = torch.sum((beta_hat - targets.beta) ** 2, dim=1).mean()
                        rows.append({"seed": int(seed), "delta": float(delta), "objective": objective,
                                     "procedure": procedure, "risk": float(risk), "sine": sine})
    return rows
