"""M3TL against its reductions (review Fig. 8), trained on the same data for the same budget, over seeds.

Chapter 8 asks whether one network that shares, meta-learns and transfers
beats its parts. This study trains, for each of five seeds, the chapter's
M3TL network and three of its reductions on the meta-training alphabets:

* ``"M3TL"``: the network of :mod:`.stored` (frozen pre-trained image
  encoder, profile encoder, fusion, backbone), meta-trained by
  :func:`.stored.meta_train_chapter`;
* ``"MTL"`` (Fig. 8a): both encoders from scratch and no meta-optimisation;
  every layer is trained jointly on the source tasks by :func:`.fit_joint`
  (its character head classifies all training characters) for the number of
  optimizer steps chosen on validation from ``mtl_steps``, at most M3TL's
  number of outer steps;
* ``"meta (image)"`` and ``"meta (profile)"`` (Fig. 8b): one modality, its
  encoder from scratch, no fusion and no backbone, meta-trained exactly like
  M3TL (same episodes, steps and step sizes).

The transfer reduction (Fig. 8c) needs no training on the source tasks: it is
the pre-trained single-task baseline of :mod:`.baseline`. Every network is
selected on one criterion, the summed query loss on the source tasks'
validation episodes with the heads adapted as at meta-test
(:func:`validation_loss`), and is then tested with the same new heads
(:func:`put_head`).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .. import meta, runtime, store, transfer
from ..data import MultiModalSet, TaskEpisodes, load_glyphs
from ..metrics import EpisodeScores
from ..multitask.data import TaskSpec
from .config import reduce, task, with_modalities
from .network import M3TLNet, TaskNet, build, cache_frozen_features, cache_representation, make_task_head
from .stored import (SHOTS, SOURCE_TASKS, M3TLRecipe, chapter_data, chapter_network, inner_lr_of, meta_train_chapter,
                     untrained_image_encoder, validation_episodes)
from .train import fit_joint, meta_test

REDUCTIONS_MODEL_NAME = "glyphs-m3tl-reductions"
VARIANTS = ("M3TL", "MTL", "meta (image)", "meta (profile)")
"""The networks of the study: M3TL and the reductions that need training on the source tasks."""
META_MODALITY = {"meta (image)": "image", "meta (profile)": "profile"}


@dataclass(frozen=True)
class ReductionStudy(M3TLRecipe):
    """Chapter 8's M3TL recipe (:class:`.stored.M3TLRecipe`), the MTL reduction's training, and the seeds."""

    seeds: int = 5
    mtl_steps: tuple[int, ...] = (500, 1000, 2000)  # optimizer steps tried for the MTL reduction
    mtl_lr: float = 1e-3
    mtl_batch: int = 64

    def __post_init__(self) -> None:  # a config read back from JSON gives a list
        object.__setattr__(self, "mtl_steps", tuple(self.mtl_steps))
        if max(self.mtl_steps) > self.outer_steps:
            raise ValueError(f"the MTL reduction gets at most M3TL's {self.outer_steps} steps, got {self.mtl_steps}")


def run_key(variant: str, seed: int) -> str:
    """The name of one network of the study, e.g. ``"meta (image) 3"``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    return f"{variant} {seed}"


def put_head(net: M3TLNet, spec: TaskSpec) -> TaskNet:
    """A zero-initialised head for ``spec`` on ``net``'s shared representation, replacing one of that name.

    Unlike :meth:`M3TLNet.add_task` this also serves the MTL reduction, which
    by definition meta-tests no new tasks (Fig. 8a): the study uses it to test
    every network with the same new heads.
    """
    device = next(net.parameters()).device
    net.heads[spec.name] = make_task_head(spec, net.embed_dim, net.config.head_hidden).to(device)
    net.specs[spec.name] = spec
    return meta.zero_head_(net.task_net(spec.name))


def variant_network(variant: str, c: M3TLRecipe, shapes: dict, image_encoder: nn.Module, n_characters: int,
                    seed: int) -> M3TLNet:
    """The untrained network of ``variant``, built from Chapter 8's M3TL network by :func:`.reduce`."""
    full = chapter_network(c, shapes, image_encoder, seed)
    if variant == "M3TL":
        return full
    if variant == "MTL":
        tasks = [task("character", "classification", n_characters), full.specs["upright"]]
        return build(dataclasses.replace(reduce(full.config, "mtl"), tasks=tasks), seed=seed)
    net = build(reduce(with_modalities(full.config, [META_MODALITY[variant]]), "meta"), seed=seed)
    meta.zero_head_(net.task_net("character"))
    return net


LR_FACTORS = (1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0)
"""Step sizes a network's heads may adapt with, as multiples of the head kind's (:data:`.stored.INNER_LR`).

M3TL and the meta-learners were meta-trained with factor 1; a network trained
otherwise may have a representation of another scale, on which those steps
diverge, so the study lets each network choose on validation.
"""


def _finite(value: float) -> float:
    return value if np.isfinite(value) else np.inf  # a step size that diverges loses


