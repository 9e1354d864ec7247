"""Chapter 8's M3TL network, meta-trained once by ``make models`` and loaded by the chapter.

The recipe follows Section 8.3: Chapter 2's stored Conv-4 as the frozen image
encoder, a profile encoder trained from scratch, a fusion layer and a shared
backbone, meta-trained on two source tasks of different kinds (5-way 1-shot
character classification and dense "upright" reconstruction), adapting the
heads in the inner loop. The checkpoint kept is the one with the lowest
summed query loss on episodes of the validation alphabets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import torch
from torch import nn

from .. import meta, runtime, store, transfer
from ..data import LabelledSet, MultiModalSet, TaskEpisodes, load_glyphs, multimodal_glyphs, split_classes
from .config import EncoderSpec, M3TLConfig, task
from .network import M3TLNet, build, cache_frozen_features
from .train import meta_train

M3TL_MODEL_NAME = "glyphs-m3tl-conv4"
SOURCE_TASKS = ("character", "upright")
SHOTS = {"character": (5, 1), "upright": (5, 1), "alphabet": (3, 5), "ink": (5, 4), "zoom": (5, 4)}
"""(ways, shots) of each task's episodes; regression and dense tasks use the "ways" as groups of drawings."""
INNER_LR = {"classification": 1.0, "regression": 0.05, "dense": 10.0}
"""Inner-loop step size by head kind, fixed beforehand."""
TASK_CURVE_EVERY = 10  # the stored per-task query losses keep every 10th outer step


@dataclass(frozen=True)
class M3TLRecipe:
    """How Chapter 8's M3TL network is built, from which data, and how long it is meta-trained."""

    train_chars: int | None = 30  # characters per meta-training alphabet (None: all)
    val_chars: int | None = 30
    drawings: int = 10  # the first drawings of each character
    embed_dim: int = 64
    backbone: int = 64
    profile_hidden: int = 64
    outer_steps: int = 2000
    meta_batch: int = 10
    meta_lr: float = 2e-3
    inner_steps: int = 2
    val_episodes: int = 100
    eval_every: int = 200


def first_drawings(data: MultiModalSet, drawings: int) -> MultiModalSet:
    """The examples of ``data`` drawn by its first ``drawings`` writers."""
    return data.subset(torch.nonzero(data.drawings < drawings).flatten())


def chapter_alphabets(glyphs: LabelledSet) -> dict[str, list[str]]:
    """The alphabets of Chapter 1's split by group (60/20/20), by part: ``train``, ``val``, ``test``."""
    split = split_classes(glyphs, by="group", fractions=(0.6, 0.2, 0.2), seed=0)
    return {part: sorted({glyphs.class_groups[c] for c in getattr(split, part)}, key=glyphs.groups.index)
            for part in ("train", "val", "test")}


def chapter_data(glyphs: LabelledSet, part: str, chars: int | None, drawings: int) -> MultiModalSet:
    """Chapter 8's two-modality set of one part of the alphabets (rendering seeds 0, 1, 2 by part)."""
    seed = ("train", "val", "test").index(part)
    return first_drawings(multimodal_glyphs(glyphs, chapter_alphabets(glyphs)[part], chars, seed=seed), drawings)


def chapter_network(recipe: M3TLRecipe, shapes: Mapping[str, tuple], image_encoder: nn.Module,
                    seed: int = 0) -> M3TLNet:
    """The untrained M3TL network: frozen ``image_encoder``, a scratch profile encoder, the source tasks' heads."""
    encoders = {"image": EncoderSpec("frozen", pretrained=image_encoder),
                "profile": EncoderSpec("scratch", hidden=(recipe.profile_hidden,))}
    tasks = [task("character", "classification", SHOTS["character"][0]), task("upright", "dense", (1, 28, 28))]
    config = M3TLConfig(dict(shapes), encoders, tasks, embed_dim=recipe.embed_dim,
                        backbone_sizes=(recipe.backbone,))
    net = build(config, seed=seed)
    meta.zero_head_(net.task_net("character"))  # the zero trick of Chapter 4 for N-way heads
    return net


def inner_lr_of(net: M3TLNet, name: str) -> float:
    return INNER_LR[net.specs[name].kind]


