"""One set of properties, applied to every gradient-combination method of Chapter 3.

Each method maps the task-gradient matrix ``G`` (one row per task) to an update
direction ``d``. :data:`PROPERTIES` says which of the properties below each
method has; every property is tested on every method that claims it, and for
every method that does not, a counterexample is found, so the table is exact.

- **agreement**: when every task has the same gradient ``g``, ``d = g``;
- **homogeneous**: scaling every gradient by ``a > 0`` scales ``d`` by ``a``;
- **permutation**: the order of the tasks does not matter;
- **non-conflicting**: ``g_i . d >= 0`` for every task (no task is made worse to first order).
"""
from __future__ import annotations

import pytest
import torch

from mtl_course.multitask import gradients


def pcgrad_fixed_order(G: torch.Tensor) -> torch.Tensor:
    return gradients.pcgrad(G, torch.Generator().manual_seed(0))


def rlw_fixed_draws(G: torch.Tensor) -> torch.Tensor:
    return gradients.rlw(G, torch.Generator().manual_seed(0))


METHODS = {"mean": gradients.mean_gradient, "pcgrad": pcgrad_fixed_order, "mgda": gradients.mgda,
           "mgda_l2": gradients.mgda_l2,
           "cagrad": gradients.cagrad, "imtl_g": gradients.imtl_g, "nash_mtl": gradients.nash_mtl,
           "aligned_mtl": gradients.aligned_mtl, "upgrad": gradients.upgrad, "rlw": rlw_fixed_draws}
ALL = {"agreement", "homogeneous", "permutation", "non-conflicting"}
PROPERTIES = {  # (method, number of tasks) -> the properties it has
    ("mean", 2): ALL - {"non-conflicting"},
    ("mean", 3): ALL - {"non-conflicting"},
    ("pcgrad", 2): ALL,  # with two tasks the projection order does not matter
    ("pcgrad", 3): ALL - {"non-conflicting", "permutation"},  # random order; projections can re-conflict
    ("mgda", 2): ALL,
    ("mgda", 3): ALL,
    ("mgda_l2", 2): ALL - {"non-conflicting"},  # weights for unit gradients, applied to raw ones
    ("mgda_l2", 3): ALL - {"non-conflicting"},
    ("cagrad", 2): ALL - {"non-conflicting"},  # c = 0.5: the ball around the mean can reach conflicts
    ("cagrad", 3): ALL - {"non-conflicting"},
    ("imtl_g", 2): ALL,  # with two tasks, equal projections on both unit gradients cannot be negative
    ("imtl_g", 3): ALL - {"non-conflicting"},
    ("nash_mtl", 2): {"permutation", "non-conflicting"},  # scale-free: d does not grow with G
    ("nash_mtl", 3): {"permutation", "non-conflicting"},
    ("aligned_mtl", 2): ALL,
    ("aligned_mtl", 3): ALL - {"non-conflicting"},
    ("upgrad", 2): ALL,
    ("upgrad", 3): ALL,
    ("rlw", 2): {"agreement", "homogeneous"},  # random weights that sum to one
    ("rlw", 3): {"agreement", "homogeneous"},
}
TOLERANCE = 1e-4  # relative: the solvers for three tasks (MGDA's Frank-Wolfe, CAGrad's SLSQP) reach 1e-8 to 2e-5


def holds(prop: str, method: str, G: torch.Tensor) -> bool:
    """Whether ``prop`` holds for ``method`` at ``G`` (float64), up to :data:`TOLERANCE`."""
    f = METHODS[method]
    d = f(G)
    scale = float(G.norm(dim=1).max()) + 1e-12
    if prop == "agreement":
        same = G[:1].expand_as(G).clone()
        return bool(torch.allclose(f(same), same[0], atol=TOLERANCE * scale))
    if prop == "homogeneous":
        return bool(torch.allclose(f(3.0 * G), 3.0 * d, atol=TOLERANCE * scale))
    if prop == "permutation":
        order = torch.arange(G.shape[0]).flip(0)
        return bool(torch.allclose(f(G[order]), d, atol=TOLERANCE * scale))
    if prop == "non-conflicting":
        return bool((G @ d).min() >= -TOLERANCE * scale**2)
    raise ValueError(prop)


def random_gradients(num_tasks: int, seed: int) -> torch.Tensor:
    """Gaussian task gradients with norms spread over a factor of about 50 (conflicts of every size)."""
    generator = torch.Generator().manual_seed(seed)
    G = torch.randn(num_tasks, 6, generator=generator, dtype=torch.float64)
    return G * torch.randn(num_tasks, 1, generator=generator, dtype=torch.float64).exp()


CASES = [(m, t, p) for (m, t), props in PROPERTIES.items() for p in sorted(ALL)]


@pytest.mark.parametrize("method,num_tasks,prop", CASES, ids=[f"{m}-{t}tasks-{p}" for m, t, p in CASES])
def test_each_method_has_exactly_the_properties_it_claims(method, num_tasks, prop):
    results = [holds(prop, method, random_gradients(num_tasks, seed)) for seed in range(200)]
    if prop in PROPERTIES[method, num_tasks]:
        assert all(results), f"{method} with {num_tasks} tasks should have the property {prop!r}"
    else:
        assert not all(results), f"{method} with {num_tasks} tasks: no counterexample to {prop!r} found"


def test_every_method_of_the_package_is_in_the_table():
    from mtl_course.multitask import train

    assert set(train.GRADIENT_METHODS) | {"mean"} == set(METHODS), "every method of fit_multitask is tested here"
    assert {m for m, _ in PROPERTIES} == set(METHODS)