def validation_loss(net: M3TLNet, episodes: dict, inner_steps: int, factors: Sequence[float] = (1.0,)) -> float:
    """The study's model selection: summed query loss of the source tasks, the heads adapted as at meta-test.

    Each task's loss is that of its best step size among ``factors`` times
    the head kind's; meta-training validates with factor 1, the step size it
    trains with.
    """
    return sum(min(_finite(meta_test(net, t, episodes[t], parts="head", inner_lr=f * inner_lr_of(net, t),
                                     inner_steps=inner_steps, metric=None).mean) for f in factors)
               for t in SOURCE_TASKS)


def _train_mtl(c: ReductionStudy, make, train: MultiModalSet, val: MultiModalSet, seed: int,
               max_steps: int | None = None) -> tuple[M3TLNet, dict, list[float]]:
    five_way = task("character", "classification", SHOTS["character"][0])
    best, tried = None, {}
    for steps in c.mtl_steps if max_steps is None else (min(max_steps, c.mtl_steps[0]),):
        net = make()
        history = fit_joint(net, train, num_epochs=math.ceil(steps * c.mtl_batch / len(train)) + 1, max_steps=steps,
                            lr=c.mtl_lr, batch_size=c.mtl_batch, seed=seed)
        put_head(net, five_way)  # its many-way head cannot serve 5-way episodes: a new one, as at meta-test
        if max_steps is not None:
            return net, {}, history.step_loss
        episodes = validation_episodes(net, val, c.val_episodes)
        tried[steps] = validation_loss(net, episodes, c.inner_steps, LR_FACTORS)
        if best is None or tried[steps] < tried[best[0]]:
            best = (steps, net, history.step_loss)
    steps, net, losses = best
    record = {"val_loss": tried[steps], "steps": steps, "val_loss_by_steps": {str(k): v for k, v in tried.items()}}
    return net, record, losses


def train_variant(c: ReductionStudy, variant: str, seed: int, train: MultiModalSet, val: MultiModalSet,
                  image_encoder: nn.Module, device: torch.device,
                  max_steps: int | None = None) -> tuple[M3TLNet, dict, list[float]]:
    """One network of the study, trained and selected on validation: ``(network, record, step losses)``."""
    def make() -> M3TLNet:
        net = variant_network(variant, c, train.modality_shapes, image_encoder, len(train.class_names), seed)
        return net.to(device)

    if variant == "MTL":
        return _train_mtl(c, make, train, val, seed, max_steps)
    net = make()
    learner, train_x, val_x = net, train, val
    if variant == "M3TL":  # the frozen image encoder runs once; the cached network shares every other layer
        (learner, train_x), (_, val_x) = cache_frozen_features(net, train), cache_frozen_features(net, val)
    steps = c.outer_steps if max_steps is None else min(max_steps, c.outer_steps)
    episodes = None if max_steps is not None else validation_episodes(learner, val_x, c.val_episodes)
    history = meta_train_chapter(learner, train_x, c, steps, seed, episodes)
    record = {} if max_steps is not None else {"val_loss": min(history.val_metric), "steps": history.best_step}
    return net, record, history.loss


def meta_test_heads(net: M3TLNet, new_tasks: Sequence[TaskSpec], tasks: Sequence[str], test: MultiModalSet,
                    val: MultiModalSet, *, num_episodes: int = 600, num_val_episodes: int = 300,
                    inner_steps: int = 10, seed: int = 10, val_seed: int = 20,
                    prototypes: bool = False) -> dict[str, tuple[EpisodeScores, float | None]]:
    """Meta-test ``net`` with its shared layers fixed: each task's head adapts alone on every support set.

    ``new_tasks`` get zero-initialised heads (:func:`put_head`, on a copy of
    ``net``). For each task of ``tasks`` the step size is chosen from
    :data:`LR_FACTORS` times the head kind's step size on ``num_val_episodes``
    episodes of ``val`` (seed ``val_seed + i``); the test episodes of ``test``
    have seed ``seed + i``, Chapter 8's. The shared representation is computed
    once (:func:`.cache_representation`). With ``prototypes=True`` the
    classification tasks are scored by the nearest prototype in that
    representation instead (ProtoNet's rule, :mod:`.protonet`; no step size).
    Returns each task's scores and the step size chosen (``None``: none).
    """
    net = copy.deepcopy(net)
    for spec in new_tasks:
        put_head(net, spec)
    reads, test_z = cache_representation(net, test)
    _, val_z = cache_representation(net, val)
    out = {}
    for i, t in enumerate(tasks):
        ways, shots = SHOTS[t]

        def sample(data: MultiModalSet, s: int, n: int) -> list:
            return TaskEpisodes(data, t, n_way=ways, k_shot=shots, q_queries=5, seed=s).episodes(n)

        def score(episodes: list, lr: float) -> EpisodeScores:
            return meta_test(reads, t, episodes, parts="head", inner_lr=lr, inner_steps=inner_steps)

        test_episodes = sample(test_z, seed + i, num_episodes)
        sign = 1.0 if reads.specs[t].kind == "classification" else -1.0  # higher is better after `sign`
        if prototypes and sign > 0:
            out[t] = (meta.evaluate_episodes(nn.Identity(), test_episodes, method="protonet"), None)
            continue
        val_episodes = sample(val_z, val_seed + i, num_val_episodes)  # drawn once, scored at every step size
        lr = max((f * inner_lr_of(reads, t) for f in LR_FACTORS),
                 key=lambda lr: -_finite(-sign * score(val_episodes, lr).mean))
        out[t] = (score(test_episodes, lr), lr)
    return out


