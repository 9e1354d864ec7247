"""Unit tests of mtl_course.multitask against independent references.

References are closed forms worked out by hand, brute-force searches over the
simplex, SciPy's QP-capable SLSQP solver, direct vector implementations of the
papers' algorithms, finite differences and autograd in float64.
"""
from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch import nn

from mtl_course.data import LabelledSet
from mtl_course.multitask import (
    FAMO,
    CrossStitch,
    GradNorm,
    HardSharing,
    MultiTaskSet,
    SoftSharing,
    TaskSpec,
    UncertaintyWeighting,
    cagrad,
    cagrad_two_task_weight,
    cagrad_weights,
    delta_p,
    dwa_weights,
    evaluate_multitask,
    famo_logit_gradient,
    famo_weights,
    fit_multitask,
    fit_single_task,
    frank_wolfe_min_norm,
    glyph_alphabet_tasks,
    glyph_overlay,
    glyph_tasks,
    gradient_cosine,
    gradnorm_weight_gradient,
    gram_matrix,
    make_head,
    mgda,
    mgda_weights,
    noisy_regression,
    pcgrad,
    pcgrad_weights,
    rotate,
    run_toy,
    task_gradient_matrix,
    toy_gradients,
    toy_losses,
    uncertainty_weighted_loss,
    write_gradient,
)
from mtl_course.multitask.train import METHODS

torch.set_default_dtype(torch.float32)


def _G(seed: int, T: int = 2, P: int = 5) -> torch.Tensor:
    return torch.randn(T, P, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _conflicting_pair(seed: int) -> torch.Tensor:
    """Two gradients with a negative inner product."""
    for k in itertools.count(seed * 1000):
        G = _G(k)
        if G[0] @ G[1] < -0.1:
            return G
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------
# MGDA
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_two_task_mgda_equals_closed_form_and_grid_search(seed):
    G = _G(seed)
    g1, g2 = G
    a = float(torch.clamp((g2 @ (g2 - g1)) / ((g1 - g2) @ (g1 - g2)), 0, 1))  # the hand formula
    assert torch.allclose(mgda(G), a * g1 + (1 - a) * g2, atol=1e-12)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    norms = ((grid[:, None] * g1 + (1 - grid[:, None]) * g2) ** 2).sum(1)
    best = grid[norms.argmin()]
    assert abs(a - float(best)) < 1e-3
    d = mgda(G)
    if 0 < a < 1:  # an interior min-norm point is a common descent direction: g_i . d = ||d||^2
        assert torch.allclose(G @ d, (d @ d).expand(2), atol=1e-9)


def test_mgda_two_task_edge_cases():
    g = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)  # same direction: the shorter one
    assert torch.allclose(mgda(g), torch.tensor([1.0, 0.0], dtype=torch.float64))
    g = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)  # opposite: the origin (Pareto-stationary)
    assert torch.allclose(mgda(g), torch.zeros(2, dtype=torch.float64), atol=1e-12)


def _qp_min_norm(G: torch.Tensor) -> np.ndarray:
    """Reference: min_{w in simplex} ||w^T G||^2 by SLSQP with tight tolerance."""
    M = (G @ G.T).numpy()
    T = len(M)
    res = minimize(lambda w: w @ M @ w, np.full(T, 1 / T), jac=lambda w: 2 * M @ w, method="SLSQP",
                   bounds=[(0, 1)] * T, constraints=({"type": "eq", "fun": lambda w: w.sum() - 1},),
                   options={"ftol": 1e-15, "maxiter": 1000})
    return res.x


@pytest.mark.parametrize("seed", range(5))
def test_frank_wolfe_min_norm_matches_qp_and_brute_force_for_three_tasks(seed):
    G = _G(seed, T=3, P=4)
    M = (G @ G.T).numpy()
    w = mgda_weights(gram_matrix(G), max_iter=2000).numpy()
    assert np.all(w >= -1e-12) and abs(w.sum() - 1) < 1e-9
    reference = _qp_min_norm(G)
    value, ref_value = w @ M @ w, reference @ M @ reference
    assert value <= ref_value + 1e-4 * max(1.0, ref_value)
    # brute force over a grid of the simplex
    steps = np.linspace(0, 1, 201)
    grid = np.array([(a, b, 1 - a - b) for a in steps for b in steps if a + b <= 1 + 1e-12])
    brute = np.min(np.einsum("ni,ij,nj->n", grid, M, grid))
    assert value <= brute + 1e-6
    assert np.allclose(frank_wolfe_min_norm(M, max_iter=2000), w)  # NumPy in, NumPy out


