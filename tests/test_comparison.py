"""Tests of mtl_course.comparison: the shared task pool, the multi-task pieces, step-size search, the flow chart."""
from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mtl_course import comparison, meta, models, training  # noqa: E402
from mtl_course.data import SinusoidTasks  # noqa: E402


def small_pool(num_tasks: int = 4, num_points: int = 6) -> comparison.TaskPool:
    return comparison.TaskPool.from_distribution(SinusoidTasks(seed=0), num_tasks, num_points)


# --------------------------------------------------------------------------------------
# TaskPool
# --------------------------------------------------------------------------------------

def test_pool_holds_each_tasks_own_labels():
    pool = small_pool()
    assert pool.X.shape == pool.Y.shape == (4, 6, 1) and len(pool) == 4 and pool.num_points == 6
    for task, x, y in zip(pool.tasks, pool.X, pool.Y):
        torch.testing.assert_close(y, task(x))
    assert len({(t.amplitude, t.phase) for t in pool.tasks}) == 4, "the tasks are different draws from p(T)"


def test_pool_is_deterministic_given_the_seed():
    a, b = small_pool(), small_pool()
    torch.testing.assert_close(a.X, b.X)
    torch.testing.assert_close(a.Y, b.Y)


def test_task_data_and_joint_data():
    pool = small_pool()
    X2, y2 = pool.task_data(2)
    torch.testing.assert_close(X2, pool.X[2])
    X, y = pool.joint_data()
    assert X.shape == (24, 1) and y.shape == (24, 2)
    assert y[:, 0].tolist() == [float(i) for i in range(4) for _ in range(6)]
    torch.testing.assert_close(X[12:18], pool.X[2])
    torch.testing.assert_close(y[12:18, 1:], pool.Y[2])
    with pytest.raises(IndexError, match="out of range"):
        pool.task_data(4)


def test_pooled_data_is_every_tasks_points_without_the_task_index():
    pool = small_pool()
    X, y = pool.pooled_data()
    joint_X, joint_y = pool.joint_data()
    assert X.shape == y.shape == (24, 1)
    torch.testing.assert_close(X, joint_X)
    torch.testing.assert_close(y, joint_y[:, 1:])
    for i, task in enumerate(pool.tasks):
        torch.testing.assert_close(y[6 * i : 6 * (i + 1)], task(X[6 * i : 6 * (i + 1)]))


def test_episode_splits_a_tasks_points_without_overlap():
    pool = small_pool(num_points=10)
    rng = np.random.default_rng(0)
    ep = pool.episode(1, 3, 5, rng)
    assert ep.support_X.shape == (3, 1) and ep.query_X.shape == (5, 1)
    support, query = set(ep.support_X.flatten().tolist()), set(ep.query_X.flatten().tolist())
    assert not support & query and support | query <= set(pool.X[1].flatten().tolist())
    torch.testing.assert_close(ep.query_y, pool.tasks[1](ep.query_X))
    with pytest.raises(ValueError, match="k_shot \\+ q_queries"):
        pool.episode(1, 6, 5, rng)


def test_sample_batch_draws_distinct_tasks():
    pool = small_pool()
    batch = pool.sample_batch(4, 2, 3, np.random.default_rng(0))
    amplitudes = {e.info["task"].amplitude for e in batch}
    assert len(batch) == 4 and len(amplitudes) == 4
    with pytest.raises(ValueError, match="pool size"):
        pool.sample_batch(5, 2, 3, np.random.default_rng(0))


def test_pool_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        comparison.TaskPool(torch.zeros(2, 3, 1), torch.zeros(2, 4, 1), [])
    with pytest.raises(ValueError, match="num_tasks"):
        comparison.TaskPool.from_distribution(SinusoidTasks(seed=0), 0, 5)


# --------------------------------------------------------------------------------------
# Multi-task learning over the pool
# --------------------------------------------------------------------------------------

