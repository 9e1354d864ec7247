"""Chapter 4's plots and explorer: the static figure and the widget draw with one function."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from mtl_course import meta, models, viz, widgets  # noqa: E402
from mtl_course.data import SinusoidTasks  # noqa: E402


def _model_and_episode():
    torch.manual_seed(0)
    return models.MLP(1, (8,), 1), SinusoidTasks(seed=0).sample_episode(5, 0)


def test_sinusoid_plot_draws_task_and_one_adapted_curve_per_model_and_step():
    model, ep = _model_and_episode()
    _, ax = plt.subplots()
    viz.plot_sinusoid_adaptation(ax, {"a": model, "b": model}, ep.info["task"], ep.support_X, ep.support_y,
                                 [0, 2], {"a": 0.01, "b": 0.1})
    assert len(ax.lines) == 1 + 2 * 2  # the true task, then two models x two step counts
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y" and "A = " in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "a, 0 steps" in labels and "b, 2 steps" in labels and "K=5 support points" in labels
    plt.close("all")


def test_sinusoid_plot_curves_are_the_adapted_predictions():
    model, ep = _model_and_episode()
    _, ax = plt.subplots()
    viz.plot_sinusoid_adaptation(ax, {"a": model}, ep.info["task"], ep.support_X, ep.support_y, 3, 0.05)
    x = torch.linspace(-5.0, 5.0, 200).unsqueeze(1)
    expected = meta.adapted_predictions(model, ep.support_X, ep.support_y, x, [3], 0.05)[3]
    assert torch.allclose(torch.as_tensor(ax.lines[1].get_ydata()), expected)
    plt.close("all")
    with pytest.raises(ValueError, match="at least one model"):
        viz.plot_sinusoid_adaptation(ax, {}, ep.info["task"], ep.support_X, ep.support_y, 1, 0.05)


def test_explorer_redraws_with_the_shared_plot(monkeypatch):
    pytest.importorskip("ipywidgets")
    model, _ = _model_and_episode()
    calls = []
    original = viz.plot_sinusoid_adaptation
    monkeypatch.setattr(viz, "plot_sinusoid_adaptation", lambda *a, **k: calls.append(a[5]) or original(*a, **k))
    monkeypatch.setattr(plt, "show", lambda: None)
    explorer = widgets.sinusoid_explorer({"a": model}, inner_lr=0.01)
    assert callable(explorer) and calls == [], "it draws only when asked"
    explorer.widget.update()  # what pressing its button does
    assert calls == [[0, 1]], "the first draw shows 0 and 1 inner steps"
    plt.close("all")