# ---------------------------------------------------------------------------
# PCGrad
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_two_tasks_removes_the_conflict_and_equals_the_hand_formula(seed):
    G = _conflicting_pair(seed)
    g1, g2 = G
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2  # Algorithm 1 of Yu et al., by hand
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    d = pcgrad(G)
    assert torch.allclose(d, (p1 + p2) / 2, atol=1e-12)
    assert abs(float(p1 @ g2)) < 1e-10 and abs(float(p2 @ g1)) < 1e-10
    assert float(p1 @ p2) >= -1e-12, "the projected gradients must not conflict with each other"
    assert float(d @ g1) >= -1e-12 and float(d @ g2) >= -1e-12, "the PCGrad step must not increase either loss"


def test_pcgrad_leaves_agreeing_gradients_alone():
    G = torch.tensor([[1.0, 0.2], [0.5, 1.0]], dtype=torch.float64)
    assert torch.allclose(pcgrad(G), G.mean(0))


def _pcgrad_by_vectors(G: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Reference: Algorithm 1 of Yu et al. on the vectors themselves, with the same task orders."""
    T = len(G)
    projected = []
    for i in range(T):
        g = G[i].clone()
        others = [j for j in range(T) if j != i]
        for k in torch.randperm(T - 1, generator=generator).tolist():
            j = others[k]
            if g @ G[j] < 0:
                g = g - (g @ G[j]) / (G[j] @ G[j]) * G[j]
        projected.append(g)
    return torch.stack(projected).mean(0)


@pytest.mark.parametrize("seed", range(4))
def test_pcgrad_many_tasks_matches_the_vector_algorithm(seed):
    G = _G(seed, T=4, P=6)
    ours = pcgrad(G, generator=torch.Generator().manual_seed(seed))
    reference = _pcgrad_by_vectors(G, torch.Generator().manual_seed(seed))
    assert torch.allclose(ours, reference, atol=1e-10)


# ---------------------------------------------------------------------------
# CAGrad
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("T", [2, 3, 4])
def test_cagrad_with_c_zero_is_the_mean_gradient(T):
    G = _G(T, T=T, P=7)
    assert torch.allclose(cagrad(G, c=0.0), G.mean(0), atol=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_cagrad_two_task_dual_weight_matches_grid_search(seed):
    G = _G(seed, P=3)
    g1, g2 = G
    g0 = G.mean(0)
    c = 0.5
    grid = torch.linspace(0, 1, 100001, dtype=torch.float64)
    gx = grid[:, None] * g1 + (1 - grid[:, None]) * g2
    objective = gx @ g0 + c * g0.norm() * gx.norm(dim=1)
    M = G @ G.T
    x = float(cagrad_two_task_weight(M[0, 0], M[0, 1], M[1, 1], c))
    gx_ours = x * g1 + (1 - x) * g2
    ours = float(gx_ours @ g0 + c * g0.norm() * gx_ours.norm())
    assert ours <= float(objective.min()) + 1e-8


def _worst_improvement(G: torch.Tensor, d: torch.Tensor) -> float:
    return float((G @ d).min())


@pytest.mark.parametrize("T", [2, 3])
def test_cagrad_direction_solves_the_primal_problem(T):
    """CAGrad's d (times 1 + c) maximises min_i g_i . d over the ball ||d - g0|| <= c ||g0||."""
    torch.manual_seed(T)
    for seed in range(4):
        G = _G(10 * T + seed, T=T, P=4)
        c = 0.5
        d = cagrad(G, c) * (1 + c)
        g0 = G.mean(0)
        radius = c * g0.norm()
        assert float((d - g0).norm()) <= float(radius) * (1 + 1e-6)
        ours = _worst_improvement(G, d)
        directions = torch.randn(20000, G.shape[1], dtype=torch.float64)
        candidates = g0 + radius * directions / directions.norm(dim=1, keepdim=True)
        assert ours >= float((candidates @ G.T).min(1).values.max()) - 1e-6


def _cagrad_primal(G: torch.Tensor, c: float) -> np.ndarray:
    """Reference: max_{d, t} t  s.t.  g_i . d >= t for all i,  ||d - g0||^2 <= c^2 ||g0||^2  (SLSQP)."""
    A = G.numpy()
    g0 = A.mean(0)
    r2 = c**2 * (g0 @ g0)
    P = A.shape[1]
    cons = [{"type": "ineq", "fun": lambda z, a=a: a @ z[:P] - z[P]} for a in A]
    cons.append({"type": "ineq", "fun": lambda z: r2 - (z[:P] - g0) @ (z[:P] - g0)})
    res = minimize(lambda z: -z[P], np.concatenate([g0, [(A @ g0).min()]]), method="SLSQP", constraints=cons,
                   options={"ftol": 1e-14, "maxiter": 1000})
    return res.x[:P]


@pytest.mark.parametrize("T", [2, 3, 4])
def test_cagrad_direction_equals_the_primal_solution(T):
    for seed in range(3):
        G = _G(100 * T + seed, T=T, P=5)
        c = 0.5
        ours = cagrad(G, c).numpy() * (1 + c)  # undo the authors' rescaling
        assert np.allclose(ours, _cagrad_primal(G, c), atol=1e-4)


def test_cagrad_three_tasks_dual_matches_brute_force():
    G = _G(3, T=3, P=4)
    M = (G @ G.T).numpy()
    c = 0.5
    b = np.full(3, 1 / 3)
    k = c * math.sqrt(b @ M @ b)
    steps = np.linspace(0, 1, 401)
    grid = np.array([(a, e, 1 - a - e) for a in steps for e in steps if a + e <= 1 + 1e-12])
    values = grid @ M @ b + k * np.sqrt(np.einsum("ni,ij,nj->n", grid, M, grid))
    # recover the dual weights from the returned combination: (b + lam w) / (1 + c)
    weights = cagrad_weights(torch.as_tensor(M), c).numpy() * (1 + c) - b
    w = weights / weights.sum()
    assert w @ M @ b + k * math.sqrt(w @ M @ w) <= values.min() + 1e-5


def test_two_task_weightings_batch_over_numpy_and_torch_alike():
    G = torch.stack([_G(s) for s in range(6)])  # (6, 2, 5)
    gram = gram_matrix(G)
    for weighting in (pcgrad_weights, mgda_weights, lambda m: cagrad_weights(m, 0.5)):
        batched_torch = weighting(gram)
        batched_numpy = weighting(gram.numpy())
        single = torch.stack([weighting(m) for m in gram])
        assert torch.allclose(batched_torch, single, atol=1e-12)
        assert np.allclose(batched_numpy, single.numpy(), atol=1e-12)


def test_gradient_cosine_and_bad_input():
    G = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0]])
    cos = gradient_cosine(G)
    assert torch.allclose(cos[0, 1], torch.tensor(-1 / math.sqrt(2)))
    assert cos[2, 0] == 0 and cos[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tasks, params"):
        pcgrad(torch.zeros(3))
    with pytest.raises(ValueError, match="c must be"):
        cagrad(_G(0), c=-1)


def test_task_gradient_matrix_and_write_gradient():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    out = layer(x)
    losses = [out[:, 0].pow(2).mean(), out[:, 1].mean()]
    G = task_gradient_matrix(losses, list(layer.parameters()))
    for i, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, list(layer.parameters()), retain_graph=True)
        assert torch.allclose(G[i], torch.cat([g.reshape(-1) for g in grads]))
    write_gradient(list(layer.parameters()), G.sum(0))
    assert torch.allclose(layer.weight.grad.reshape(-1), G.sum(0)[:6]) and torch.allclose(layer.bias.grad, G.sum(0)[6:])
    with pytest.raises(ValueError, match="parameters hold"):
        write_gradient(list(layer.parameters()), torch.zeros(3))