def test_multitask_mse_scores_each_example_with_its_own_head():
    outputs = torch.tensor([[1.0, 5.0], [2.0, 7.0], [0.0, 3.0]])
    targets = torch.tensor([[0.0, 0.0], [1.0, 6.0], [1.0, 1.0]])
    expected = ((1.0 - 0.0) ** 2 + (7.0 - 6.0) ** 2 + (3.0 - 1.0) ** 2) / 3
    assert comparison.multitask_mse(outputs, targets).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="task indices"):
        comparison.multitask_mse(outputs, torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="targets must be"):
        comparison.multitask_mse(outputs, torch.zeros(3))


def test_a_head_only_gets_gradient_from_its_own_task():
    torch.manual_seed(0)
    net = comparison.multitask_network(3, (5,))
    pool = small_pool(num_tasks=3)
    X, y = pool.joint_data()
    keep = y[:, 0] != 1  # no example of task 1
    comparison.multitask_mse(net(X[keep]), y[keep]).backward()
    assert net.head.weight.grad[1].abs().max() == 0 and net.head.bias.grad[1] == 0
    assert net.head.weight.grad[0].abs().max() > 0 and net.head.weight.grad[2].abs().max() > 0


def test_joint_training_with_the_one_training_loop_fits_all_tasks():
    torch.manual_seed(0)
    pool = small_pool(num_tasks=3, num_points=30)
    net = comparison.multitask_network(3, (20, 20))
    data = pool.joint_data()
    before = comparison.multitask_mse(net(data[0]), data[1]).item()
    training.fit(net, training.make_loader(data, 30), num_epochs=150, lr=1e-2, loss_fn=comparison.multitask_mse,
                 metric=None)
    after = comparison.multitask_mse(net(data[0]), data[1]).item()
    assert after < 0.2 * before


def test_new_task_network_starts_from_the_average_head():
    torch.manual_seed(0)
    joint = comparison.multitask_network(4, (8, 8))
    new = comparison.new_task_network(joint)
    x = torch.linspace(-5, 5, 11).unsqueeze(1)
    with torch.no_grad():
        torch.testing.assert_close(new(x).squeeze(1), joint(x).mean(1))  # the head is linear
        new.body[1].weight.add_(1.0)
    assert not torch.equal(new.body[1].weight, joint.body[1].weight), "the new network is a copy"
    with pytest.raises(TypeError):
        comparison.new_task_network(models.Conv4(1, 4, out_features=3, image_size=16))


# --------------------------------------------------------------------------------------
# Step-size search, paired differences
# --------------------------------------------------------------------------------------

