import numpy as np
import pytest
import torch

from mtl_course.data import (
    ClassSplit,
    EpisodeSampler,
    LabelledSet,
    RegressionTasks,
    SinusoidTasks,
    load_digits,
    permute_pixels,
    split_classes,
    split_examples,
    stack_episodes,
)


@pytest.fixture
def toy():
    """12 classes in 4 groups, 6 examples each; X encodes (class, example) so rows are traceable."""
    y = torch.arange(12).repeat_interleave(6)
    X = torch.stack([y.float(), torch.arange(72).float()], dim=1)
    groups = [f"g{c // 3}" for c in range(12)]
    return LabelledSet(X, y, [f"c{c}" for c in range(12)], groups)


def test_episode_has_remapped_labels_and_disjoint_support_query(toy):
    ep = EpisodeSampler(toy, list(range(12)), n_way=4, k_shot=2, q_queries=3, seed=0).sample()
    assert ep.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert ep.query_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert len(set(ep.classes)) == 4
    for X, y in ((ep.support_X, ep.support_y), (ep.query_X, ep.query_y)):
        assert [ep.classes[int(lab)] for lab in y] == X[:, 0].long().tolist()
    assert not set(ep.support_X[:, 1].tolist()) & set(ep.query_X[:, 1].tolist())


def test_sampler_is_seeded(toy):
    a = EpisodeSampler(toy, n_way=3, k_shot=1, q_queries=2, seed=5).batch(4)
    b = EpisodeSampler(toy, n_way=3, k_shot=1, q_queries=2, seed=5).batch(4)
    c = EpisodeSampler(toy, n_way=3, k_shot=1, q_queries=2, seed=6).batch(4)
    assert all(torch.equal(x.support_X, y.support_X) for x, y in zip(a, b))
    assert not all(torch.equal(x.support_X, y.support_X) for x, y in zip(a, c))


def test_sampler_uses_only_its_split(toy):
    sampler = EpisodeSampler(toy, [0, 1, 2, 3, 4], n_way=5, k_shot=1, q_queries=1, seed=0)
    assert all(set(sampler.sample().classes) == {0, 1, 2, 3, 4} for _ in range(5))


def test_too_many_ways_is_a_clear_error(toy):
    with pytest.raises(ValueError, match="cannot draw 20-way episodes from a split with only 12 classes"):
        EpisodeSampler(toy, n_way=20)


def test_too_many_shots_is_a_clear_error(toy):
    with pytest.raises(ValueError, match="needs 7 examples per class.*only 6"):
        EpisodeSampler(toy, n_way=2, k_shot=5, q_queries=2)


@pytest.mark.parametrize("kwargs", [{"n_way": 1}, {"k_shot": 0}, {"q_queries": -1}, {"n_way": 2.5}])
def test_bad_sizes_are_rejected(toy, kwargs):
    with pytest.raises(ValueError, match="must be an integer"):
        EpisodeSampler(toy, **kwargs)


def test_split_by_group_keeps_groups_whole(toy):
    split = split_classes(toy, by="group", seed=1)
    groups = [{toy.class_groups[c] for c in part} for part in (split.train, split.val, split.test)]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert sorted(split.train + split.val + split.test) == list(range(12))


