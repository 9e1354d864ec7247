"""The linear theory of Chapter 6 (Chua, Lei & Lee, 2021): closed forms against their limits and brute force."""
import numpy as np
import pytest
import torch

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


# --- meta-training objectives: frozen representation against fine-tuning -------------

def _tiny_tasks(delta=0.5, seed=3, d=6, k=2, num_tasks=4):
    rng = np.random.default_rng(seed)
    B = np.linalg.qr(rng.standard_normal((d, k)))[0]
    tasks = ft.task_batch(B, delta, num_tasks, 8, 5, 0.3, rng)
    B_init = torch.from_numpy(rng.standard_normal((d, k)) / np.sqrt(d))
    return B, tasks, B_init


@pytest.mark.parametrize("objective", ["frozen", "fine-tuning"])
def test_outer_gradient_of_each_objective_matches_finite_differences(objective):
    _, tasks, B_init = _tiny_tasks()
    if objective == "frozen":
        f = lambda B: ft.frozen_objective(B, tasks)
    else:
        f = lambda B: ft.finetuning_objective(B, tasks, inner_steps=3, step_size=0.5)
    assert torch.autograd.gradcheck(f, (B_init.clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_inner_gradients_match_torch_func_grad():
    _, tasks, B_init = _tiny_tasks()
    X, y = tasks.X_support, tasks.y_support
    w = torch.randn(X.shape[0], B_init.shape[1], dtype=torch.float64)
    g_B, g_w = ft.support_loss_gradients(X, y, B_init, w)

    def loss(B, w, X, y):
        return torch.mean((X @ (B @ w) - y) ** 2)

    grads = torch.func.vmap(torch.func.grad(loss, argnums=(0, 1)), in_dims=(None, 0, 0, 0))
    ref_B, ref_w = grads(B_init, w, X, y)
    torch.testing.assert_close(g_B, ref_B)
    torch.testing.assert_close(g_w, ref_w)


def test_frozen_inner_solve_is_the_closed_form_and_zero_steps_is_frozen():
    _, tasks, B_init = _tiny_tasks()
    heads = ft.least_squares_head(tasks.X_support, tasks.y_support, B_init, ridge=0.0)
    for X, y, w in zip(tasks.X_support.numpy(), tasks.y_support.numpy(), heads.numpy()):
        np.testing.assert_allclose(w, np.linalg.lstsq(X @ B_init.numpy(), y, rcond=None)[0], atol=1e-8)
    frozen = ft.adapted_coefficients(tasks, B_init, "frozen")
    np.testing.assert_allclose(ft.finetuned_coefficients(tasks.X_support, tasks.y_support, B_init,
                                                         inner_steps=0), frozen, atol=1e-12)
    # with zero inner steps the two meta-objectives are the same function
    assert float(ft.finetuning_objective(B_init, tasks, inner_steps=0)) == pytest.approx(
        float(ft.frozen_objective(B_init, tasks)))


def test_finetuning_steps_lower_the_support_loss():
    _, tasks, B_init = _tiny_tasks()
    X, y = tasks.X_support, tasks.y_support
    losses = [float(torch.mean((X @ ft.finetuned_coefficients(X, y, B_init, inner_steps=s)[..., None]
                                 ).squeeze(-1).sub(y).pow(2))) for s in (0, 1, 5)]
    assert losses[0] > losses[1] > losses[2]


def test_both_objectives_recover_an_exactly_shared_subspace():
    rng = np.random.default_rng(4)
    B = np.linalg.qr(rng.standard_normal((10, 2)))[0]
    tasks = ft.task_batch(B, 0.0, 40, 15, 15, 0.1, rng)
    B_init = rng.standard_normal((10, 2)) / np.sqrt(10)
    for objective in ft.OBJECTIVES:
        B_hat, losses = ft.meta_train_representation(tasks, objective, B_init, outer_steps=100)
        assert losses[-1] < 0.1 * losses[0], objective
        assert ft.principal_angle_sines(B, B_hat)[0] < 0.1, objective


def test_finetuned_procedure_wins_when_tasks_need_their_own_representation():
    rows = ft.compare_objectives([0.0, 1.0], [0], d=12, k=2, num_source=40, n_support=15, n_query=15,
                                 num_target=100, outer_steps=80)
    risk = {(r["delta"], r["objective"], r["procedure"]): r["risk"] for r in rows}
    # δ = 0: the frozen objective and procedure are best; δ = 1: fine-tuning is
    assert risk[(0.0, "frozen", "frozen")] < risk[(0.0, "fine-tuning", "fine-tuned")]
    assert risk[(1.0, "fine-tuning", "fine-tuned")] < 0.8 * risk[(1.0, "frozen", "frozen")]


def test_meta_training_rejects_unknown_objectives_and_procedures():
    _, tasks, B_init = _tiny_tasks()
    with pytest.raises(ValueError, match="objective must be one of"):
        ft.meta_train_representation(tasks, "maml", B_init)
    with pytest.raises(ValueError, match="procedure must be one of"):
        ft.adapted_coefficients(tasks, B_init, "fine-tuning")
    with pytest.raises(ValueError, match="step_size"):
        ft.finetuned_coefficients(tasks.X_support, tasks.y_support, B_init, step_size=3.0)
    no_query = ft.task_batch(np.eye(4)[:, :2], 0.0, 2, 5, 0, 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="no query set"):
        ft.frozen_objective(torch.eye(4)[:, :2].double(), no_query)
