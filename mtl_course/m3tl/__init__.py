"""M3TL: the multi-modal multi-task meta transfer learning network of the review (Upadhyay et al., 2021).

One generic network (Fig. 6) -- per-modality encoders that are pre-trained
and frozen, pre-trained and fine-tuned, or trained from scratch; a fusion
(multimodal embedding) layer; a shared backbone; task-specific heads of
different kinds -- trained by bi-level meta-optimisation over source tasks,
with new tasks of new kinds added at meta-test. Its reductions (Fig. 8) are
configurations, and each runs the earlier chapters' own code:

=================  ======================================  =====================================
reduction          what is switched off                    trained by
=================  ======================================  =====================================
``"m3tl"``         nothing                                 :func:`meta_train` (``meta.meta_objective``)
``"mtl"``          pre-trained encoders, meta, unseen      :func:`fit_joint` (``multitask.fit_multitask``)
``"meta"``         pre-trained encoders, fusion, backbone  :func:`meta_train` (= ``meta.meta_train``)
``"transfer"``     backbone, meta                          :func:`fit_task` (``transfer.linear_probe`` /
                                                           ``transfer.fine_tune``)
=================  ======================================  =====================================

* :mod:`.config` -- :class:`EncoderSpec`, :class:`M3TLConfig`, :func:`reduce`, :func:`with_modalities`;
* :mod:`.network` -- :func:`build`, :class:`M3TLNet`, its one-task view :class:`TaskNet`,
  :func:`cache_frozen_features`, :func:`cache_representation`;
* :mod:`.train` -- :func:`fit_joint`, :func:`fit_task`, :func:`transfer_to_target` (Fig. 7),
  :func:`meta_train`, :func:`meta_test`, :func:`adaptation_updates`, :func:`pairwise_cosine`;
* :mod:`.baseline` -- :class:`PretrainedSingleTask`, :func:`cache_lower_blocks` and :func:`single_task_test`, the pre-trained
  single-task baseline (linear probe or fine-tuning) that M3TL's new tasks are compared with;
* :mod:`.figure` -- :func:`plot_architecture`;
* :mod:`.stored` -- Chapter 8's stored network (:data:`M3TL_MODEL_NAME`) and its recipe;
* :mod:`.reductions` -- M3TL against its reductions, trained on the same source tasks over five seeds
  (:func:`~.reductions.put_head`, :func:`~.reductions.meta_test_heads`), and its stored study;
* :mod:`.protonet` -- Chapter 4's prototypical network trained on the same data and budget, the best
  method of the earlier chapters in that comparison.
"""
from .config import (
    ENCODER_ARCHS,
    ENCODER_MODES,
    REDUCTIONS,
    SWITCHED_OFF,
    SWITCHES,
    EncoderSpec,
    M3TLConfig,
    reduce,
    task,
    with_modalities,
)
from .baseline import PretrainedSingleTask, TopBlocks, cache_lower_blocks, single_task_test
from .figure import plot_architecture
from .network import (PARTS, FeatureInput, M3TLNet, TaskNet, build, cache_frozen_features, cache_representation,
                      make_encoder, make_task_head)
from .train import (
    adaptation_updates,
    fit_joint,
    fit_task,
    mean_absolute_error,
    meta_test,
    meta_train,
    multitask_set,
    part_rates,
    pairwise_cosine,
    part_names,
    relative_update_size,
    summarise,
    task_loss,
    task_metric,
    transfer_to_target,
    update_norms,
)

__all__ = [
    "ENCODER_ARCHS", "ENCODER_MODES", "EncoderSpec", "FeatureInput", "M3TLConfig", "M3TLNet", "PARTS", "PretrainedSingleTask",
    "REDUCTIONS", "TopBlocks", "cache_lower_blocks",
    "SWITCHED_OFF", "SWITCHES", "TaskNet", "adaptation_updates", "build", "cache_frozen_features",
    "cache_representation", "fit_joint",
    "fit_task", "make_encoder", "make_task_head", "mean_absolute_error", "meta_test", "meta_train", "multitask_set", "part_rates",
    "pairwise_cosine", "part_names", "plot_architecture", "reduce", "relative_update_size", "single_task_test",
    "summarise", "task",
    "task_loss", "task_metric", "transfer_to_target", "update_norms", "with_modalities",
]
