"""The linear theory of Chapter 6 (Chua, Lei & Lee, 2021): closed forms against their limits and brute force."""
import numpy as np
import pytest

from mtl_course import finetuning_theory as ft


def test_finetuned_interpolates_between_frozen_and_least_squares():
    rng = np.random.default_rng(0)
    B = np.linalg.qr(rng.standard_normal((10, 3)))[0]
    task = ft.perturbed_task(B, 0.5, 30, 0.1, rng)
    frozen = ft.fit_frozen(task.X, task.y, B)
    np.testing.assert_allclose(frozen, B @ B.T @ frozen, atol=1e-10)  # in span(B)
    np.testing.assert_allclose(ft.fit_finetuned(task.X, task.y, B, lam=1e9), frozen, atol=1e-5)
    least_squares = np.linalg.lstsq(task.X, task.y, rcond=None)[0]
    np.testing.assert_allclose(ft.fit_finetuned(task.X, task.y, B, lam=1e-9), least_squares, atol=1e-4)


def test_perturbed_task_has_the_asked_delta_and_loo_is_exact():
    rng = np.random.default_rng(1)
    B = np.linalg.qr(rng.standard_normal((8, 2)))[0]
    task = ft.perturbed_task(B, 0.0, 50, 0.0, rng)
    np.testing.assert_allclose(task.beta, B @ B.T @ task.beta, atol=1e-12)  # δ = 0: β in span(B)
    np.testing.assert_allclose(task.X @ task.beta, task.y)
    X, y, P = rng.standard_normal((12, 4)), rng.standard_normal(12), 0.7 * np.eye(4)
    brute = []
    for i in range(12):
        keep = np.arange(12) != i
        beta = np.linalg.solve(X[keep].T @ X[keep] + P, X[keep].T @ y[keep])
        brute.append((y[i] - X[i] @ beta) ** 2)
    assert ft._loo_error(X, y, P) == pytest.approx(np.mean(brute))


def test_learned_representation_recovers_the_shared_subspace_when_delta_is_zero():
    rng = np.random.default_rng(2)
    B = np.linalg.qr(rng.standard_normal((12, 3)))[0]
    tasks = [ft.perturbed_task(B, 0.0, 60, 0.1, rng) for _ in range(30)]
    B_hat = ft.learn_representation(tasks, 3)
    # principal angles: the projections agree
    np.testing.assert_allclose(B_hat @ B_hat.T, B @ B.T, atol=0.05)


def test_frozen_has_an_error_floor_that_finetuning_avoids():
    rows = ft.compare_representations([1.0], [200], d=20, k=3, num_source=40, n_source=100, num_target=10)
    risk = {r["method"]: r["risk"] for r in rows}
    assert risk["frozen"] > 3 * risk["fine-tuned"]
    assert risk["fine-tuned"] <= 1.2 * risk["alone"]
