"""Unit tests of mtl_course.fusions and mtl_course.data.function_families (Chapter 7)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_course import fusions, meta
from mtl_course.data import Episode
from mtl_course.data.function_families import KINDS, PARAMETER_RANGES, FunctionFamilies, FunctionTask
from mtl_course.multitask import HardSharing, MultiTaskSet, TaskSpec, fit_multitask


# ---------------------------------------------------------------------------------------------
# Function families
# ---------------------------------------------------------------------------------------------


def test_function_task_formulas():
    x = torch.tensor([[-1.0], [0.0], [2.0]])
    assert torch.allclose(FunctionTask("sine", (2.0, 0.5))(x), 2.0 * torch.sin(x - 0.5))
    assert torch.allclose(FunctionTask("line", (0.5, -1.0))(x), 0.5 * x - 1.0)
    assert torch.allclose(FunctionTask("quadratic", (0.1, 1.0, 2.0))(x), 0.1 * (x - 1.0) ** 2 + 2.0)


def test_function_task_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        FunctionTask("cubic", (1.0,))
    with pytest.raises(ValueError, match="parameters"):
        FunctionTask("line", (1.0,))
    with pytest.raises(ValueError, match="kinds"):
        FunctionFamilies(["sine", "cubic"])
    with pytest.raises(ValueError, match="kind"):
        FunctionFamilies().sample_task("cubic")
    with pytest.raises(ValueError, match="k_shot"):
        FunctionFamilies().sample_episode(0, 5)
    with pytest.raises(ValueError, match="at least one task"):
        FunctionFamilies().batch_from([], 3)


def test_families_sample_parameters_in_range_and_all_kinds():
    families = FunctionFamilies(seed=3)
    tasks = [families.sample_task() for _ in range(300)]
    counts = {k: sum(t.kind == k for t in tasks) for k in KINDS}
    assert all(60 < c < 140 for c in counts.values()), counts  # kinds are equally likely
    for task in tasks:
        for value, (lo, hi) in zip(task.params, PARAMETER_RANGES[task.kind].values()):
            assert lo <= value <= hi


def test_families_are_seeded_and_episodes_consistent():
    a, b = FunctionFamilies(seed=5).sample_episode(4, 6), FunctionFamilies(seed=5).sample_episode(4, 6)
    assert a.info["task"] == b.info["task"] and torch.equal(a.support_X, b.support_X)
    task = a.info["task"]
    assert a.support_X.shape == (4, 1) and a.query_X.shape == (6, 1) and a.info["kind"] == task.kind
    assert torch.allclose(a.support_y, task(a.support_X)) and torch.allclose(a.query_y, task(a.query_X))
    assert {e.info["kind"] for e in FunctionFamilies(seed=0).batch(20, kind="line")} == {"line"}


def test_batch_from_uses_only_the_given_tasks():
    families = FunctionFamilies(seed=1)
    fixed = [families.sample_task(k) for k in KINDS]
    episodes = families.batch_from(fixed, 30, 3, 2)
    assert {e.info["task"] for e in episodes} <= set(fixed)
    assert len({e.info["task"] for e in episodes}) == 3


def test_pooled_shapes():
    X, y = FunctionFamilies(seed=0).pooled(7, 5)
    assert X.shape == (35, 1) and y.shape == (35, 1)
    with pytest.raises(ValueError):
        FunctionFamilies().pooled(0, 5)


# ---------------------------------------------------------------------------------------------
# Multi-task transfer: encode_inputs and task_heads
# ---------------------------------------------------------------------------------------------


def _toy_set(n: int = 12) -> MultiTaskSet:
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(n, 1, 4, 4, generator=gen)
    targets = {"c": torch.arange(n) % 3, "r": torch.rand(n, generator=gen)}
    tasks = {"c": TaskSpec("c", "classification", 3), "r": TaskSpec("r", "regression", 1)}
    return MultiTaskSet(X, targets, tasks, groups=torch.arange(n) % 3, drawings=torch.arange(n) // 3)


def test_encode_inputs_equals_running_the_frozen_encoder():
    data = _toy_set()
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU()).train()
    encoded = fusions.encode_inputs(encoder, data, batch_size=5)
    assert encoded.X.shape == (12, 5) and encoder.training, "batching must not matter; the mode is restored"
    assert torch.allclose(encoded.X, encoder(data.X).detach())
    assert encoded.targets is not data.targets and torch.equal(encoded.targets["c"], data.targets["c"])
    assert torch.equal(encoded.drawings, data.drawings)
    # the same heads on the features give the same outputs as on top of the frozen encoder
    heads = fusions.task_heads(data.tasks, 5)
    assert set(heads) == {"c", "r"}
    on_features = HardSharing(nn.Identity(), heads)(encoded.X)
    through_encoder = HardSharing(encoder, heads)(data.X)
    for name in heads:
        assert torch.allclose(on_features[name], through_encoder[name], atol=1e-6)
    assert on_features["c"].shape == (12, 3) and on_features["r"].shape == (12,)


def test_task_heads_rejects_no_tasks():
    with pytest.raises(ValueError):
        fusions.task_heads({}, 4)


# ---------------------------------------------------------------------------------------------
# MTL proper on fixed functions; serving unseen tasks
# ---------------------------------------------------------------------------------------------


def test_function_tasks_set_labels_each_point_for_its_own_task_only():
    families = FunctionFamilies(seed=2)
    fixed = [families.sample_task(k) for k in KINDS]
    data = fusions.function_tasks_set(fixed, families, 4)
    assert len(data) == 12 and data.task_names == ["f0", "f1", "f2"]
    assert data.num_labelled() == {"f0": 4, "f1": 4, "f2": 4}
    for i, task in enumerate(fixed):
        X, y = data.for_task(f"f{i}")
        assert torch.allclose(y, task(X).squeeze(1))
    with pytest.raises(ValueError):
        fusions.function_tasks_set([], families, 3)


def _two_head_model(weights: tuple[float, float]) -> HardSharing:
    # identity trunk on 1-D inputs; head i predicts weights[i] * x
    heads = {}
    for name, w in zip(("a", "b"), weights):
        head = nn.Linear(1, 1, bias=False)
        head.weight.data.fill_(w)
        heads[name] = head
    return HardSharing(nn.Identity(), heads)


def test_existing_head_scores_picks_the_best_head_on_the_support_set():
    model = _two_head_model((1.0, -2.0))
    x = torch.linspace(-1, 1, 6).unsqueeze(1)
    exact = Episode(x, -2.0 * x, x + 0.1, -2.0 * (x + 0.1))  # head b is exact
    off = Episode(x, 3.0 * x, x, 3.0 * x)  # head a is closest: error (3 - 1)^2 x^2
    scores = fusions.existing_head_scores(model, [exact, off])
    assert scores.values[0] == pytest.approx(0.0, abs=1e-12)
    assert scores.values[1] == pytest.approx(float((4 * x**2).mean()), rel=1e-6)
    with pytest.raises(ValueError):
        fusions.existing_head_scores(model, [exact])


def test_new_head_scores_is_gradient_descent_on_a_zero_head():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(1, 3), nn.Tanh())
    episodes = FunctionFamilies(seed=0).batch(3, 5, 4, kind="line")
    scores = fusions.new_head_scores(trunk, episodes, inner_lr=0.1, inner_steps=3)
    for value, e in zip(scores.values, episodes):  # reference: three explicit steps of plain gradient descent
        feats, q = trunk(e.support_X).detach(), trunk(e.query_X).detach()
        w, b = torch.zeros(1, 3, requires_grad=True), torch.zeros(1, requires_grad=True)
        for _ in range(3):
            gw, gb = torch.autograd.grad(F.mse_loss(feats @ w.T + b, e.support_y), (w, b))
            w, b = (w - 0.1 * gw).detach().requires_grad_(), (b - 0.1 * gb).detach().requires_grad_()
        assert value == pytest.approx(F.mse_loss(q @ w.T + b, e.query_y).item(), rel=1e-5)
    assert math.isclose(scores.mean, float(np.mean(scores.values)))


# ---------------------------------------------------------------------------------------------
# Multi-task meta-learning
# ---------------------------------------------------------------------------------------------


def _kind_model() -> HardSharing:
    torch.manual_seed(0)
    return HardSharing(nn.Sequential(nn.Linear(1, 8), nn.ReLU()), {k: nn.Linear(8, 1) for k in KINDS})


def test_kind_view_adapts_the_trunk_and_its_own_head_only():
    model = _kind_model()
    view, keys = fusions.kind_view(model, "line")
    assert all(k.startswith(("model.trunk.", "model.heads.line.")) for k in keys)
    assert {"model.heads.line.weight", "model.heads.line.bias", "model.trunk.0.weight"} <= set(keys)
    x = torch.randn(4, 1)
    assert torch.equal(view(x), model(x)["line"])
    with pytest.raises(ValueError):
        fusions.kind_view(model, "cubic")
    with pytest.raises(ValueError):
        fusions.kind_view(nn.Linear(1, 1), "line")


def test_multitask_meta_objective_is_the_mean_of_per_kind_maml_objectives():
    model = _kind_model()
    families = FunctionFamilies(seed=4)
    batches = {k: families.batch(3, 5, 5, kind=k) for k in KINDS}
    kw = dict(loss_fn=F.mse_loss, inner=meta.InnerLoop(lr=0.05, steps=2))
    total = fusions.multitask_meta_objective(model, batches, **kw)
    expected = []
    for kind, batch in batches.items():
        view, keys = fusions.kind_view(model, kind)
        inner = meta.InnerLoop(lr=0.05, steps=2, adapt_keys=keys)
        expected.append(meta.meta_objective(view, batch, inner=inner, loss_fn=F.mse_loss, backend="loop").loss)
    assert torch.allclose(total, torch.stack(expected).mean(), rtol=1e-5)
    # every head receives a meta-gradient only from its own kind's tasks
    total.backward()
    assert all(model.heads[k].weight.grad is not None and model.heads[k].weight.grad.abs().sum() > 0 for k in KINDS)
    lone = _kind_model()
    fusions.multitask_meta_objective(lone, {"sine": batches["sine"]}, **kw).backward()
    assert lone.heads["line"].weight.grad is None or lone.heads["line"].weight.grad.abs().sum() == 0
    with pytest.raises(ValueError):
        fusions.multitask_meta_objective(model, {})


def test_multitask_meta_train_lowers_the_meta_loss():
    model = _kind_model()
    families = FunctionFamilies(seed=0)
    fixed = {k: families.batch(4, 5, 5, kind=k) for k in KINDS}  # one fixed meta-batch: the loss must go down
    inner = meta.InnerLoop(lr=0.01)
    before = fusions.multitask_meta_objective(copy.deepcopy(model), fixed, loss_fn=F.mse_loss, inner=inner).item()
    losses = fusions.multitask_meta_train(model, lambda: fixed, outer_steps=60, meta_lr=1e-2, loss_fn=F.mse_loss,
                                          inner=inner)
    assert len(losses) == 60 and losses[0] == pytest.approx(before, rel=1e-5)
    assert losses[-1] < 0.5 * losses[0]
    with pytest.raises(ValueError):
        fusions.multitask_meta_train(model, lambda: fixed, outer_steps=0)


def test_mtl_proper_fits_its_tasks():
    families = FunctionFamilies(seed=6)
    fixed = [families.sample_task("line") for _ in range(2)]
    data = fusions.function_tasks_set(fixed, families, 30)
    torch.manual_seed(0)
    model = HardSharing(nn.Sequential(nn.Linear(1, 16), nn.ReLU()), fusions.task_heads(data.tasks, 16))
    fit_multitask(model, data, num_epochs=150, lr=1e-2, batch_size=60)
    with torch.no_grad():
        out = model(data.X)
    for i in range(2):
        keep = data.tasks[f"f{i}"].labelled(data.targets[f"f{i}"])
        assert F.mse_loss(out[f"f{i}"][keep], data.targets[f"f{i}"][keep]).item() < 0.05


# ---------------------------------------------------------------------------------------------
# The roles map
# ---------------------------------------------------------------------------------------------


def test_roles_use_known_parts_and_roles_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    for name, row in fusions.ROLES.items():
        assert set(row) == set(fusions.PARTS), name
        assert set(row.values()) <= set(fusions.ROLE_COLOURS), name
    ax = fusions.plot_roles()
    assert len(ax.patches) == len(fusions.ROLES) * len(fusions.PARTS)
    with pytest.raises(ValueError, match="unknown role"):
        fusions.plot_roles(roles={"x": {"encoder": "magic"}})
    import matplotlib.pyplot as plt

    plt.close("all")
