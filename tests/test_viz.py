import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mtl_course import viz  # noqa: E402
from mtl_course.data import EpisodeSampler, LabelledSet  # noqa: E402


def _images(n_classes=6, per_class=4):
    y = torch.arange(n_classes).repeat_interleave(per_class)
    return LabelledSet(torch.rand(len(y), 1, 8, 8), y, [f"c{c}" for c in range(n_classes)])


def test_show_episode_draws_one_row_per_class():
    data = _images()
    episode = EpisodeSampler(data, n_way=3, k_shot=2, q_queries=2, seed=0).sample()
    fig = viz.show_episode(episode, data.class_names, max_query=1)
    assert len(fig.axes) == 3 * (2 + 1)
    labels = [fig.axes[row * 3].get_ylabel() for row in range(3)]
    assert all(f"label {i}" in text and data.class_names[episode.classes[i]] in text for i, text in enumerate(labels))
    plt.close(fig)


def test_show_images_grid_and_empty_input():
    fig = viz.show_images(torch.rand(7, 1, 8, 8), [str(i) for i in range(7)], ncols=4)
    assert len(fig.axes) == 8 and fig.axes[6].get_title() == "6"
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one image"):
        viz.show_images([])


def test_curve_plots_label_their_axes():
    ax = viz.plot_curves({"a": [0.1, 0.5], "b": [0.2, 0.3]}, title="t")
    assert ax.get_xlabel() == "epoch" and len(ax.get_lines()) == 2
    ax = viz.plot_with_ci([1, 2], {"m": ([0.5, 0.6], [0.1, 0.1])}, xlabel="k", ylabel="acc")
    assert ax.get_ylabel() == "acc" and len(ax.collections) == 1
    plt.close("all")
