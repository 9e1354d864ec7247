"""IMTL-G, Nash-MTL, Aligned-MTL, UPGrad and RLW against their closed forms and an independent implementation.

TorchJD (installed for the tests only, ``requirements.txt``) implements four of
them; ours must give the same direction. Its UPGrad normalises and regularises
the Gram matrix by default, so the comparison turns both off; its Nash-MTL
solves the original's sequence of convex programs with cvxpy, ours the same
fixed point with Newton's method, so they agree to the solvers' tolerance.
"""
from __future__ import annotations

import pytest
import torch

from mtl_course.multitask import gradients


def random_gradients(num_tasks: int, seed: int, dim: int = 7) -> torch.Tensor:
    return torch.randn(num_tasks, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def torchjd_peers(num_tasks: int) -> dict:
    aggregation = pytest.importorskip("torchjd.aggregation")
    from torchjd._linalg._dual_cone import QuadprogProjector

    return {"upgrad": (aggregation.UPGrad(projector=QuadprogProjector(norm_eps=0.0, reg_eps=0.0)), 1e-12),
            "aligned_mtl": (aggregation.AlignedMTL(), 1e-12),
            "imtl_g": (aggregation.IMTLG(), 1e-12),
            "nash_mtl": (aggregation.NashMTL(n_tasks=num_tasks, max_norm=0.0, optim_niter=200), 1e-6)}


@pytest.mark.filterwarnings("ignore::UserWarning")  # cvxpy's notes on re-solving the peer's programs
@pytest.mark.parametrize("num_tasks", [2, 3, 4])
def test_directions_equal_torchjds(num_tasks):
    peers = torchjd_peers(num_tasks)
    for name, (peer, tolerance) in peers.items():
        ours = getattr(gradients, name)
        for seed in range(10):
            if name == "nash_mtl":  # its solver keeps a warm start: a fresh one per problem
                peer = torchjd_peers(num_tasks)[name][0]
            G = random_gradients(num_tasks, seed)
            expected = peer(G)
            difference = float((ours(G) - expected).norm() / expected.norm())
            assert difference < tolerance, f"{name}, {num_tasks} tasks, seed {seed}: relative difference {difference:.1e}"


@pytest.mark.parametrize("seed", range(5))
def test_imtl_g_projects_equally_on_every_unit_gradient(seed):
    G = random_gradients(4, seed)
    d = gradients.imtl_g(G)
    projections = G @ d / G.norm(dim=1)
    assert torch.allclose(projections, projections.mean().expand(4), atol=1e-10)
    assert float(gradients.imtl_g_weights(gradients.gram_matrix(G)).sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_nash_mtl_is_the_bargaining_fixed_point_and_ignores_each_tasks_scale(seed):
    G = random_gradients(3, seed)
    w = gradients.nash_mtl_weights(gradients.gram_matrix(G))
    assert bool((w > 0).all())
    assert torch.allclose(w * (gradients.gram_matrix(G) @ w), torch.ones(3, dtype=torch.float64), atol=1e-9), \
        "w_i (d . g_i) = 1 for every task"
    scaled = G * torch.tensor([[10.0], [1.0], [0.1]], dtype=torch.float64)
    assert torch.allclose(gradients.nash_mtl(scaled), gradients.nash_mtl(G), atol=1e-8), \
        "scaling one task's gradient changes its weight, not the direction"


def test_nash_mtl_on_orthogonal_gradients_weights_each_by_its_inverse_norm():
    G = torch.diag(torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64))
    w = gradients.nash_mtl_weights(gradients.gram_matrix(G))
    assert torch.allclose(w, torch.tensor([2.0, 0.5, 0.25], dtype=torch.float64), atol=1e-10)


def test_aligned_mtl_rescales_orthogonal_gradients_to_the_smallest_norm():
    G = torch.diag(torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64))
    d = gradients.aligned_mtl(G)
    assert torch.allclose(d, torch.full((3,), 0.5 / 3, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_upgrad_projections_land_in_the_dual_cone_and_match_the_mean_without_conflict(seed):
    G = random_gradients(3, seed)
    assert bool((G @ gradients.upgrad(G) >= -1e-12).all()), "UPGrad harms no task"
    agreeing = G.abs()  # non-negative entries: no two gradients conflict
    assert torch.allclose(gradients.upgrad(agreeing), agreeing.mean(0), atol=1e-12)


def test_rlw_draws_new_weights_that_sum_to_one():
    gram = torch.eye(3, dtype=torch.float64)
    generator = torch.Generator().manual_seed(0)
    first, second = gradients.rlw_weights(gram, generator), gradients.rlw_weights(gram, generator)
    assert not torch.allclose(first, second), "new weights at every step"
    assert float(first.sum()) == pytest.approx(1.0) and bool((first > 0).all())
    again = gradients.rlw_weights(gram, torch.Generator().manual_seed(0))
    assert torch.equal(first, again), "a seeded generator reproduces the draws"


def test_rlw_weights_are_the_softmax_of_standard_normal_draws():
    # Lin et al. (2022), Eq. 4: lambda = softmax(z), z ~ N(0, I); over many steps the mean weight
    # is 1/T for every task and the draws' logits have unit variance
    generator = torch.Generator().manual_seed(1)
    gram = torch.eye(4, dtype=torch.float64)
    weights = torch.stack([gradients.rlw_weights(gram, generator) for _ in range(4000)])
    draws = torch.Generator().manual_seed(1)
    z = torch.stack([torch.randn(4, generator=draws, dtype=torch.float64) for _ in range(4000)])
    assert torch.allclose(weights, torch.softmax(z, 1), atol=1e-12)
    logits = weights.log() - weights.log().mean(1, keepdim=True)
    assert weights.mean(0) == pytest.approx([0.25] * 4, abs=0.01)
    assert logits.var(0).mean().item() == pytest.approx(0.75, abs=0.05)  # (1 - 1/T) of the draws'