# ---------------------------------------------------------------------------
# Loss weighting
# ---------------------------------------------------------------------------


def test_uncertainty_weighting_loss_and_gradient_match_the_formula():
    losses = torch.tensor([2.0, 0.3, 5.0], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.1, -0.7, 1.2], dtype=torch.float64, requires_grad=True)
    total = uncertainty_weighted_loss(losses, s)
    expected = sum(math.exp(-si) * Li + si for si, Li in zip(s.tolist(), losses.tolist()))
    assert total.item() == pytest.approx(expected, rel=1e-12)
    total.backward()
    assert torch.allclose(s.grad, -torch.exp(-s.detach()) * losses.detach() + 1)  # dL/ds_i = 1 - exp(-s_i) L_i
    assert torch.allclose(losses.grad, torch.exp(-s.detach()))  # dL/dL_i = exp(-s_i)
    # finite differences in float64
    eps = 1e-6
    for i in range(3):
        bumped = s.detach().clone()
        bumped[i] += eps
        numeric = (uncertainty_weighted_loss(losses.detach(), bumped) - uncertainty_weighted_loss(
            losses.detach(), s.detach())) / eps
        assert numeric.item() == pytest.approx(s.grad[i].item(), abs=1e-5)


def test_uncertainty_weighting_kendall_variant_and_its_optimum():
    losses = torch.tensor([4.0, 9.0], dtype=torch.float64)
    s = torch.tensor([0.5, -0.5], dtype=torch.float64)
    kendall = uncertainty_weighted_loss(losses, s, kinds=["regression", "classification"])
    expected = 0.5 * math.exp(-0.5) * 4 + 0.25 + math.exp(0.5) * 9 - 0.25
    assert kendall.item() == pytest.approx(expected)
    # both forms are minimised at sigma^2 = L for a regression loss
    grid = torch.linspace(-3, 5, 80001, dtype=torch.float64)
    for kinds in (None, ["regression"]):
        values = torch.stack([uncertainty_weighted_loss(torch.tensor([7.0], dtype=torch.float64), g.view(1), kinds)
                              for g in grid[::100]])
        assert math.exp(grid[::100][values.argmin()].item()) == pytest.approx(7.0, rel=0.02)
    with pytest.raises(ValueError, match="one log-variance per task"):
        uncertainty_weighted_loss(losses, torch.zeros(3))
    assert torch.allclose(UncertaintyWeighting(2).sigmas, torch.ones(2))