def test_select_inner_lr_prefers_a_working_step_and_marks_divergence():
    torch.manual_seed(0)
    net = models.MLP(1, (20,), 1)
    episodes = SinusoidTasks(seed=3).batch(20, 5, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a diverging candidate must not warn
        best, losses = comparison.select_inner_lr(net, episodes, [1e-3, 1e-2, 1e3], inner_steps=5)
    assert losses[1e3] == float("inf") or losses[1e3] > 1e6
    assert best in (1e-3, 1e-2) and losses[best] == min(losses.values())
    with pytest.raises(ValueError, match="positive"):
        comparison.select_inner_lr(net, episodes, [0.0], inner_steps=1)


def test_select_inner_lr_scales_learned_rates_by_each_candidate():
    torch.manual_seed(0)
    net = models.MLP(1, (20,), 1)
    episodes = SinusoidTasks(seed=3).batch(20, 5, 20)
    rates = meta.init_per_param_lr(dict(net.named_parameters()), 0.02)
    with torch.no_grad():
        rates["head.bias"].zero_()  # a learned rate of zero, as Meta-SGD learns for the output bias
    _, losses = comparison.select_inner_lr(net, episodes, [0.25, 1.0], 3, per_param_lr=rates)
    for factor in (0.25, 1.0):
        scaled = {k: factor * v.detach() for k, v in rates.items()}
        direct = meta.evaluate_episodes(net, episodes, inner=meta.InnerLoop(1.0, 3, per_param_lr=scaled),
                                        loss_fn=F.mse_loss, metric=None).mean
        assert losses[factor] == pytest.approx(direct, rel=1e-6)
    # a factor of 0.5 on rates of 0.02 takes the steps of one step size 0.01 where no rate is zero
    uniform = meta.init_per_param_lr(dict(net.named_parameters()), 0.02)
    _, halved = comparison.select_inner_lr(net, episodes, [0.5], 3, per_param_lr=uniform)
    _, plain = comparison.select_inner_lr(net, episodes, [0.01], 3)
    assert halved[0.5] == pytest.approx(plain[0.01], rel=1e-5)
    assert losses[0.25] != losses[1.0]
    assert all(torch.equal(scaled[k], rates[k].detach() * 1.0) for k in rates)  # factor 1 leaves them
    assert comparison.scaled_rates(rates, 0.25)["head.bias"].eq(0).all(), "a zero rate stays zero"


def test_adapted_curve_matches_the_inner_loop_and_leaves_the_model_alone():
    torch.manual_seed(0)
    net = models.MLP(1, (10,), 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ep = SinusoidTasks(seed=1).sample_episode(5, 0)
    x = torch.linspace(-5, 5, 7).unsqueeze(1)
    torch.testing.assert_close(comparison.adapted_curve(net, ep.support_X, ep.support_y, x, 0), net(x).detach().flatten())
    # one step by hand
    loss = F.mse_loss(net(ep.support_X), ep.support_y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    stepped = models.MLP(1, (10,), 1)
    with torch.no_grad():
        for p, q, g in zip(stepped.parameters(), net.parameters(), grads):
            p.copy_(q - 0.05 * g)
    torch.testing.assert_close(comparison.adapted_curve(net, ep.support_X, ep.support_y, x, 1, 0.05),
                               stepped(x).detach().flatten())
    # Meta-SGD's per-parameter rates: all zero means no change
    zeros = {k: torch.zeros_like(v) for k, v in net.named_parameters()}
    torch.testing.assert_close(comparison.adapted_curve(net, ep.support_X, ep.support_y, x, 3, per_param_lr=zeros),
                               net(x).detach().flatten())
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_paired_difference_and_average_scores():
    a = meta.EpisodeScores(np.array([1.0, 2.0, 3.0]), 2.0, 0.0)
    b = meta.EpisodeScores(np.array([0.5, 1.0, 2.5]), 4 / 3, 0.0)
    diff, half = comparison.paired_difference(a, b)
    assert diff == pytest.approx(2 / 3) and half > 0
    avg = comparison.average_scores([a, b])
    np.testing.assert_allclose(avg.values, [0.75, 1.5, 2.75])
    assert avg.mean == pytest.approx(5 / 3)
    with pytest.raises(ValueError, match="same episodes"):
        comparison.paired_difference(a, meta.EpisodeScores(np.array([1.0, 2.0]), 1.5, 0.0))


# --------------------------------------------------------------------------------------
# The flow chart
# --------------------------------------------------------------------------------------

def test_draw_flowchart_draws_every_node_and_edge():
    nodes = {"q": (0.5, 0.8, "question?", "question"), "a": (0.3, 0.2, "answer A", "answer"),
             "b": (0.7, 0.2, "answer B", "answer")}
    fig, ax = plt.subplots()
    boxes = comparison.draw_flowchart(ax, nodes, [("q", "a", "yes"), ("q", "b", "no")])
    assert set(boxes) == {"q", "a", "b"}
    assert len([c for c in ax.get_children() if isinstance(c, matplotlib.text.Annotation)]) == 2
    texts = {t.get_text() for t in ax.texts}
    assert {"question?", "answer A", "answer B", "yes", "no"} <= texts
    with pytest.raises(ValueError, match="do not exist"):
        comparison.draw_flowchart(ax, nodes, [("q", "c", "")])
    with pytest.raises(ValueError, match="node kinds"):
        comparison.draw_flowchart(ax, {"x": (0.5, 0.5, "x", "box")}, [])
    plt.close(fig)


def test_comparison_docstring_examples_run():
    import doctest

    result = doctest.testmod(comparison)
    assert result.attempted >= 1 and result.failed == 0