def test_split_by_class_covers_all_classes(toy):
    split = split_classes(toy, by="class", fractions=(0.5, 0.25, 0.25), seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (6, 3, 3)
    with pytest.raises(ValueError, match="disjoint"):
        ClassSplit([0, 1], [1], [2])
    with pytest.raises(ValueError, match="summing to 1"):
        split_classes(toy, fractions=(0.5, 0.5, 0.5))


def test_split_examples_is_stratified(toy):
    train, val, test = split_examples(toy, fractions=(0.5, 0.25, 0.25), seed=0)
    assert len(train) + len(val) + len(test) == len(toy)
    assert train.y.bincount().tolist() == [3] * 12
    assert not set(train.X[:, 1].tolist()) & set(test.X[:, 1].tolist())


def test_subset_relabels(toy):
    sub = toy.subset([7, 2])
    assert sub.class_names == ["c7", "c2"] and sorted(sub.y.unique().tolist()) == [0, 1]
    assert torch.all(sub.X[sub.y == 0, 0] == 7)


def test_labelled_set_validates_shapes():
    with pytest.raises(ValueError, match="must match"):
        LabelledSet(torch.zeros(3, 2), torch.zeros(2), ["a"])
    with pytest.raises(ValueError, match="labels must lie"):
        LabelledSet(torch.zeros(2, 2), torch.tensor([0, 3]), ["a", "b"])


def test_stack_episodes_adds_a_task_dimension(toy):
    eps = EpisodeSampler(toy, n_way=3, k_shot=2, q_queries=1, seed=0).batch(5)
    stacked = stack_episodes(eps)
    assert stacked.support_X.shape == (5, 6, 2) and stacked.query_y.shape == (5, 3)


def test_sinusoid_tasks_follow_the_maml_protocol():
    tasks = SinusoidTasks(seed=0)
    draws = [tasks.sample_task() for _ in range(2000)]
    amps, phases = np.array([t.amplitude for t in draws]), np.array([t.phase for t in draws])
    assert 0.1 <= amps.min() and amps.max() <= 5.0 and 0 <= phases.min() and phases.max() <= np.pi
    assert abs(amps.mean() - 2.55) < 0.15 and abs(phases.mean() - np.pi / 2) < 0.1
    ep = tasks.sample_episode(k_shot=5, q_queries=7)
    assert ep.support_X.shape == (5, 1) and ep.query_X.shape == (7, 1)
    assert torch.all(ep.support_X.abs() <= 5)
    task = ep.info["task"]
    assert torch.allclose(ep.support_y, task.amplitude * torch.sin(ep.support_X - task.phase))


def test_sinusoid_is_seeded_and_shiftable():
    a = SinusoidTasks(seed=1).sample_episode(4, 4)
    b = SinusoidTasks(seed=1).sample_episode(4, 4)
    assert torch.equal(a.support_y, b.support_y)
    shifted = SinusoidTasks(seed=0, amplitude_range=(5.0, 8.0))
    assert all(t.amplitude >= 5 for t in (shifted.sample_task() for _ in range(50)))
    with pytest.raises(ValueError, match="low <= high"):
        SinusoidTasks(amplitude_range=(3.0, 1.0))


def test_pooled_sinusoids_are_points_of_many_tasks_without_their_identity():
    X, y = SinusoidTasks(seed=2).pooled(num_tasks=50, points_per_task=4)
    assert X.shape == (200, 1) and y.shape == (200, 1)
    # the same draws, task by task: each block of 4 points lies on the sinusoid drawn just before it
    tasks = SinusoidTasks(seed=2)
    for i in range(50):
        task, x = tasks.sample_task(), tasks.sample_inputs(4)
        assert torch.equal(X[4 * i : 4 * i + 4], x) and torch.allclose(y[4 * i : 4 * i + 4], task(x))
    with pytest.raises(ValueError, match="points_per_task >= 1"):
        SinusoidTasks().pooled(3, 0)


def test_a_task_distribution_needs_only_a_way_to_draw_a_task():
    with pytest.raises(NotImplementedError, match="sample_task"):
        RegressionTasks(seed=0).sample_episode(2, 2)

    class Lines(RegressionTasks):
        def sample_task(self):
            slope = float(self.rng.uniform(-1, 1))
            line = lambda x: slope * x  # noqa: E731
            line.kind = "line"
            return line

    episode = Lines(seed=0).sample_episode(3, 2)
    assert episode.info["kind"] == "line" and episode.support_X.shape == (3, 1)
    assert SinusoidTasks(seed=0).sample_episode(1, 1).info["kind"] == "sine"


def test_the_data_docstring_examples_run():
    import doctest

    from mtl_course.data import sinusoid

    result = doctest.testmod(sinusoid)
    assert result.attempted > 0 and result.failed == 0


def test_digits_are_real_and_permutation_is_a_bijection():
    digits = load_digits()
    assert len(digits) == 1797 and digits.num_classes == 10 and 0 <= digits.X.min() and digits.X.max() <= 1
    permuted = permute_pixels(digits.X, seed=0)
    assert torch.equal(permuted.sort(dim=1).values, digits.X.sort(dim=1).values)
    assert not torch.equal(permuted, digits.X)
    assert load_digits(as_images=True).X.shape == (1797, 1, 8, 8)
