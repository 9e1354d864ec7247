"""Multi-task learning: sharing architectures, loss weighting, gradient combination and Δp.

* :mod:`.architectures` — hard sharing (:class:`HardSharing`), soft sharing
  (:class:`SoftSharing`), cross-stitch networks (:class:`CrossStitch`), task heads;
* :mod:`.weighting` — equal, uncertainty (Kendall et al., 2018), DWA (Liu et al., 2019),
  GradNorm (Chen et al., 2018), FAMO (Liu et al., 2023);
* :mod:`.gradients` — PCGrad, MGDA, CAGrad, IMTL-G, Nash-MTL, Aligned-MTL, UPGrad, RLW on the task-gradient matrix ``G``,
  gradient cosine similarity, ``G`` from a model's losses and back;
* :mod:`.train` — the one multi-task training loop, single-task baselines, Δp;
* :mod:`.data` — heterogeneous multi-task sets built from Glyphs, a two-glyph
  overlay set, and a noisy two-task regression;
* :mod:`.toy` — the two-task toy problem of the CAGrad paper and its explorer widget;
* :mod:`.stored` — Section 3.7's networks on the two-glyph overlay, every method over five seeds,
  trained once into the trained-model store.
"""
from .architectures import CrossStitch, CrossStitchUnit, HardSharing, SoftSharing, lenet_trunk, make_head
from .data import MultiTaskSet, TaskSpec, glyph_alphabet_tasks, glyph_overlay, glyph_tasks, noisy_regression, pick_characters, rotate
from .gradients import (
    aggregate,
    aligned_mtl,
    aligned_mtl_weights,
    cagrad,
    cagrad_two_task_weight,
    cagrad_weights,
    frank_wolfe_min_norm,
    gradient_cosine,
    gram_matrix,
    imtl_g,
    imtl_g_weights,
    mean_gradient,
    mean_weights,
    mgda,
    mgda_two_task_weight,
    mgda_l2,
    mgda_l2_weights,
    mgda_weights,
    nash_mtl,
    nash_mtl_weights,
    pcgrad,
    pcgrad_weights,
    rlw,
    rlw_weights,
    task_gradient_matrix,
    upgrad,
    upgrad_weights,
    write_gradient,
)
from .stored import (
    OVERLAY_METHODS,
    OVERLAY_MODEL_NAME,
    OverlayConfig,
    member,
    overlay_delta_p,
    overlay_network,
    overlay_sets,
    overlay_test_metrics,
    single_task_member,
)
from .toy import TOY_STARTS, plot_toy, run_toy, toy_gradients, toy_landscape, toy_losses
from .train import (
    GRADIENT_METHODS,
    METHODS,
    WEIGHTINGS,
    MultiTaskHistory,
    TaskView,
    delta_p,
    evaluate_multitask,
    fit_multitask,
    fit_single_task,
)
from .weighting import (
    FAMO,
    GradNorm,
    UncertaintyWeighting,
    dwa_weights,
    equal_weights,
    famo_logit_gradient,
    famo_weights,
    gradnorm_weight_gradient,
    uncertainty_weighted_loss,
)

__all__ = [
    "aggregate", "aligned_mtl", "aligned_mtl_weights", "cagrad", "cagrad_two_task_weight", "cagrad_weights",
    "CrossStitch", "CrossStitchUnit", "delta_p", "dwa_weights", "equal_weights", "evaluate_multitask",
    "FAMO", "famo_logit_gradient", "famo_weights",
    "fit_multitask", "fit_single_task", "frank_wolfe_min_norm", "glyph_alphabet_tasks", "glyph_overlay",
    "glyph_tasks", "gradient_cosine", "GRADIENT_METHODS", "GradNorm", "gradnorm_weight_gradient",
    "gram_matrix", "HardSharing", "imtl_g", "imtl_g_weights", "lenet_trunk", "make_head", "mean_gradient",
    "mean_weights", "METHODS", "mgda", "mgda_l2", "mgda_l2_weights", "mgda_two_task_weight", "mgda_weights",
    "MultiTaskHistory", "member", "OVERLAY_METHODS", "OVERLAY_MODEL_NAME", "OverlayConfig", "overlay_delta_p",
    "overlay_network", "overlay_sets", "overlay_test_metrics", "single_task_member",
    "MultiTaskSet", "nash_mtl", "nash_mtl_weights", "noisy_regression", "pcgrad", "pcgrad_weights",
    "pick_characters", "plot_toy", "rlw", "rlw_weights", "rotate", "run_toy", "SoftSharing",
    "task_gradient_matrix", "TaskSpec", "TaskView", "toy_gradients", "toy_landscape", "toy_losses",
    "TOY_STARTS", "uncertainty_weighted_loss", "UncertaintyWeighting", "upgrad", "upgrad_weights",
    "WEIGHTINGS", "write_gradient",
]