def test_dwa_weights_hand_computation():
    history = [[1.0, 2.0], [0.5, 1.8]]
    r = np.array([0.5 / 1.0, 1.8 / 2.0])
    expected = 2 * np.exp(r / 2) / np.exp(r / 2).sum()
    assert np.allclose(dwa_weights(history, temperature=2.0).numpy(), expected, atol=1e-6)
    assert torch.equal(dwa_weights([[3.0, 4.0, 5.0]]), torch.ones(3))
    assert dwa_weights(history).sum().item() == pytest.approx(2.0)


def test_gradnorm_weight_gradient_matches_autograd():
    w = torch.tensor([1.2, 0.8, 1.0], dtype=torch.float64, requires_grad=True)
    norms = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    losses = torch.tensor([1.0, 0.5, 0.9], dtype=torch.float64)
    initial = torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64)
    alpha = 1.5
    G = w * norms
    r = (losses / initial) / (losses / initial).mean()
    target = (G.mean() * r**alpha).detach()  # the target is a constant in GradNorm
    (G - target).abs().sum().backward()
    assert torch.allclose(gradnorm_weight_gradient(w.detach(), norms, losses, initial, alpha), w.grad)
    gn = GradNorm(3)
    gn.update(losses, norms)
    assert gn.weights.sum().item() == pytest.approx(3.0)


