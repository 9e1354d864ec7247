"""The explorers of Chapters 3 and 6 draw with the same functions as the chapters' static figures."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from mtl_course import finetuning_theory, viz, widgets
from mtl_course.multitask import toy

pytest.importorskip("ipywidgets")


def test_toy_explorer_draws_only_when_asked_and_with_plot_toy(monkeypatch):
    calls = []
    original = toy.plot_toy
    monkeypatch.setattr(toy, "plot_toy", lambda paths, **kw: calls.append(sorted(paths)) or original(paths, **kw))
    monkeypatch.setattr(plt, "show", lambda: None)
    explorer = widgets.toy_explorer(num_steps=1_000)
    assert calls == [], "the toy explorer runs only when its button is pressed"
    explorer.widget.update()  # what pressing the button does
    assert calls == [["cagrad"]]
    plt.close("all")


def test_representation_explorer_draws_only_when_asked(monkeypatch):
    calls = []
    original = viz.plot_representation_comparison
    monkeypatch.setattr(viz, "plot_representation_comparison",
                        lambda ax, rows, delta: calls.append(delta) or original(ax, rows, delta))
    monkeypatch.setattr(plt, "show", lambda: None)
    explorer = widgets.representation_explorer(ns=(10, 20))
    assert calls == []
    explorer.widget.update()
    assert calls == [0.5]
    plt.close("all")


def test_core_modules_do_not_import_the_explorers():
    assert not hasattr(toy, "toy_explorer") and not hasattr(finetuning_theory, "representation_explorer")