def source_samplers(net: M3TLNet, data: MultiModalSet, meta_batch: int, seed: int = 0) -> dict:
    """One sampler of meta-batches per source task (seeds ``seed``, ``seed + 1``, ...)."""
    samplers = {t: TaskEpisodes(data, t, n_way=SHOTS[t][0], k_shot=SHOTS[t][1], q_queries=5,
                                modalities=net.modalities, seed=seed + i)
                for i, t in enumerate(SOURCE_TASKS)}
    return {t: (lambda s=s: s.batch(meta_batch)) for t, s in samplers.items()}


def validation_episodes(net: M3TLNet, val: MultiModalSet, num_episodes: int) -> dict[str, list]:
    """The source tasks' episodes of the validation alphabets that model selection scores (seeds 100, 101)."""
    return {t: TaskEpisodes(val, t, n_way=SHOTS[t][0], k_shot=SHOTS[t][1], q_queries=5, modalities=net.modalities,
                            seed=100 + i).episodes(num_episodes)
            for i, t in enumerate(SOURCE_TASKS)}


def meta_train_chapter(net: M3TLNet, data: MultiModalSet, recipe: M3TLRecipe, outer_steps: int, seed: int = 0,
                       val_episodes: Mapping | None = None,
                       checkpoint: runtime.Checkpoint | None = None) -> meta.MetaHistory:
    """Section 8.3's meta-training: heads adapted in the inner loop, everything that learns in the outer loop."""
    # only the heads adapt, so each episode is embedded once (the same values, less work)
    inner = {t: meta.InnerLoop(inner_lr_of(net, t), recipe.inner_steps, embed_once=True) for t in SOURCE_TASKS}
    return meta_train(net, source_samplers(net, data, recipe.meta_batch, seed), outer_steps=outer_steps,
                      meta_lr=recipe.meta_lr, inner=inner, inner_parts="head", val_episodes=val_episodes,
                      eval_every=recipe.eval_every, checkpoint=checkpoint)


def train_m3tl_recipe(config: dict, seed: int, max_steps: int | None = None,
                      device: torch.device | None = None,
                      checkpoint: runtime.Checkpoint | None = None) -> store.Trained:
    """The store's recipe: :func:`meta_train_chapter` on the meta-training alphabets, validated on others."""
    recipe = M3TLRecipe(**config)
    device = device or runtime.get_device()
    glyphs = load_glyphs(seed=0)
    source = transfer.source_model(transfer.SourceConfig(), data=glyphs, device=device)
    train = chapter_data(glyphs, "train", recipe.train_chars, recipe.drawings)
    val = chapter_data(glyphs, "val", recipe.val_chars, recipe.drawings)
    net = chapter_network(recipe, train.modality_shapes, source.model, seed).to(device)
    net_c, train_c = cache_frozen_features(net, train)
    _, val_c = cache_frozen_features(net, val)
    val_episodes = None if max_steps is not None else validation_episodes(net_c, val_c, recipe.val_episodes)
    steps = recipe.outer_steps if max_steps is None else min(max_steps, recipe.outer_steps)
    history = meta_train_chapter(net_c, train_c, recipe, steps, seed, val_episodes, checkpoint)
    metrics = {}
    if history.val_metric:
        metrics["val_query_loss"] = min(history.val_metric)
    extra = {"val_step": history.val_step, "val_query_loss": history.val_metric, "best_step": history.best_step,
             "task_losses": {t: [row[i] for row in history.metric[::TASK_CURVE_EVERY]]
                             for i, t in enumerate(SOURCE_TASKS)}}
    return store.Trained(net.eval(), metrics, history.loss, extra)


def untrained_image_encoder() -> nn.Module:
    """Chapter 2's source Conv-4 without its head and untrained: what a stored network's weights fill in."""
    encoder = transfer.build_source_model(dict(transfer.SOURCE_RECIPE.config))
    encoder.head = nn.Identity()
    return encoder


def build_m3tl_network(config: Mapping) -> M3TLNet:
    """The untrained network of the stored model, for :func:`mtl_course.store.load` to fill in."""
    shapes = {"image": (1, 28, 28), "profile": (56,)}
    return chapter_network(M3TLRecipe(**config), shapes, untrained_image_encoder())


M3TL_RECIPE = store.register(store.Recipe(
    name=M3TL_MODEL_NAME, chapter=8, train=train_m3tl_recipe, build=build_m3tl_network,
    config=asdict(M3TLRecipe()), seed=0, version=1,
    description="M3TL meta-trained on character and upright episodes of the Glyphs meta-training alphabets"))
