"""Chapter 2's plots and explorer: the static figure and the widget draw with one function."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mtl_course import viz, widgets  # noqa: E402

CURVES = {
    1: {"scratch": [0.1, 0.2, 0.3], "probe": [0.3, 0.5], "LP-FT": [0.3, 0.5, 0.6, 0.7]},
    5: {"scratch": [0.2, 0.4], "probe": [0.6, 0.7], "LP-FT": [0.6, 0.7, 0.8, 0.9]},
}
PHASES = {1: {"LP-FT": 2}, 5: {"LP-FT": 2}}


def test_strategy_curves_draw_every_strategy_in_full_with_its_own_style():
    ax = viz.plot_strategy_curves(CURVES, 1, phase_starts=PHASES)
    lines = [line for line in ax.get_lines() if line.get_label() in CURVES[1]]
    assert [line.get_label() for line in lines] == list(CURVES[1])
    for line, values in zip(lines, CURVES[1].values()):
        assert np.allclose(line.get_ydata(), values) and list(line.get_xdata()) == list(range(1, len(values) + 1))
    assert len({(line.get_color(), line.get_linestyle()) for line in lines}) == 3, "each strategy looks different"
    assert lines[1].get_zorder() > lines[2].get_zorder(), "LP-FT repeats the probe's curve: the probe must stay on top"
    marker = [line for line in ax.get_lines() if "second phase" in line.get_label()]
    assert len(marker) == 1 and marker[0].get_xdata()[0] == 2.5, "the second phase starts after epoch 2"
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "validation accuracy"
    assert ax.get_title() == "k = 1 target example per class"
    assert ax.get_legend() is not None
    plt.close("all")


def test_strategy_curves_reject_an_unknown_size():
    with pytest.raises(ValueError, match="choose one of"):
        viz.plot_strategy_curves(CURVES, 3)


def test_strategy_grid_has_one_panel_per_size_and_one_legend():
    fig = viz.plot_strategy_grid(CURVES, phase_starts=PHASES, title="t")
    panels = [ax for ax in fig.axes if ax.lines]
    assert len(panels) == 2 and [ax.get_title() for ax in panels] == [
        "k = 1 target example per class", "k = 5 target examples per class"]
    assert all(ax.get_legend() is None for ax in panels) and len(fig.legends) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["scratch", "probe", "LP-FT", "LP-FT: second phase starts"]
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one"):
        viz.plot_strategy_grid({})


def test_explorer_redraws_with_the_shared_plot(monkeypatch):
    pytest.importorskip("ipywidgets")
    calls = []
    original = viz.plot_strategy_curves
    monkeypatch.setattr(viz, "plot_strategy_curves",
                        lambda curves, k, **kw: calls.append(k) or original(curves, k, **kw))
    monkeypatch.setattr(plt, "show", lambda: None)
    explorer = widgets.explore_strategies(CURVES, phase_starts=PHASES)
    assert callable(explorer) and calls == [1], "the first draw shows the smallest target size"
    plt.close("all")
