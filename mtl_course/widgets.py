"""Interactive explorers (ipywidgets) that the chapters share.

Each explorer needs a running kernel; the HTML book shows a static figure drawn
by the same plotting function from :mod:`mtl_course.viz`, so the two never
disagree. Nothing in the core of the package imports this module.
"""
from __future__ import annotations


def _require_ipywidgets():
    """Import ipywidgets, or explain how to get it."""
    try:
        import ipywidgets
    except ImportError as error:  # pragma: no cover - ipywidgets is in requirements.txt
        raise ImportError("the explorers need ipywidgets: run `pip install ipywidgets` and restart the kernel") from error
    return ipywidgets


# --- Chapter 2: transfer strategies ------------------------------------------


def explore_strategies(curves, phase_starts=None):
    """Chapter 2: pick the number of target examples per class, see each strategy's validation curve.

    ``curves[k][strategy]`` holds validation accuracies per epoch, computed
    beforehand (the explorer only selects and draws). Each redraw calls
    :func:`mtl_course.viz.plot_strategy_curves`, the function behind the
    chapter's static figure; ``phase_starts`` is passed on to it. Needs
    ``ipywidgets`` and a running kernel.
    """
    widgets = _require_ipywidgets()
    import matplotlib.pyplot as plt

    from . import viz

    if not curves:
        raise ValueError("explore_strategies needs curves for at least one target size")

    def show(k: int):
        _, ax = plt.subplots(figsize=(6, 3.5))
        viz.plot_strategy_curves(curves, k, ax=ax, phase_starts=phase_starts)
        plt.show()

    return widgets.interact(show, k=widgets.SelectionSlider(options=sorted(curves), description="k per class"))


# --- Chapter 4: sinusoid adaptation ------------------------------------------


def sinusoid_explorer(models_: dict, inner_lr: float | dict[str, float], max_steps: int = 20, seed: int = 0):
    """Chapter 4: pick a sinusoid task, K and the number of inner steps; see the models adapt.

    Each redraw calls :func:`mtl_course.viz.plot_sinusoid_adaptation`, the same
    function that draws the chapter's static figure, with the curves before
    adaptation and after ``inner_steps`` inner steps. ``inner_lr`` may give one
    step size per model name. Needs ``ipywidgets`` and a running kernel; it draws
    when the reader presses its button (nothing is drawn when the notebook is
    executed headless, which keeps stored outputs stable).
    """
    widgets = _require_ipywidgets()
    import matplotlib.pyplot as plt

    from .data import SineTask, SinusoidTasks
    from .viz import plot_sinusoid_adaptation

    def show(amplitude: float, phase: float, k_shot: int, inner_steps: int):
        task = SineTask(amplitude, phase)
        episode = SinusoidTasks(seed=seed).sample_episode(k_shot, 0, task=task)
        _, ax = plt.subplots(figsize=(7, 3.5))
        plot_sinusoid_adaptation(ax, models_, task, episode.support_X, episode.support_y, [0, inner_steps], inner_lr)
        plt.show()

    return widgets.interact_manual(
        show,
        amplitude=widgets.FloatSlider(value=3.0, min=0.1, max=5.0, step=0.1, description="amplitude"),
        phase=widgets.FloatSlider(value=1.0, min=0.0, max=3.14, step=0.05, description="phase"),
        k_shot=widgets.IntSlider(value=10, min=1, max=40, description="K"),
        inner_steps=widgets.IntSlider(value=1, min=0, max=max_steps, description="inner steps"),
    )


# --- Chapter 3: the two-task toy of CAGrad -----------------------------------


def toy_explorer(num_steps: int | None = None):
    """Chapter 3: choose a method, a start point and CAGrad's ``c``; see the path on the toy landscape.

    Each redraw runs :func:`mtl_course.multitask.run_toy` and draws with
    :func:`mtl_course.multitask.plot_toy`, the functions behind the chapter's
    static figure. It draws when the reader presses its button (a run of
    100,000 Adam steps takes a few seconds).
    """
    widgets = _require_ipywidgets()
    import matplotlib.pyplot as plt
    import numpy as np

    from .multitask import toy

    num_steps = toy.TOY_STEPS if num_steps is None else num_steps

    def show(method: str, x1: float, x2: float, steps: int, c: float):
        paths = toy.run_toy([method], [(x1, x2)], num_steps=steps, c=c, record_every=max(steps // 500, 1))
        _, ax = plt.subplots(figsize=(4.5, 4.5))
        toy.plot_toy(paths, axes=[ax])
        end = paths[method][0, -1]
        ax.set_title(f"{toy.METHOD_LABELS[method]}: ends at ({end[0]:.2f}, {end[1]:.2f}),\n"
                     f"losses {np.round(toy.toy_losses(end), 2).tolist()}")
        plt.show()

    return widgets.interact_manual(
        show,
        method=widgets.Dropdown(options=list(toy.TOY_METHODS), value="cagrad", description="method"),
        x1=widgets.FloatSlider(value=-8.5, min=-10, max=10, step=0.5, description="start x1"),
        x2=widgets.FloatSlider(value=7.5, min=-10, max=10, step=0.5, description="start x2"),
        steps=widgets.IntSlider(value=num_steps, min=1_000, max=toy.TOY_STEPS, step=1_000, description="Adam steps"),
        c=widgets.FloatSlider(value=toy.TOY_C, min=0.0, max=1.0, step=0.1, description="CAGrad c"),
    )


# --- Chapter 6: fine-tuned against frozen representations --------------------


def representation_explorer(ns=(10, 20, 40, 80, 160)):
    """Chapter 6: pick ``δ``, ``d`` and ``k``; see the risks of learning alone, frozen and fine-tuned.

    Each redraw runs :func:`mtl_course.finetuning_theory.compare_representations`
    and draws one panel with
    :func:`mtl_course.viz.plot_representation_comparison`, the
    function behind the chapter's static figure. It draws when the reader
    presses its button.
    """
    widgets = _require_ipywidgets()
    import matplotlib.pyplot as plt

    from . import finetuning_theory, viz

    def show(delta: float, d: int, k: int):
        rows = finetuning_theory.compare_representations([delta], [n for n in ns if n > k], d=d, k=k, num_target=20)
        _, ax = plt.subplots(figsize=(6, 3.5))
        viz.plot_representation_comparison(ax, rows, delta)
        plt.show()

    return widgets.interact_manual(
        show,
        delta=widgets.FloatSlider(value=0.5, min=0.0, max=2.0, step=0.05, description="δ"),
        d=widgets.IntSlider(value=40, min=10, max=80, step=5, description="d"),
        k=widgets.IntSlider(value=4, min=1, max=8, description="k"),
    )
