"""Chapter 3's stored experiment: every multi-task method on the two-glyph overlay, over five seeds.

Section 3.7 asks whether the methods that reshape the update help where two
tasks compete for one trunk: name the letter towards the upper left and the one
towards the lower right of two overlaid glyphs (:func:`~.data.glyph_overlay`,
the MultiMNIST recipe of Sener & Koltun, 2018). Training two single-task
networks and fourteen multi-task ones for each of five seeds, each until its
validation score stops improving, takes about twelve minutes on one CPU thread, more
than a chapter may spend; ``make models`` trains them once into the store, and
the chapter loads them and scores them on the test overlays itself.

The stored "model" is an :class:`torch.nn.ModuleDict` of every network, keyed by
:func:`member` (``"pcgrad_s3"``, ``"single_left_s0"``, ...). Each training run,
its best epoch and, for equal weighting and the gradient methods, the cosine
between the two task gradients on the trunk in every epoch, go into the
manifest's extras.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import runtime, store
from ..data import load_glyphs
from .architectures import CrossStitch, HardSharing, lenet_trunk, make_head
from .data import MultiTaskSet, glyph_overlay
from .train import GRADIENT_METHODS, delta_p, evaluate_multitask, fit_multitask, fit_single_task

OVERLAY_MODEL_NAME = "glyphs-overlay-mtl-lenet"
OVERLAY_TASKS = ("left", "right")
OVERLAY_METHODS = ("equal", "uncertainty", "dwa", "gradnorm", "famo", "rlw", "pcgrad", "mgda", "mgda_l2",
                   "cagrad", "imtl_g", "nash_mtl", "aligned_mtl", "cross_stitch")
"""What is trained for each seed: every method of :func:`~.train.fit_multitask` on one hard-sharing
network but UPGrad (with two tasks it takes PCGrad's step exactly, see the tests), and a cross-stitch
network trained with equal weights (``"cross_stitch"``)."""
DRAWINGS = {"train": range(0, 12), "val": range(12, 16), "test": range(16, 20)}
"""Which of the 20 drawings of each letter each split draws from: no drawing is in two splits."""


@dataclass(frozen=True)
class OverlayConfig:
    """The overlay sets, the networks and how each is trained (the same for every method)."""

    num_characters: int = 10  # the letters A-J
    train_images: int = 3000
    val_images: int = 1000
    test_images: int = 2000
    width: int = 32  # features of the LeNet trunk
    num_epochs: int = 40
    patience: int = 5  # epochs without a better validation score before stopping
    lr: float = 2e-3
    batch_size: int = 50
    seeds: int = 5
    methods: tuple[str, ...] = OVERLAY_METHODS


def member(method: str, seed: int) -> str:
    """The key of one network of the stored set.

    >>> member("pcgrad", 3)
    'pcgrad_s3'
    """
    return f"{method}_s{seed}"


def single_task_member(task: str, seed: int) -> str:
    """The key of the single-task network of ``task``.

    >>> single_task_member("left", 0)
    'single_left_s0'
    """
    return member(f"single_{task}", seed)


def overlay_sets(config: OverlayConfig = OverlayConfig(), glyphs=None) -> tuple[MultiTaskSet, ...]:
    """The training, validation and test overlays, made from disjoint drawings (:data:`DRAWINGS`)."""
    glyphs = glyphs if glyphs is not None else load_glyphs()
    sizes = {"train": config.train_images, "val": config.val_images, "test": config.test_images}
    return tuple(glyph_overlay(num_characters=config.num_characters, num_images=sizes[split],
                               drawings=DRAWINGS[split], seed=k, glyphs=glyphs)
                 for k, split in enumerate(("train", "val", "test")))


def overlay_network(kind: str, width: int, tasks: tuple[str, ...] = OVERLAY_TASKS,
                    num_classes: int = 10) -> nn.Module:
    """A LeNet trunk with one linear head per task: shared (``"hard"``), or one column per task mixed
    by cross-stitch units after each of its three blocks (``"cross_stitch"``)."""
    heads = {t: make_head("classification", width, num_classes) for t in tasks}
    if kind == "hard":
        return HardSharing(lenet_trunk(width), heads)
    if kind == "cross_stitch":
        trunk = lenet_trunk(width)
        return CrossStitch([trunk[0:3], trunk[3:6], trunk[6:]], heads)
    raise ValueError(f"kind must be 'hard' or 'cross_stitch', got {kind!r}")


def build_overlay_zoo(config: Mapping[str, Any]) -> nn.ModuleDict:
    """The untrained set of networks of a stored overlay experiment (what :func:`store.load` fills in)."""
    c = _config(config)
    nets = {}
    for seed in range(c.seeds):
        for task in OVERLAY_TASKS:
            nets[single_task_member(task, seed)] = overlay_network("hard", c.width, (task,), c.num_characters)
        for method in c.methods:
            kind = "cross_stitch" if method == "cross_stitch" else "hard"
            nets[member(method, seed)] = overlay_network(kind, c.width, num_classes=c.num_characters)
    return nn.ModuleDict(nets)


def _config(config: Mapping[str, Any]) -> OverlayConfig:
    return OverlayConfig(**{**config, "methods": tuple(config.get("methods", OVERLAY_METHODS))})


def _train_once(key: str, zoo: nn.ModuleDict, checkpoint: runtime.Checkpoint | None,
                train: Callable[..., tuple[nn.Module, dict]], *args) -> dict:
    """Train one network with ``train(*args)`` (which returns it and its record) into ``zoo[key]``, or
    take both from a finished part of ``checkpoint`` (a stopped run resumes after its last network)."""
    part = checkpoint.part(key) if checkpoint is not None else None
    saved = part.load({"member": key}) if part is not None else None
    if saved is None:
        net, record = train(*args)
        saved = {"model": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "record": record}
        if part is not None:
            part.save(saved, {"member": key})
    zoo[key].load_state_dict(saved["model"])
    return saved["record"]


def _conflict_record(history) -> dict:
    """The left-right cosine of the trunk's task gradients, per epoch: its mean and the share of
    steps in which it was negative."""
    return {"cosine": [float(c[0, 1]) for c in history.cosine],
            "conflict": [float(c[0, 1]) for c in history.conflict]}


def train_overlay_recipe(config: dict, seed: int, max_steps: int | None = None,
                         device: torch.device | None = None,
                         checkpoint: runtime.Checkpoint | None = None) -> store.Trained:
    """The store's recipe for Section 3.7: for each seed, one network per task and one per method.

    Every network gets the same epochs, learning rate, batches and patience; the
    single-task networks are selected by their validation accuracy, the
    multi-task ones by their validation Δp against them. The stored curve is
    equal weighting's with the first seed; with ``max_steps`` only that run's
    first steps are made (the provenance test).
    """
    c = _config(config)
    device = device or runtime.get_device()
    train, val, _ = overlay_sets(c)
    zoo = build_overlay_zoo(asdict(c))
    with runtime.num_threads_at_most(1):  # small networks: one thread is fastest
        if max_steps is not None:
            _, record = _fit_multi(train, None, "equal", seed, {}, c, device, max_steps)
            return store.Trained(zoo, {}, record["step_loss"])
        records = {}
        for k in range(c.seeds):  # network k of each kind is trained with seed `seed + k`
            for task in OVERLAY_TASKS:
                key = single_task_member(task, k)
                records[key] = _train_once(key, zoo, checkpoint, _fit_single, train, val, task, seed + k, c,
                                           device)
            baseline = {t: records[single_task_member(t, k)]["val_metric"] for t in OVERLAY_TASKS}
            for method in c.methods:
                key = member(method, k)
                records[key] = _train_once(key, zoo, checkpoint, _fit_multi, train, val, method, seed + k,
                                           baseline, c, device)
    metrics, extra = evaluate_overlay_zoo(zoo, asdict(c))
    curve = records[member("equal", 0)]["step_loss"]
    return store.Trained(zoo.eval(), metrics, curve, {"runs": records, **extra})


def _fit_single(train, val, task, seed, c: OverlayConfig, device) -> tuple[nn.Module, dict]:
    runtime.seed_everything(seed)
    net = overlay_network("hard", c.width, (task,), c.num_characters).to(device)
    history = fit_single_task(net, train, val, task, seed=seed, patience=c.patience, num_epochs=c.num_epochs,
                              lr=c.lr, batch_size=c.batch_size)
    return net, {"val_metric": float(history.best_val_metric), "best_epoch": history.best_epoch,
                 "epochs": len(history.train_loss)}


def _fit_multi(train, val, method, seed, baseline, c: OverlayConfig, device,
               max_steps: int | None = None) -> tuple[nn.Module, dict]:
    runtime.seed_everything(seed)
    kind = "cross_stitch" if method == "cross_stitch" else "hard"
    net = overlay_network(kind, c.width, num_classes=c.num_characters).to(device)
    recorded = method == "equal" or method in GRADIENT_METHODS
    history = fit_multitask(net, train, val, method="equal" if kind == "cross_stitch" else method,
                            baseline=baseline or None, seed=seed, patience=c.patience, max_steps=max_steps,
                            record_cosine=recorded, num_epochs=c.num_epochs, lr=c.lr,
                            batch_size=c.batch_size)
    record = {"best_epoch": history.best_epoch, "epochs": len(history.train_loss),
              "val_score": None if val is None else float(history.val_score[history.best_epoch]),
              "weights": history.weights, "step_loss": history.step_loss if method == "equal" else []}
    return net, record | (_conflict_record(history) if recorded else {})


def overlay_test_metrics(zoo: nn.ModuleDict, test: MultiTaskSet) -> dict[str, dict[str, float]]:
    """Every stored network's test accuracy on its task(s), by :func:`member` key."""
    scores = {}
    for key, net in zoo.items():
        tasks = [t for t in OVERLAY_TASKS if key.startswith(f"single_{t}_")]
        scores[key] = evaluate_multitask(net.eval(), test.only(tasks) if tasks else test)
    return scores


def overlay_delta_p(scores: Mapping[str, Mapping[str, float]], methods: tuple[str, ...],
                    seeds: int) -> dict[str, list[float]]:
    """Each method's test Δp against the single-task networks of the same seed, one value per seed."""
    higher = {t: True for t in OVERLAY_TASKS}
    single = [{t: scores[single_task_member(t, s)][t] for t in OVERLAY_TASKS} for s in range(seeds)]
    return {m: [delta_p(scores[member(m, s)], single[s], higher) for s in range(seeds)] for m in methods}


def evaluate_overlay_zoo(zoo: nn.ModuleDict, config: Mapping[str, Any]) -> tuple[dict[str, float], dict]:
    """The recipe's test: every network on the test overlays; metrics are each method's mean Δp."""
    c = _config(config)
    _, _, test = overlay_sets(c)
    scores = overlay_test_metrics(zoo, test)
    dps = overlay_delta_p(scores, c.methods, c.seeds)
    metrics = {f"test_dp_{m}": float(np.mean(v)) for m, v in dps.items()}
    metrics |= {f"test_acc_single_{t}": float(np.mean([scores[single_task_member(t, s)][t]
                                                       for s in range(c.seeds)])) for t in OVERLAY_TASKS}
    return metrics, {"test_metrics": scores}


OVERLAY_RECIPE = store.register(store.Recipe(
    name=OVERLAY_MODEL_NAME, chapter=3, train=train_overlay_recipe, build=build_overlay_zoo,
    config=asdict(OverlayConfig()), seed=0, version=1, evaluate=evaluate_overlay_zoo,
    description="two single-task LeNets and one multi-task LeNet per method (cross-stitch: one column "
                "per task) on the two-glyph overlay, five seeds"))