def test_mgda_l2_weights_ignore_each_tasks_gradient_scale():
    """Sener & Koltun's l2 normalisation: the weights depend only on the directions of the gradients."""
    from mtl_course.multitask import mgda_l2_weights

    g = torch.Generator().manual_seed(0)
    G = torch.randn(3, 7, generator=g, dtype=torch.float64)
    scaled = G * torch.tensor([[100.0], [1.0], [0.01]], dtype=torch.float64)
    w, w_scaled = mgda_l2_weights(gram_matrix(G)), mgda_l2_weights(gram_matrix(scaled))
    assert torch.allclose(w, w_scaled, atol=1e-6) and w.sum().item() == pytest.approx(1.0)
    # two unit vectors: the min-norm point of their segment is the midpoint
    two = G[:2] * torch.tensor([[30.0], [0.1]], dtype=torch.float64)
    assert torch.allclose(mgda_l2_weights(gram_matrix(two)), torch.full((2,), 0.5, dtype=torch.float64))


def famo_losses(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Two positive losses of a 3-vector, the second ``scale`` times larger."""
    return torch.stack([(x - 1).pow(2).sum() + 0.1, scale * ((x + 2).pow(2).sum() + 0.3)])


def test_famo_weights_give_the_gradient_of_the_papers_objective():
    """sum_i w_i L_i has the gradient of T sum_i z_i log L_i / c, c = sum_i z_i / L_i (Liu et al., Eq. 5)."""
    x = torch.tensor([0.3, -0.5, 1.2], dtype=torch.float64, requires_grad=True)
    logits = torch.tensor([0.4, -0.7], dtype=torch.float64)
    losses = famo_losses(x)
    z = torch.softmax(logits, 0)
    c = (z / losses).sum().detach()
    (papers,) = torch.autograd.grad(2 * (z * losses.log()).sum() / c, x, retain_graph=True)
    (ours,) = torch.autograd.grad((famo_weights(logits, losses) * losses).sum(), x)
    assert torch.allclose(ours, papers, atol=1e-12)
    assert famo_weights(logits, losses).sum().item() == pytest.approx(2.0)


def test_famo_direction_ignores_the_scale_of_a_loss():
    """Through log L_i, scaling one loss changes only the step's length (the normaliser c), not its direction."""
    x = torch.tensor([0.3, -0.5, 1.2], dtype=torch.float64, requires_grad=True)
    logits = torch.tensor([0.2, 0.1], dtype=torch.float64)
    grads = []
    for scale in (1.0, 100.0):
        losses = famo_losses(x, scale)
        grads.append(torch.autograd.grad((famo_weights(logits, losses) * losses).sum(), x)[0])
    assert torch.allclose(grads[0] / grads[0].norm(), grads[1] / grads[1].norm(), atol=1e-10)


def test_famo_logit_gradient_is_the_softmax_vector_jacobian_product():
    logits = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64, requires_grad=True)
    before = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    after = torch.tensor([1.0, 0.9, 0.45], dtype=torch.float64)
    delta = before.log() - after.log()
    (expected,) = torch.autograd.grad(torch.softmax(logits, 0), logits, grad_outputs=delta)
    assert torch.allclose(famo_logit_gradient(logits, before, after), expected, atol=1e-12)


def test_famo_moves_weight_to_the_task_whose_loss_fell_least():
    famo = FAMO(2)
    losses = torch.tensor([1.0, 1.0])
    assert torch.allclose(famo.weights(losses), torch.ones(2))
    for _ in range(5):
        famo.update(losses, torch.tensor([0.5, 0.99]))  # task 0 improves fast, task 1 barely
    w = famo.weights(losses)
    assert w[1] > 1.05 > 0.95 > w[0] and w.sum().item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="num_tasks"):
        FAMO(0)


def test_weighting_and_training_docstring_examples_run():
    import doctest

    from mtl_course.multitask import stored, train, weighting

    for module, examples in ((weighting, 6), (train, 4), (stored, 2)):
        result = doctest.testmod(module)
        assert result.attempted >= examples and result.failed == 0, module.__name__


# ---------------------------------------------------------------------------
# Δp
# ---------------------------------------------------------------------------


