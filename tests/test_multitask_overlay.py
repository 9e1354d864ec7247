"""Section 3.7's stored overlay experiment: its networks, its recipe, and the facts the chapter uses."""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from mtl_course import runtime
from mtl_course import multitask as mt
from mtl_course.multitask import gradients, stored

TINY = asdict(stored.OverlayConfig(train_images=300, val_images=100, test_images=200, num_epochs=2,
                                   seeds=1, methods=("equal", "pcgrad", "famo", "cross_stitch")))


def gradient_pairs(dim: int = 6):
    """Pairs of task gradients in conflict (negative inner product) and not."""
    for seed in range(20):
        G = torch.randn(2, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        yield G
        yield torch.stack([G[0], -G[1]])


@pytest.mark.parametrize("G", list(gradient_pairs()))
def test_upgrad_takes_pcgrads_step_for_two_tasks(G):
    # projecting g1 onto the dual cone of {g1, g2} is removing its component along g2 when the
    # two conflict, and nothing otherwise: PCGrad's projection (why Section 3.7 trains only one)
    assert torch.allclose(gradients.upgrad(G), gradients.pcgrad(G), atol=1e-12)


def test_upgrad_and_pcgrad_differ_with_three_tasks():
    G = torch.randn(3, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert (gradients.upgrad(G) - gradients.pcgrad(G, torch.Generator().manual_seed(0))).abs().max() > 0.1


def test_the_splits_use_disjoint_drawings_and_the_networks_their_tasks():
    ranges = [set(r) for r in stored.DRAWINGS.values()]
    assert not (ranges[0] & ranges[1] or ranges[0] & ranges[2] or ranges[1] & ranges[2])
    assert set().union(*ranges) == set(range(20))
    hard, stitch = stored.overlay_network("hard", 8), stored.overlay_network("cross_stitch", 8)
    x = torch.rand(3, 1, 28, 28)
    for net in (hard, stitch):
        out = net(x)
        assert set(out) == {"left", "right"} and out["left"].shape == (3, 10)
    assert sum(p.numel() for p in stitch.shared_parameters()) == 3 * 2 * 2, "three 2 x 2 cross-stitch units"
    with pytest.raises(ValueError, match="'hard' or 'cross_stitch'"):
        stored.overlay_network("soft", 8)


def test_the_zoo_holds_two_single_task_and_one_network_per_method_and_seed():
    zoo = stored.build_overlay_zoo({**TINY, "seeds": 2})
    assert sorted(zoo) == sorted([stored.single_task_member(t, s) for t in ("left", "right") for s in (0, 1)]
                                 + [stored.member(m, s) for m in TINY["methods"] for s in (0, 1)])
    assert set(zoo["single_left_s1"](torch.rand(1, 1, 28, 28))) == {"left"}
    assert isinstance(zoo["cross_stitch_s0"], mt.CrossStitch)


def test_delta_p_of_the_zoo_pairs_each_seed_with_its_own_single_task_networks():
    scores = {"single_left_s0": {"left": 0.8}, "single_right_s0": {"right": 0.5},
              "single_left_s1": {"left": 0.4}, "single_right_s1": {"right": 1.0},
              "equal_s0": {"left": 0.88, "right": 0.5}, "equal_s1": {"left": 0.4, "right": 0.9}}
    dps = stored.overlay_delta_p(scores, ("equal",), seeds=2)
    assert dps["equal"] == pytest.approx([5.0, -5.0])


@pytest.fixture(scope="module")
def tiny_run():
    return stored.train_overlay_recipe(TINY, 0, device=torch.device("cpu"))


def test_the_recipe_trains_every_network_and_records_its_run(tiny_run):
    runs = tiny_run.extra["runs"]
    assert set(runs) == set(stored.build_overlay_zoo(TINY))
    assert len(tiny_run.step_losses) == 2 * 300 // 50, "the curve: every step of equal weighting, seed 0"
    assert len(runs["equal_s0"]["cosine"]) == 2 and len(runs["pcgrad_s0"]["conflict"]) == 2
    assert "cosine" not in runs["famo_s0"], "a loss weighting needs no task gradients"
    assert set(tiny_run.metrics) == {f"test_dp_{m}" for m in TINY["methods"]} | {
        "test_acc_single_left", "test_acc_single_right"}
    again, _ = stored.evaluate_overlay_zoo(tiny_run.model, TINY)
    assert again == tiny_run.metrics, "the recipe's test scores the trained networks"


def test_the_first_steps_alone_repeat_the_full_runs(tiny_run):
    first = stored.train_overlay_recipe(TINY, 0, max_steps=3, device=torch.device("cpu"))
    assert first.step_losses == tiny_run.step_losses[:3]


def test_a_stopped_run_resumes_after_the_last_network_it_finished(tiny_run, tmp_path, monkeypatch):
    checkpoint = runtime.Checkpoint(tmp_path / "run.pt", every=0, run={"recipe": "overlay"}, hold=True)
    trained = []
    real = stored._fit_multi

    def stop_at_famo(train, val, method, *args, **kwargs):
        if method == "famo":
            raise KeyboardInterrupt
        trained.append(method)
        return real(train, val, method, *args, **kwargs)

    monkeypatch.setattr(stored, "_fit_multi", stop_at_famo)
    with pytest.raises(KeyboardInterrupt):
        stored.train_overlay_recipe(TINY, 0, device=torch.device("cpu"), checkpoint=checkpoint)
    assert trained == ["equal", "pcgrad"]
    trained.clear()
    monkeypatch.setattr(stored, "_fit_multi", lambda *a, **k: (trained.append(a[2]), real(*a, **k))[1])
    resumed = stored.train_overlay_recipe(TINY, 0, device=torch.device("cpu"), checkpoint=checkpoint)
    assert trained == ["famo", "cross_stitch"], "finished networks are not trained again"
    whole = tiny_run.model.state_dict()
    assert all(torch.equal(v, whole[k]) for k, v in resumed.model.state_dict().items())
    assert resumed.extra["runs"] == tiny_run.extra["runs"]


def test_max_steps_stops_the_multitask_loop_and_bad_values_are_refused():
    train, _, _ = stored.overlay_sets(stored._config(TINY))
    net = stored.overlay_network("hard", 8)
    history = mt.fit_multitask(net, train, None, num_epochs=5, batch_size=50, max_steps=8)
    assert len(history.step_loss) == 8 and len(history.train_loss) == 2
    with pytest.raises(ValueError, match="max_steps must be >= 1"):
        mt.fit_multitask(net, train, None, max_steps=0)


def test_another_recipe_seed_trains_the_same_networks_with_other_seeds(tiny_run):
    other = stored.train_overlay_recipe(TINY, 1, device=torch.device("cpu"))
    assert set(other.extra["runs"]) == set(tiny_run.extra["runs"])
    assert other.step_losses[0] != tiny_run.step_losses[0], "seed 1 starts from other weights"