def as_kept(net: M3TLNet) -> M3TLNet:
    """The network as the study keeps it: without the upright head, which meta-test never uses.

    The dense head reconstructs a whole drawing and holds nine-tenths of a
    network's weights; the character head stays (meta-test adapts it).
    """
    del net.heads["upright"], net.specs["upright"]
    return net


class ReductionNetworks(nn.Module):
    """Every network of the study by :func:`run_key`; :func:`build_reduction_networks` makes it empty."""

    def __init__(self, networks: dict[str, M3TLNet]) -> None:
        super().__init__()
        self.names = list(networks)
        self.networks = nn.ModuleDict({store.slug(k): v for k, v in networks.items()})

    def network(self, run: str) -> M3TLNet:
        if run not in self.names:
            raise KeyError(f"no network {run!r} in the study; it has {self.names}")
        return self.networks[store.slug(run)]


def _empty_network(variant: str, c: ReductionStudy, seed: int) -> M3TLNet:
    shapes = {"image": (1, 28, 28), "profile": (56,)}
    net = variant_network(variant, c, shapes, untrained_image_encoder(), SHOTS["character"][0], seed)
    if variant == "MTL":
        put_head(net, task("character", "classification", SHOTS["character"][0]))
    return as_kept(net)


def build_reduction_networks(config: dict) -> ReductionNetworks:
    """The untrained networks of the stored study, for :func:`mtl_course.store.load` to fill in."""
    c = ReductionStudy(**config)
    return ReductionNetworks({run_key(v, s): _empty_network(v, c, s) for s in range(c.seeds) for v in VARIANTS})


def train_reductions_recipe(config: dict, seed: int, max_steps: int | None = None, device: torch.device | None = None,
                            checkpoint: runtime.Checkpoint | None = None, reverse: bool = False) -> store.Trained:
    """The store's recipe: every variant of :data:`VARIANTS` for seeds ``seed .. seed + seeds - 1``.

    Each finished network is kept beside ``checkpoint``, and ``reverse=True``
    trains from the other end (:func:`mtl_course.store.cached_runs`). With
    ``max_steps``, only the first steps of the first network (M3TL, ``seed``).
    """
    c = ReductionStudy(**config)
    device = device or runtime.get_device()
    glyphs = load_glyphs(seed=0)
    encoder = transfer.source_model(transfer.SourceConfig(), data=glyphs, device=device).model
    train = chapter_data(glyphs, "train", c.train_chars, c.drawings)
    val = chapter_data(glyphs, "val", c.val_chars, c.drawings)
    with runtime.num_threads_at_most(1):  # small networks: one thread is fastest
        if max_steps is not None:
            net, _, losses = train_variant(c, "M3TL", seed, train, val, encoder, device, max_steps)
            return store.Trained(net, {}, losses)

        def train_one(key: str) -> dict:
            variant, s = key.rsplit(" ", 1)
            started = time.perf_counter()
            net, record, losses = train_variant(c, variant, int(s), train, val, encoder, device)
            return {"state": {k: v.detach().cpu() for k, v in as_kept(net).state_dict().items()},
                    "record": {**record, "loss": losses, "seconds": time.perf_counter() - started}}

        keys = [run_key(v, s) for s in range(seed, seed + c.seeds) for v in VARIANTS]
        done = store.cached_runs(keys, train_one, checkpoint, reverse)
    networks = build_reduction_networks({**asdict(c)})
    for key, result in done.items():
        networks.network(key).load_state_dict(result["state"])
    runs = {key: {k: v for k, v in result["record"].items() if k != "loss"} for key, result in done.items()}
    metrics = {f"val_loss_{store.slug(v)}": float(np.mean([runs[run_key(v, s)]["val_loss"]
                                                      for s in range(seed, seed + c.seeds)])) for v in VARIANTS}
    extra = {"runs": runs, "run_seconds": sum(r["seconds"] for r in runs.values())}
    return store.Trained(networks.to(device).eval(), metrics, done[keys[0]]["record"]["loss"], extra)


REDUCTIONS_RECIPE = store.register(store.Recipe(
    name=REDUCTIONS_MODEL_NAME, chapter=8, train=train_reductions_recipe, build=build_reduction_networks,
    config=asdict(ReductionStudy()), seed=0, version=1,
    description="M3TL and its MTL and meta reductions, trained on the same Glyphs source tasks, five seeds"))