def test_delta_p_hand_computation():
    metrics = {"acc": 0.8, "err": 0.9}
    baseline = {"acc": 0.75, "err": 1.0}
    higher = {"acc": True, "err": False}
    expected = 100 * ((0.8 - 0.75) / 0.75 + (-1) * (0.9 - 1.0) / 1.0) / 2
    assert delta_p(metrics, baseline, higher) == pytest.approx(expected)
    assert delta_p(baseline, baseline, higher) == 0
    assert delta_p({"acc": 0.7, "err": 1.1}, baseline, higher) < 0
    with pytest.raises(ValueError, match="same tasks"):
        delta_p({"acc": 1.0}, baseline, higher)


# ---------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------


def test_cross_stitch_with_identity_init_reproduces_separate_towers():
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(6, 8), nn.ReLU()), nn.Sequential(nn.Linear(8, 5), nn.ReLU())]
    heads = {"a": nn.Linear(5, 3), "b": nn.Linear(5, 1)}
    net = CrossStitch(blocks, heads, init=(1.0, 0.0))
    with torch.no_grad():  # give the columns different weights, as training would
        for p in net.columns["b"].parameters():
            p.add_(torch.randn_like(p))
    x = torch.randn(7, 6)
    out = net(x)
    for name in heads:
        h = x
        for block in net.columns[name]:
            h = block(h)
        assert torch.allclose(out[name], heads[name](h), atol=1e-6)
    mixed = CrossStitch(blocks, heads)  # the default 0.9/0.1 init mixes the columns
    mixed.columns["b"].load_state_dict(net.columns["b"].state_dict())
    assert not torch.allclose(mixed(x)["a"], heads["a"](nn.Sequential(*mixed.columns["a"])(x)))
    assert len(list(net.shared_parameters())) == 2


def test_soft_sharing_penalty_and_hard_sharing_outputs():
    trunk = nn.Linear(4, 3)
    soft = SoftSharing(trunk, {"a": nn.Linear(3, 2), "b": nn.Linear(3, 1)}, strength=0.5)
    assert soft.regularizer().item() == 0  # the towers start equal
    with torch.no_grad():
        soft.trunks["b"].weight.add_(1.0)
    assert soft.regularizer().item() == pytest.approx(0.5 * 12)
    assert list(soft.shared_parameters()) == []
    hard = HardSharing(trunk, {"cls": make_head("classification", 3, 5), "reg": make_head("regression", 3, 1),
                               "img": make_head("dense", 3, (1, 4, 4))})
    out = hard(torch.randn(2, 4))
    assert out["cls"].shape == (2, 5) and out["reg"].shape == (2,) and out["img"].shape == (2, 1, 4, 4)
    assert float(out["img"].detach().min()) >= 0 and float(out["img"].detach().max()) <= 1
    with pytest.raises(ValueError, match="kind must be one of"):
        make_head("segmentation", 3, 2)


# ---------------------------------------------------------------------------
# The CAGrad toy
# ---------------------------------------------------------------------------


def test_toy_losses_at_known_points():
    t4 = math.tanh(4)
    # x2 = -8: only the quadratic branch is on (c1 = 0, c2 = tanh 4); f1_sq = -20, f2_sq = 14^2 / 10 - 20
    assert np.allclose(toy_losses(np.array([7.0, -8.0])), [-20 * t4, -0.4 * t4])
    # x2 = 0: both switches are off
    assert np.allclose(toy_losses(np.array([3.0, 0.0])), [0.0, 0.0])
    # x2 = 30: c1 = 1, tanh(-x2) = -1; at x1 = -5 the first log hits its floor 5e-6
    assert np.allclose(toy_losses(np.array([-5.0, 30.0])), [math.log(5e-6) + 6, math.log(0.5 * 8 + 1) + 6])
    assert np.allclose(toy_losses(np.array([-7.0, 30.0])), [6.0, math.log(6.0) + 6])
    # the average optimum: both losses about -15.09 at (0, -8.355)
    L = toy_losses(np.array([0.0, -8.3552]))
    assert np.allclose(L, [-15.092, -15.092], atol=2e-3)


