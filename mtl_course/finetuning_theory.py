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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
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