def test_toy_gradients_match_autograd():
    x = torch.tensor(np.random.default_rng(0).uniform(-10, 10, (200, 2)), requires_grad=True)
    L = toy_losses(x)
    for task in range(2):
        (grad,) = torch.autograd.grad(L[:, task].sum(), x, retain_graph=True)
        assert np.allclose(toy_gradients(x.detach().numpy())[:, task], grad.numpy(), atol=1e-10)


def test_toy_adam_matches_torch_adam():
    start = (-8.5, 7.5)
    path = run_toy(["equal"], [start], num_steps=200, record_every=1)["equal"][0]
    x = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([x], lr=1e-3)
    for _ in range(200):
        L = toy_losses(x)
        x.grad = torch.autograd.grad(L.mean(), x)[0]
        opt.step()
    assert np.allclose(path[-1], x.detach().numpy(), atol=1e-10)
    assert path.shape == (201, 2)


# ---------------------------------------------------------------------------
# Data sets and the training loop
# ---------------------------------------------------------------------------


def _tiny_glyphs() -> LabelledSet:
    """A stand-in for load_glyphs(): real characters from two alphabets, 6 random 'drawings' each."""
    from mtl_course.data.glyphs import render_glyph

    chars = [("A", "Latin"), ("B", "Latin"), ("C", "Latin"), ("Д", "Cyrillic"), ("Ж", "Cyrillic"), ("Ф", "Cyrillic")]
    gen = torch.Generator().manual_seed(0)
    X = torch.stack([render_glyph(c)[None] * (0.8 + 0.2 * torch.rand(1, generator=gen)) for c, _ in chars for _ in range(6)])
    y = torch.arange(len(chars)).repeat_interleave(6)
    return LabelledSet(X, y, [f"{c} X" for c, _ in chars], [a for _, a in chars])


def test_glyph_tasks_targets_and_split():
    data = glyph_tasks(num_alphabets=2, per_alphabet=3, max_angle=30, glyphs=_tiny_glyphs())
    assert data.X.shape == (36, 1, 28, 28) and set(data.tasks) == {"alphabet", "character", "angle", "clean"}
    assert data.targets["clean"].shape == (36, 1, 28, 28)
    assert float(data.targets["angle"].abs().max()) <= 1.0
    assert torch.equal(data.targets["alphabet"], data.targets["character"] // 3)
    train, val, test = data.split(2, 1)
    assert (len(train), len(val), len(test)) == (12, 6, 18)
    again = glyph_tasks(num_alphabets=2, per_alphabet=3, max_angle=30, glyphs=_tiny_glyphs())
    assert torch.equal(again.X, data.X), "generation must be deterministic"


def test_rotate_turns_counter_clockwise():
    image = torch.zeros(1, 1, 21, 21)
    image[0, 0, 10, 16] = 1.0  # a dot to the right of the centre
    turned = rotate(image, torch.tensor([90.0]))[0, 0]
    row, col = divmod(int(turned.argmax()), 21)
    assert (row, col) == (4, 10), "a quarter turn counter-clockwise moves the dot above the centre"


def test_overlay_and_alphabet_tasks():
    g = _tiny_glyphs()
    overlay = glyph_overlay(num_characters=3, num_images=20, drawings=range(4), glyphs=g)
    assert overlay.X.shape == (20, 1, 28, 28) and set(overlay.tasks) == {"left", "right"}
    assert int(overlay.targets["left"].max()) < 3
    per_alphabet = glyph_alphabet_tasks(num_alphabets=2, per_alphabet=3, glyphs=g)
    counts = per_alphabet.num_labelled()
    assert counts == {"Cyrillic": 18, "Latin": 18} or counts == {"Latin": 18, "Cyrillic": 18}
    X, y = per_alphabet.for_task(per_alphabet.task_names[0])
    assert len(X) == 18 and int(y.min()) == 0


def test_masked_losses_and_one_label_each():
    data = noisy_regression(40)
    single = data.one_label_each(seed=0)
    assert single.num_labelled() == {"y1": 20, "y2": 20}
    spec = single.tasks["y1"]
    out = torch.zeros(40)
    y = single.targets["y1"]
    keep = ~torch.isnan(y)
    assert spec.loss(out, y).item() == pytest.approx((y[keep] ** 2).mean().item())
    none = torch.full((3,), float("nan"))
    assert spec.loss(torch.zeros(3, requires_grad=True), none).item() == 0.0
    cls = TaskSpec("c", "classification", 3)
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, -1, 2, -1])
    assert cls.loss(logits, labels).item() == pytest.approx(
        nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]]).item())


@pytest.mark.parametrize("method", METHODS)
def test_fit_multitask_runs_every_method_and_learns(method):
    data = noisy_regression(200, noise=(0.1, 0.1))
    train, val = data.subset(range(150)), data.subset(range(150, 200))
    torch.manual_seed(0)
    model = HardSharing(nn.Sequential(nn.Linear(1, 16), nn.ReLU()),
                        {n: make_head("regression", 16, 1) for n in data.task_names})
    before = evaluate_multitask(model, val)
    history = fit_multitask(model, train, val, method=method, num_epochs=15, lr=1e-2, batch_size=50,
                            record_cosine=True)
    after = evaluate_multitask(model, val)
    assert all(after[n] < before[n] for n in data.task_names), f"{method} did not learn: {before} -> {after}"
    assert history.best_epoch is not None and len(history.cosine) == 15
    assert history.cosine[0].shape == (2, 2)


def test_fit_multitask_rejects_gradient_methods_without_shared_parameters():
    data = noisy_regression(20)
    soft = SoftSharing(nn.Linear(1, 4), {n: make_head("regression", 4, 1) for n in data.task_names})
    with pytest.raises(ValueError, match="shares nothing"):
        fit_multitask(soft, data, method="pcgrad", num_epochs=1)
    with pytest.raises(ValueError, match="method must be one of"):
        fit_multitask(soft, data, method="magic", num_epochs=1)


def test_single_task_baseline_equals_one_task_multitask_run():
    data = noisy_regression(120, noise=(0.5, 0.5)).only(["y1"])
    train, val = data.subset(range(80)), data.subset(range(80, 120))

    def net():
        torch.manual_seed(0)
        return HardSharing(nn.Sequential(nn.Linear(1, 8), nn.ReLU()), {"y1": make_head("regression", 8, 1)})

    a, b = net(), net()
    fit_single_task(a, train, val, "y1", num_epochs=5, lr=1e-2, batch_size=20)
    fit_multitask(b, train, val, num_epochs=5, lr=1e-2, batch_size=20)
    assert evaluate_multitask(a, val)["y1"] == pytest.approx(evaluate_multitask(b, val)["y1"], rel=1e-5)


def test_uncertainty_weighting_learns_the_noise_scales():
    data = noisy_regression(1000, seed=0)
    torch.manual_seed(0)
    model = HardSharing(nn.Sequential(nn.Linear(1, 16), nn.ReLU()),
                        {n: make_head("regression", 16, 1) for n in data.task_names})
    history = fit_multitask(model, data, method="uncertainty", num_epochs=50, lr=0.1, batch_size=50)
    sigmas = np.exp(np.array(history.log_vars[-1]) / 2)
    assert sigmas[0] == pytest.approx(10, rel=0.15) and sigmas[1] == pytest.approx(1, rel=0.15)


def test_multitask_set_validation():
    with pytest.raises(ValueError, match="same tasks"):
        MultiTaskSet(torch.zeros(2, 1), {"a": torch.zeros(2)}, {"b": TaskSpec("b", "regression", 1)})
    with pytest.raises(ValueError, match="kind must be"):
        TaskSpec("x", "ranking", 1)
    data = noisy_regression(10)
    with pytest.raises(ValueError, match="no drawing index"):
        data.split(1, 1)
    assert copy.deepcopy(data).task_names == ["y1", "y2"]


def test_docstring_examples_run():
    import doctest

    from mtl_course.multitask import gradients

    result = doctest.testmod(gradients)
    assert result.attempted >= 10 and result.failed == 0
